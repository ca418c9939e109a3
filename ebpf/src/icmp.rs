//! ICMP errors that belong to a tracked flow: a destination unreachable (port unreachable,
//! fragmentation needed for path MTU discovery), time exceeded or parameter problem, and for
//! IPv6 also packet too big, quoting a packet of a flow tracked at this endpoint, passes as part
//! of that flow. Any other ICMP error is judged as plain ICMP by the verdict (and so dropped for
//! an endpoint isolated by rules that all name ports).
//!
//! The quoted packet went the other way through this endpoint: it is found in conntrack under
//! the other direction, as a packet of a tracked flow or as its reply.
//!
//! Its own parse and its own (not inlined) function: the verdict's frame is near the 512-byte
//! BPF stack limit, and BPF-to-BPF calls made one after the other share no frame.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    Addr, CtKey, DIR_EGRESS, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Stat,
};

use crate::{
    maps::{CT, ENDPOINTS, LOCAL_ADDRS, bump},
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV6_HLEN},
};

/// `true` when the packet is an ICMP error quoting a tracked flow of this endpoint (it then
/// passes); `false` sends it on to the verdict, which judges it like any packet - malformed,
/// spoofed and unknown-endpoint cases included.
#[inline(never)]
pub(crate) fn related_to_tracked_flow(ctx: &TcContext, direction: u8) -> bool {
    let Some((outer_src, quote, v6)) = icmp_error(ctx) else {
        return false;
    };
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain-data values.
    if unsafe { ENDPOINTS.get(&ifindex) }.is_none() {
        return false;
    }
    if direction == DIR_EGRESS {
        // SAFETY: plain-data values.
        let own = unsafe { LOCAL_ADDRS.get(&outer_src) }.is_some_and(|owner| *owner == ifindex);
        if !own {
            return false;
        }
    }
    let Some(mut flow) = quoted_flow(ctx, quote, v6) else {
        return false;
    };
    flow.direction = direction ^ 1;
    flow.ifindex = ifindex;
    let mut tracked = CT.get_ptr(&flow).is_some();
    if !tracked {
        core::mem::swap(&mut flow.saddr, &mut flow.daddr);
        core::mem::swap(&mut flow.sport, &mut flow.dport);
        flow.direction ^= 1;
        tracked = CT.get_ptr(&flow).is_some();
    }
    if tracked {
        bump(Stat::CtHit as u32);
    }
    tracked
}

/// For an ICMP error: its outer source, where the quoted packet starts, and whether it is v6.
#[inline(always)]
fn icmp_error(ctx: &TcContext) -> Option<(Addr, usize, bool)> {
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
            Some((src, ETH_HLEN + ihl + 8, false))
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
            Some((src, ETH_HLEN + IPV6_HLEN + 8, true))
        }
        _ => None,
    }
}

/// The quoted packet's flow (direction and ifindex left to the caller), for TCP, UDP and SCTP.
#[inline(always)]
fn quoted_flow(ctx: &TcContext, offset: usize, v6: bool) -> Option<CtKey> {
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
    Some(CtKey {
        saddr,
        daddr,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        protocol,
        direction: 0,
        _pad: [0; 2],
        ifindex: 0,
    })
}
