//! Item 2: ICMP errors as a data channel. An ICMP error is admitted as related to the flow its
//! quote names; a pod that owns one tracked flow must not be able to send "errors" about it to
//! anyone else, nor stuff a big payload into one.

use std::net::Ipv4Addr;

use palisade_integration::wire::{ICMP, UDP, V4, icmp4, udp, udp_packet};

use super::*;

/// `a` may reach only `d`; `c` is not isolated (it proves `e` and the external host capture).
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-d-only, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: d}}}]
      ports: [{protocol: UDP, port: 5353}]
"#;

const A_PORT: u16 = 41_000;
const D_PORT: u16 = 5_353;

/// An ICMP port unreachable from `a` to `to`, quoting the datagram d -> a of the tracked flow,
/// `extra` bytes after the quoted UDP header (the marker first).
fn unreachable(a: Ipv4Addr, d: Ipv4Addr, to: Ipv4Addr, m: &[u8], extra: usize) -> Vec<u8> {
    let mut payload = m.to_vec();
    payload.resize(extra.max(m.len()), b'.');
    let quoted = V4::new(d, a, UDP).packet(&udp(d.into(), a.into(), D_PORT, A_PORT, &payload));
    V4::new(a, to, ICMP).packet(&icmp4(3, 3, [0; 4], &quoted))
}

#[test]
fn an_icmp_error_about_a_tracked_flow_reaches_only_that_flows_peer_and_only_when_small() {
    let mut breaches = Breaches::default();
    let lab = Lab::new(
        1,
        &[
            pod_on("a", 1, &["10.244.1.20"]),
            pod_on("d", 1, &["10.244.1.21"]),
            pod_on("e", 1, &["10.244.1.22"]),
            pod_on("c", 1, &["10.244.1.23"]),
            external_on("ext", 1, &["203.0.113.20"]),
        ],
        POLICIES,
    );
    let (a, d, e, ext) = (lab.v4("a"), lab.v4("d"), lab.v4("e"), lab.v4("ext"));
    let (at_d, at_e, at_ext) = (lab.capture("d"), lab.capture("e"), lab.capture("ext"));
    let (from_a, from_c) = (lab.port("a"), lab.port("c"));

    // The captures at e and the external host work, and their paths are live.
    for (to, at) in [(e, &at_e), (ext, &at_ext)] {
        let m = marker(&format!("icmp-path-{to}"));
        from_c.send(&udp_packet(lab.v4("c").into(), to.into(), 41_001, 9, &m));
        at.assert_some(&m, LIVE, "c (not isolated) -> e / external host");
    }

    // One allowed datagram a -> d: the tracked flow the errors will name.
    let m = marker("icmp-flow");
    from_a.send(&udp_packet(a.into(), d.into(), A_PORT, D_PORT, &m));
    at_d.assert_some(&m, LIVE, "a -> d (allowed, tracked)");

    // Control: the error to the flow's peer, d, arrives.
    let m = marker("icmp-to-peer");
    from_a.send(&unreachable(a, d, d, &m, 0));
    at_d.assert_some(&m, LIVE, "a's ICMP error about its flow to d, sent to d");

    // The same error to e (denied by a's egress) and to the external host (likewise).
    for (to, at, whom) in [(e, &at_e, "pod e"), (ext, &at_ext, "the external host")] {
        let m = marker(&format!("icmp-to-{to}"));
        from_a.send(&unreachable(a, d, to, &m, 0));
        breaches.check(
            at,
            &m,
            &format!("an ICMP error quoting a's tracked flow to d carried data to {whom}"),
        );
    }

    // An oversized error to the peer: 1400 bytes of IPv4, far more than a quote needs.
    let m = marker("icmp-oversized");
    let big = unreachable(a, d, d, &m, 1400 - 20 - 8 - 20 - 8);
    assert_eq!(big.len(), 1400);
    from_a.send(&big);
    breaches.check(
        &at_d,
        &m,
        "a 1400-byte ICMP error (a quote with 1344 bytes of payload) carried data to d",
    );
    breaches.assert_none();
}
