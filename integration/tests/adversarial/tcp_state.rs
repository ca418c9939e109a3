//! Item 4: TCP flag games. Only a SYN opens a flow: an ACK, FIN or RST of no tracked flow is
//! judged as new and dropped when policy denies it. And a tuple closed before a policy change
//! denied its source opens nothing when a SYN arrives on it again.

use std::time::Duration;

use palisade_integration::wire::{ACK, FIN, PSH, RST, SYN, tcp_packet, udp_packet};

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

/// `y` admits `x` on UDP 53.
const ALLOW_X_UDP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-udp, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  ingress: [{from: [{podSelector: {matchLabels: {app: x}}}], ports: [{protocol: UDP, port: 53}]}]
"#;

/// The same policy, now admitting nobody x is.
const DENY_X_UDP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-udp, namespace: x}
spec:
  podSelector: {matchLabels: {app: y}}
  ingress: [{from: [{podSelector: {matchLabels: {app: nobody}}}], ports: [{protocol: UDP, port: 53}]}]
"#;

#[test]
fn an_idle_udp_flow_expires_and_its_old_port_is_judged_again_after_a_policy_change() {
    let mut breaches = Breaches::default();
    let mut lab = Lab::with_settings(
        1,
        &[
            pod_on("x", 1, &["10.244.1.45"]),
            pod_on("y", 1, &["10.244.1.46"]),
        ],
        ALLOW_X_UDP,
        FlowSettings::default(),
        ConntrackSettings {
            other: Duration::from_secs(2),
            ..ConntrackSettings::default()
        },
    );
    let (x, y) = (lab.v4("x").into(), lab.v4("y").into());
    let at_y = lab.capture("y");
    let from_x = lab.port("x");
    let m = marker("udp-before");
    from_x.send(&udp_packet(x, y, 43_000, 53, &m));
    at_y.assert_some(&m, LIVE, "x -> y:53 before the change (admitted)");
    lab.apply(DENY_X_UDP);
    // Still within the timeout, the established flow is kept (`--established keep`) ...
    let m = marker("udp-kept");
    from_x.send(&udp_packet(x, y, 43_000, 53, &m));
    at_y.assert_some(
        &m,
        LIVE,
        "x -> y:53 on the tracked flow, within its timeout (kept)",
    );
    // ... and once idle past it, the same port opens nothing.
    std::thread::sleep(Duration::from_millis(3_200));
    let m = marker("udp-after-timeout");
    from_x.send(&udp_packet(x, y, 43_000, 53, &m));
    breaches.check(
        &at_y,
        &m,
        "x's old UDP port after the change and the idle timeout",
    );
    breaches.assert_none();
}
