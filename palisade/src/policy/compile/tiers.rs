//! ClusterNetworkPolicy rules as classes (see `TIERS.md` and `palisade_common::precedence`).
//!
//! Class bits are numbered in precedence order: the Admin tier's rules (policies by
//! [`ClusterPolicy::rank`], rules as written), then the NetworkPolicy classes, then the
//! Baseline tier's rules. The first rule of a tier that matches a flow is then the lowest bit
//! the flow's peer and port masks share within that tier's bits: the programs decide with two
//! ANDs and a `trailing_zeros`, whatever the number of policies.
//!
//! Each tier rule gets a class of its own (its peers carry the bit, its ports carry the bit),
//! except that consecutive rules of one tier with the same action and the same port set share
//! one: `(P1 x S) u (P2 x S) = (P1 u P2) x S`, and no rule of another action lies between them
//! whose place the merge could take. An egress rule with `destinationNamedPort`s resolves per
//! destination, as a NetworkPolicy's named egress ports do: each destination gets the class of
//! the port set its own ports give, all at the rule's place in the order.
//!
//! A tier's classes are built here from bit 0 and shifted into place by `endpoint.rs`, which
//! checks the total against [`palisade_common::MAX_CLASSES`]: rules that do not fit are not
//! dropped (a dropped Deny or Pass would give more access), the endpoint's whole direction
//! becomes one Deny of everything instead, reported as an error.

use std::collections::BTreeMap;

use palisade_common::{ClassMask, DIR_EGRESS};

use super::{Block, Class, ClassKind, FAIL_CLOSED_RULE, Prefix, RuleRef, endpoint::Context};
use crate::{
    k8s::{
        cluster::{Cluster, ObjectKey, pod_labels},
        cnp::{Action, Tier},
    },
    policy::{
        ports::{PortRange, PortSet},
        selector::matches,
        tiers::{ClusterPolicy, PodSet, TierPeer, TierPort, TierRule},
    },
};

/// One tier's classes at one endpoint and direction, numbered from bit 0.
#[derive(Default)]
pub(super) struct TierTable {
    pub classes: Vec<Class>,
    /// Peer identity or CIDR class -> classes.
    pub peers: BTreeMap<u32, ClassMask>,
    pub any_peer: ClassMask,
    /// The current run of consecutive rules with one action: its classes by port set.
    run: Option<(Action, BTreeMap<PortSet, usize>)>,
}

impl TierTable {
    /// The class of `rule` (of `tier`, with `action`) for `ports`: the run's class for those
    /// ports, or a new one.
    fn bit(&mut self, tier: Tier, action: Action, ports: &PortSet, rule: &RuleRef) -> ClassMask {
        if self.run.as_ref().is_none_or(|(a, _)| *a != action) {
            self.run = Some((action, BTreeMap::new()));
        }
        let Some((_, index)) = self.run.as_mut() else {
            unreachable!("the run was just started")
        };
        let i = match index.get(ports) {
            Some(i) => *i,
            None => {
                self.classes.push(Class {
                    ports: ports.clone(),
                    rules: Vec::new(),
                    kind: ClassKind::Tier(tier, action),
                });
                index.insert(ports.clone(), self.classes.len() - 1);
                self.classes.len() - 1
            }
        };
        let rules = &mut self.classes[i].rules;
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
        1 << i
    }

    /// Gives class bit `bit` to a peer (`None`: every peer).
    fn grant(&mut self, peer: Option<u32>, bit: ClassMask) {
        match peer {
            None => self.any_peer |= bit,
            Some(id) => *self.peers.entry(id).or_insert(0) |= bit,
        }
    }
}

/// A ClusterNetworkPolicy's key among [`RuleRef`]s and errors: cluster-scoped, so no
/// namespace.
pub fn policy_key(name: &str) -> ObjectKey {
    ObjectKey::new(String::new(), name.to_owned())
}

/// Whether pod `key` with `labels` is in `set` (its namespace's labels, which hold the name
/// label, match `namespaces`; its own match `pods`).
pub(super) fn in_set(
    cluster: &Cluster,
    set: &PodSet,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let no_labels = BTreeMap::new();
    let namespace_labels = cluster.namespace_labels(namespace).unwrap_or(&no_labels);
    set.namespaces
        .as_ref()
        .is_none_or(|s| matches(s, namespace_labels))
        && set.pods.as_ref().is_none_or(|s| matches(s, labels))
}

/// The ClusterNetworkPolicies whose subjects select pod `key`, in the order they are tried.
pub(super) fn selecting<'p>(
    tiers: &'p [ClusterPolicy],
    cluster: &Cluster,
    key: &ObjectKey,
    pod: &crate::k8s::cluster::PodInfo,
) -> Vec<&'p ClusterPolicy> {
    let labels = pod_labels(pod);
    tiers
        .iter()
        .filter(|p| {
            p.subjects
                .iter()
                .any(|s| in_set(cluster, s, &key.namespace, labels))
        })
        .collect()
}

/// The prefixes the tiers put in the CIDR trie: every `networks` block, and each address of
/// the nodes a `nodes` peer selects (as a host prefix).
pub(super) fn tier_prefixes(tiers: &[ClusterPolicy], cluster: &Cluster) -> Vec<Prefix> {
    let mut prefixes = Vec::new();
    for rule in tiers.iter().flat_map(|p| p.ingress.iter().chain(&p.egress)) {
        for peer in &rule.peers {
            match peer {
                TierPeer::Networks(blocks) => prefixes.extend(blocks.iter().map(Prefix::from_net)),
                TierPeer::Nodes(selector) => {
                    prefixes.extend(node_addrs(cluster, selector).map(Prefix::host));
                }
                TierPeer::Pods(_) | TierPeer::Any => {}
            }
        }
    }
    prefixes
}

/// Whether some rule has a `nodes` peer (Node changes then matter).
pub(super) fn uses_nodes(tiers: &[ClusterPolicy]) -> bool {
    tiers
        .iter()
        .flat_map(|p| p.ingress.iter().chain(&p.egress))
        .flat_map(|r| &r.peers)
        .any(|peer| matches!(peer, TierPeer::Nodes(_)))
}

/// The `networks` blocks of egress rules with named ports: a pod address inside one gets a
/// host prefix of its own (its ports resolve against that pod), as for NetworkPolicy.
pub(super) fn tier_host_blocks(tiers: &[ClusterPolicy]) -> Vec<Block> {
    let named = |rule: &&TierRule| rule.ports.iter().any(|p| matches!(p, TierPort::Named(_)));
    tiers
        .iter()
        .flat_map(|p| p.egress.iter().filter(named))
        .flat_map(|rule| &rule.peers)
        .filter_map(|peer| match peer {
            TierPeer::Networks(blocks) => Some(blocks),
            _ => None,
        })
        .flatten()
        .map(|net| Block::new(net, &[]))
        .collect()
}

/// The addresses (`status.addresses`) of the nodes `selector` selects.
fn node_addrs<'c>(
    cluster: &'c Cluster,
    selector: &'c k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> impl Iterator<Item = palisade_common::Addr> + 'c {
    let no_labels = BTreeMap::new();
    cluster
        .nodes
        .values()
        .filter(move |node| {
            matches(
                selector,
                node.metadata.labels.as_ref().unwrap_or(&no_labels),
            )
        })
        .flat_map(|node| {
            node.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
        })
        .filter_map(|a| a.address.parse::<std::net::IpAddr>().ok())
        .map(palisade_common::Addr::from)
}

/// A tier rule's ports: numeric ranges as written, names resolved against a pod's container
/// ports ("that port's number and protocol").
struct TierPorts<'r> {
    all: bool,
    numeric: Vec<PortRange>,
    named: Vec<&'r str>,
}

impl<'r> TierPorts<'r> {
    fn new(rule: &'r TierRule) -> Self {
        let mut ports = Self {
            all: rule.ports.is_empty(),
            numeric: Vec::new(),
            named: Vec::new(),
        };
        for port in &rule.ports {
            match port {
                TierPort::Numeric(r) => ports.numeric.push(*r),
                TierPort::Named(name) => ports.named.push(name),
            }
        }
        ports
    }

    fn resolve(&self, container_ports: &[(String, u8, u16)]) -> PortSet {
        if self.all {
            return PortSet::All;
        }
        let mut ranges = self.numeric.clone();
        for name in &self.named {
            let same = container_ports.iter().filter(|(n, _, _)| n == name);
            ranges.extend(same.map(|(_, protocol, port)| PortRange {
                protocol: *protocol,
                first: *port,
                last: *port,
            }));
        }
        PortSet::ranges(ranges)
    }

    /// The ports for a destination that is not a pod: the numeric ones.
    fn numeric(&self) -> PortSet {
        if self.all {
            PortSet::All
        } else {
            PortSet::ranges(self.numeric.clone())
        }
    }
}

impl Context<'_> {
    /// The classes of `tier`'s rules at endpoint `pod` (whose container ports are
    /// `own_ports`) in `direction`, from `policies` (those selecting it, in rank order).
    pub(super) fn tier_table(
        &self,
        tier: Tier,
        policies: &[&ClusterPolicy],
        direction: u8,
        own_ports: &[(String, u8, u16)],
    ) -> TierTable {
        let mut table = TierTable::default();
        for policy in policies.iter().filter(|p| p.tier == tier) {
            let rules = if direction == DIR_EGRESS {
                &policy.egress
            } else {
                &policy.ingress
            };
            for rule in rules {
                let rule_ref = RuleRef {
                    policy: policy_key(&policy.name),
                    direction,
                    index: rule.index.unwrap_or(FAIL_CLOSED_RULE),
                };
                // An unknown action failed validation and the rule became a Deny; were one
                // to slip through, it denies.
                let action = match rule.action {
                    Action::Accept => Action::Accept,
                    Action::Pass => Action::Pass,
                    Action::Deny | Action::Unknown => Action::Deny,
                };
                self.tier_rule(&mut table, tier, action, rule, &rule_ref, own_ports);
            }
        }
        table
    }

    fn tier_rule(
        &self,
        table: &mut TierTable,
        tier: Tier,
        action: Action,
        rule: &TierRule,
        rule_ref: &RuleRef,
        own_ports: &[(String, u8, u16)],
    ) {
        let ports = TierPorts::new(rule);
        // Ingress: the destination is this pod, its own ports resolve the names. Egress: each
        // destination's do.
        let per_peer = rule_ref.direction == DIR_EGRESS && !ports.named.is_empty();
        let fixed = if per_peer {
            ports.numeric()
        } else {
            ports.resolve(own_ports)
        };
        let bit_for = |table: &mut TierTable, set: &PortSet| {
            (!set.is_empty()).then(|| table.bit(tier, action, set, rule_ref))
        };
        for peer in &rule.peers {
            match peer {
                TierPeer::Any => {
                    if let Some(b) = bit_for(table, &fixed) {
                        table.grant(None, b);
                    }
                    if per_peer {
                        for (id, ident) in self.identities.iter() {
                            if let Some(b) = bit_for(table, &ports.resolve(&ident.named_ports)) {
                                table.grant(Some(*id), b);
                            }
                        }
                    }
                }
                TierPeer::Pods(set) => {
                    for (id, ident) in self.identities.iter() {
                        if !in_set(self.cluster, set, &ident.namespace, &ident.labels) {
                            continue;
                        }
                        let ports = if per_peer {
                            ports.resolve(&ident.named_ports)
                        } else {
                            fixed.clone()
                        };
                        if let Some(b) = bit_for(table, &ports) {
                            table.grant(Some(*id), b);
                        }
                    }
                }
                TierPeer::Networks(blocks) => {
                    let blocks: Vec<Block> = blocks.iter().map(|b| Block::new(b, &[])).collect();
                    if let Some(b) = bit_for(table, &fixed) {
                        for (p, id) in self.cidrs {
                            if blocks.iter().any(|block| block.holds(p)) {
                                table.grant(Some(*id), b);
                            }
                        }
                    }
                    if per_peer {
                        // Pod addresses in the block carry a host prefix of their own (see
                        // `compile`) and resolve against that pod.
                        for (addr, id) in self.addrs {
                            let host = Prefix::host(*addr);
                            let (Some(ident), Some(cidr_id)) =
                                (self.identities.get(*id), self.cidrs.get(&host))
                            else {
                                continue;
                            };
                            if blocks.iter().any(|block| block.holds(&host))
                                && let Some(b) = bit_for(table, &ports.resolve(&ident.named_ports))
                            {
                                table.grant(Some(*cidr_id), b);
                            }
                        }
                    }
                }
                // A node is no pod: only numeric ports can match it.
                TierPeer::Nodes(selector) => {
                    if let Some(b) = bit_for(table, &ports.numeric()) {
                        for addr in node_addrs(self.cluster, selector) {
                            if let Some(id) = self.cidrs.get(&Prefix::host(addr)) {
                                table.grant(Some(*id), b);
                            }
                        }
                    }
                }
            }
        }
    }
}
