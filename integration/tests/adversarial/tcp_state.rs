//! Item 4: TCP flag games. Only a SYN opens a flow: an ACK, FIN or RST of no tracked flow is
//! judged as new and dropped when policy denies it. And a tuple closed before a policy change
//! denied its source opens nothing when a SYN arrives on it again.

use palisade_integration::wire::{ACK, FIN, PSH, RST, SYN, tcp_packet};

use super::*;

/// `y` admits `x` on TCP 80; `z` is denied.
const ALLOW_X: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  ingress: [{from: [{podSelector: {matchLabels: {app: x}}}], ports: [{port: 80}]}]
"#;

/// The same policy, now admitting nobody x is.
const DENY_X: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  ingress: [{from: [{podSelector: {matchLabels: {app: nobody}}}], ports: [{port: 80}]}]
"#;

#[test]
fn tcp_without_a_syn_opens_nothing_and_a_closed_tuple_is_judged_again_after_a_policy_change() {
    let mut breaches = Breaches::default();
    let mut lab = Lab::new(
        1,
        &[
            pod_on("x", 1, &["10.244.1.40"]),
            pod_on("y", 1, &["10.244.1.41"]),
            pod_on("z", 1, &["10.244.1.42"]),
        ],
        ALLOW_X,
    );
    let (x, y, z) = (lab.v4("x").into(), lab.v4("y").into(), lab.v4("z").into());
    let at_y = lab.capture("y");
    let (from_x, from_z) = (lab.port("x"), lab.port("z"));

    // Control: x's SYN reaches y.
    let m = marker("tcp-control");
    from_x.send(&tcp_packet(x, y, 42_000, 80, SYN, &m));
    at_y.assert_some(&m, LIVE, "x -> y:80 SYN (admitted)");

    // z's segments without a SYN, each a first packet of its tuple.
    for (name, flags) in [
        ("ACK", ACK),
        ("PSH|ACK", PSH | ACK),
        ("FIN", FIN),
        ("FIN|ACK", FIN | ACK),
        ("RST", RST),
        ("RST|ACK", RST | ACK),
    ] {
        let m = marker(&format!("tcp-z-{name}"));
        from_z.send(&tcp_packet(z, y, 42_100 + u16::from(flags), 80, flags, &m));
        breaches.check(&at_y, &m, &format!("z's {name} without a SYN reached y:80"));
    }

    // x opens a tuple and closes it with a RST; then policy stops admitting x.
    let m = marker("tcp-tuple-open");
    from_x.send(&tcp_packet(x, y, 42_500, 80, SYN, &m));
    at_y.assert_some(&m, LIVE, "x -> y:80 SYN from port 42500 (admitted)");
    let m = marker("tcp-tuple-rst");
    from_x.send(&tcp_packet(x, y, 42_500, 80, RST | ACK, &m));
    at_y.assert_some(&m, LIVE, "x's RST closing its tuple");
    lab.apply(DENY_X);
    // Control after the change: a fresh tuple from x is denied, so the change is in force.
    let m = marker("tcp-after-change-fresh");
    from_x.send(&tcp_packet(x, y, 42_501, 80, SYN, &m));
    breaches.check(&at_y, &m, "x's SYN on a fresh tuple after x was denied");
    let m = marker("tcp-after-change-old");
    from_x.send(&tcp_packet(x, y, 42_500, 80, SYN, &m));
    breaches.check(
        &at_y,
        &m,
        "x's new SYN on the tuple it closed before policy denied it reached y:80",
    );
    breaches.assert_none();
}
