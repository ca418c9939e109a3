//! What enters the node from outside (TC ingress of the node's other interfaces): the pod hooks
//! name a sender by its source address, so an address that cannot have come from outside must
//! not come in. A packet arriving on an uplink is dropped ([`DropReason::SpoofedFromUplink`])
//! when its source is
//!
//! - an address of a pod on this node ([`LOCAL_ADDRS`]): that pod's packets leave it through its
//!   own veth, never through an uplink;
//! - an address of the node itself ([`IDENTITY_HOST`] in [`POD_IDS`]), which step 6 of the
//!   precedence admits to every pod;
//! - in strict mode ([`CFG_STRICT_UPLINK`]), the address of a pod elsewhere in the cluster that
//!   the node's route back does not reach through this interface (a reverse-path check through
//!   `bpf_fib_lookup`, as `rp_filter=1` would make, but for pod addresses only).
//!
//! Anything else passes untouched: which remote pod sent a packet is the fabric's word (see
//! `SECURITY.md`), as it is for Calico and Cilium's native routing.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LOOKUP_SKIP_NEIGH, bpf_fib_lookup},
    helpers::bpf_fib_lookup as fib_lookup,
    programs::TcContext,
};
use palisade_common::{
    Addr, CFG_STRICT_UPLINK, DIR_INGRESS, DropReason, FLOW_DENIED, IDENTITY_FIRST_POD,
    IDENTITY_HOST, NO_CLASS, SCRATCH_MAIN,
};

use crate::{
    action::{DROP, PASS},
    events::{Owed, flush, owe},
    maps::{FLOW_CONFIG, LOCAL_ADDRS, POD_IDS, bump},
    parse::{packet_slot, parse_into},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[inline(always)]
pub(crate) fn from_uplink(ctx: &TcContext) -> i32 {
    // Not IP, or not parsable: not a pod's address, and the pod hooks judge it on delivery.
    let Some(packet) = packet_slot() else {
        return PASS;
    };
    if parse_into(ctx, packet, DIR_INGRESS) != Ok(true) {
        return PASS;
    }
    let packet = &*packet;
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Each lookup only when the one before did not decide: most packets from outside miss
    // both maps, and only a remote pod's address reads the strict-mode flag.
    // SAFETY: plain-data values.
    let spoofed = unsafe { LOCAL_ADDRS.get(&packet.src) }.is_some() || {
        // SAFETY: plain-data values.
        let identity = unsafe { POD_IDS.get(&packet.src) }.map_or(0, |v| v.identity);
        identity == IDENTITY_HOST
            || (identity >= IDENTITY_FIRST_POD
                && FLOW_CONFIG
                    .get(0)
                    .is_some_and(|config| config.flags & CFG_STRICT_UPLINK != 0)
                && !routed_back(ctx, &packet.src, &packet.dst, ifindex))
    };
    if !spoofed {
        return PASS;
    }
    let reason = DropReason::SpoofedFromUplink;
    owe(
        SCRATCH_MAIN,
        packet,
        Owed::new(ifindex, DIR_INGRESS, FLOW_DENIED, reason as u8, NO_CLASS),
    );
    bump(reason.stat_index());
    flush();
    DROP
}

/// Whether the node's route to `src` (from `dst`) leaves through `ifindex`.
#[inline(never)]
fn routed_back(ctx: &TcContext, src: &Addr, dst: &Addr, ifindex: u32) -> bool {
    // SAFETY: a plain C struct; all zero is a valid start.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.ifindex = ifindex;
    if src.is_v4() {
        params.family = AF_INET;
        params.__bindgen_anon_4.ipv4_dst = src.words[3];
        params.__bindgen_anon_3.ipv4_src = dst.words[3];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_4.ipv6_dst = src.words;
        params.__bindgen_anon_3.ipv6_src = dst.words;
    }
    // SAFETY: `params` is a live, fully initialised struct of the size passed.
    let ret = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    (ret == 0 || ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH)) && params.ifindex == ifindex
}
