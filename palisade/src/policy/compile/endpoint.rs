//! One local pod's entries: its rules grouped into classes, and the peers and ports that carry
//! each class's bit.
//!
//! A class is a set of peers times a set of ports; a flow is admitted when some class holds
//! both its peer and its port, so a class is exact when every peer it holds is admitted on every
//! port it holds. Two merges keep that and save bits (there are [`MAX_CLASSES`]):
//! - rules with the same peers, as written (the same `from`/`to` entries, in any order, of
//!   policies of the same namespace), make one *group* whose ports are the union of theirs:
//!   `(P x S1) u (P x S2) = P x (S1 u S2)`. Many small per-app policies that each open a port to
//!   the same peers then cost one class, not one each;
//! - groups (and egress named-port sets, below) with the same port set share one class:
//!   `(P1 x S) u (P2 x S) = (P1 u P2) x S`.
//!
//! Peers are compared as written, not as the identities they select, so that class numbering is
//! independent of which identities exist: an identity appearing or leaving changes only its own
//! peer entries ([`Context::identity_masks`]). A group gets its class when its rules are read,
//! whether or not any peer matches it (a class no peer carries admits nothing).
//!
//! The one exception is an egress rule with named ports, which resolve against each
//! destination: it joins no group, its classes are the port sets its peers resolve to, so they
//! follow the identities, and such an endpoint is recomputed when one of them changes.
//!
//! Why this and not more bits: [`ClassMask`] is part of the map layouts the programs read (a
//! wider mask or a second lookup stage is a kernel change); merging needs none, and covers the
//! common way to reach the limit, many rules or policies allowing the same peers.
//!
//! What still does not fit (more than [`MAX_CLASSES`] distinct classes, i.e. rules with that
//! many different peer lists and port sets at one pod) fails closed: those rules allow nothing
//! at that pod, and each gets a [`PolicyError`] naming its policy and field and the pod, kept
//! on the endpoint ([`EndpointState::degraded`]) for `palisade explain`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::k8s::cluster::PodInfo;
use palisade_common::{
    Addr, ClassMask, DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_EGRESS_TIERED,
    EP_INGRESS_ISOLATED, EP_INGRESS_TIERED, MAX_CLASSES,
};

use super::{
    Block, Class, ClassKind, EndpointState, IdentityKey, Live, Prefix, RuleRef, tiers::TierTable,
};
use crate::{
    k8s::{
        cluster::{Cluster, ObjectKey, container_ports},
        cnp::{Action, Tier},
    },
    policy::{
        model::{Peer, Policy, PolicyError, Port, Rule},
        ports::{PortRange, PortSet, range_to_prefixes},
        selector::{matches, matches_everything},
        tiers::ClusterPolicy,
    },
};

pub(super) struct Context<'a> {
    pub cluster: &'a Cluster,
    pub identities: &'a Live,
    pub cidrs: &'a BTreeMap<Prefix, u32>,
    /// Pod (and node) addresses and their identities.
    pub addrs: &'a BTreeMap<Addr, u32>,
}

/// Classes of one endpoint and direction under construction: the Admin tier's, then
/// NetworkPolicy's, then the Baseline tier's (see `tiers.rs`).
struct ClassTable {
    /// NetworkPolicy classes by port set.
    index: BTreeMap<PortSet, usize>,
    classes: Vec<Class>,
    /// How many classes NetworkPolicy may use up to (the Baseline tier's come after).
    limit: usize,
}

impl ClassTable {
    fn new(limit: usize) -> Self {
        Self {
            index: BTreeMap::new(),
            classes: Vec::new(),
            limit,
        }
    }

    /// Appends a tier's classes, shifting its peers' bits into place.
    fn absorb(&mut self, ep: &mut EndpointState, direction: u8, tier: TierTable) {
        let shift = self.classes.len();
        if tier.classes.is_empty() {
            return;
        }
        let d = usize::from(direction);
        for (id, mask) in tier.peers {
            *ep.peers_mut().entry((direction, id)).or_insert(0) |= mask << shift;
        }
        ep.any_peer[d] |= tier.any_peer << shift;
        ep.flags |= if direction == DIR_INGRESS {
            EP_INGRESS_TIERED
        } else {
            EP_EGRESS_TIERED
        };
        self.classes.extend(tier.classes);
    }

    /// The NetworkPolicy class bit for a port set, now listing `rules`, or `None` when the
    /// endpoint has no class left (the rules then allow nothing: fail closed).
    fn bit(&mut self, ports: &PortSet, rules: &[RuleRef]) -> Option<ClassMask> {
        let i = match self.index.get(ports) {
            Some(i) => *i,
            None if self.classes.len() < self.limit => {
                self.classes.push(Class {
                    ports: ports.clone(),
                    rules: Vec::new(),
                    kind: ClassKind::Policy,
                });
                self.index.insert(ports.clone(), self.classes.len() - 1);
                self.classes.len() - 1
            }
            None => return None,
        };
        let listed = &mut self.classes[i].rules;
        for rule in rules {
            if !listed.contains(rule) {
                listed.push(rule.clone());
            }
        }
        Some(1 << i)
    }
}

/// Rules of one endpoint and direction with the same peers and ports that hold whatever the
/// peer: together they admit those peers on the union of their ports.
struct Group<'r> {
    /// The peers as written (`None`: every peer), read in the namespace of `rules[0]`'s policy.
    peers: Option<&'r [Peer]>,
    ports: PortSet,
    rules: Vec<RuleRef>,
}

impl Group<'_> {
    /// Whether a rule of `policy` with `peers` has this group's peers: the same entries as a
    /// set, and a pod selector without a namespace selector read in the same namespace.
    fn has_peers(&self, policy: &ObjectKey, peers: Option<&[Peer]>) -> bool {
        let same_set = |a: &[Peer], b: &[Peer]| {
            a.iter().all(|p| b.contains(p)) && b.iter().all(|p| a.contains(p))
        };
        self.rules[0].policy.namespace == policy.namespace
            && match (self.peers, peers) {
                (None, None) => true,
                (Some(a), Some(b)) => same_set(a, b),
                _ => false,
            }
    }
}

/// The error of a rule that got no class at `pod`.
fn overflow(pod: &ObjectKey, rule: &RuleRef) -> PolicyError {
    let direction = if rule.direction == DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    };
    PolicyError {
        policy: rule.policy.clone(),
        field: format!("spec.{direction}[{}]", rule.index),
        message: format!(
            "pod {pod}: more than {MAX_CLASSES} distinct {direction} classes (rules with \
             different peers and different ports); this rule allows nothing there (fail closed). \
             Rules with the same peers, or the same ports, share a class"
        ),
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
        pod: &PodInfo,
        addrs: Vec<std::net::IpAddr>,
        policies: &[&Policy],
        tiers: &[&ClusterPolicy],
    ) -> EndpointState {
        let mut ep = EndpointState {
            addrs,
            ..Default::default()
        };
        let own_ports = container_ports(pod);
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let d = usize::from(direction);
            let admin = self.tier_table(Tier::Admin, tiers, direction, own_ports);
            let baseline = self.tier_table(Tier::Baseline, tiers, direction, own_ports);
            if admin.classes.len() + baseline.classes.len() > MAX_CLASSES {
                self.deny_direction(&mut ep, key, direction, [admin, baseline]);
                continue;
            }
            let mut table = ClassTable::new(MAX_CLASSES - baseline.classes.len());
            table.absorb(&mut ep, direction, admin);
            let mut groups: Vec<Group<'_>> = Vec::new();
            let mut per_peer = Vec::new();
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
                    let ports = RulePorts::new(rule);
                    if ports.per_peer(direction) {
                        per_peer.push((rule, ports, rule_ref));
                        continue;
                    }
                    // Ports that resolved to nothing admit nothing: the rule joins no group.
                    let fixed = ports.fixed(direction, own_ports);
                    if fixed.is_empty() {
                        continue;
                    }
                    let peers = rule.peers.as_deref();
                    match groups.iter_mut().find(|g| g.has_peers(&policy.key, peers)) {
                        Some(group) => {
                            group.ports = group.ports.union(&fixed);
                            group.rules.push(rule_ref);
                        }
                        None => groups.push(Group {
                            peers,
                            ports: fixed,
                            rules: vec![rule_ref],
                        }),
                    }
                }
            }
            // Groups first, in the order their first rules are read: their classes never
            // depend on the identities.
            for group in &groups {
                match table.bit(&group.ports, &group.rules) {
                    Some(b) => self.grant(&mut ep, direction, group.peers, &group.rules[0], b),
                    None => ep.degraded[d].extend(group.rules.iter().map(|r| overflow(key, r))),
                }
            }
            for (rule, ports, rule_ref) in &per_peer {
                if !self.add_per_peer_rule(&mut ep, &mut table, rule, ports, rule_ref) {
                    ep.degraded[d].push(overflow(key, rule_ref));
                }
            }
            table.absorb(&mut ep, direction, baseline);
            // Port prefixes: every prefix of every class's ranges, carrying every class whose
            // ranges contain the whole prefix (the longest match then answers exactly).
            for class in &table.classes {
                let PortSet::Ranges(ranges) = &class.ports else {
                    continue;
                };
                for r in ranges {
                    for p in range_to_prefixes(r.first, r.last) {
                        ep.ports_mut()
                            .entry((direction, r.protocol, p))
                            .or_insert(0);
                    }
                }
            }
            for ((dir, protocol, prefix), mask) in ep.ports_mut().iter_mut() {
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
            ep.tiers.add(d, &table.classes);
            ep.classes_mut()[d] = table.classes;
        }
        ep.peers_mut().retain(|_, m| *m != 0);
        if crate::k8s::cluster::namespace_audited(self.cluster, &key.namespace) {
            ep.flags |= palisade_common::EP_AUDIT;
        }
        ep
    }

    /// More tier rules at `key` in `direction` than class bits: none of them may be dropped (a
    /// Deny or a Pass left out gives more access), so the direction denies everything, with an
    /// error naming each rule.
    fn deny_direction(
        &self,
        ep: &mut EndpointState,
        key: &ObjectKey,
        direction: u8,
        tiers: [TierTable; 2],
    ) {
        let d = usize::from(direction);
        let rules: Vec<RuleRef> = tiers
            .into_iter()
            .flat_map(|t| t.classes)
            .flat_map(|c| c.rules)
            .collect();
        for rule in &rules {
            ep.degraded[d].push(PolicyError {
                policy: rule.policy.clone(),
                field: format!("{} of pod {key}", rule.describe()),
                message: format!(
                    "more than {MAX_CLASSES} ClusterNetworkPolicy rule classes apply to this \
                     pod in this direction; none may be left out, so every new connection of \
                     the pod in this direction is denied (fail closed)"
                ),
            });
        }
        let class = Class {
            ports: PortSet::All,
            rules,
            kind: ClassKind::Tier(Tier::Admin, Action::Deny),
        };
        ep.any_peer[d] |= 1;
        ep.any_port[d] |= 1;
        ep.flags |= if direction == DIR_INGRESS {
            EP_INGRESS_TIERED
        } else {
            EP_EGRESS_TIERED
        };
        ep.classes_mut()[d] = vec![class];
        ep.tiers.add(d, &ep.classes[d].clone());
    }

    /// Gives class bit `b` to every peer of a group: `peers` as written in `rule`'s policy.
    fn grant(
        &self,
        ep: &mut EndpointState,
        direction: u8,
        peers: Option<&[Peer]>,
        rule: &RuleRef,
        b: ClassMask,
    ) {
        let Some(peers) = peers else {
            ep.any_peer[usize::from(direction)] |= b;
            return;
        };
        for peer in peers {
            match peer {
                Peer::Pods { namespaces, pods } => {
                    for (id, ident) in self.candidates(rule, namespaces.as_ref()) {
                        if self.selects(rule, namespaces.as_ref(), pods.as_ref(), ident) {
                            *ep.peers_mut().entry((direction, id)).or_insert(0) |= b;
                        }
                    }
                }
                Peer::Block { cidr, except } => {
                    let block = Block::new(cidr, except);
                    for (p, id) in self.cidrs {
                        if block.holds(p) {
                            *ep.peers_mut().entry((direction, *id)).or_insert(0) |= b;
                        }
                    }
                }
            }
        }
    }

    /// Adds the bits of an egress rule with named ports, whose port set is each destination's;
    /// false when a class could not be allocated.
    fn add_per_peer_rule(
        &self,
        ep: &mut EndpointState,
        table: &mut ClassTable,
        rule: &Rule,
        ports: &RulePorts<'_>,
        rule_ref: &RuleRef,
    ) -> bool {
        let direction = rule_ref.direction;
        let d = usize::from(direction);
        let mut ok = true;
        let mut bit = |ports: &PortSet| -> Option<ClassMask> {
            if ports.is_empty() {
                return None;
            }
            let b = table.bit(ports, std::slice::from_ref(rule_ref));
            ok &= b.is_some();
            b
        };
        // Numeric ports hold for every destination, named ones for those that name them.
        let fixed = ports.fixed(direction, &[]);
        match &rule.peers {
            None => {
                if let Some(b) = bit(&fixed) {
                    ep.any_peer[d] |= b;
                }
                for (id, ident) in self.identities.iter() {
                    if let Some(b) = bit(&ports.resolve(&ident.named_ports)) {
                        *ep.peers_mut().entry((direction, *id)).or_insert(0) |= b;
                    }
                }
            }
            Some(peers) => {
                for peer in peers {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            for (id, ident) in self.candidates(rule_ref, namespaces.as_ref()) {
                                if !self.selects(
                                    rule_ref,
                                    namespaces.as_ref(),
                                    pods.as_ref(),
                                    ident,
                                ) {
                                    continue;
                                }
                                if let Some(b) = bit(&ports.resolve(&ident.named_ports)) {
                                    *ep.peers_mut().entry((direction, id)).or_insert(0) |= b;
                                }
                            }
                        }
                        Peer::Block { cidr, except } => {
                            let block = Block::new(cidr, except);
                            if let Some(b) = bit(&fixed) {
                                for (p, id) in self.cidrs {
                                    if block.holds(p) {
                                        *ep.peers_mut().entry((direction, *id)).or_insert(0) |= b;
                                    }
                                }
                            }
                            // Pod addresses in the block carry their own host prefix (see
                            // `compile`) and resolve against that pod.
                            for (addr, id) in self.addrs {
                                let host = Prefix::host(*addr);
                                let (Some(ident), Some(cidr_id)) =
                                    (self.identities.get(*id), self.cidrs.get(&host))
                                else {
                                    continue;
                                };
                                if block.holds(&host)
                                    && let Some(b) = bit(&ports.resolve(&ident.named_ports))
                                {
                                    *ep.peers_mut().entry((direction, *cidr_id)).or_insert(0) |= b;
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
    /// A rule with fixed ports has exactly one class, its group's, which lists the rule
    /// (allocated whether or not a peer matches), or none when its ports resolved to nothing or
    /// the endpoint ran out of classes: either way what [`Context::grant`] gives the identity.
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

    /// The identities a peer with namespace selector `namespaces` (absent: the namespace of
    /// `rule`'s policy) can select, in id order: only those of the namespaces it matches.
    fn candidates(
        &self,
        rule: &RuleRef,
        namespaces: Option<&LabelSelector>,
    ) -> Vec<(u32, &IdentityKey)> {
        if namespaces.is_some_and(matches_everything) {
            // `namespaceSelector: {}`: every identity, already in id order.
            return self.identities.iter().map(|(id, i)| (*id, i)).collect();
        }
        let mut ids: Vec<u32> = match namespaces {
            None => self
                .identities
                .in_namespace(&rule.policy.namespace)
                .collect(),
            Some(sel) => self
                .identities
                .namespaces()
                .filter(|(ns, _)| self.namespace_selected(sel, ns))
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect(),
        };
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| Some((id, self.identities.get(id)?)))
            .collect()
    }

    /// Whether a namespace selector matches `namespace` (one not in the cluster has no labels).
    fn namespace_selected(&self, sel: &LabelSelector, namespace: &str) -> bool {
        match self.cluster.namespace_labels(namespace) {
            Some(labels) => matches(sel, labels),
            None => matches(sel, &BTreeMap::new()),
        }
    }

    /// Whether an egress rule with named ports among `policies` reads namespace labels: its
    /// classes follow the identities it selects, so a namespace relabel can add or remove one.
    pub fn per_peer_reads_namespaces(policies: &[&Policy]) -> bool {
        policies.iter().any(|policy| {
            rules_of(policy, DIR_EGRESS)
                .into_iter()
                .flatten()
                .any(|rule| {
                    RulePorts::new(rule).per_peer(DIR_EGRESS)
                        && rule.peers.iter().flatten().any(|peer| {
                            matches!(
                                peer,
                                Peer::Pods {
                                    namespaces: Some(_),
                                    ..
                                }
                            )
                        })
                })
        })
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
            Some(sel) => self.namespace_selected(sel, &ident.namespace),
        };
        ns_ok && pods.is_none_or(|sel| matches(sel, &ident.labels))
    }
}
