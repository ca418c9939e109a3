//! How long idle flows stay tracked, and the sweep that removes those past it.
//!
//! The programs judge by the entry's last-seen time ([`CtValue::expired`]): an expired entry
//! admits nothing, whether or not it is still in the map. The agent writes the timeouts
//! ([`ConntrackSettings`], into `PAL_CT_CONFIG`) and sweeps expired entries out
//! ([`Dataplane::sweep_conntrack`]) so the map holds live flows, not LRU pressure.
//!
//! The programs pass a tracked flow's packets without reading its endpoint (the fast path,
//! `ebpf/src/conntrack.rs`), so the flows of an endpoint the agent switches off are deleted
//! with it ([`Dataplane::forget_flows`], after each sync), and the sweep deletes any left at an
//! interface the endpoint map no longer names (an agent that stopped between the two).

use std::{collections::BTreeSet, time::Duration};

use aya::maps::{Array, HashMap, MapData};
use palisade_common::{
    CtKey, CtTimeouts, CtValue, EndpointInfo, MAP_CONNTRACK, MAP_CT_CONFIG, MAP_ENDPOINTS,
};

use super::{Dataplane, DataplaneError};

/// Idle timeouts by state. Defaults in the order of Cilium's and the kernel's (see
/// [`CtTimeouts::DEFAULT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// A TCP connection opened by a SYN whose reply has not been seen.
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// After a FIN or RST.
    pub tcp_closing: Duration,
    /// UDP, SCTP and other protocols with ports.
    pub other: Duration,
    pub icmp: Duration,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        let d = CtTimeouts::DEFAULT;
        Self {
            tcp_syn: Duration::from_nanos(d.tcp_syn_ns),
            tcp_established: Duration::from_nanos(d.tcp_established_ns),
            tcp_closing: Duration::from_nanos(d.tcp_closing_ns),
            other: Duration::from_nanos(d.other_ns),
            icmp: Duration::from_nanos(d.icmp_ns),
        }
    }
}

impl ConntrackSettings {
    /// As the programs read them. A zero duration would read as the default, so the shortest
    /// is a nanosecond.
    pub fn to_kernel(&self) -> CtTimeouts {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        CtTimeouts {
            tcp_syn_ns: ns(self.tcp_syn),
            tcp_established_ns: ns(self.tcp_established),
            tcp_closing_ns: ns(self.tcp_closing),
            other_ns: ns(self.other),
            icmp_ns: ns(self.icmp),
        }
    }

    /// How often the sweep should run: often enough that the map holds little that is dead,
    /// never more than every second.
    pub fn sweep_interval(&self) -> Duration {
        let shortest = [self.tcp_syn, self.tcp_closing, self.other, self.icmp]
            .into_iter()
            .min()
            .unwrap_or(Duration::from_secs(10));
        shortest.clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// `CLOCK_MONOTONIC`, the clock of the programs' `bpf_ktime_get_coarse_ns` (to within a tick).
fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec()).unwrap_or(0)
}

impl Dataplane {
    /// Writes the idle timeouts the programs expire flows by.
    pub fn set_conntrack(&mut self, settings: &ConntrackSettings) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_CT_CONFIG)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: MAP_CT_CONFIG,
            })?;
        let mut array: Array<_, CtTimeouts> =
            Array::try_from(map).map_err(|source| DataplaneError::Map {
                map: MAP_CT_CONFIG,
                op: "open",
                source,
            })?;
        array
            .set(0, settings.to_kernel(), 0)
            .map_err(|source| DataplaneError::Map {
                map: MAP_CT_CONFIG,
                op: "write",
                source,
            })?;
        self.conntrack = *settings;
        Ok(())
    }

    /// Deletes the tracked flows at the interfaces `ifindexes` (endpoints a sync switched off);
    /// returns how many. O(entries), and nothing to do for a sync that switched none off.
    pub(super) fn forget_flows(&mut self, ifindexes: &[u32]) -> Result<usize, DataplaneError> {
        if ifindexes.is_empty() {
            return Ok(0);
        }
        let mut ct = self.conntrack_map()?;
        let gone: Vec<CtKey> = ct
            .keys()
            .filter_map(Result::ok)
            .filter(|key| ifindexes.contains(&key.ifindex))
            .collect();
        let removed = gone.iter().filter(|k| ct.remove(k).is_ok()).count();
        if removed > 0 {
            tracing::debug!(removed, "flows of switched-off endpoints deleted");
        }
        Ok(removed)
    }

    /// The interfaces the kernel's endpoint map names.
    fn endpoint_interfaces(&self) -> Result<BTreeSet<u32>, DataplaneError> {
        let map = self
            .ebpf
            .map(MAP_ENDPOINTS)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: MAP_ENDPOINTS,
            })?;
        let endpoints: HashMap<_, u32, EndpointInfo> =
            HashMap::try_from(map).map_err(|source| DataplaneError::Map {
                map: MAP_ENDPOINTS,
                op: "open",
                source,
            })?;
        Ok(endpoints.keys().filter_map(Result::ok).collect())
    }

    /// The conntrack map, for the sweep and the re-check of established flows.
    pub(super) fn conntrack_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, CtKey, CtValue>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_CONNTRACK)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: MAP_CONNTRACK,
            })?;
        HashMap::try_from(map).map_err(|source| DataplaneError::Map {
            map: MAP_CONNTRACK,
            op: "open",
            source,
        })
    }

    /// Deletes the conntrack entries idle past their timeout, and those of interfaces without
    /// an endpoint; returns how many. O(entries).
    pub fn sweep_conntrack(&mut self) -> Result<usize, DataplaneError> {
        let timeouts = self.conntrack.to_kernel();
        let endpoints = self.endpoint_interfaces()?;
        let mut ct = self.conntrack_map()?;
        let now = monotonic_ns();
        let expired: Vec<CtKey> = ct
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, value)| {
                value.expired(key.protocol, now, &timeouts) || !endpoints.contains(&key.ifindex)
            })
            .map(|(key, _)| key)
            .collect();
        let removed = expired.iter().filter(|k| ct.remove(k).is_ok()).count();
        if removed > 0 {
            tracing::debug!(removed, "expired conntrack entries swept");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::{
        CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_SYN_SENT, PROTO_TCP, PROTO_UDP,
    };

    fn entry(seen_ns: u64, tcp: u8) -> CtValue {
        CtValue {
            created_ns: 0,
            seen_ns,
            endpoint: 1,
            tcp,
            direction: 0,
            flags: 0,
            _pad: 0,
        }
    }

    #[test]
    fn each_state_expires_after_its_own_timeout() {
        let settings = ConntrackSettings {
            tcp_syn: Duration::from_secs(5),
            tcp_established: Duration::from_secs(100),
            tcp_closing: Duration::from_secs(2),
            other: Duration::from_secs(3),
            icmp: Duration::from_secs(4),
        };
        let t = settings.to_kernel();
        let s = 1_000_000_000;
        let at = 1_000 * s;
        let cases = [
            (PROTO_TCP, CT_TCP_SYN_SENT, 5),
            (PROTO_TCP, CT_TCP_ESTABLISHED, 100),
            (PROTO_TCP, CT_TCP_CLOSING, 2),
            (PROTO_UDP, 0, 3),
            (palisade_common::PROTO_ICMP, 0, 4),
        ];
        for (protocol, tcp, secs) in cases {
            let e = entry(at, tcp);
            assert!(
                !e.expired(protocol, at + secs * s, &t),
                "{protocol}/{tcp} at its timeout"
            );
            assert!(
                e.expired(protocol, at + secs * s + 1, &t),
                "{protocol}/{tcp} past it"
            );
        }
        // Another CPU's fresher write is never an expiry.
        assert!(!entry(at, CT_TCP_CLOSING).expired(PROTO_TCP, at - 1, &t));
    }

    #[test]
    fn unset_timeouts_read_as_the_defaults() {
        let zero = CtTimeouts {
            tcp_syn_ns: 0,
            tcp_established_ns: 0,
            tcp_closing_ns: 0,
            other_ns: 0,
            icmp_ns: 0,
        };
        assert_eq!(zero.lifetime_ns(PROTO_UDP, 0), CtTimeouts::DEFAULT.other_ns);
        assert_eq!(
            ConntrackSettings::default().to_kernel(),
            CtTimeouts::DEFAULT
        );
    }
}
