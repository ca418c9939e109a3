//! Crafted packets that try to get past the checks, each beside the packet the same check lets
//! through. The kernel-level suite (`adversarial.rs`) sends them between namespaces and looks at
//! what arrives; these pin down which check stops each one.

use palisade_common::PROG_FROM_UPLINK;

use super::endpoints::in_netns_with_veth;
use super::*;

#[test]
fn an_icmp_error_about_a_tracked_flow_goes_only_to_that_flows_peer() {
    let node = Node::with_server();
    let request = syn4(CLIENT, SERVER, 40200, 80);
    node.passes(PROG_TO_POD, &request, Stat::NewFlowAllowed);
    // The control: the server's error about the client's packet, back to the client.
    node.passes(
        PROG_FROM_POD,
        &icmp4_error(SERVER, CLIENT, 3, &request),
        Stat::CtHit,
    );
    // The same quote sent anywhere else is plain ICMP, which the server's egress denies.
    node.drops(
        PROG_FROM_POD,
        &icmp4_error(SERVER, OTHER, 3, &request),
        DropReason::PolicyEgress,
    );
    // No error is longer than 576 bytes of IPv4: a long one is a data channel, judged as ICMP.
    let mut long = icmp4_error(SERVER, CLIENT, 3, &request);
    long.extend(vec![0x41; 600]);
    node.drops(PROG_FROM_POD, &long, DropReason::PolicyEgress);
    // Inbound, an error must be addressed to the pod that sent the quoted packet.
    let reply = ack4(SERVER, CLIENT, 80, 40200);
    node.passes(
        PROG_TO_POD,
        &icmp4_error([10, 0, 0, 99], SERVER, 3, &reply),
        Stat::CtHit,
    );
}

#[test]
fn a_syn_on_a_tracked_tuple_is_judged_again_and_a_closed_flow_keeps_only_its_tail() {
    let node = Node::with_server();
    node.passes(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40300, 80),
        Stat::NewFlowAllowed,
    );
    node.passes(PROG_FROM_POD, &ack4(SERVER, CLIENT, 80, 40300), Stat::CtHit);
    // The connection ends with a RST; its last packets still pass (the closing timeout) ...
    node.passes(
        PROG_TO_POD,
        &tcp4(CLIENT, SERVER, 40300, 80, TCP_RST | TCP_ACK),
        Stat::CtHit,
    );
    node.passes(PROG_FROM_POD, &ack4(SERVER, CLIENT, 80, 40300), Stat::CtHit);
    // ... but a SYN reusing the tuple is a new connection, judged by policy: from a source the
    // policy denies it is dropped even though conntrack holds the tuple's reverse.
    node.drops(
        PROG_FROM_POD,
        &syn4(SERVER, CLIENT, 80, 40300),
        DropReason::PolicyEgress,
    );
    // The client's SYN on the same tuple is judged too (a new flow, not a conntrack hit).
    node.passes(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40300, 80),
        Stat::NewFlowAllowed,
    );
    // ACK, FIN or RST of a flow that was never opened: judged, and dropped.
    for flags in [TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST] {
        node.drops(
            PROG_TO_POD,
            &tcp4(OTHER, SERVER, 40301, 80, flags),
            DropReason::PolicyIngress,
        );
    }
}

#[test]
fn a_flow_opened_towards_an_address_the_pod_does_not_own_gives_it_no_way_to_send_from_it() {
    // Tracked packets skip the source check only when the flow's local address was checked
    // when it was admitted: a flow opened towards another address (the ingress policy judges
    // the peer and the port, not the destination) must not let the pod answer as that address.
    let node = Node::with_server();
    let elsewhere = OTHER;
    node.passes(
        PROG_TO_POD,
        &syn4(CLIENT, elsewhere, 40300, 80),
        Stat::NewFlowAllowed,
    );
    node.drops(
        PROG_FROM_POD,
        &ack4(elsewhere, CLIENT, 80, 40300),
        DropReason::SpoofedSource,
    );
    // The control: the same exchange to the pod's own address, whose replies are tracked.
    node.passes(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40301, 80),
        Stat::NewFlowAllowed,
    );
    node.passes(PROG_FROM_POD, &ack4(SERVER, CLIENT, 80, 40301), Stat::CtHit);
    node.passes(PROG_TO_POD, &ack4(CLIENT, SERVER, 40301, 80), Stat::CtHit);
}

#[test]
fn ipv6_packets_with_ipv4_mapped_addresses_are_malformed() {
    let node = Node::with_server();
    // ::ffff:10.0.0.20 is the client's IPv4 address in the maps: never a sender of IPv6.
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&CLIENT);
    node.drops(
        PROG_TO_POD,
        &syn6(mapped, SERVER6, 40400, 80),
        DropReason::Malformed,
    );
    node.passes(
        PROG_TO_POD,
        &syn6(CLIENT6, SERVER6, 40400, 80),
        Stat::NewFlowAllowed,
    );
}

#[test]
fn neighbour_discovery_passes_unjudged_only_on_link() {
    let node = Node::with_server();
    // A neighbour solicitation on the link passes (the control) ...
    node.expect(
        PROG_TO_POD,
        &neighbour_solicitation(v6(0x99), SERVER6),
        PASS,
        Counted::Nothing,
    );
    // ... but an ND-typed message between routed addresses, or forwarded (hop limit below
    // 255), is ICMPv6 like any other, and the server's ingress denies ICMPv6.
    let mut routed = vec![135, 0, 0, 0, 0, 0, 0, 0];
    routed.extend(SERVER6);
    routed.extend([0x41; 64]);
    node.drops(
        PROG_TO_POD,
        &ipv6_hops(OTHER6, SERVER6, ICMPV6, 255, &routed),
        DropReason::PolicyIngress,
    );
    let mut forwarded = neighbour_solicitation(v6(0x99), SERVER6);
    forwarded[ETH_HLEN + 7] = 254;
    node.drops(PROG_TO_POD, &forwarded, DropReason::PolicyIngress);
}

#[test]
fn an_uplink_never_delivers_a_local_pods_or_the_nodes_own_source() {
    in_netns_with_veth(|veth| {
        let node = Node::with_server();
        // x/server is local (its endpoint is at loopback), and NODE is the node's address.
        node.expect_on(
            veth,
            PROG_FROM_UPLINK,
            &ack4(SERVER, CLIENT, 80, 40500),
            DROP,
            Counted::Drop(DropReason::SpoofedFromUplink),
        );
        node.expect_on(
            veth,
            PROG_FROM_UPLINK,
            &syn4(NODE, SERVER, 40500, 80),
            DROP,
            Counted::Drop(DropReason::SpoofedFromUplink),
        );
        node.expect_on(
            veth,
            PROG_FROM_UPLINK,
            &syn6(SERVER6, CLIENT6, 40500, 80),
            DROP,
            Counted::Drop(DropReason::SpoofedFromUplink),
        );
        // A remote pod's address (x/client has no endpoint here) is the fabric's word: passes
        // untouched, judged by the receiving pod's hook.
        node.expect_on(
            veth,
            PROG_FROM_UPLINK,
            &syn4(CLIENT, SERVER, 40500, 80),
            PASS,
            Counted::Nothing,
        );
    });
}

#[test]
fn seventy_single_port_rules_for_one_pod_are_enforced_exactly_on_the_kernel() {
    require_root();
    let dataplane = Dataplane::load().unwrap_or_else(|e| panic!("{}", chain(&e)));
    let mut cluster = dual_stack_apps(
        "x",
        &[
            ("server", "10.0.0.10", "fd00::10"),
            ("client", "10.0.0.20", "fd00::20"),
        ],
    );
    // One policy, 70 rules: the client on one port each (9000 .. 9069), the shape many small
    // per-app policies give a pod.
    let mut yaml = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: many, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: server}}\n  ingress:\n",
    );
    for port in 9000..9070 {
        yaml.push_str(&format!(
            "    - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]\n      ports: [{{port: {port}}}]\n"
        ));
    }
    apply_yaml(&mut cluster, &yaml);
    let node_addrs = [std::net::IpAddr::from(NODE)];
    let state = Compiler::new().compile(
        &cluster,
        &NodeView {
            name: "node-1",
            addrs: &node_addrs,
        },
    );
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    let mut dataplane = dataplane;
    let ifindex = BTreeMap::from([(ObjectKey::new("x", "server"), LOOPBACK_IFINDEX)]);
    dataplane.sync(&state, &ifindex).expect("sync");
    let run = |port: u16| {
        dataplane
            .test_run(
                PROG_TO_POD,
                &syn4(CLIENT, SERVER, 40600, port),
                LOOPBACK_IFINDEX,
            )
            .expect("test run")
            .action
    };
    let wrong: Vec<u16> = (9000..9070).filter(|&p| run(p) != PASS).collect();
    assert_eq!(wrong, Vec::<u16>::new(), "ports of the 70 rules dropped");
    assert_eq!(run(9070), DROP, "a port no rule names");
    assert_eq!(run(8999), DROP, "a port no rule names");
}
