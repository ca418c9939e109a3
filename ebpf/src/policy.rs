//! The endpoint's policy as the programs read it: step 3 of the precedence in
//! `palisade_common::precedence` (a pod sends only from its own addresses), and steps 6-9,
//! which are `palisade_common::precedence::admit` over the kernel's maps ([`KernelMaps`]), the
//! same function the agent runs over its compiled state and over the live maps. Whether a flow
//! needs judging at all (conntrack, isolation, Services) is the verdict's business.

use core::convert::Infallible;

use aya_ebpf::maps::lpm_trie::Key;
use palisade_common::{
    Addr, Admission, ClassMask, EndpointInfo, PORT_KEY_FIXED_BITS, PeerKey, PolicyMaps, PortKey,
    admit,
};

use crate::{
    maps::{CIDRS, LOCAL_ADDRS, PEERS, POD_IDS, PORTS},
    parse::Packet,
};

/// The programs' maps, as steps 6-9 read them. A lookup in the kernel cannot fail, only miss.
struct KernelMaps;

impl PolicyMaps for KernelMaps {
    type Error = Infallible;

    #[inline(always)]
    fn pod_identity(&self, addr: &Addr) -> Result<Option<u32>, Infallible> {
        // SAFETY: plain-data values.
        Ok(unsafe { POD_IDS.get(addr) }.map(|value| value.identity))
    }

    #[inline(always)]
    fn cidr_identity(&self, addr: &Addr) -> Result<Option<u32>, Infallible> {
        // A lookup in an LPM trie is a longest-prefix match.
        Ok(CIDRS.get(Key::new(128, *addr)).map(|value| value.identity))
    }

    #[inline(always)]
    fn peer_classes(&self, key: &PeerKey) -> Result<ClassMask, Infallible> {
        // SAFETY: plain-data values.
        Ok(unsafe { PEERS.get(key) }.copied().unwrap_or(0))
    }

    #[inline(always)]
    fn port_classes(&self, key: &PortKey) -> Result<ClassMask, Infallible> {
        let key = Key::new(PORT_KEY_FIXED_BITS + 16, *key);
        Ok(PORTS.get(key).copied().unwrap_or(0))
    }
}

/// Steps 6-9 for a new flow of `packet` at the judged `endpoint`, `peer` being its source on
/// ingress and its destination on egress.
///
/// The trait's `Result<_, Infallible>` costs nothing here: it has the layout of its `Ok` value
/// and every `?` in [`admit`] is dead code, so once inlined LLVM sees the lookups the verdict
/// made by hand before, and the frame stays where it was (when this was written, 488 bytes
/// for `try_judge` where the hand-written lookups took 496; the verifier accepts it). Should
/// it ever matter, the fallback is a plain integer answer, as `try_judge` gives.
#[inline(always)]
pub(crate) fn judge_policy(
    endpoint: &EndpointInfo,
    direction: u8,
    peer: &Addr,
    packet: &Packet,
) -> Admission {
    let Ok(admission) = admit(
        &KernelMaps,
        endpoint,
        direction,
        peer,
        packet.protocol,
        packet.dport,
    );
    admission
}

/// Step 3: a pod sends only from its own addresses, or from an IPv6 link-local one (never
/// routed off the veth).
#[inline(always)]
pub(crate) fn own_source(src: &Addr, ifindex: u32) -> bool {
    let [b0, b1] = src.prefix16();
    let link_local = b0 == 0xfe && b1 & 0xc0 == 0x80;
    // SAFETY: plain-data values.
    link_local || unsafe { LOCAL_ADDRS.get(src) }.is_some_and(|owner| *owner == ifindex)
}
