//! The verdict: conntrack first, then the endpoint's policy, in the precedence documented in
//! `palisade_common`. Returns TC action codes; under TCX, `TC_ACT_UNSPEC` hands the packet to the
//! next program (another CNI's) rather than forcing a pass.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use palisade_common::{
    Addr, CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, DropReason, EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED, EndpointInfo, IDENTITY_HOST, PORT_KEY_FIXED_BITS, PROTO_SCTP, PROTO_TCP,
    PROTO_UDP, PeerKey, PortKey, Stat,
};

use crate::{
    maps::{CIDRS, CT, ENDPOINTS, PEERS, POD_IDS, PORTS, bump},
    parse::{Packet, parse},
};

const PASS: i32 = TC_ACT_UNSPEC;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
pub(crate) fn judge(ctx: &TcContext, direction: u8) -> i32 {
    match try_judge(ctx, direction) {
        Ok(action) => action,
        Err(reason) => {
            bump(reason.stat_index());
            DROP
        }
    }
}

#[inline(always)]
fn try_judge(ctx: &TcContext, direction: u8) -> Result<i32, DropReason> {
    let Some(packet) = parse(ctx)? else {
        bump(Stat::NotIp as u32);
        return Ok(PASS);
    };
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: endpoint values are plain data; a concurrent update can only swap whole values.
    let endpoint: EndpointInfo =
        *unsafe { ENDPOINTS.get(&ifindex) }.ok_or(DropReason::NoEndpoint)?;
    if packet.neighbour_discovery {
        return Ok(PASS);
    }

    let forward = CtKey {
        saddr: packet.src,
        daddr: packet.dst,
        sport: packet.sport,
        dport: packet.dport,
        protocol: packet.protocol,
        direction,
        _pad: [0; 2],
    };
    let reply = CtKey {
        saddr: packet.dst,
        daddr: packet.src,
        sport: packet.dport,
        dport: packet.sport,
        protocol: packet.protocol,
        direction: direction ^ 1,
        _pad: [0; 2],
    };
    if CT.get_ptr(&forward).is_some() || CT.get_ptr(&reply).is_some() {
        bump(Stat::CtHit as u32);
        return Ok(PASS);
    }

    let (isolated_flag, policy_drop, peer) = if direction == DIR_INGRESS {
        (EP_INGRESS_ISOLATED, DropReason::PolicyIngress, packet.src)
    } else {
        (EP_EGRESS_ISOLATED, DropReason::PolicyEgress, packet.dst)
    };
    if endpoint.flags & isolated_flag != 0 {
        if packet.fragment {
            return Err(DropReason::Fragment);
        }
        if packet.ext_headers {
            return Err(DropReason::Ipv6ExtensionHeader);
        }
        if !allowed(&endpoint, direction, &peer, &packet) {
            return Err(policy_drop);
        }
    } else if packet.fragment {
        // Nothing to track without ports; an open endpoint lets it through.
        return Ok(PASS);
    }

    let entry = CtValue {
        // SAFETY: a helper without arguments.
        created_ns: unsafe { bpf_ktime_get_ns() },
        endpoint: endpoint.id,
        _pad: 0,
    };
    if CT.insert(&forward, &entry, 0).is_err() {
        bump(Stat::CtInsertFailed as u32);
    }
    bump(Stat::NewFlowAllowed as u32);
    Ok(PASS)
}

/// Steps 5-7 of the precedence: the node, then peer classes against port classes.
#[inline(always)]
fn allowed(endpoint: &EndpointInfo, direction: u8, peer: &Addr, packet: &Packet) -> bool {
    let (mut peer_mask, mut port_mask) = if direction == DIR_EGRESS {
        (endpoint.any_peer[1], endpoint.any_port[1])
    } else {
        (endpoint.any_peer[0], endpoint.any_port[0])
    };
    // SAFETY: plain-data values.
    if let Some(identity) = unsafe { POD_IDS.get(peer) } {
        let identity = identity.identity;
        if identity == IDENTITY_HOST && direction == DIR_INGRESS {
            return true;
        }
        let key = PeerKey {
            endpoint: endpoint.id,
            peer: identity,
            direction,
            _pad: [0; 3],
        };
        // SAFETY: plain-data values.
        if let Some(mask) = unsafe { PEERS.get(&key) } {
            peer_mask |= *mask;
        }
    }
    if let Some(cidr) = CIDRS.get(Key::new(128, *peer)) {
        let key = PeerKey {
            endpoint: endpoint.id,
            peer: cidr.identity,
            direction,
            _pad: [0; 3],
        };
        // SAFETY: plain-data values.
        if let Some(mask) = unsafe { PEERS.get(&key) } {
            peer_mask |= *mask;
        }
    }
    if peer_mask == 0 {
        return false;
    }
    if matches!(packet.protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        let key = PortKey {
            endpoint: endpoint.id,
            direction,
            protocol: packet.protocol,
            port_be: packet.dport.to_be_bytes(),
        };
        if let Some(mask) = PORTS.get(Key::new(PORT_KEY_FIXED_BITS + 16, key)) {
            port_mask |= *mask;
        }
    }
    peer_mask & port_mask != 0
}
