//! Item 1: Service records planted by packets the node then drops. An egress-isolated pod's
//! packet to a Service address is judged after translation, by the hook that sees the backend;
//! until then the source hook only records where the flow was going. A packet that records a
//! flow to a denied Service and then dies (TTL 1: the node drops it after the source hook ran)
//! must not leave anything behind that a later allowed flow from the same source port, or the
//! same Service flow sent again, can ride.

use std::net::IpAddr;

use palisade::k8s::cluster::ObjectKey;
use palisade_integration::wire::{SYN, TCP, UDP, V4, tcp, udp};
use palisade_lab::{serve::Proto, services::Services};

use super::*;

/// `a` may only reach `d` (DNS, UDP and TCP 53); `b` (same node) and `b2` (the other node)
/// are Service backends that `a` must never reach.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-dns-only, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: d}}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
"#;

const PORT: u16 = 53;

/// One packet from `a` to `dst`:53 from `sport`, with `ttl`.
fn to(lab: &Lab, protocol: u8, dst: IpAddr, sport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(dst4), src) = (dst, lab.v4("a")) else {
        panic!("IPv4 Services only here")
    };
    let l4 = match protocol {
        TCP => tcp(src.into(), dst, sport, PORT, SYN, 7000, 0, payload),
        _ => udp(src.into(), dst, sport, PORT, payload),
    };
    V4 {
        ttl,
        ..V4::new(src, dst4, protocol)
    }
    .packet(&l4)
}

#[test]
fn a_service_flow_planted_by_a_dropped_packet_never_reaches_a_denied_backend() {
    let mut breaches = Breaches::default();
    let lab = Lab::new(
        2,
        &[
            pod_on("a", 1, &["10.244.1.10"]),
            pod_on("d", 1, &["10.244.1.11"]),
            pod_on("b", 1, &["10.244.1.12"]),
            pod_on("b2", 2, &["10.244.2.12"]),
        ],
        POLICIES,
    );
    let mut services = Services::default();
    let ports = [(Proto::Tcp, PORT), (Proto::Udp, PORT)];
    for backend in ["b", "b2", "d"] {
        let key = ObjectKey::new(NS, backend);
        services.set(&key, &[lab.v4(backend).into()], &ports);
    }
    for node in [1, 2] {
        services
            .install(&lab.node(node).netns)
            .expect("Service rules");
    }
    lab.sync();
    let cluster_ip = |backend: &str| {
        services
            .cluster_ip(&ObjectKey::new(NS, backend), lab.v4(backend).into())
            .expect("ClusterIP")
    };
    let a = lab.port("a");

    // Control: the Service whose backend `a` may reach delivers, both protocols.
    let d = lab.capture("d");
    for (protocol, sport) in [(TCP, 40_100), (UDP, 40_101)] {
        let m = marker(&format!("svc-control-{protocol}"));
        a.send(&to(&lab, protocol, cluster_ip("d"), sport, 64, &m));
        d.assert_some(&m, LIVE, "a -> Service of d (allowed backend)");
    }

    let mut sport = 40_200;
    for backend in ["b", "b2"] {
        for protocol in [TCP, UDP] {
            sport += 1;
            let m = marker(&format!("svc-{backend}-{protocol}"));
            let at_backend = lab.capture(backend);
            let at_d = lab.capture("d");
            // 1. Recorded at a's hook, then dropped by the node (TTL exceeded).
            a.send(&to(&lab, protocol, cluster_ip(backend), sport, 1, &m));
            // 2. The same source port, straight to d: allowed, and seen to arrive.
            a.send(&to(&lab, protocol, lab.v4("d").into(), sport, 64, &m));
            at_d.assert_some(&m, LIVE, "a -> d:53 from the same port (allowed)");
            // 3. The denied Service again, from that port.
            a.send(&to(&lab, protocol, cluster_ip(backend), sport, 64, &m));
            breaches.check(
                &at_backend,
                &m,
                &format!(
                    "a reached denied backend {backend} through its Service (protocol \
                     {protocol}, source port {sport}) after a TTL-1 packet pre-planted the flow"
                ),
            );
        }
    }

    // And a plain denied Service flow, nothing planted: the backend sees nothing either.
    let at_b = lab.capture("b");
    let m = marker("svc-b-plain");
    a.send(&to(&lab, UDP, cluster_ip("b"), 40_300, 64, &m));
    breaches.check(&at_b, &m, "a reached denied backend b through its Service");
    breaches.assert_none();
}
