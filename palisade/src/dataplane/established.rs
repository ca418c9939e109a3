//! What happens to established connections when policy changes: a setting.
//!
//! - [`Established::Keep`] (the default, as in most implementations): a connection admitted
//!   once lives until it ends (its conntrack entry ages out by LRU eviction). A policy change
//!   never cuts a running transfer.
//! - [`Established::Recheck`]: after every sync, each tracked flow is judged again against the
//!   new state with the userspace replica of the programs' lookup ([`crate::policy::lookup`]);
//!   entries the new policy no longer admits are deleted, so the flow's next packet is judged
//!   as new and dropped. Connections are cut within one sync of the change.
//!
//! Re-checking happens in userspace, not per packet in the programs: the per-packet cost stays
//! one conntrack lookup, and the sweep costs O(tracked flows) per change. Flows to a Service
//! address (tracked under the ClusterIP, judged against a backend only the kernel's NAT knows)
//! are left alone: a re-check needs the backend.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use palisade_common::{CtKey, CtValue, DIR_INGRESS, EP_AUDIT};

use super::{Dataplane, DataplaneError};
use crate::{
    k8s::cluster::ObjectKey,
    policy::{NodeState, lookup::admits},
};

/// The established-connection setting. See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Established {
    /// Keep established connections across policy changes.
    #[default]
    Keep,
    /// Judge established connections again after every change; cut those now denied.
    Recheck,
}

impl Dataplane {
    /// Deletes the conntrack entries `state` no longer admits (for [`Established::Recheck`]);
    /// returns how many. `ifindex` names the local pods' interfaces, as given to `sync`.
    pub fn recheck_established(
        &mut self,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<usize, DataplaneError> {
        let owner: BTreeMap<u32, &ObjectKey> = ifindex.iter().map(|(k, i)| (*i, k)).collect();
        let services = self.service_ranges.clone();
        let audit_all = self.flow_settings.audit_all;
        let in_service = |ip: &IpAddr| services.iter().any(|net: &IpNet| net.contains(ip));
        let mut ct = self.conntrack_map()?;
        let entries: Vec<(CtKey, CtValue)> = ct.iter().filter_map(Result::ok).collect();
        let mut cut = 0;
        for (key, value) in entries {
            // The peer is the key's remote side whichever way the flow was opened; the port
            // the policy judged is the destination port of the flow's first packet.
            let direction = value.direction;
            let (_, _, _, dport) = key.opening(direction);
            let peer = key.remote.to_ip();
            if direction != DIR_INGRESS && in_service(&peer) {
                continue;
            }
            // An interface no pod has any more: its flows are gone with it.
            let admitted = owner.get(&key.ifindex).is_some_and(|endpoint| {
                // Audit mode never cuts: it only reports.
                let audited = state
                    .endpoints
                    .get(*endpoint)
                    .is_some_and(|ep| ep.flags & EP_AUDIT != 0);
                if audited || audit_all {
                    return true;
                }
                admits(state, endpoint, direction, peer, key.protocol, dport).unwrap_or(false)
            });
            if !admitted && ct.remove(&key).is_ok() {
                cut += 1;
            }
        }
        if cut > 0 {
            tracing::info!(cut, "established connections no longer admitted were cut");
        }
        Ok(cut)
    }
}
