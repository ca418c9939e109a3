//! Later fragments of a datagram carry no ports, so no verdict of their own: they get their
//! datagram's. When a first fragment passes a hook (judged, or as part of a tracked flow),
//! [`remember`] records the datagram (addresses, protocol, identification, and the hook:
//! endpoint and direction); a later fragment passes an isolated endpoint only when
//! [`follows_first`] finds it recorded within [`FRAGMENT_LIFETIME_NS`]. A later fragment
//! whose first fragment did not pass there - never seen, dropped, or too long ago - is dropped.
//!
//! A sender can only reuse an identification of its own datagrams: the key holds the addresses
//! the datagram's first fragment was judged with, so a fragment of another flow between the
//! same two addresses rides on an admitted datagram for at most a second. The receiving kernel
//! reassembles by the same key, so such a fragment can only complete (or corrupt) that
//! admitted datagram, never deliver one of its own.
//!
//! Not inlined: the verdict's frame is near the 512-byte stack limit, and the key is 44 bytes.

use palisade_common::{FRAGMENT_LIFETIME_NS, FragKey, FragValue, Stat};

use crate::{
    maps::{FRAGMENTS, bump},
    parse::{Packet, copied},
};

#[inline(always)]
fn key_of(packet: &Packet, direction: u8, ifindex: u32) -> FragKey {
    FragKey {
        saddr: copied(&packet.src),
        daddr: copied(&packet.dst),
        id: packet.frag_id,
        protocol: packet.protocol,
        direction,
        _pad: [0; 2],
        ifindex,
    }
}

/// Records that `packet`, the first fragment of a datagram, passed this hook.
#[inline(never)]
pub(crate) fn remember(packet: &Packet, direction: u8, ifindex: u32) {
    let key = key_of(packet, direction, ifindex);
    let value = FragValue {
        first_ns: crate::clock::now_ns(),
    };
    // A full map only costs the datagram its later fragments: they are dropped.
    let _ = FRAGMENTS.insert(&key, &value, 0);
}

/// Whether `packet`, a later fragment, belongs to a datagram whose first fragment passed this
/// hook within [`FRAGMENT_LIFETIME_NS`].
#[inline(never)]
pub(crate) fn follows_first(packet: &Packet, direction: u8, ifindex: u32) -> bool {
    let key = key_of(packet, direction, ifindex);
    // SAFETY: plain-data values.
    let Some(first) = (unsafe { FRAGMENTS.get(&key) }).copied() else {
        return false;
    };
    let now = crate::clock::now_ns();
    let fresh = now >= first.first_ns && now - first.first_ns <= FRAGMENT_LIFETIME_NS;
    if fresh {
        bump(Stat::FragmentPassed as u32);
    }
    fresh
}
