//! One local pod's entries: its rules grouped into port-set classes, and the peers and ports
//! that carry each class's bit.
//!
//! Class numbering is independent of which identities exist, so that an identity appearing or
//! leaving changes only its own peer entries ([`Context::identity_masks`]): a rule with fixed
//! ports gets its class when the rule is read, whether or not any peer matches it (a class no
//! peer carries admits nothing). The one exception is an egress rule with named ports, which
//! resolve against each destination: its classes are the port sets its peers resolve to, so
//! they follow the identities, and such an endpoint is recomputed when one of them changes.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::LabelSelector};
use palisade_common::{
    Addr, ClassMask, DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, MAX_CLASSES,
};

use super::{Block, Class, EndpointState, IdentityKey, Prefix, RuleRef};
use crate::{
    k8s::cluster::{Cluster, ObjectKey, container_ports},
    policy::{
        model::{Peer, Policy, PolicyError, Port, Rule},
        ports::{PortRange, PortSet, range_to_prefixes},
        selector::matches,
    },
};

pub(super) struct Context<'a> {
    pub cluster: &'a Cluster,
    pub identities: &'a BTreeMap<u32, IdentityKey>,
    pub cidrs: &'a BTreeMap<Prefix, u32>,
    /// Pod (and node) addresses and their identities.
    pub addrs: &'a BTreeMap<Addr, u32>,
}

/// Classes of one endpoint and direction under construction.
#[derive(Default)]
struct ClassTable {
    index: BTreeMap<PortSet, usize>,
    classes: Vec<Class>,
}

impl ClassTable {
    /// The class bit for a port set, or `None` when the endpoint already has [`MAX_CLASSES`]
    /// classes (the rule then allows nothing: fail closed).
    fn bit(&mut self, ports: &PortSet, rule: &RuleRef) -> Option<ClassMask> {
        let i = match self.index.get(ports) {
            Some(i) => *i,
            None if self.classes.len() < MAX_CLASSES => {
                self.classes.push(Class {
                    ports: ports.clone(),
                    rules: Vec::new(),
                });
                self.index.insert(ports.clone(), self.classes.len() - 1);
                self.classes.len() - 1
            }
            None => return None,
        };
        let rules = &mut self.classes[i].rules;
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
        Some(1 << i)
    }
}

/// A rule's ports, split: numeric ranges apply as written; named ones resolve against a pod's
/// container ports (this pod's for ingress, each destination's for egress).
struct RulePorts<'r> {
    all: bool,
    numeric: Vec<PortRange>,
    named: Vec<(u8, &'r str)>,
}

impl<'r> RulePorts<'r> {
    fn new(rule: &'r Rule) -> Self {
        let mut ports = Self {
            all: rule.ports.is_empty(),
            numeric: Vec::new(),
            named: Vec::new(),
        };
        for port in &rule.ports {
            match port {
                Port::Numeric(r) => ports.numeric.push(*r),
                Port::Named { protocol, name } => ports.named.push((*protocol, name)),
            }
        }
        ports
    }

    /// Whether the rule's ports depend on the peer: egress named ports.
    fn per_peer(&self, direction: u8) -> bool {
        direction == DIR_EGRESS && !self.named.is_empty()
    }

    /// The ports with named ones resolved against `ports` (a pod's container ports).
    fn resolve(&self, ports: &[(String, u8, u16)]) -> PortSet {
        let mut ranges = self.numeric.clone();
        for (protocol, name) in &self.named {
            let same = ports.iter().filter(|(n, p, _)| n == name && p == protocol);
            ranges.extend(same.map(|(_, p, port)| PortRange {
                protocol: *p,
                first: *port,
                last: *port,
            }));
        }
        PortSet::ranges(ranges)
    }

    /// The ports that hold whatever the peer: numeric ones only when named ones resolve per
    /// peer.
    fn fixed(&self, direction: u8, own_ports: &[(String, u8, u16)]) -> PortSet {
        if self.all {
            PortSet::All
        } else if self.per_peer(direction) {
            PortSet::ranges(self.numeric.clone())
        } else {
            self.resolve(own_ports)
        }
    }
}

fn rules_of(policy: &Policy, direction: u8) -> Option<&Vec<Rule>> {
    if direction == DIR_INGRESS {
        policy.ingress.as_ref()
    } else {
        policy.egress.as_ref()
    }
}

impl Context<'_> {
    pub fn endpoint(
        &self,
        key: &ObjectKey,
        pod: &Pod,
        addrs: Vec<std::net::IpAddr>,
        policies: &[&Policy],
    ) -> (EndpointState, Vec<PolicyError>) {
        let mut ep = EndpointState {
            addrs,
            ..Default::default()
        };
        let mut errors = Vec::new();
        let own_ports = container_ports(pod);
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let d = usize::from(direction);
            let mut table = ClassTable::default();
            let mut overflow = false;
            for policy in policies {
                let Some(rules) = rules_of(policy, direction) else {
                    continue;
                };
                ep.isolating[d].push(policy.key.clone());
                ep.flags |= if direction == DIR_INGRESS {
                    EP_INGRESS_ISOLATED
                } else {
                    EP_EGRESS_ISOLATED
                };
                for rule in rules {
                    let rule_ref = RuleRef {
                        policy: policy.key.clone(),
                        direction,
                        index: rule.index,
                    };
                    overflow |=
                        !self.add_rule(&mut ep, &mut table, direction, rule, &rule_ref, &own_ports);
                }
            }
            if overflow {
                errors.push(PolicyError {
                    policy: key.clone(),
                    field: if direction == DIR_INGRESS { "ingress".into() } else { "egress".into() },
                    message: format!("pod has more than {MAX_CLASSES} distinct port sets; rules past that allow nothing"),
                });
            }
            // Port prefixes: every prefix of every class's ranges, carrying every class whose
            // ranges contain the whole prefix (the longest match then answers exactly).
            for class in &table.classes {
                let PortSet::Ranges(ranges) = &class.ports else {
                    continue;
                };
                for r in ranges {
                    for p in range_to_prefixes(r.first, r.last) {
                        ep.ports.entry((direction, r.protocol, p)).or_insert(0);
                    }
                }
            }
            for ((dir, protocol, prefix), mask) in ep.ports.iter_mut() {
                if *dir != direction {
                    continue;
                }
                for (i, class) in table.classes.iter().enumerate() {
                    if let PortSet::Ranges(ranges) = &class.ports
                        && ranges.iter().any(|r| {
                            r.protocol == *protocol
                                && r.first <= prefix.first()
                                && prefix.last() <= r.last
                        })
                    {
                        *mask |= 1 << i;
                    }
                }
            }
            for (i, class) in table.classes.iter().enumerate() {
                if class.ports == PortSet::All {
                    ep.any_port[d] |= 1 << i;
                }
            }
            ep.classes[d] = table.classes;
        }
        ep.peers.retain(|_, m| *m != 0);
        if crate::k8s::cluster::namespace_audited(self.cluster, &key.namespace) {
            ep.flags |= palisade_common::EP_AUDIT;
        }
        (ep, errors)
    }

    /// Adds one rule's bits; false when a class could not be allocated.
    fn add_rule(
        &self,
        ep: &mut EndpointState,
        table: &mut ClassTable,
        direction: u8,
        rule: &Rule,
        rule_ref: &RuleRef,
        own_ports: &[(String, u8, u16)],
    ) -> bool {
        let d = usize::from(direction);
        let ports = RulePorts::new(rule);
        let mut ok = true;
        let mut bit = |ports: &PortSet| -> Option<ClassMask> {
            if ports.is_empty() {
                return None;
            }
            let b = table.bit(ports, rule_ref);
            ok &= b.is_some();
            b
        };
        // Ingress named ports resolve against this pod; egress ones against each destination.
        let per_peer_ports = ports.per_peer(direction);
        let fixed = ports.fixed(direction, own_ports);
        match &rule.peers {
            None => {
                if let Some(b) = bit(&fixed) {
                    ep.any_peer[d] |= b;
                }
                if per_peer_ports {
                    for (id, ident) in self.identities {
                        if let Some(b) = bit(&ports.resolve(&ident.named_ports)) {
                            *ep.peers.entry((direction, *id)).or_insert(0) |= b;
                        }
                    }
                }
            }
            Some(peers) => {
                for peer in peers {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            // The class of fixed ports is allocated even if no identity
                            // matches, so that identities never renumber classes.
                            let fixed_bit = if per_peer_ports { None } else { bit(&fixed) };
                            for (id, ident) in self.identities {
                                if !self.selects(
                                    rule_ref,
                                    namespaces.as_ref(),
                                    pods.as_ref(),
                                    ident,
                                ) {
                                    continue;
                                }
                                let b = if per_peer_ports {
                                    bit(&ports.resolve(&ident.named_ports))
                                } else {
                                    fixed_bit
                                };
                                if let Some(b) = b {
                                    *ep.peers.entry((direction, *id)).or_insert(0) |= b;
                                }
                            }
                        }
                        Peer::Block { cidr, except } => {
                            let block = Block::new(cidr, except);
                            if let Some(b) = bit(&fixed) {
                                for (p, id) in self.cidrs {
                                    if block.holds(p) {
                                        *ep.peers.entry((direction, *id)).or_insert(0) |= b;
                                    }
                                }
                            }
                            if !per_peer_ports {
                                continue;
                            }
                            // Named ports: pod addresses in the block carry their own host
                            // prefix (see `compile`) and resolve against that pod.
                            for (addr, id) in self.addrs {
                                let host = Prefix::host(*addr);
                                let (Some(ident), Some(cidr_id)) =
                                    (self.identities.get(id), self.cidrs.get(&host))
                                else {
                                    continue;
                                };
                                if block.holds(&host)
                                    && let Some(b) = bit(&ports.resolve(&ident.named_ports))
                                {
                                    *ep.peers.entry((direction, *cidr_id)).or_insert(0) |= b;
                                }
                            }
                        }
                    }
                }
            }
        }
        ok
    }

    /// The classes one identity gets at endpoint `ep`, compiled from `policies` (its selecting
    /// policies) with these namespaces: what [`Context::endpoint`] puts in `ep.peers` for it,
    /// per direction, computed from that identity alone. `None` when an egress rule with named
    /// ports selects it: the class then depends on the identity's ports and may be new, so the
    /// endpoint must be recomputed.
    ///
    /// A rule with fixed ports has exactly one class, the one that lists the rule (allocated
    /// whether or not a peer matches, see `add_rule`), or none when its ports resolved to
    /// nothing or the endpoint ran out of classes: either way what `add_rule` gives the
    /// identity.
    pub fn identity_masks(
        &self,
        ep: &EndpointState,
        policies: &[&Policy],
        ident: &IdentityKey,
    ) -> Option<[ClassMask; 2]> {
        let mut masks = [0; 2];
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let d = usize::from(direction);
            for policy in policies {
                for rule in rules_of(policy, direction).into_iter().flatten() {
                    let rule_ref = RuleRef {
                        policy: policy.key.clone(),
                        direction,
                        index: rule.index,
                    };
                    let per_peer = RulePorts::new(rule).per_peer(direction);
                    let selected = match &rule.peers {
                        None => per_peer,
                        Some(peers) => peers.iter().any(|peer| {
                            matches!(peer, Peer::Pods { namespaces, pods }
                                if self.selects(&rule_ref, namespaces.as_ref(), pods.as_ref(), ident))
                        }),
                    };
                    if !selected {
                        continue;
                    }
                    if per_peer {
                        return None;
                    }
                    let classes = &ep.classes[d];
                    if let Some(i) = classes.iter().position(|c| c.rules.contains(&rule_ref)) {
                        masks[d] |= 1 << i;
                    }
                }
            }
        }
        Some(masks)
    }

    fn selects(
        &self,
        rule: &RuleRef,
        namespaces: Option<&LabelSelector>,
        pods: Option<&LabelSelector>,
        ident: &IdentityKey,
    ) -> bool {
        let ns_ok = match namespaces {
            None => ident.namespace == rule.policy.namespace,
            Some(sel) => match self.cluster.namespace_labels(&ident.namespace) {
                Some(labels) => matches(sel, labels),
                None => matches(sel, &BTreeMap::new()),
            },
        };
        ns_ok && pods.is_none_or(|sel| matches(sel, &ident.labels))
    }
}
