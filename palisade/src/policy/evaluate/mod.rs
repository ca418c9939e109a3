//! The reference evaluator: what the NetworkPolicy API (networking.k8s.io/v1) and the
//! ClusterNetworkPolicy API (policy.networking.k8s.io/v1alpha2, its Admin and Baseline tiers:
//! `tiers.rs`) say about one connection, read straight from the objects, one API sentence at a
//! time.
//!
//! It shares nothing with the compiler and the lookup replica ([`super::compile`]'s classes,
//! identities and prefixes, [`super::lookup`]) beyond reading a policy ([`Policy::from_api`]:
//! defaulting and validation), label selectors and the pod accessors; the property tests then
//! hold the compiled maps to it. `palisade explain` prints its [`Verdict`].
//!
//! Choices the API leaves open, made the way the dataplane makes them (`shared/notes/FIELD.md`):
//! a pod always reaches itself; ingress from the pod's own node is allowed (the API's "traffic
//! source is the pod's local node"); `ipBlock` matches pod addresses too; hostNetwork pods are
//! neither targets nor peers (they are plain addresses); a policy that fails validation isolates
//! what it selects and allows nothing; an invalid ClusterNetworkPolicy fails closed as
//! `policy/tiers.rs` says. A pod reaching its own pod IP is not subject to ClusterNetworkPolicy
//! either (the API's hairpin rule; through a Service it would be, but this evaluator is asked
//! about pod addresses, and Service probes are judged against their backend pod).
//!
//! The verdict's explanation (its `Display`) is in `display.rs`.

pub mod display;
#[cfg(test)]
mod tests;
mod tiers;
#[cfg(test)]
mod tiers_props;
#[cfg(test)]
mod tiers_tests;

pub use self::{
    display::protocol_name,
    tiers::{TierOutcome, TierRuleId},
};

use std::{fmt, net::IpAddr};

use crate::k8s::cluster::PodInfo;
use ipnet::IpNet;

use super::{
    compile::NodeView,
    model::{Peer, Policy, PolicyError, Port, Rule},
    selector::matches,
    tiers::ClusterPolicy,
};
use crate::k8s::cluster::{
    Cluster, NAMESPACE_NAME_LABEL, ObjectKey, container_ports, is_host_network, pod_addrs,
    pod_labels, pod_node,
};
use crate::k8s::cnp::Tier;

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A pod, at the address the connection uses (dual-stack pods have one per family).
    Pod(&'a ObjectKey, IpAddr),
    /// Anything that is not a pod: a host outside the cluster, a node, a hostNetwork pod.
    Address(IpAddr),
}

impl<'a> Endpoint<'a> {
    /// A pod at its first address (`status.podIPs[0]`); `None` if it is unknown or has none.
    pub fn pod(cluster: &Cluster, key: &'a ObjectKey) -> Option<Self> {
        let addr = *pod_addrs(cluster.pods.get(key)?).first()?;
        Some(Self::Pod(key, addr))
    }

    /// A pod at its address of the same family as `like`; `None` if it has none.
    pub fn pod_like(cluster: &Cluster, key: &'a ObjectKey, like: IpAddr) -> Option<Self> {
        let addrs = pod_addrs(cluster.pods.get(key)?);
        let addr = addrs.into_iter().find(|a| a.is_ipv4() == like.is_ipv4())?;
        Some(Self::Pod(key, addr))
    }

    /// Whoever owns `addr`: the first pod (not hostNetwork) with that address, else the address.
    pub fn at(cluster: &'a Cluster, addr: IpAddr) -> Self {
        cluster
            .pods
            .iter()
            .find(|(_, pod)| !is_host_network(pod) && pod_addrs(pod).contains(&addr))
            .map_or(Self::Address(addr), |(key, _)| Self::Pod(key, addr))
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            Self::Pod(_, addr) | Self::Address(addr) => *addr,
        }
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(key, _) => write!(f, "{key}"),
            Self::Address(addr) => write!(f, "{addr}"),
        }
    }
}

/// The answer for one connection: it needs the source's egress AND the destination's ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
    /// The source and destination as named in explanations (`ns/pod` or an address).
    pub from: String,
    pub to: String,
    pub protocol: u8,
    pub port: u16,
}

/// How one end's policy judges a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectionVerdict {
    /// This end is not a pod subject to policy.
    NotApplicable(NotAPod),
    /// A pod talking to itself: policy never applies.
    Itself,
    /// No policy selects the pod for this direction.
    NotIsolated,
    /// Ingress from the pod's own node (kubelet probes).
    FromNode,
    /// Every rule that admits the connection.
    AllowedBy(Vec<RuleId>),
    /// Isolated by these policies, and none of their rules admits the connection.
    Denied { isolating: Vec<ObjectKey> },
    /// A ClusterNetworkPolicy rule with action Accept decided (Admin tier, or Baseline for a
    /// pod no NetworkPolicy isolates).
    AcceptedByTier(TierRuleId),
    /// A ClusterNetworkPolicy rule with action Deny decided.
    DeniedByTier(TierRuleId),
}

/// Why an end is not subject to policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAPod {
    Address,
    HostNetwork,
    /// A pod key that is not in the snapshot.
    Unknown,
}

/// A rule of a policy: `spec.ingress[index]` or `spec.egress[index]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleId {
    pub policy: ObjectKey,
    pub index: usize,
}

impl DirectionVerdict {
    pub fn allows(&self) -> bool {
        !matches!(self, Self::Denied { .. } | Self::DeniedByTier(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn rules(self, policy: &Policy) -> Option<&[Rule]> {
        match self {
            Self::Ingress => policy.ingress.as_deref(),
            Self::Egress => policy.egress.as_deref(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// Evaluates connections against one snapshot; policies are read once.
pub struct Evaluator<'a> {
    cluster: &'a Cluster,
    nodes: &'a [NodeView<'a>],
    policies: Vec<Policy>,
    errors: Vec<PolicyError>,
    /// In the order they are tried (tier, priority, name).
    cluster_policies: Vec<ClusterPolicy>,
}

/// One connection against `cluster`; `nodes` name each node's own addresses.
pub fn evaluate(
    cluster: &Cluster,
    nodes: &[NodeView<'_>],
    from: Endpoint<'_>,
    to: Endpoint<'_>,
    protocol: u8,
    port: u16,
) -> Verdict {
    Evaluator::new(cluster, nodes).evaluate(from, to, protocol, port)
}

impl<'a> Evaluator<'a> {
    pub fn new(cluster: &'a Cluster, nodes: &'a [NodeView<'a>]) -> Self {
        let (mut policies, mut errors) = (Vec::new(), Vec::new());
        for policy in cluster.policies.values() {
            // Defaulting and validation as the API server applies them; an invalid policy keeps
            // its policyTypes and loses every rule.
            let (policy, errs) = Policy::from_api(policy);
            policies.push(policy);
            errors.extend(errs);
        }
        let cluster_policies = tiers::ranked(
            cluster
                .cluster_policies
                .values()
                .map(|p| ClusterPolicy::from_api(p))
                .collect(),
        );
        Self {
            cluster,
            nodes,
            policies,
            errors,
            cluster_policies,
        }
    }

    /// The ClusterNetworkPolicies read, in the order they are tried; each carries the errors
    /// it failed closed for.
    pub fn cluster_policies(&self) -> &[ClusterPolicy] {
        &self.cluster_policies
    }

    /// Problems with the policies read (their pods stay isolated, with no rules from them).
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }

    /// A new connection from `from` to `to` on `protocol`/`port` (the destination port).
    pub fn evaluate(
        &self,
        from: Endpoint<'_>,
        to: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> Verdict {
        let (egress, ingress) = match (from, to) {
            (Endpoint::Pod(a, _), Endpoint::Pod(b, _)) if a == b => {
                (DirectionVerdict::Itself, DirectionVerdict::Itself)
            }
            _ => (
                self.judge(Direction::Egress, from, to, to, protocol, port),
                self.judge(Direction::Ingress, to, from, to, protocol, port),
            ),
        };
        Verdict {
            allowed: egress.allows() && ingress.allows(),
            egress,
            ingress,
            from: from.to_string(),
            to: to.to_string(),
            protocol,
            port,
        }
    }

    /// The pod behind an endpoint, if it is one that policy applies to.
    fn pod(&self, end: Endpoint<'_>) -> Result<&'a PodInfo, NotAPod> {
        let Endpoint::Pod(key, _) = end else {
            return Err(NotAPod::Address);
        };
        let pod = self.cluster.pods.get(key).ok_or(NotAPod::Unknown)?;
        if is_host_network(pod) {
            Err(NotAPod::HostNetwork)
        } else {
            Ok(pod)
        }
    }

    /// `subject`'s policy for `direction`, towards `peer`; `dest` is whichever of the two the
    /// connection goes to (named ports are its ports).
    fn judge(
        &self,
        direction: Direction,
        subject: Endpoint<'_>,
        peer: Endpoint<'_>,
        dest: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> DirectionVerdict {
        let Endpoint::Pod(key, _) = subject else {
            return DirectionVerdict::NotApplicable(NotAPod::Address);
        };
        let pod = match self.pod(subject) {
            Ok(pod) => pod,
            Err(why) => return DirectionVerdict::NotApplicable(why),
        };
        // "The Admin tier takes precedence over all other policies. [...] If Admin tier has made
        // a final decision (Accept or Deny) on a connection, then no further evaluation is
        // done." A Pass, or no match, hands on to NetworkPolicy.
        let tier = |tier| self.tier_decides(tier, direction, key, pod, peer, dest, protocol, port);
        match tier(Tier::Admin) {
            Some(TierOutcome::Accept(id)) => return DirectionVerdict::AcceptedByTier(id),
            Some(TierOutcome::Deny(id)) => return DirectionVerdict::DeniedByTier(id),
            Some(TierOutcome::Pass(_)) | None => {}
        }
        // "v1.NetworkPolicy always makes a final decision for selected pods. Further evaluation
        // only happens for Pods not selected by a v1.NetworkPolicy."
        let by_network_policy =
            self.judge_network_policy(direction, key, pod, peer, dest, protocol, port);
        if by_network_policy != DirectionVerdict::NotIsolated {
            return by_network_policy;
        }
        // "Baseline tier is a cluster-wide policy that can be overridden by the
        // v1.NetworkPolicy. [...] If a given connection wasn't allowed or denied by any of the
        // tiers, the default kubernetes policy is applied, which says that all pods can
        // communicate with each other."
        match tier(Tier::Baseline) {
            Some(TierOutcome::Accept(id)) => DirectionVerdict::AcceptedByTier(id),
            Some(TierOutcome::Deny(id)) => DirectionVerdict::DeniedByTier(id),
            Some(TierOutcome::Pass(_)) | None => DirectionVerdict::NotIsolated,
        }
    }

    /// The NetworkPolicy (v1) tier alone: [`DirectionVerdict::NotIsolated`] when no policy
    /// isolates `pod` for `direction`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one connection seen from one side: `judge`'s arguments and the pod it found"
    )]
    fn judge_network_policy(
        &self,
        direction: Direction,
        key: &ObjectKey,
        pod: &PodInfo,
        peer: Endpoint<'_>,
        dest: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> DirectionVerdict {
        // podSelector: "selects the pods to which this NetworkPolicy object applies [...] An
        // empty podSelector matches all pods in this namespace." policyTypes: the directions
        // it applies to (`None` rules when the direction is not among them).
        let isolating: Vec<(&Policy, &[Rule])> = self
            .policies
            .iter()
            .filter(|p| {
                p.key.namespace == key.namespace && matches(&p.pod_selector, pod_labels(pod))
            })
            .filter_map(|p| Some((p, direction.rules(p)?)))
            .collect();
        // "Traffic is allowed [...] if there are no NetworkPolicies selecting the pod".
        if isolating.is_empty() {
            return DirectionVerdict::NotIsolated;
        }
        // Ingress: "OR if the traffic source is the pod's local node".
        if direction == Direction::Ingress && self.is_node_of(pod, peer.addr()) {
            return DirectionVerdict::FromNode;
        }
        // "OR if the traffic matches at least one [...] rule across all of the NetworkPolicy
        // objects whose podSelector matches the pod." Rules only add: no order, no deny.
        let allowed_by: Vec<RuleId> = isolating
            .iter()
            .flat_map(|(policy, rules)| {
                rules
                    .iter()
                    .filter(|rule| self.rule_admits(policy, rule, peer, dest, protocol, port))
                    .map(|rule| RuleId {
                        policy: policy.key.clone(),
                        index: rule.index,
                    })
            })
            .collect();
        if allowed_by.is_empty() {
            // "If this field is empty then this NetworkPolicy does not allow any traffic (and
            // serves solely to ensure that the pods it selects are isolated by default)".
            DirectionVerdict::Denied {
                isolating: isolating.iter().map(|(p, _)| p.key.clone()).collect(),
            }
        } else {
            DirectionVerdict::AllowedBy(allowed_by)
        }
    }

    /// The labels of namespace `name`, with the name label the API server sets on every
    /// namespace since v1.21.
    fn namespace_labels_of(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let mut labels = self
            .cluster
            .namespace_labels(name)
            .cloned()
            .unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.to_owned());
        labels
    }

    fn is_node_of(&self, pod: &PodInfo, addr: IpAddr) -> bool {
        let node = pod_node(pod);
        self.nodes
            .iter()
            .any(|n| n.name == node && n.addrs.contains(&addr))
    }

    /// "The traffic must match both ports and from" (ingress) / "both ports and to" (egress).
    fn rule_admits(
        &self,
        policy: &Policy,
        rule: &Rule,
        peer: Endpoint<'_>,
        dest: Endpoint<'_>,
        protocol: u8,
        port: u16,
    ) -> bool {
        // from/to: "If this field is empty or missing, this rule matches all sources [...]
        // Items in this list are combined using a logical OR operation."
        let peer_ok = rule
            .peers
            .as_ref()
            .is_none_or(|peers| peers.iter().any(|p| self.peer_matches(policy, p, peer)));
        // ports: "If this field is empty or missing, this rule matches all ports [...] Each
        // item in this list is combined using a logical OR."
        let port_ok = rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|p| self.port_matches(p, dest, protocol, port));
        peer_ok && port_ok
    }

    fn peer_matches(&self, policy: &Policy, peer: &Peer, end: Endpoint<'_>) -> bool {
        match peer {
            Peer::Pods { namespaces, pods } => {
                // hostNetwork pods and plain addresses are never selected by label.
                let (Endpoint::Pod(key, _), Ok(pod)) = (end, self.pod(end)) else {
                    return false;
                };
                // podSelector: "If namespaceSelector is also set, then the NetworkPolicyPeer as
                // a whole selects the pods matching podSelector in the Namespaces selected by
                // NamespaceSelector. Otherwise it selects the pods matching podSelector in the
                // policy's own namespace."
                // namespaceSelector: "if present but empty, it selects all namespaces. [...]
                // Otherwise it selects all pods in the namespaces selected by namespaceSelector."
                let namespace_ok = match namespaces {
                    None => key.namespace == policy.key.namespace,
                    Some(selector) => matches(selector, &self.namespace_labels_of(&key.namespace)),
                };
                // "if present but empty, it selects all pods".
                namespace_ok
                    && pods
                        .as_ref()
                        .is_none_or(|selector| matches(selector, pod_labels(pod)))
            }
            // IPBlock: "a particular CIDR [...] The except entry describes CIDRs that should not
            // be included within this rule." Pod addresses count too (upstream e2e expects it),
            // and the except list belongs to this peer only. An IPv4 block never holds an IPv6
            // address or the other way round.
            Peer::Block { cidr, except } => {
                let addr = end.addr();
                let within = |net: &IpNet| match (net, addr) {
                    (IpNet::V4(net), IpAddr::V4(a)) => net.contains(&a),
                    (IpNet::V6(net), IpAddr::V6(a)) => net.contains(&a),
                    _ => false,
                };
                within(cidr) && !except.iter().any(within)
            }
        }
    }

    fn port_matches(&self, rule_port: &Port, dest: Endpoint<'_>, protocol: u8, port: u16) -> bool {
        match rule_port {
            // protocol: "If not specified, this field defaults to TCP." port: "If this field is
            // not provided, this matches all port names and numbers. If present, only traffic
            // on the specified protocol AND port will be matched." endPort: "the range of ports
            // from port to endPort if set, inclusive". (Read into a range by the model.)
            Port::Numeric(range) => {
                range.protocol == protocol && range.first <= port && port <= range.last
            }
            // port: "This can either be a numerical or named port on a pod": the destination
            // pod's container port of that name and protocol. A non-pod has no named ports.
            Port::Named {
                protocol: named_protocol,
                name,
            } => {
                *named_protocol == protocol
                    && self.pod(dest).is_ok_and(|pod| {
                        container_ports(pod)
                            .iter()
                            .any(|(n, p, number)| n == name && *p == protocol && *number == port)
                    })
            }
        }
    }
}
