//! Palisade's TC programs. One hook per direction of a pod's host-side veth, and one per
//! direction on the node's other interfaces: Service traffic leaving the node, and what enters
//! it from outside. The precedence they follow is
//! written down in `palisade_common::precedence`, where the policy lookup is written once for
//! the programs and the agent; the maps are declared in `palisade_common::maps`.
//!
//! One module per concern: [`parse`] reads the packet, [`conntrack`] answers whether it
//! belongs to a tracked flow and tracks new ones, [`fragments`] gives a datagram's later
//! fragments its first fragment's verdict, [`icmp`] finds the flow an ICMP error quotes,
//! [`policy`] runs the endpoint's policy, [`service`] judges Service flows after kube-proxy's
//! translation, [`uplink`] keeps what enters the node from outside from carrying a local
//! source, [`events`] reports verdicts to the agent, [`maps`] declares the maps, and
//! [`verdict`] puts the steps in their order.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod action;
#[cfg(target_arch = "bpf")]
mod clock;
#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod service;
#[cfg(target_arch = "bpf")]
mod uplink;
#[cfg(target_arch = "bpf")]
mod verdict;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::classifier, programs::TcContext};
    use palisade_common::{DIR_EGRESS, DIR_INGRESS};

    use crate::{service::judge_uplink, uplink::from_uplink, verdict::judge};

    /// TC ingress of the host-side veth: what the pod sends, judged by its egress policy.
    #[classifier]
    pub fn palisade_from_pod(ctx: TcContext) -> i32 {
        judge(&ctx, DIR_EGRESS)
    }

    /// TC egress of the host-side veth: what the pod receives, judged by its ingress policy.
    #[classifier]
    pub fn palisade_to_pod(ctx: TcContext) -> i32 {
        judge(&ctx, DIR_INGRESS)
    }

    /// TC egress of the node's other interfaces: Service flows of local pods translated towards
    /// another node, judged by the source's egress policy (see `service::judge_uplink`).
    #[classifier]
    pub fn palisade_uplink(ctx: TcContext) -> i32 {
        judge_uplink(&ctx)
    }

    /// TC ingress of the node's other interfaces: no packet from outside carries a local pod's
    /// or the node's own source address (see `uplink::from_uplink`).
    #[classifier]
    pub fn palisade_from_uplink(ctx: TcContext) -> i32 {
        from_uplink(&ctx)
    }

    /// Does nothing but pass the packet on, as a passing verdict does: the baseline the benchmark
    /// compares the programs' per-packet cost with.
    #[classifier]
    pub fn palisade_empty(_ctx: TcContext) -> i32 {
        aya_ebpf::bindings::TC_ACT_UNSPEC
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
