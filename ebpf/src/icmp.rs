//! ICMP errors that belong to a tracked flow: a destination unreachable (port unreachable,
//! fragmentation needed for path MTU discovery), time exceeded or parameter problem, and for
//! IPv6 also packet too big, quoting a packet of a flow tracked at this endpoint, passes as part
//! of that flow. Any other ICMP error is judged as plain ICMP by the verdict (and so dropped for
//! an endpoint isolated by rules that all name ports).
//!
//! The error must go back to the quoted packet's sender (and, sent by the pod, come from the
//! address the quoted packet went to), and be no longer than an error can be (576 bytes of
//! IPv4, 1280 of IPv6): otherwise it is judged like any other ICMP.
//!
//! This file parses the error and its quote and checks who sent it; whether the quoted flow is
//! tracked is conntrack's answer ([`crate::conntrack::related`], which calls [`quoted_flow`]).
//!
//! Its own parse: the verdict's frame is near the 512-byte BPF stack limit, and this runs in a
//! frame of its own before the verdict's.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    Addr, CT_KIND_PLAIN, CtKey, DIR_EGRESS, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP,
    PROTO_UDP,
};

use crate::{
    maps::{ENDPOINTS, LOCAL_ADDRS},
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV6_HLEN},
};

/// For an ICMP error about a TCP, UDP or SCTP packet at a known endpoint (and, on egress, sent
/// from the pod's own address): the key of the quoted packet's flow, the quoted packet having
/// gone the other way through this endpoint. `None` sends the packet on to the verdict, which judges it like any
/// packet - malformed, spoofed and unknown-endpoint cases included.
#[inline(always)]
pub(crate) fn quoted_flow(ctx: &TcContext, direction: u8) -> Option<CtKey> {
    let (outer_src, outer_dst, quote, v6) = icmp_error(ctx)?;
    // No more than an error needs: the kernel quotes as much of the packet as fits in the
    // minimum MTU (576 bytes for IPv4, 1280 for IPv6), never more. Anything longer is a packet
    // that merely looks like an error.
    let limit = ETH_HLEN as u32 + if v6 { 1280 } else { 576 };
    if ctx.len() > limit {
        return None;
    }
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain-data values.
    if unsafe { ENDPOINTS.get(&ifindex) }.is_none() {
        return None;
    }
    if direction == DIR_EGRESS {
        // SAFETY: plain-data values.
        let own = unsafe { LOCAL_ADDRS.get(&outer_src) }.is_some_and(|owner| *owner == ifindex);
        if !own {
            return None;
        }
    }
    let quoted = quote_of(ctx, quote, v6)?;
    // An error goes back to whoever sent the quoted packet; sent by the pod, it is about a
    // packet the pod received (so from the pod's own address). Without this, quoting a tracked
    // flow would carry an error, and whatever follows its quote, to any address at all.
    if outer_dst != quoted.src || (direction == DIR_EGRESS && outer_src != quoted.dst) {
        return None;
    }
    Some(CtKey::of(
        quoted.src,
        quoted.dst,
        quoted.sport,
        quoted.dport,
        quoted.protocol,
        CT_KIND_PLAIN,
        direction ^ 1,
        ifindex,
    ))
}

/// The quoted packet's addresses, ports and protocol.
struct Quoted {
    src: Addr,
    dst: Addr,
    sport: u16,
    dport: u16,
    protocol: u8,
}

/// For an ICMP error: its outer source and destination, where the quoted packet starts, and
/// whether it is v6.
#[inline(always)]
fn icmp_error(ctx: &TcContext) -> Option<(Addr, Addr, usize, bool)> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    match ethertype {
        ETH_P_IP => {
            let version_ihl = ctx.load::<u8>(ETH_HLEN).ok()?;
            let ihl = usize::from(version_ihl & 0x0f) * 4;
            let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
            let protocol = ctx.load::<u8>(ETH_HLEN + 9).ok()?;
            if version_ihl >> 4 != 4 || ihl < 20 || frag & 0x1fff != 0 || protocol != PROTO_ICMP {
                return None;
            }
            let icmp_type = ctx.load::<u8>(ETH_HLEN + ihl).ok()?;
            if !matches!(icmp_type, 3 | 11 | 12) {
                return None;
            }
            let src = Addr::from_v4(ctx.load::<[u8; 4]>(ETH_HLEN + 12).ok()?);
            let dst = Addr::from_v4(ctx.load::<[u8; 4]>(ETH_HLEN + 16).ok()?);
            Some((src, dst, ETH_HLEN + ihl + 8, false))
        }
        ETH_P_IPV6 => {
            if ctx.load::<u8>(ETH_HLEN + 6).ok()? != PROTO_ICMPV6 {
                return None;
            }
            let icmp_type = ctx.load::<u8>(ETH_HLEN + IPV6_HLEN).ok()?;
            if !(1..=4).contains(&icmp_type) {
                return None;
            }
            let src = Addr::from_v6(ctx.load::<[u8; 16]>(ETH_HLEN + 8).ok()?);
            let dst = Addr::from_v6(ctx.load::<[u8; 16]>(ETH_HLEN + 24).ok()?);
            Some((src, dst, ETH_HLEN + IPV6_HLEN + 8, true))
        }
        _ => None,
    }
}

/// The quoted packet, for TCP, UDP and SCTP.
#[inline(always)]
fn quote_of(ctx: &TcContext, offset: usize, v6: bool) -> Option<Quoted> {
    let (header, protocol, saddr, daddr) = if v6 {
        let protocol = ctx.load::<u8>(offset + 6).ok()?;
        let src = Addr::from_v6(ctx.load::<[u8; 16]>(offset + 8).ok()?);
        let dst = Addr::from_v6(ctx.load::<[u8; 16]>(offset + 24).ok()?);
        (IPV6_HLEN, protocol, src, dst)
    } else {
        let ihl = usize::from(ctx.load::<u8>(offset).ok()? & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let protocol = ctx.load::<u8>(offset + 9).ok()?;
        let src = Addr::from_v4(ctx.load::<[u8; 4]>(offset + 12).ok()?);
        let dst = Addr::from_v4(ctx.load::<[u8; 4]>(offset + 16).ok()?);
        (ihl, protocol, src, dst)
    };
    if !matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return None;
    }
    let ports = ctx.load::<[u8; 4]>(offset + header).ok()?;
    Some(Quoted {
        src: saddr,
        dst: daddr,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        protocol,
    })
}
