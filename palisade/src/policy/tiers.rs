//! A ClusterNetworkPolicy read once into the shape the evaluator (and later the compiler)
//! needs: its place in the tiers, whom it applies to, and its rules in the order they are
//! tried; an invalid one read so that it fails closed.
//!
//! # Order
//!
//! Policies of a tier are tried by ascending `priority`. Two policies of one tier with the same
//! priority are tried by name (byte order): the API leaves the choice to the implementation
//! ("the implementation can apply any of the matching policies"), and a name order is total,
//! stable across agents and restarts, and visible to the administrator. [`ClusterPolicy::rank`]
//! is that order; [`same_rank_conflicts`] lists the pairs it has to break.
//!
//! # Failing closed
//!
//! An object that upstream's CRD (with its CEL rules) refuses, or that uses `domainNames`,
//! never gives its subjects more access than any corrected version of it could:
//! - a peer that sets no field (a field this version does not know) is read as upstream says:
//!   its rule matches nothing if it is an Accept, and denies everything if it is a Deny or a
//!   Pass (at its own place among the rules);
//! - each direction that has any other error (a field under `spec.ingress` or `spec.egress`)
//!   becomes a single Deny of every peer, port and protocol; a direction without errors keeps
//!   its rules;
//! - an error elsewhere (tier, priority, subject) does this to every direction that has rules;
//!   a direction the object has no rules for stays untouched, as any correction would leave it;
//! - an unknown tier is read as `Admin`, an out-of-range priority as 0: a Deny tried earlier
//!   only takes more away;
//! - an invalid subject is widened to every pod it could name: each selector requirement or
//!   label that cannot be read is dropped (requirements are ANDed, so what is left selects a
//!   superset), both `namespaces` and `pods` together select their union, and neither selects
//!   every pod.
//!
//! A Deny at the policy's own tier and priority is the least access that position can give: in
//! any reading, what that position decides is Accept, Deny, or handing on (Pass or no match).

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::ports::PortRange;
use crate::k8s::{
    cnp::{self, Action, ClusterNetworkPolicy, CnpError, CnpProblem, NamespacedPod, Tier},
    keys::protocol_number,
    manifest::{valid_label_key, valid_label_value},
};

/// Whom a ClusterNetworkPolicy applies to (or a peer selects by labels): pods of the namespaces
/// `namespaces` selects (`None`: every namespace) that `pods` selects (`None`: every pod).
#[derive(Debug, Clone, PartialEq)]
pub struct PodSet {
    pub namespaces: Option<LabelSelector>,
    pub pods: Option<LabelSelector>,
}

impl PodSet {
    pub const EVERY_POD: Self = Self {
        namespaces: None,
        pods: None,
    };

    fn from_namespaces(selector: &LabelSelector) -> Self {
        Self {
            namespaces: Some(selector.clone()),
            pods: None,
        }
    }

    fn from_pods(pods: &NamespacedPod) -> Self {
        Self {
            namespaces: pods.namespace_selector.clone(),
            // A missing podSelector is an error; reading it as "every pod" widens.
            pods: pods.pod_selector.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TierPeer {
    Pods(PodSet),
    /// Addresses within any of the blocks, pod addresses included.
    Networks(Vec<IpNet>),
    /// The addresses (`status.addresses`) of the nodes selected.
    Nodes(LabelSelector),
    /// Every source or destination (only from failing closed).
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierPort {
    Numeric(PortRange),
    /// The destination pod's container port of that name, with that port's protocol.
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TierRule {
    /// Position in `spec.ingress` / `spec.egress`; `None` for the Deny made by failing closed.
    pub index: Option<usize>,
    pub name: String,
    pub action: Action,
    /// Any of them.
    pub peers: Vec<TierPeer>,
    /// Empty: every protocol and port.
    pub ports: Vec<TierPort>,
}

impl TierRule {
    fn deny_all() -> Self {
        Self {
            index: None,
            name: "invalid policy: deny all".to_owned(),
            action: Action::Deny,
            peers: vec![TierPeer::Any],
            ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPolicy {
    pub name: String,
    /// `Admin` or `Baseline`.
    pub tier: Tier,
    pub priority: i32,
    /// Any of them (two only when an invalid subject set both).
    pub subjects: Vec<PodSet>,
    /// Empty: the policy does not touch this direction.
    pub ingress: Vec<TierRule>,
    pub egress: Vec<TierRule>,
    /// Why the policy failed closed; empty when it is read as written.
    pub errors: Vec<CnpError>,
}

impl ClusterPolicy {
    pub fn from_api(policy: &ClusterNetworkPolicy) -> Self {
        let errors = cnp::validate(policy);
        let spec = &policy.spec;
        // A peer with no field set is upstream's own case, handled rule by rule below.
        let in_dir = |dir: &str| {
            errors
                .iter()
                .any(|e| e.field.starts_with(&format!("spec.{dir}")) && !is_empty_peer(e))
        };
        let elsewhere = errors
            .iter()
            .any(|e| !e.field.starts_with("spec.ingress") && !e.field.starts_with("spec.egress"));
        let ingress = if spec.ingress.is_empty() {
            Vec::new()
        } else if elsewhere || in_dir("ingress") {
            vec![TierRule::deny_all()]
        } else {
            (spec.ingress.iter().enumerate())
                .filter_map(|(i, rule)| {
                    let empty = rule
                        .from
                        .iter()
                        .any(|p| p.namespaces.is_none() && p.pods.is_none());
                    let peers = rule
                        .from
                        .iter()
                        .map(|p| match (&p.namespaces, &p.pods) {
                            (Some(namespaces), _) => {
                                TierPeer::Pods(PodSet::from_namespaces(namespaces))
                            }
                            (None, Some(pods)) => TierPeer::Pods(PodSet::from_pods(pods)),
                            (None, None) => TierPeer::Any,
                        })
                        .collect();
                    as_written(i, &rule.name, rule.action, empty, peers, &rule.protocols)
                })
                .collect()
        };
        let egress = if spec.egress.is_empty() {
            Vec::new()
        } else if elsewhere || in_dir("egress") {
            vec![TierRule::deny_all()]
        } else {
            (spec.egress.iter().enumerate())
                .filter_map(|(i, rule)| {
                    let empty = rule.to.iter().any(empty_egress_peer);
                    let peers = rule.to.iter().map(read_egress_peer).collect();
                    as_written(i, &rule.name, rule.action, empty, peers, &rule.protocols)
                })
                .collect()
        };
        Self {
            name: policy.metadata.name.clone().unwrap_or_default(),
            tier: match spec.tier {
                Some(Tier::Baseline) => Tier::Baseline,
                _ => Tier::Admin,
            },
            priority: spec
                .priority
                .filter(|p| (0..=1000).contains(p))
                .unwrap_or(0),
            subjects: read_subjects(spec.subject.as_ref()),
            ingress,
            egress,
            errors,
        }
    }

    /// The order policies are tried in: tier, then priority, then name.
    pub fn rank(&self) -> (Tier, i32, &str) {
        (self.tier, self.priority, &self.name)
    }
}

/// Pairs of policies (by name) of the same tier and priority: the API leaves their order to
/// the implementation, which tries them by name; worth a warning when both match a connection.
pub fn same_rank_conflicts(policies: &[ClusterPolicy]) -> Vec<(&str, &str)> {
    let mut pairs = Vec::new();
    for (i, a) in policies.iter().enumerate() {
        for b in &policies[i + 1..] {
            if (a.tier, a.priority) == (b.tier, b.priority) {
                pairs.push((a.name.as_str(), b.name.as_str()));
            }
        }
    }
    pairs
}

/// Rule `index` as written, unless one of its peers sets no field; then as upstream says to
/// read it: "If an implementation sees no fields are set then it can infer that the deployed
/// CRD is of an incompatible version with an unknown field. In that case it should fail
/// closed. For "Accept" rules, "fail closed" means: "treat the rule as matching no traffic".
/// For "Deny" and "Pass" rules, "fail closed" means: "treat the rule as a 'Deny all' rule"."
fn as_written(
    index: usize,
    name: &str,
    action: Action,
    empty_peer: bool,
    peers: Vec<TierPeer>,
    protocols: &Option<Vec<cnp::Protocol>>,
) -> Option<TierRule> {
    match (empty_peer, action) {
        (false, _) => Some(TierRule {
            index: Some(index),
            name: name.to_owned(),
            action,
            peers,
            ports: read_ports(protocols.as_deref()),
        }),
        (true, Action::Accept) => None,
        (true, _) => Some(TierRule {
            index: Some(index),
            name: name.to_owned(),
            ..TierRule::deny_all()
        }),
    }
}

fn empty_egress_peer(peer: &cnp::EgressPeer) -> bool {
    peer.namespaces.is_none()
        && peer.pods.is_none()
        && peer.nodes.is_none()
        && peer.networks.is_none()
        && peer.domain_names.is_none()
}

/// The error of a peer that sets no field (`spec.ingress[0].from[1]`).
fn is_empty_peer(error: &CnpError) -> bool {
    matches!(error.problem, CnpProblem::NotExactlyOne { found: 0, .. })
        && (error.field.contains(".from[") || error.field.contains(".to["))
        && error.field.ends_with(']')
}

fn read_subjects(subject: Option<&cnp::Subject>) -> Vec<PodSet> {
    let Some(subject) = subject else {
        return vec![PodSet::EVERY_POD];
    };
    let mut sets = Vec::new();
    if let Some(namespaces) = &subject.namespaces {
        sets.push(PodSet::from_namespaces(&widen(namespaces)));
    }
    if let Some(pods) = &subject.pods {
        sets.push(PodSet {
            namespaces: pods.namespace_selector.as_ref().map(widen),
            pods: pods.pod_selector.as_ref().map(widen),
        });
    }
    if sets.is_empty() {
        sets.push(PodSet::EVERY_POD);
    }
    sets
}

/// `selector` less every part that cannot be read (a valid selector is returned as it is):
/// what is left selects a superset of any correction of it.
fn widen(selector: &LabelSelector) -> LabelSelector {
    let labels = selector.match_labels.as_ref().map(|labels| {
        labels
            .iter()
            .filter(|(k, v)| valid_label_key(k) && valid_label_value(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let expressions = selector.match_expressions.as_ref().map(|expressions| {
        expressions
            .iter()
            .filter(|r| readable(r))
            .cloned()
            .collect()
    });
    LabelSelector {
        match_labels: labels,
        match_expressions: expressions,
    }
}

fn readable(requirement: &LabelSelectorRequirement) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    valid_label_key(&requirement.key)
        && match requirement.operator.as_str() {
            "In" | "NotIn" => !values.is_empty() && values.iter().all(|v| valid_label_value(v)),
            "Exists" | "DoesNotExist" => values.is_empty(),
            _ => false,
        }
}

fn read_egress_peer(peer: &cnp::EgressPeer) -> TierPeer {
    if let Some(namespaces) = &peer.namespaces {
        TierPeer::Pods(PodSet::from_namespaces(namespaces))
    } else if let Some(pods) = &peer.pods {
        TierPeer::Pods(PodSet::from_pods(pods))
    } else if let Some(nodes) = &peer.nodes {
        TierPeer::Nodes(nodes.clone())
    } else if let Some(networks) = &peer.networks {
        TierPeer::Networks(networks.iter().filter_map(|n| cnp::parse_cidr(n)).collect())
    } else {
        // Validation refuses this (and domainNames); unreachable once it passed.
        TierPeer::Any
    }
}

fn read_ports(protocols: Option<&[cnp::Protocol]>) -> Vec<TierPort> {
    let mut ports = Vec::new();
    for protocol in protocols.unwrap_or_default() {
        for (name, matched) in [
            ("TCP", &protocol.tcp),
            ("UDP", &protocol.udp),
            ("SCTP", &protocol.sctp),
        ] {
            let (Some(matched), Some(number)) = (matched, protocol_number(Some(name))) else {
                continue;
            };
            let range = match matched.destination_port.as_ref() {
                Some(cnp::Port {
                    number: Some(p), ..
                }) => (*p, *p),
                Some(cnp::Port { range: Some(r), .. }) => (r.start, r.end),
                // Validation refuses these; unreachable once it passed.
                _ => continue,
            };
            let (Ok(first), Ok(last)) = (u16::try_from(range.0), u16::try_from(range.1)) else {
                continue;
            };
            ports.push(TierPort::Numeric(PortRange {
                protocol: number,
                first,
                last,
            }));
        }
        if let Some(name) = &protocol.destination_named_port {
            ports.push(TierPort::Named(name.clone()));
        }
    }
    ports
}

#[cfg(test)]
mod tests;
