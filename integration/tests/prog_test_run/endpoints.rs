//! What keeps one pod from passing as another: the source address a pod sends from must be its
//! own, and a tracked flow admits packets only on the veth where it was admitted.

use ipnet::IpNet;
use nix::sched::CloneFlags;
use palisade_common::{PROG_UPLINK, SERVICE_MARK};
use rtnetlink::LinkVeth;

use super::*;

/// A Service address (ClusterIP), in the range the tests declare.
const SERVICE: [u8; 4] = [10, 96, 0, 10];
const SERVICE_RANGE: &str = "10.96.0.0/12";
const LINK_LOCAL6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

/// Runs `test` on a thread of its own, in a fresh network namespace holding a veth pair, with
/// the index of one end: a second interface beside loopback, for a second endpoint. The
/// namespace goes with the thread.
pub(super) fn in_netns_with_veth(test: impl FnOnce(u32) + Send + 'static) {
    let result = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): these tests need root");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            let driver = tokio::spawn(connection);
            handle
                .link()
                .add(LinkVeth::new("pal-test0", "pal-test1").build())
                .execute()
                .await
                .expect("add a veth pair");
            driver.abort();
        });
        let index = nix::net::if_::if_nametoindex("pal-test0").expect("the veth's index");
        test(index);
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_pod_sending_from_another_pods_address_is_dropped_whether_isolated_or_not() {
    let server = Node::with_server();
    // A flow the server's egress policy admits, but from the client's address.
    server.drops(
        PROG_FROM_POD,
        &syn4(OTHER, CLIENT, 40000, 8080),
        DropReason::SpoofedSource,
    );
    server.drops(
        PROG_FROM_POD,
        &syn6(OTHER6, CLIENT6, 40000, 8080),
        DropReason::SpoofedSource,
    );
    // Replies are no exception: the server's own flow does not let it answer as someone else.
    server.passes(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40000, 80),
        Stat::NewFlowAllowed,
    );
    server.drops(
        PROG_FROM_POD,
        &syn4(OTHER, CLIENT, 80, 40000),
        DropReason::SpoofedSource,
    );
    server.passes(PROG_FROM_POD, &ack4(SERVER, CLIENT, 80, 40000), Stat::CtHit);

    // x/client is selected by no policy; it still sends only as itself.
    let client = Node::with_endpoint("client", LOOPBACK_IFINDEX);
    client.drops(
        PROG_FROM_POD,
        &syn4(SERVER, OTHER, 40000, 9),
        DropReason::SpoofedSource,
    );
    client.drops(
        PROG_FROM_POD,
        &echo4([0, 0, 0, 0], OTHER, 8, 7),
        DropReason::SpoofedSource,
    );
    client.drops(
        PROG_FROM_POD,
        &syn6([0; 16], OTHER6, 40000, 9),
        DropReason::SpoofedSource,
    );
    client.passes(
        PROG_FROM_POD,
        &syn6(CLIENT6, OTHER6, 40000, 9),
        Stat::NewFlowAllowed,
    );
}

#[test]
fn an_ipv6_link_local_source_is_judged_by_policy_not_dropped_as_spoofed() {
    let server = Node::with_server();
    server.drops(
        PROG_FROM_POD,
        &syn6(LINK_LOCAL6, CLIENT6, 40000, 9),
        DropReason::PolicyEgress,
    );
    let client = Node::with_endpoint("client", LOOPBACK_IFINDEX);
    client.passes(
        PROG_FROM_POD,
        &syn6(LINK_LOCAL6, OTHER6, 40000, 9),
        Stat::NewFlowAllowed,
    );
}

#[test]
fn an_address_is_only_its_own_pods_when_two_endpoints_share_the_node() {
    in_netns_with_veth(|veth| {
        let node = Node::with_endpoints(&[("server", LOOPBACK_IFINDEX), ("client", veth)]);
        let to_server = syn4(CLIENT, SERVER, 40000, 80);
        node.expect_on(
            veth,
            PROG_FROM_POD,
            &to_server,
            PASS,
            Counted::Stat(Stat::NewFlowAllowed),
        );
        // The server's address, sent from the client's veth; and the client's, from the server's.
        node.expect_on(
            veth,
            PROG_FROM_POD,
            &syn4(SERVER, CLIENT, 80, 40000),
            DROP,
            Counted::Drop(DropReason::SpoofedSource),
        );
        node.drops(PROG_FROM_POD, &to_server, DropReason::SpoofedSource);
    });
}

#[test]
fn a_pod_given_an_old_pods_address_on_a_new_veth_does_not_inherit_its_flows() {
    in_netns_with_veth(|veth| {
        let mut node = Node::with_server();
        let request = syn4(CLIENT, SERVER, 40000, 80);
        // The reply leaves towards port 40000, which the server's egress policy does not admit.
        let reply = ack4(SERVER, CLIENT, 80, 40000);
        node.passes(PROG_TO_POD, &request, Stat::NewFlowAllowed);
        node.passes(PROG_FROM_POD, &reply, Stat::CtHit);

        // The pod is recreated with the same address behind another veth: the flow admitted at
        // the old one is not found at the new one (it would be, keyed by addresses alone).
        node.sync(&[("server", veth)]);
        node.expect_on(
            veth,
            PROG_FROM_POD,
            &reply,
            DROP,
            Counted::Drop(DropReason::PolicyEgress),
        );
        node.drops(PROG_FROM_POD, &reply, DropReason::NoEndpoint);
        node.expect_on(
            veth,
            PROG_TO_POD,
            &request,
            PASS,
            Counted::Stat(Stat::NewFlowAllowed),
        );
        node.expect_on(
            veth,
            PROG_FROM_POD,
            &reply,
            PASS,
            Counted::Stat(Stat::CtHit),
        );
    });
}

#[test]
fn a_service_flow_is_tracked_at_the_clients_endpoint_wherever_it_is_judged() {
    in_netns_with_veth(|veth| {
        let mut node = Node::with_server();
        let range: IpNet = SERVICE_RANGE.parse().expect("service range");
        node.dataplane
            .set_service_ranges(&[range])
            .unwrap_or_else(|e| panic!("{}", chain(&e)));
        let to_service = syn4(SERVER, SERVICE, 40000, 8080);
        // The pod's hook records the flow and marks the packet it recorded.
        let mark = node.expect_marked(
            LOOPBACK_IFINDEX,
            PROG_FROM_POD,
            &to_service,
            0,
            PASS,
            Counted::Stat(Stat::EgressDeferred),
        );
        assert_ne!(mark & SERVICE_MARK, 0, "the deferred packet is marked");
        // Translated to the client and judged on the way out of another interface; the mark is
        // cleared there, so no later hook judges the packet by the record again.
        let translated = syn4(SERVER, CLIENT, 40000, 8080);
        let left = node.expect_marked(
            veth,
            PROG_UPLINK,
            &translated,
            mark,
            PASS,
            Counted::Stat(Stat::EgressJudgedAfterNat),
        );
        assert_eq!(left & SERVICE_MARK, 0, "the mark is consumed");
        // The reply, un-translated, and the next packet find the flow at the server's veth.
        node.passes(
            PROG_TO_POD,
            &ack4(SERVICE, SERVER, 8080, 40000),
            Stat::CtHit,
        );
        node.passes(
            PROG_FROM_POD,
            &ack4(SERVER, SERVICE, 40000, 8080),
            Stat::CtHit,
        );
    });
}

#[test]
fn a_service_record_is_judged_only_by_the_packet_it_was_made_for() {
    in_netns_with_veth(|veth| {
        let mut node = Node::with_server();
        let range: IpNet = SERVICE_RANGE.parse().expect("service range");
        node.dataplane
            .set_service_ranges(&[range])
            .unwrap_or_else(|e| panic!("{}", chain(&e)));
        // A record planted by a packet that never comes back (dropped on the way: TTL 1) ...
        node.expect_marked(
            LOOPBACK_IFINDEX,
            PROG_FROM_POD,
            &syn4(SERVER, SERVICE, 40001, 8080),
            0,
            PASS,
            Counted::Stat(Stat::EgressDeferred),
        );
        // ... is not consumed by an unmarked packet from the same source port: that one is not
        // the translation, and passes the uplink untouched (not ours) ...
        node.expect_marked(
            veth,
            PROG_UPLINK,
            &syn4(SERVER, CLIENT, 40001, 8080),
            0,
            PASS,
            Counted::Nothing,
        );
        // ... so nothing was tracked under the Service address: its "reply" is judged, and the
        // server's ingress policy does not admit the Service address as a peer.
        node.drops(
            PROG_TO_POD,
            &ack4(SERVICE, SERVER, 8080, 40001),
            DropReason::PolicyIngress,
        );
        // Two packets of one source port to two Service addresses at once: the translation
        // that comes back cannot be told from the other's, so it is not judged by the record.
        for service in [SERVICE, [10, 96, 0, 11]] {
            node.expect_marked(
                LOOPBACK_IFINDEX,
                PROG_FROM_POD,
                &syn4(SERVER, service, 40003, 8080),
                0,
                PASS,
                Counted::Stat(Stat::EgressDeferred),
            );
        }
        node.expect_marked(
            veth,
            PROG_UPLINK,
            &syn4(SERVER, CLIENT, 40003, 8080),
            SERVICE_MARK,
            DROP,
            Counted::Drop(DropReason::ServiceUnjudged),
        );
        // A marked packet whose record is gone cannot be judged: dropped.
        node.expect_marked(
            veth,
            PROG_UPLINK,
            &syn4(SERVER, CLIENT, 40002, 8080),
            SERVICE_MARK,
            DROP,
            Counted::Drop(DropReason::ServiceUnjudged),
        );
    });
}

#[test]
fn after_an_abi_upgrade_the_old_agents_programs_leave_once_the_new_ones_run() {
    in_netns_with_veth(|veth| {
        let node = Node::with_server();
        let root = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/palisade-abi-test-{}",
            std::process::id()
        ));
        let current = root.join(format!("v{}", palisade_common::ABI_VERSION));
        let old = root.join("v1");
        let ifindex = BTreeMap::from([(ObjectKey::new("x", "server"), veth)]);
        let links_of = |dir: &std::path::Path| {
            std::fs::read_dir(dir.join("links/pal-test0"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        {
            // The old agent: attached and pinned, then gone without detaching.
            let mut before =
                Dataplane::load_pinned(&root).unwrap_or_else(|e| panic!("{}", chain(&e)));
            before.sync(&node.state, &ifindex).expect("sync");
            before.attach("pal-test0").expect("attach");
            drop(before);
        }
        // Its state, as an agent of another ABI would have left it.
        std::fs::rename(&current, &old).expect("rename the pins");
        assert_eq!(links_of(&old), 2);
        let mut after = Dataplane::load_pinned(&root).unwrap_or_else(|e| panic!("{}", chain(&e)));
        after.sync(&node.state, &ifindex).expect("sync");
        after.attach("pal-test0").expect("attach");
        assert_eq!(links_of(&current), 2, "the new programs are pinned");
        assert_eq!(links_of(&old), 0, "the old programs left the interface");
        after.release_stale_links();
        assert!(
            !old.exists(),
            "the old version's pins are gone: {}",
            old.display()
        );
        drop(after);
        palisade::dataplane::pin::remove_tree(&root).expect("remove the test's pins");
    });
}

#[test]
fn the_service_mark_is_the_bit_the_agent_loads_the_programs_with() {
    require_root();
    assert!(
        matches!(
            Dataplane::load_marked(0x3000),
            Err(palisade::dataplane::DataplaneError::ServiceMark { mark: 0x3000 })
        ),
        "two bits are refused"
    );
    let dataplane = Dataplane::load_marked(0x10).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let range: IpNet = SERVICE_RANGE.parse().expect("service range");
    let mut node = Node::with_server();
    node.dataplane = dataplane;
    node.sync(&[("server", LOOPBACK_IFINDEX)]);
    node.dataplane
        .set_service_ranges(&[range])
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let mark = node.expect_marked(
        LOOPBACK_IFINDEX,
        PROG_FROM_POD,
        &syn4(SERVER, SERVICE, 40010, 8080),
        0,
        PASS,
        Counted::Stat(Stat::EgressDeferred),
    );
    assert_eq!(mark, 0x10, "the configured bit, not the default");
    // The default bit means nothing to these programs: a packet carrying it (another
    // component's mark) is judged as any other, and keeps its mark.
    let left = node.expect_marked(
        LOOPBACK_IFINDEX,
        PROG_TO_POD,
        &ack4(CLIENT, SERVER, 40011, 80),
        SERVICE_MARK,
        PASS,
        Counted::Stat(Stat::NewFlowAllowed),
    );
    assert_eq!(left, SERVICE_MARK, "another component's mark is left alone");
}
