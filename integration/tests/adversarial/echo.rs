//! Item 5: ICMP echo identifiers. `x` pings `y`; `x`'s ingress admits nobody. The echo reply
//! belongs to `x`'s request; an echo request from `y` with the same identifier does not, and
//! must not reach `x`. IPv4 (types 8/0) and IPv6 (128/129).

use std::net::IpAddr;

use palisade_integration::wire::echo_packet;

use super::*;

const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-isolated, namespace: x}
spec:
  podSelector: {matchLabels: {app: x}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-from-x, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  ingress: [{from: [{podSelector: {matchLabels: {app: x}}}]}]
"#;

const ID: u16 = 4242;

#[test]
fn an_echo_request_reusing_a_pings_identifier_is_not_its_reply() {
    let mut breaches = Breaches::default();
    let lab = Lab::new(
        1,
        &[
            pod_on("x", 1, &["10.244.1.50", "fd00:10:244:1::50"]),
            pod_on("y", 1, &["10.244.1.51", "fd00:10:244:1::51"]),
        ],
        POLICIES,
    );
    let (at_x, at_y) = (lab.capture("x"), lab.capture("y"));
    let (from_x, from_y) = (lab.port("x"), lab.port("y"));
    let families: [(&str, IpAddr, IpAddr); 2] = [
        ("ICMP", lab.v4("x").into(), lab.v4("y").into()),
        ("ICMPv6", lab.v6("x").into(), lab.v6("y").into()),
    ];
    for (family, x, y) in families {
        // x pings y; y's kernel answers, and the reply (echoing the marker) reaches x.
        let m = marker(&format!("echo-ping-{family}"));
        from_x.send(&echo_packet(x, y, true, ID, &m));
        at_y.assert_some(&m, LIVE, &format!("x's {family} echo request to y"));
        at_x.assert_some(&m, LIVE, &format!("y's {family} echo reply to x's request"));

        // y's own echo request with x's identifier.
        let m = marker(&format!("echo-request-{family}"));
        from_y.send(&echo_packet(y, x, true, ID, &m));
        breaches.check(
            &at_x,
            &m,
            &format!("y's {family} echo request with x's identifier {ID} reached x"),
        );
    }
    breaches.assert_none();
}
