//! Item 3: pod sources spoofed from outside the node. Pod `y` admits pod `a` (a local pod of
//! node-1) and node-1's own address; a packet that carries one of those sources but enters
//! node-1 from an external host or from node-2 was not sent by them and must not reach `y`.

use std::net::{IpAddr, UdpSocket};

use palisade_integration::wire::{SYN, tcp_packet, udp_packet};

use super::*;

const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-from-a-and-node, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a}}
    - ipBlock: {cidr: 10.244.0.1/32}
"#;

const PORT: u16 = 9_000;

#[test]
fn sources_of_admitted_pods_and_of_the_node_spoofed_from_outside_never_reach_the_pod() {
    let mut breaches = Breaches::default();
    let lab = Lab::new(
        2,
        &[
            pod_on("y", 1, &["10.244.1.30"]),
            pod_on("a", 1, &["10.244.1.31"]),
            external_on("ext", 1, &["192.0.2.30"]),
        ],
        POLICIES,
    );
    let y: IpAddr = lab.v4("y").into();
    let at_y = lab.capture("y");

    // Controls: the real a, and the real node-1, reach y.
    let m = marker("spoof-control-a");
    lab.port("a")
        .send(&udp_packet(lab.v4("a").into(), y, 40_000, PORT, &m));
    at_y.assert_some(&m, LIVE, "a -> y (admitted)");
    let m = marker("spoof-control-node");
    let (sent, node_addr) = (m.clone(), lab.node(1).addr_v4());
    lab.node(1)
        .netns
        .run(move || {
            let socket = UdpSocket::bind((node_addr, 0))?;
            socket.send_to(&sent, (y, PORT))
        })
        .expect("node namespace")
        .expect("node-1 -> y");
    at_y.assert_some(&m, LIVE, "node-1 -> y (admitted)");

    let from_ext = lab.port("ext");
    let from_node2 = lab.node_port(2, 1);
    let spoofed: [(&str, IpAddr); 2] = [
        ("pod a", lab.v4("a").into()),
        ("node-1", lab.node(1).addr_v4().into()),
    ];
    for (source, src) in spoofed {
        for (sender, port) in [("an external host", &from_ext), ("node-2", &from_node2)] {
            let m = marker(&format!("spoof-{source}-{sender}"));
            port.send(&udp_packet(src, y, 40_001, PORT, &m));
            port.send(&tcp_packet(src, y, 40_002, PORT, SYN, &m));
            breaches.check(
                &at_y,
                &m,
                &format!("{sender} spoofed {source}'s address ({src}) and reached y"),
            );
        }
    }
    breaches.assert_none();
}

/// `y` admits `r`, a pod of node-2.
const ADMITS_REMOTE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-from-r, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: r}}}]}]
"#;

#[test]
fn in_strict_mode_a_remote_pods_source_arrives_only_through_the_link_its_route_uses() {
    let mut breaches = Breaches::default();
    let lab = Lab::with_settings(
        2,
        &[
            pod_on("y", 1, &["10.244.1.35", "fd00:10:244:1::35"]),
            pod_on("r", 2, &["10.244.2.36", "fd00:10:244:2::36"]),
            external_on("ext", 1, &["192.0.2.35", "2001:db8::35"]),
        ],
        ADMITS_REMOTE,
        FlowSettings {
            strict_uplink: true,
            ..FlowSettings::default()
        },
        ConntrackSettings::default(),
    );
    let (y, r): (IpAddr, IpAddr) = (lab.v4("y").into(), lab.v4("r").into());
    let at_y = lab.capture("y");
    // Control: the real r, through node-2 and the link, reaches y.
    let m = marker("strict-control-r");
    lab.port("r").send(&udp_packet(r, y, 40_100, PORT, &m));
    at_y.assert_some(&m, LIVE, "r -> y through the nodes' link (admitted)");
    // r's address from the external host on node-1: the route to r does not leave that way.
    let m = marker("strict-ext-as-r");
    lab.port("ext").send(&udp_packet(r, y, 40_101, PORT, &m));
    breaches.check(
        &at_y,
        &m,
        "the external host spoofing r (node-2's pod), strict mode",
    );
    // The same over IPv6.
    let (y6, r6): (IpAddr, IpAddr) = (lab.v6("y").into(), lab.v6("r").into());
    let m = marker("strict-control-r6");
    lab.port("r").send(&udp_packet(r6, y6, 40_102, PORT, &m));
    at_y.assert_some(
        &m,
        LIVE,
        "r -> y over IPv6 through the nodes' link (admitted)",
    );
    let m = marker("strict-ext-as-r6");
    lab.port("ext").send(&udp_packet(r6, y6, 40_103, PORT, &m));
    breaches.check(
        &at_y,
        &m,
        "the external host spoofing r's IPv6 address, strict mode",
    );
    breaches.assert_none();
}
