//! Packet parsing: Ethernet, IPv4 or IPv6, and the first four bytes of TCP, UDP or SCTP (their
//! ports sit at the same offsets). Reads go through `bpf_skb_load_bytes`, so a short packet is an
//! error, never an out-of-bounds read.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    Addr, DropReason, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const IPV6_HLEN: usize = 40;

/// What a verdict needs from one packet.
pub(crate) struct Packet {
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    /// Host byte order; 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
    /// A non-first fragment: no L4 header, so no ports to judge.
    pub fragment: bool,
    /// IPv6 with extension headers, which this version does not walk.
    pub ext_headers: bool,
    /// ICMPv6 neighbour discovery (types 133-137), which always passes.
    pub neighbour_discovery: bool,
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, DropReason> {
    ctx.load::<T>(offset).map_err(|_| DropReason::Malformed)
}

/// `Ok(None)` for packets that are not IP (ARP and friends pass untouched).
#[inline(always)]
pub(crate) fn parse(ctx: &TcContext) -> Result<Option<Packet>, DropReason> {
    let ethertype = u16::from_be(load::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => parse_v4(ctx).map(Some),
        ETH_P_IPV6 => parse_v6(ctx).map(Some),
        _ => Ok(None),
    }
}

#[inline(always)]
fn parse_v4(ctx: &TcContext) -> Result<Packet, DropReason> {
    let version_ihl = load::<u8>(ctx, ETH_HLEN)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Err(DropReason::Malformed);
    }
    let frag = u16::from_be(load::<u16>(ctx, ETH_HLEN + 6)?);
    let protocol = load::<u8>(ctx, ETH_HLEN + 9)?;
    let src = Addr::from_v4(load::<[u8; 4]>(ctx, ETH_HLEN + 12)?);
    let dst = Addr::from_v4(load::<[u8; 4]>(ctx, ETH_HLEN + 16)?);
    let mut packet = Packet {
        src,
        dst,
        protocol,
        sport: 0,
        dport: 0,
        fragment: frag & 0x1fff != 0,
        ext_headers: false,
        neighbour_discovery: false,
    };
    if !packet.fragment {
        read_l4(ctx, ETH_HLEN + ihl, &mut packet)?;
    }
    Ok(packet)
}

#[inline(always)]
fn parse_v6(ctx: &TcContext) -> Result<Packet, DropReason> {
    let version = load::<u8>(ctx, ETH_HLEN)? >> 4;
    if version != 6 {
        return Err(DropReason::Malformed);
    }
    let next = load::<u8>(ctx, ETH_HLEN + 6)?;
    let src = Addr::from_v6(load::<[u8; 16]>(ctx, ETH_HLEN + 8)?);
    let dst = Addr::from_v6(load::<[u8; 16]>(ctx, ETH_HLEN + 24)?);
    let mut packet = Packet {
        src,
        dst,
        protocol: next,
        sport: 0,
        dport: 0,
        fragment: false,
        ext_headers: false,
        neighbour_discovery: false,
    };
    match next {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_ICMPV6 => {
            read_l4(ctx, ETH_HLEN + IPV6_HLEN, &mut packet)?;
        }
        // Hop-by-hop, routing, fragment, destination options, AH, ESP, mobility: not walked.
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 => packet.ext_headers = true,
        _ => {}
    }
    Ok(packet)
}

#[inline(always)]
fn read_l4(ctx: &TcContext, offset: usize, packet: &mut Packet) -> Result<(), DropReason> {
    match packet.protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let ports = load::<[u8; 4]>(ctx, offset)?;
            packet.sport = u16::from_be_bytes([ports[0], ports[1]]);
            packet.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let header = load::<[u8; 8]>(ctx, offset)?;
            let icmp_type = header[0];
            if packet.protocol == PROTO_ICMPV6 && (133..=137).contains(&icmp_type) {
                packet.neighbour_discovery = true;
            }
            // Echo request/reply (v4: 8/0, v6: 128/129): the identifier stands in for both
            // ports, so the reply finds the request's conntrack entry.
            let echo = matches!(
                (packet.protocol, icmp_type),
                (PROTO_ICMP, 0 | 8) | (PROTO_ICMPV6, 128 | 129)
            );
            if echo {
                let id = u16::from_be_bytes([header[4], header[5]]);
                packet.sport = id;
                packet.dport = id;
            }
        }
        _ => {}
    }
    Ok(())
}
