//! The ClusterNetworkPolicy tiers in the evaluator, one API sentence at a time
//! (kubernetes-sigs/network-policy-api, `apis/v1alpha2/clusternetworkpolicy_types.go`).
//!
//! "Policy tiers are evaluated in the following order: Admin tier, NetworkPolicy tier, Baseline
//! tier." Per direction (the source's egress, the destination's ingress), [`Evaluator::judge`]
//! asks [`Evaluator::tier_decides`] for the Admin tier, then NetworkPolicy decides for a pod a
//! NetworkPolicy isolates in that direction, then the Baseline tier, then the default: allow.
//! Which policy of a tier goes first on a tie of priority is [`ClusterPolicy::rank`]'s choice
//! (by name, see `policy/tiers.rs`).

use std::net::IpAddr;

use crate::k8s::cluster::PodInfo;

use super::{Direction, Endpoint, Evaluator};
use crate::{
    k8s::{
        cluster::{ObjectKey, container_ports, pod_labels},
        cnp::{Action, Tier},
    },
    policy::{
        selector::matches,
        tiers::{ClusterPolicy, PodSet, TierPeer, TierPort, TierRule},
    },
};

/// A rule of a ClusterNetworkPolicy: `spec.ingress[index]` / `spec.egress[index]`, or the Deny
/// an invalid policy fails closed to (`index: None`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TierRuleId {
    pub tier: Tier,
    pub priority: i32,
    pub policy: String,
    pub index: Option<usize>,
    /// The rule's `name` (may be empty).
    pub name: String,
}

/// What one tier says about one direction of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierOutcome {
    Accept(TierRuleId),
    Deny(TierRuleId),
    /// "Skips all further ClusterNetworkPolicy rules in the current tier [...] and passes
    /// evaluation to the next tier."
    Pass(TierRuleId),
}

impl Evaluator<'_> {
    /// The first rule of `tier` that matches, trying the policies that select `pod` by rank and
    /// their rules in written order ("a rule that appears at the top of the ingress rules would
    /// take the highest precedence"); `None` when none matches.
    #[expect(
        clippy::too_many_arguments,
        reason = "one connection seen from one side: the same arguments as `judge`"
    )]
    pub(super) fn tier_decides(
        &self,
        tier: Tier,
        direction: Direction,
        key: &ObjectKey,
        pod: &PodInfo,
        peer: Endpoint<'_>,
        dest: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> Option<TierOutcome> {
        // "Note that host-networked pods are not included in subject selection": the caller
        // only asks for pods that policy applies to.
        let selecting = self
            .cluster_policies
            .iter()
            .filter(|p| p.tier == tier && p.subjects.iter().any(|s| self.in_set(s, key, pod)));
        for policy in selecting {
            let rules = match direction {
                Direction::Ingress => &policy.ingress,
                Direction::Egress => &policy.egress,
            };
            let Some(rule) = rules
                .iter()
                .find(|rule| self.tier_rule_matches(rule, peer, dest, protocol, port))
            else {
                continue;
            };
            let id = TierRuleId {
                tier,
                priority: policy.priority,
                policy: policy.name.clone(),
                index: rule.index,
                name: rule.name.clone(),
            };
            return Some(match rule.action {
                Action::Accept => TierOutcome::Accept(id),
                Action::Pass => TierOutcome::Pass(id),
                // An unknown action is a validation error, and the policy's rules for this
                // direction were replaced by a Deny; were one to slip through, it denies.
                Action::Deny | Action::Unknown => TierOutcome::Deny(id),
            });
        }
        None
    }

    /// "From/To is the list of sources/destinations whose traffic this rule applies to. If any
    /// element matches [...] then the specified action is applied." Protocols: "If unspecified,
    /// protocol-specific attributes will not be used to match traffic."
    fn tier_rule_matches(
        &self,
        rule: &TierRule,
        peer: Endpoint<'_>,
        dest: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> bool {
        rule.peers.iter().any(|p| self.tier_peer_matches(p, peer))
            && (rule.ports.is_empty()
                || rule
                    .ports
                    .iter()
                    .any(|p| self.tier_port_matches(p, dest, protocol, port)))
    }

    fn tier_peer_matches(&self, peer: &TierPeer, end: Endpoint<'_>) -> bool {
        match peer {
            TierPeer::Any => true,
            // "Namespaces defines a way to select all pods within a set of Namespaces. Note that
            // host-networked pods are not included in this type of peer." (Pods alike.)
            TierPeer::Pods(set) => {
                let (Endpoint::Pod(key, _), Ok(pod)) = (end, self.pod(end)) else {
                    return false;
                };
                self.in_set(set, key, pod)
            }
            // "cluster-internal traffic will be checked against the rule as well. So if you
            // Accept or Deny traffic to "0.0.0.0/0", that will allow or deny all IPv4 pod-to-pod
            // traffic as well."
            TierPeer::Networks(blocks) => {
                let addr = end.addr();
                blocks.iter().any(|block| block.contains(&addr))
            }
            // "It selects the nodeIPs as the peer type by matching on the IPs present in the
            // node.Status.Addresses field of the node. [...] if present but empty, it selects
            // all Nodes."
            TierPeer::Nodes(selector) => {
                let addr = end.addr();
                self.cluster.nodes.values().any(|node| {
                    let labels = node.metadata.labels.clone().unwrap_or_default();
                    matches(selector, &labels)
                        && node
                            .status
                            .iter()
                            .flat_map(|s| s.addresses.iter().flatten())
                            .any(|a| a.address.parse::<IpAddr>() == Ok(addr))
                })
            }
        }
    }

    fn tier_port_matches(
        &self,
        rule_port: &TierPort,
        dest: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> bool {
        match rule_port {
            // "DestinationPort for the match"; "Range defines a contiguous range of ports"
            // (inclusive: "from the assigned Start value to End value").
            TierPort::Numeric(range) => {
                range.protocol == protocol && range.first <= port && port <= range.last
            }
            // "DestinationNamedPort selects a destination port on a pod based on the
            // ContainerPort name": that port's number and protocol.
            TierPort::Named(name) => self.pod(dest).is_ok_and(|pod| {
                container_ports(pod)
                    .iter()
                    .any(|(n, p, number)| n == name && *p == protocol && *number == port)
            }),
        }
    }

    /// Whether `pod` (a pod policy applies to) is in `set`: its namespace's labels (with the
    /// name label the API server sets) match `namespaces`, its own match `pods`; an absent
    /// selector selects all.
    fn in_set(&self, set: &PodSet, key: &ObjectKey, pod: &PodInfo) -> bool {
        let namespace_ok = set
            .namespaces
            .as_ref()
            .is_none_or(|selector| matches(selector, &self.namespace_labels_of(&key.namespace)));
        namespace_ok
            && set
                .pods
                .as_ref()
                .is_none_or(|selector| matches(selector, pod_labels(pod)))
    }
}

/// The policies in the order they are tried: tier, priority, then name.
pub(super) fn ranked(mut policies: Vec<ClusterPolicy>) -> Vec<ClusterPolicy> {
    policies.sort_by(|a, b| a.rank().cmp(&b.rank()));
    policies
}
