//! Item 6: fragments. A reply to an admitted request may come fragmented, and every fragment
//! of it must arrive; a fragment whose first fragment was never seen, and every odd shape of
//! IPv4 header, from a denied pod must not.

use std::net::IpAddr;

use palisade_integration::wire::{MF, UDP, V4, contains, udp, udp_packet};

use super::*;

/// `c` admits nothing (replies to its own requests only); `s` is its server, `z` anyone.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-default-deny, namespace: x}
spec:
  podSelector: {matchLabels: {app: c}}
  policyTypes: [Ingress]
"#;

const C_PORT: u16 = 43_000;
const S_PORT: u16 = 7_000;

/// A UDP payload of `len` bytes with `markers[i]` at L4 offset `16 + i * size`, so each
/// fragment of `size` bytes carries its own.
fn marked_payload(len: usize, size: usize, markers: &[Vec<u8>]) -> Vec<u8> {
    let mut p = vec![b'.'; len];
    for (i, m) in markers.iter().enumerate() {
        let at = i * size + 8;
        p[at..at + m.len()].copy_from_slice(m);
    }
    p
}

#[test]
fn a_fragmented_reply_arrives_whole_and_orphan_and_odd_fragments_do_not() {
    let mut breaches = Breaches::default();
    let lab = Lab::new(
        1,
        &[
            pod_on("c", 1, &["10.244.1.60"]),
            pod_on("s", 1, &["10.244.1.61"]),
            pod_on("z", 1, &["10.244.1.62"]),
        ],
        POLICIES,
    );
    let (c, s, z) = (lab.v4("c"), lab.v4("s"), lab.v4("z"));
    let (at_c, at_s) = (lab.capture("c"), lab.capture("s"));
    let (from_c, from_s, from_z) = (lab.port("c"), lab.port("s"), lab.port("z"));

    // c's request (tracked), and an unfragmented reply: the path to c is live.
    let m = marker("frag-request");
    from_c.send(&udp_packet(c.into(), s.into(), C_PORT, S_PORT, &m));
    at_s.assert_some(&m, LIVE, "c's request to s");
    let m = marker("frag-reply-whole");
    from_s.send(&udp_packet(s.into(), c.into(), S_PORT, C_PORT, &m));
    at_c.assert_some(&m, LIVE, "s's unfragmented reply to c");

    let (s_ip, c_ip): (IpAddr, IpAddr) = (s.into(), c.into());
    let orphan = |from: std::net::Ipv4Addr, id: u16, m: &[u8]| {
        let mut payload = m.to_vec();
        payload.resize(800, b'.');
        V4 {
            id,
            frag: MF | 100,
            ..V4::new(from, c, UDP)
        }
        .packet(&payload)
    };

    // The reply, fragmented: three fragments of 1000 bytes, each with its own marker.
    let markers: Vec<Vec<u8>> = (0..3).map(|i| marker(&format!("frag-part-{i}"))).collect();
    let reply = udp(
        s_ip,
        c_ip,
        S_PORT,
        C_PORT,
        &marked_payload(2992, 1000, &markers),
    );
    let header = V4 {
        id: 0x4a11,
        ..V4::new(s, c, UDP)
    };
    for fragment in header.fragments(&reply, 1000) {
        from_s.send(&fragment);
    }
    let arrived: Vec<bool> = {
        // Every part's marker starts so (`marker` ends with the process id).
        let frames = at_c.all_with(b"PALISADE-ADV:frag-part-", LIVE);
        markers
            .iter()
            .map(|m| frames.iter().any(|f| contains(f, m)))
            .collect()
    };

    // Orphans: a non-first fragment, its first never sent, from the allowed peer and from z.
    for (who, from) in [("s (the tracked peer)", s), ("z (denied)", z)] {
        let m = marker(&format!("frag-orphan-{from}"));
        let port = if from == s { &from_s } else { &from_z };
        port.send(&orphan(from, 0x4b00 + u16::from(from.octets()[3]), &m));
        breaches.check(
            &at_c,
            &m,
            &format!("a non-first fragment without its first, from {who}"),
        );
    }

    // Held shapes from z, which c's policy denies, each with an IP identification of its own
    // (the largest offset leaves room for no marker; the identification tells them apart).
    let datagram = |tag: &str| {
        let mut payload = marker(tag);
        payload.resize(64, b'.');
        udp(z.into(), c_ip, 44_000, 9, &payload)
    };
    let tiny = datagram("held-tiny");
    let mut ihl15 = vec![1; 39];
    ihl15.push(0);
    let inner = V4::new(s, c, UDP).packet(&datagram("held-ipip"));
    let mut proto253 = marker("held-proto253");
    proto253.resize(64, b'.');
    let held: Vec<(&str, V4, Vec<u8>)> = vec![
        (
            "a first fragment",
            V4 {
                frag: MF,
                ..V4::new(z, c, UDP)
            },
            datagram("held-first"),
        ),
        (
            "a middle fragment",
            V4 {
                frag: MF | 50,
                ..V4::new(z, c, UDP)
            },
            datagram("held-mid"),
        ),
        (
            "a last fragment",
            V4 {
                frag: 50,
                ..V4::new(z, c, UDP)
            },
            datagram("held-last"),
        ),
        (
            "a tiny first fragment (8 bytes)",
            V4 {
                frag: MF,
                ..V4::new(z, c, UDP)
            },
            tiny[..8].to_vec(),
        ),
        (
            "the tiny fragment's rest",
            V4 {
                frag: 1,
                ..V4::new(z, c, UDP)
            },
            tiny[8..].to_vec(),
        ),
        (
            "IP options (4 NOPs)",
            V4 {
                options: vec![1; 4],
                ..V4::new(z, c, UDP)
            },
            datagram("held-opt"),
        ),
        (
            "IHL 15",
            V4 {
                options: ihl15,
                ..V4::new(z, c, UDP)
            },
            datagram("held-ihl15"),
        ),
        ("protocol 253", V4::new(z, c, 253), proto253),
        ("IP-in-IP carrying s's address", V4::new(z, c, 4), inner),
        (
            "padding past the total length",
            V4 {
                total_len: Some(28),
                ..V4::new(z, c, UDP)
            },
            datagram("held-pad"),
        ),
        (
            "the largest fragment offset",
            V4 {
                frag: 0x1fff,
                ..V4::new(z, c, UDP)
            },
            vec![b'!'; 7],
        ),
    ];
    let ids: Vec<u16> = (0..held.len())
        .map(|i| 0x6000 + u16::try_from(i).unwrap())
        .collect();
    for ((_, header, payload), id) in held.iter().zip(&ids) {
        from_z.send(
            &V4 {
                id: *id,
                ..header.clone()
            }
            .packet(payload),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + QUIET;
    while let Some(frame) = at_c.wait_for(
        deadline.saturating_duration_since(std::time::Instant::now()),
        |f| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[26..30] == z.octets(),
    ) {
        seen.insert(u16::from_be_bytes([frame[18], frame[19]]));
    }
    let through: Vec<&str> = held
        .iter()
        .zip(&ids)
        .filter(|(_, id)| seen.contains(id))
        .map(|((shape, ..), _)| *shape)
        .collect();
    for shape in through {
        breaches.push(format!("{shape} from z (denied by c's policy) reached c"));
    }
    if arrived != [true, true, true] {
        breaches.push(format!(
            "wrong drop: of the fragments (first, middle, last) of s's reply to c's tracked \
             request, these arrived: {arrived:?}"
        ));
    }
    breaches.assert_none();
}
