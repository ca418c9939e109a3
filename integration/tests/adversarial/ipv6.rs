//! Item 7: IPv6. A TCP segment behind a chain of extension headers is still the denied peer's
//! TCP; an IPv4-mapped IPv6 source is not the IPv4 pod it names; and neighbour discovery passes
//! only as neighbour discovery, never as a way past policy or onto another pod's traffic.

use std::net::{IpAddr, Ipv6Addr};

use palisade_integration::wire::{ICMPV6, SYN, TCP, icmp6, ipv6, tcp, tcp_packet, udp_packet};

use super::*;

/// `t` admits `a` on TCP 80 and the external host on TCP 81; `z` is denied.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: t-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {app: t}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: 80}]
  - from: [{ipBlock: {cidr: 2001:db8::70/128}}]
    ports: [{port: 81}]
"#;

/// Neighbour advertisement (136) or solicitation (135) for `target`, with a source link-layer
/// option and an unknown option carrying `m`; hop limit 255, as ND requires.
fn nd(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    target: Ipv6Addr,
    mac: [u8; 6],
    m: &[u8],
) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend([if icmp_type == 136 { 2 } else { 1 }, 1]);
    body.extend(mac);
    let units = (2 + m.len()).div_ceil(8);
    body.extend([250, u8::try_from(units).unwrap()]);
    body.extend(m);
    body.resize(16 + 8 + units * 8, 0);
    let flags = if icmp_type == 136 {
        [0x20, 0, 0, 0]
    } else {
        [0; 4]
    };
    let mut p = ipv6(
        src,
        dst,
        ICMPV6,
        &icmp6(src, dst, icmp_type, 0, flags, &body),
    );
    p[7] = 255;
    p
}

#[test]
fn ipv6_extension_chains_mapped_sources_and_neighbour_discovery_stay_within_policy() {
    let mut breaches = Breaches::default();
    let lab = Lab::new(
        1,
        &[
            pod_on("t", 1, &["10.244.1.70", "fd00:10:244:1::70"]),
            pod_on("a", 1, &["10.244.1.71", "fd00:10:244:1::71"]),
            pod_on("z", 1, &["10.244.1.72", "fd00:10:244:1::72"]),
            external_on("ext", 1, &["2001:db8::70"]),
        ],
        POLICIES,
    );
    let (t, a, z) = (lab.v6("t"), lab.v6("a"), lab.v6("z"));
    let (at_t, at_a, at_z) = (lab.capture("t"), lab.capture("a"), lab.capture("z"));
    let (from_a, from_z, from_ext) = (lab.port("a"), lab.port("z"), lab.port("ext"));

    // Controls: a's plain SYN to t:80 and the external host's to t:81 arrive.
    let m = marker("v6-control-a");
    from_a.send(&tcp_packet(a.into(), t.into(), 45_000, 80, SYN, &m));
    at_t.assert_some(&m, LIVE, "a -> t:80 over IPv6 (admitted)");
    let m = marker("v6-control-ext");
    from_ext.send(&tcp_packet(
        lab.v6("ext").into(),
        t.into(),
        45_001,
        81,
        SYN,
        &m,
    ));
    at_t.assert_some(&m, LIVE, "external host -> t:81 over IPv6 (admitted)");

    // z's SYN behind hop-by-hop, destination options and a (whole) fragment header.
    let m = marker("v6-chain");
    let segment = tcp(z.into(), t.into(), 45_002, 80, SYN, 1000, 0, &m);
    let mut chain = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop: next dest-opts, PadN
    chain.extend([44, 0, 1, 4, 0, 0, 0, 0]); // destination options: next fragment, PadN
    chain.extend([TCP, 0, 0, 0, 0, 0, 0x51, 0x51]); // fragment: offset 0, last, id
    chain.extend(&segment);
    from_z.send(&ipv6(z, t, 0, &chain));
    breaches.check(
        &at_t,
        &m,
        "z's SYN behind an extension header chain reached t:80",
    );

    // IPv4-mapped forms of a's IPv4 address as IPv6 sources, from z and from outside the node.
    let mapped: Ipv6Addr = lab.v4("a").to_ipv6_mapped();
    for (who, port) in [("z", &from_z), ("the external host", &from_ext)] {
        let m = marker(&format!("v6-mapped-{who}"));
        port.send(&tcp_packet(mapped.into(), t.into(), 45_003, 80, SYN, &m));
        port.send(&udp_packet(mapped.into(), t.into(), 45_003, 80, &m));
        breaches.check(
            &at_t,
            &m,
            &format!("{who} sent from {mapped} (a's IPv4 address, mapped) and reached t:80"),
        );
    }

    // ND: z advertises a's address to the node and to all nodes, solicits for it, and sends
    // a router advertisement; then sends ND addressed to t's own address (forwarded, so no
    // longer link-local ND): none of it reaches t, and traffic to a still goes to a.
    let z_ll: Ipv6Addr = "fe80::72".parse().unwrap();
    let node_ll: Ipv6Addr = palisade_lab::topology::GATEWAY_V6;
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let m = marker("v6-nd-spoof");
    for (src, dst) in [(z_ll, node_ll), (z, node_ll), (z_ll, all_nodes)] {
        from_z.send(&nd(src, dst, 136, a, from_z.mac, &m));
        from_z.send(&nd(src, dst, 135, a, from_z.mac, &m));
    }
    // Router advertisement: hop limit 64, lifetime 1800 s; reachable and retransmit timers
    // zero; z's link-layer address.
    let mut ra = vec![0; 8];
    ra.extend([1, 1]);
    ra.extend(from_z.mac);
    let ra = icmp6(z_ll, all_nodes, 134, 0, [64, 0, 0x07, 0x08], &ra);
    let mut ra_packet = ipv6(z_ll, all_nodes, ICMPV6, &ra);
    ra_packet[7] = 255;
    from_z.send(&ra_packet);
    for icmp_type in [135, 136] {
        let m = marker(&format!("v6-nd-to-t-{icmp_type}"));
        from_z.send(&nd(z, t, icmp_type, a, from_z.mac, &m));
        breaches.check(
            &at_t,
            &m,
            &format!("z's ND type {icmp_type} addressed to t reached t"),
        );
    }
    let m = marker("v6-nd-after");
    from_z.send(&tcp_packet(z.into(), t.into(), 45_004, 80, SYN, &m));
    breaches.check(&at_t, &m, "z's SYN to t:80 after its ND spoofing");
    // Traffic to a still reaches a, not z.
    let m = marker("v6-to-a");
    lab.port("t")
        .send(&udp_packet(IpAddr::V6(t), a.into(), 45_005, 9, &m));
    at_a.assert_some(&m, LIVE, "t -> a after z advertised a's address");
    breaches.check(
        &at_z,
        &m,
        "z's neighbour advertisement for a's address redirected t's traffic to a",
    );
    breaches.assert_none();
}
