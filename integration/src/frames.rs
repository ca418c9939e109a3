//! Crafted frames for the test runs. Checksums are left zero: the programs never read them.

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const TCP: u8 = 6;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_FRAGMENT: u8 = 44;
/// IPv4 flags and fragment offset: more fragments.
pub const MF: u16 = 0x2000;

pub fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    f.extend(ethertype.to_be_bytes());
    f
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP SYN header (20 bytes).
pub fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    tcp_header(sport, dport, TCP_SYN)
}

/// A TCP header (20 bytes) with `flags`.
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4; // data offset
    h[13] = flags;
    h
}

/// A TCP segment in IPv4 with `options` (a multiple of 4 bytes) and `frag` (flags and offset).
pub fn ipv4_with(src: [u8; 4], dst: [u8; 4], options: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    ipv4_proto(src, dst, TCP, options, frag, l4)
}

pub fn ipv4_proto(
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    options: &[u8],
    frag: u16,
    l4: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let header_len = 20 + options.len();
    let total = u16::try_from(header_len + l4.len()).expect("small packet");
    let mut f = ethernet(ETH_P_IP);
    f.push(0x40 | u8::try_from(header_len / 4).expect("ihl"));
    f.push(0);
    f.extend(total.to_be_bytes());
    f.extend([0x12, 0x34]); // identification
    f.extend(frag.to_be_bytes());
    f.extend([64, protocol, 0, 0]); // ttl, protocol, checksum
    f.extend(src);
    f.extend(dst);
    f.extend(options);
    f.extend(l4);
    f
}

pub fn syn4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    ipv4_with(src, dst, &[], 0, &tcp_syn(sport, dport))
}

/// A TCP segment of an open connection (ACK): what follows a flow's SYN either way.
pub fn ack4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    ipv4_with(src, dst, &[], 0, &tcp_header(sport, dport, TCP_ACK))
}

/// A TCP segment with `flags`.
pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ipv4_with(src, dst, &[], 0, &tcp_header(sport, dport, flags))
}

/// An IPv6 packet whose first next-header is `next` (hop limit 64).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_hops(src, dst, next, 64, payload)
}

/// [`ipv6`] with hop limit `hops`.
pub fn ipv6_hops(src: [u8; 16], dst: [u8; 16], next: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("small packet");
    let mut f = ethernet(ETH_P_IPV6);
    f.extend([0x60, 0, 0, 0]);
    f.extend(len.to_be_bytes());
    f.extend([next, hops]);
    f.extend(src);
    f.extend(dst);
    f.extend(payload);
    f
}

pub fn syn6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    ipv6(src, dst, TCP, &tcp_syn(sport, dport))
}

pub fn ack6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    ipv6(src, dst, TCP, &tcp_header(sport, dport, TCP_ACK))
}

/// An ICMP echo request (type 8) or reply (type 0) with identifier `id`.
pub fn echo4(src: [u8; 4], dst: [u8; 4], icmp_type: u8, id: u16) -> Vec<u8> {
    let mut icmp = vec![icmp_type, 0, 0, 0];
    icmp.extend(id.to_be_bytes());
    icmp.extend([0, 1]); // sequence
    ipv4_proto(src, dst, ICMP, &[], 0, &icmp)
}

/// An ICMPv6 neighbour solicitation from `src` for `target`, on-link (hop limit 255).
pub fn neighbour_solicitation(src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut solicited_node = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    solicited_node[13..].copy_from_slice(&target[13..]);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend(target);
    ipv6_hops(src, solicited_node, ICMPV6, 255, &icmp)
}

/// An ARP request from `sender` for `target`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = ethernet(ETH_P_ARP);
    f.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend([0x02, 0, 0, 0, 0, 0x02]);
    f.extend(sender);
    f.extend([0; 6]);
    f.extend(target);
    f
}
