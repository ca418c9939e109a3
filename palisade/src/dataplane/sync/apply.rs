//! One sync, in the order the module documentation gives: endpoints that are gone switched off,
//! new rules staged where no packet reads them yet, the shared identities and CIDR classes
//! they name written, each endpoint switched by one value write, and what nobody names any
//! more deleted last.

use std::collections::{BTreeMap, BTreeSet};

use aya::{Ebpf, maps::lpm_trie::Key};
use palisade_common::{Addr, IdentityValue, MAP_CIDRS, MAP_ENDPOINTS, MAP_POD_IDENTITIES};

use super::{
    Deltas, Endpoint, Rules, SyncReport, Written,
    maps::{Maps, map_err},
};
use crate::{
    dataplane::DataplaneError,
    k8s::cluster::ObjectKey,
    policy::{Journal, NodeState},
};

/// What [`Written::stage`] left to switch on.
enum Staged {
    /// A new endpoint, its rules written under `pair`'s first id.
    New {
        key: ObjectKey,
        ifindex: u32,
        pair: u32,
        rules: Rules,
    },
    /// A changed endpoint, its new rules written under its idle id.
    Swap { key: ObjectKey, rules: Rules },
}

impl Written {
    /// Writes `state` for the endpoints whose interface is known (`ifindex`), as described in
    /// the module documentation.
    ///
    /// Failing closed: a write that fails (a full map, most likely) never leaves a pod with
    /// more access than the new state grants. The endpoint it was for is *quarantined*: its
    /// entry is replaced by one that isolates both directions and names
    /// [`NO_RULES`](super::NO_RULES), under which nothing is ever written, so every new
    /// connection of that pod is dropped until a later sync writes its rules whole. Each
    /// failure is returned in [`SyncReport::failures`] for the agent to shout about. Only a map
    /// that cannot be opened at all ends the sync.
    #[tracing::instrument(name = "map_write", skip_all, fields(endpoints = ifindex.len()))]
    pub(in crate::dataplane) fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
        journal: Option<&Journal>,
    ) -> Result<SyncReport, DataplaneError> {
        let mut maps = Maps::open(ebpf)?;
        let mut report = SyncReport::default();
        self.switch_off_stale(&mut maps, state, ifindex, &mut report);
        let staged = self.stage(&mut maps, state, ifindex, journal, &mut report);
        self.write_shared(&mut maps, state, journal, &mut report);
        self.switch(&mut maps, staged, &mut report);
        self.delete_unnamed(&mut maps, state, journal, &mut report);
        for failure in &report.failures {
            tracing::error!(
                failure = %failure,
                "dataplane write failed; the pods concerned are isolated until their rules fit"
            );
        }
        Ok(report)
    }

    /// Endpoints that are gone, or whose pod now has another interface: off first, so their
    /// entries are never read again, then their entries.
    fn switch_off_stale(
        &mut self,
        maps: &mut Maps<'_>,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
        report: &mut SyncReport,
    ) {
        let stale: Vec<ObjectKey> = self
            .endpoints
            .iter()
            .filter(|(key, ep)| {
                !state.endpoints.contains_key(*key) || ifindex.get(*key) != Some(&ep.ifindex)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(ep) = self.endpoints.remove(&key) {
                let _ = maps.endpoints.remove(&ep.ifindex);
                report.switched_off.push(ep.ifindex);
                report.deletes += 1;
                maps.delete_rules(ep.id(), &ep.rules, report);
            }
        }
        let stale: Vec<ObjectKey> = self
            .quarantined
            .iter()
            .filter(|(key, index)| {
                !state.endpoints.contains_key(*key) || ifindex.get(*key) != Some(*index)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(index) = self.quarantined.remove(&key) {
                let _ = maps.endpoints.remove(&index);
                report.switched_off.push(index);
                report.deletes += 1;
            }
        }
    }

    /// New rules, written where no packet reads them yet, or changed in place when they only
    /// add entries or only take bits away (see the module documentation). An endpoint whose rules could not be written is isolated here.
    fn stage(
        &mut self,
        maps: &mut Maps<'_>,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
        journal: Option<&Journal>,
        report: &mut SyncReport,
    ) -> Vec<Staged> {
        let mut staged = Vec::new();
        let mut deltas = Deltas::default();
        for (key, &index) in ifindex {
            let Some(ep) = state.endpoints.get(key) else {
                continue;
            };
            // Written, on this interface, not mid-swap, and not in the journal.
            let unjournaled = journal.is_some_and(|j| !j.endpoints.contains(key));
            if unjournaled
                && (self.endpoints.get(key)).is_some_and(|w| w.ifindex == index && w.idle.is_none())
            {
                continue;
            }
            let rules = Rules::of(ep);
            let written = match self.endpoints.get_mut(key) {
                None => {
                    self.next_pair += 1;
                    let pair = self.next_pair;
                    let written = maps.write_rules(pair * 2, &rules, report);
                    if written.is_err() {
                        maps.delete_rules(pair * 2, &rules, report);
                    } else {
                        staged.push(Staged::New {
                            key: key.clone(),
                            ifindex: index,
                            pair,
                            rules,
                        });
                    }
                    written
                }
                Some(ep) => {
                    let change = deltas.change(&ep.rules, &rules);
                    if change.none() && ep.rules.same_info(&rules) {
                        // Equal: keep the new allocations, so that the next sync compares
                        // pointers.
                        ep.rules = rules;
                        Ok(())
                    } else if change.only_adds(&ep.rules, &rules) {
                        let id = ep.id();
                        let written = maps.write_change(id, &change, report);
                        if written.is_ok() {
                            ep.rules = rules;
                        } else {
                            // Some additions are in, untracked: quarantine, then clear them
                            // all.
                            self.quarantine(maps, key, report);
                            maps.delete_rules(id, &rules, report);
                        }
                        written
                    } else if change.only_removes(&ep.rules, &rules) {
                        let (id, ifindex) = (ep.id(), ep.ifindex);
                        let info_changed = rules.info(id) != ep.rules.info(id);
                        let mut written = maps.write_change(id, &change, report);
                        if written.is_ok() && info_changed {
                            written = maps
                                .endpoints
                                .insert(ifindex, rules.info(id), 0)
                                .map_err(map_err(MAP_ENDPOINTS, "insert"));
                            report.writes += usize::from(written.is_ok());
                        }
                        if written.is_ok() {
                            ep.rules = rules;
                        } else {
                            // Part shrunk: the old entries' keys cover every one left.
                            self.quarantine(maps, key, report);
                        }
                        written
                    } else {
                        // A sync that failed half way may have left entries under the idle
                        // id: clear them, or they would go live with the swap.
                        if let Some(leftover) = ep.idle.take() {
                            maps.delete_rules(ep.idle_id(), &leftover, report);
                        }
                        ep.idle = Some(rules.clone());
                        let written = maps.write_rules(ep.idle_id(), &rules, report);
                        if written.is_ok() {
                            staged.push(Staged::Swap {
                                key: key.clone(),
                                rules,
                            });
                        } else {
                            self.quarantine(maps, key, report);
                        }
                        written
                    }
                }
            };
            if let Err(e) = written {
                report.failures.push(format!("{key}: {e}"));
                if !self.endpoints.contains_key(key) {
                    self.isolate(maps, key, index, report);
                }
            }
        }
        staged
    }

    /// Identities and CIDR classes the new rules may name. A missing identity or class makes
    /// its addresses unknown peers: less access, never more.
    fn write_shared(
        &mut self,
        maps: &mut Maps<'_>,
        state: &NodeState,
        journal: Option<&Journal>,
        report: &mut SyncReport,
    ) {
        // The journal's addresses, or an ordered walk of all (most syncs change none).
        let candidates: Vec<(&Addr, &u32)> = match journal {
            Some(j) => j
                .identities
                .iter()
                .filter_map(|a| state.identities.get_key_value(a))
                .collect(),
            None if self.identities.iter().eq(state.identities.iter()) => Vec::new(),
            None => state.identities.iter().collect(),
        };
        for (addr, id) in candidates {
            if self.identities.get(addr) != Some(id) {
                match maps
                    .identities
                    .insert(addr, IdentityValue { identity: *id }, 0)
                {
                    Ok(()) => {
                        self.identities.insert(*addr, *id);
                        report.writes += 1;
                    }
                    Err(e) => {
                        // A stale value would name the old identity: remove it.
                        let _ = maps.identities.remove(addr);
                        self.identities.remove(addr);
                        report.failures.push(format!("{MAP_POD_IDENTITIES}: {e}"));
                    }
                }
            }
        }
        let cidrs = journal.is_none_or(|j| j.cidrs);
        for (prefix, id) in state.cidrs.iter().filter(|_| cidrs) {
            let k = (prefix.len, prefix.addr);
            if self.cidrs.get(&k) != Some(id) {
                let key = Key::new(prefix.len, prefix.addr);
                match maps.cidrs.insert(&key, IdentityValue { identity: *id }, 0) {
                    Ok(()) => {
                        self.cidrs.insert(k, *id);
                        report.writes += 1;
                    }
                    Err(e) => {
                        let _ = maps.cidrs.remove(&key);
                        self.cidrs.remove(&k);
                        report.failures.push(format!("{MAP_CIDRS}: {e}"));
                    }
                }
            }
        }
    }

    /// The switch: one value write per endpoint, then the old id's entries go.
    fn switch(&mut self, maps: &mut Maps<'_>, staged: Vec<Staged>, report: &mut SyncReport) {
        for item in staged {
            match item {
                Staged::New {
                    key,
                    ifindex,
                    pair,
                    rules,
                } => {
                    let ep = Endpoint {
                        ifindex,
                        pair,
                        live: 0,
                        rules,
                        idle: None,
                    };
                    match maps.endpoints.insert(ifindex, ep.rules.info(ep.id()), 0) {
                        Ok(()) => {
                            report.writes += 1;
                            self.quarantined.remove(&key);
                            self.endpoints.insert(key, ep);
                        }
                        Err(e) => {
                            report.failures.push(format!("{key}: {e}"));
                            maps.delete_rules(ep.id(), &ep.rules, report);
                            self.isolate(maps, &key, ifindex, report);
                        }
                    }
                }
                Staged::Swap { key, rules } => {
                    let Some(ep) = self.endpoints.get_mut(&key) else {
                        continue;
                    };
                    if let Err(e) = maps
                        .endpoints
                        .insert(ep.ifindex, rules.info(ep.idle_id()), 0)
                    {
                        report.failures.push(format!("{key}: {e}"));
                        self.quarantine(maps, &key, report);
                        continue;
                    }
                    report.writes += 1;
                    report.swaps += 1;
                    let old = std::mem::replace(&mut ep.rules, rules);
                    let old_id = ep.id();
                    ep.live = 1 - ep.live;
                    ep.idle = None;
                    maps.delete_rules(old_id, &old, report);
                }
            }
        }
    }

    /// Shared entries nobody names any more.
    fn delete_unnamed(
        &mut self,
        maps: &mut Maps<'_>,
        state: &NodeState,
        journal: Option<&Journal>,
        report: &mut SyncReport,
    ) {
        let gone: Vec<Addr> = match journal {
            Some(j) => j
                .identities
                .iter()
                .filter(|a| self.identities.contains_key(*a) && !state.identities.contains_key(*a))
                .copied()
                .collect(),
            // An ordered walk first: most syncs remove no address.
            None if self.identities.keys().eq(state.identities.keys()) => Vec::new(),
            None => self
                .identities
                .keys()
                .filter(|a| !state.identities.contains_key(*a))
                .copied()
                .collect(),
        };
        for addr in gone {
            let _ = maps.identities.remove(&addr);
            self.identities.remove(&addr);
            report.deletes += 1;
        }
        let wanted: BTreeSet<(u32, Addr)> = state.cidrs.keys().map(|p| (p.len, p.addr)).collect();
        let gone: Vec<(u32, Addr)> = self
            .cidrs
            .keys()
            .filter(|k| !wanted.contains(*k))
            .copied()
            .collect();
        for (len, addr) in gone {
            let _ = maps.cidrs.remove(&Key::new(len, addr));
            self.cidrs.remove(&(len, addr));
            report.deletes += 1;
        }
    }
}
