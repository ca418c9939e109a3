//! Everything upstream's CRD says a ClusterNetworkPolicy must be, checked in Rust: the schema
//! (required fields, enums, bounds, lengths, "exactly one of") and its CEL rules, which an old
//! API server (v1.20 here) does not enforce. Each problem names the object and the field.
//!
//! The CEL rules (`x-kubernetes-validations`), quoted where they are checked:
//! - `PortRange`: `self.start < self.end` ("Start port must be less than End port");
//! - `CIDR`: `isCIDR(self)` ("Invalid CIDR format provided");
//! - the experimental channel's egress rule: "networks/nodes/domainNames peer cannot be set with
//!   namedPorts since there are no namedPorts for networks/nodes/domainNames" (checked here
//!   because `nodes` is read: a named port can never match a node or a CIDR).
//!
//! Beyond the CRD, label selectors are checked as the API server's `LabelSelectorAsSelector`
//! would (operators, values, label syntax): the CRD's schema leaves them free, and a selector
//! with an unknown operator must not silently select nothing. `domainNames` is refused: it is
//! not implemented. What an invalid object then does is the policy model's choice (fail
//! closed for its subjects), not this module's.

use std::{collections::BTreeSet, fmt};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    Action, ClusterNetworkPolicy, EgressPeer, IngressPeer, NamespacedPod, Port, Protocol, Tier,
};
use crate::k8s::manifest::{FieldProblem, selector_problems};

/// Most rules, peers, protocols and networks a list may hold.
const MAX_ITEMS: usize = 25;
/// Longest rule name, in characters.
const MAX_RULE_NAME: usize = 100;
/// Longest CIDR string.
const MAX_CIDR: usize = 43;

/// One field of one ClusterNetworkPolicy that upstream's CRD refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clusternetworkpolicy {policy}: {field}: {problem}")]
pub struct CnpError {
    pub policy: String,
    /// The field path, e.g. `spec.egress[0].to[1].networks[0]`.
    pub field: String,
    pub problem: CnpProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CnpProblem {
    #[error("required")]
    Required,
    #[error("unknown tier (expected Admin or Baseline)")]
    UnknownTier,
    #[error("priority {priority} is outside 0..=1000")]
    PriorityOutOfRange { priority: i32 },
    #[error("unknown action (expected Accept, Deny or Pass)")]
    UnknownAction,
    #[error("exactly one of {fields} must be set, found {found}")]
    NotExactlyOne { fields: &'static str, found: usize },
    #[error("at least one item is required")]
    TooFewItems,
    #[error("{len} items, at most {MAX_ITEMS} allowed")]
    TooManyItems { len: usize },
    #[error("{len} characters, at most {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("port {port} is outside 1..=65535")]
    PortOutOfRange { port: i32 },
    #[error("Start port must be less than End port (start {start}, end {end})")]
    RangeNotAscending { start: i32, end: i32 },
    #[error("Invalid CIDR format provided: {cidr:?}")]
    InvalidCidr { cidr: String },
    #[error("duplicate value {value:?} (a set)")]
    Duplicate { value: String },
    #[error("destinationNamedPort must not be empty")]
    EmptyNamedPort,
    #[error(
        "networks/nodes/domainNames peer cannot be set with namedPorts since there are no \
         namedPorts for networks/nodes/domainNames"
    )]
    NamedPortWithAddressPeer,
    #[error(
        "domainNames (experimental channel) is not supported by Palisade: this rule is not \
         enforced as written; remove domainNames or use networks"
    )]
    DomainNamesUnsupported,
    #[error(transparent)]
    Selector(FieldProblem),
}

/// Every problem of `policy`; empty when upstream's CRD (with its CEL rules) would accept it
/// and Palisade can enforce all of it.
pub fn validate(policy: &ClusterNetworkPolicy) -> Vec<CnpError> {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let mut found = Found {
        policy: name,
        errors: Vec::new(),
    };
    let spec = &policy.spec;
    match spec.tier {
        None => found.add("spec.tier", CnpProblem::Required),
        Some(Tier::Unknown) => found.add("spec.tier", CnpProblem::UnknownTier),
        Some(Tier::Admin | Tier::Baseline) => {}
    }
    match spec.priority {
        None => found.add("spec.priority", CnpProblem::Required),
        Some(priority) if !(0..=1000).contains(&priority) => {
            found.add("spec.priority", CnpProblem::PriorityOutOfRange { priority })
        }
        Some(_) => {}
    }
    match &spec.subject {
        None => found.add("spec.subject", CnpProblem::Required),
        Some(subject) => {
            let set =
                usize::from(subject.namespaces.is_some()) + usize::from(subject.pods.is_some());
            if set != 1 {
                found.add(
                    "spec.subject",
                    CnpProblem::NotExactlyOne {
                        fields: "namespaces, pods",
                        found: set,
                    },
                );
            }
            if let Some(selector) = &subject.namespaces {
                found.selector(selector, "spec.subject.namespaces");
            }
            if let Some(pods) = &subject.pods {
                found.namespaced_pod(pods, "spec.subject.pods");
            }
        }
    }
    found.count(spec.ingress.len(), "spec.ingress", false);
    for (i, rule) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        found.rule_head(&rule.name, rule.action, &at);
        found.count(rule.from.len(), &format!("{at}.from"), true);
        for (j, peer) in rule.from.iter().enumerate() {
            found.ingress_peer(peer, &format!("{at}.from[{j}]"));
        }
        found.protocols(rule.protocols.as_deref(), &at);
    }
    found.count(spec.egress.len(), "spec.egress", false);
    for (i, rule) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        found.rule_head(&rule.name, rule.action, &at);
        found.count(rule.to.len(), &format!("{at}.to"), true);
        for (j, peer) in rule.to.iter().enumerate() {
            found.egress_peer(peer, &format!("{at}.to[{j}]"));
        }
        found.protocols(rule.protocols.as_deref(), &at);
        // The experimental channel's CEL rule on the egress rule.
        let address_peer = rule
            .to
            .iter()
            .any(|p| p.networks.is_some() || p.nodes.is_some() || p.domain_names.is_some());
        let named_port = rule
            .protocols
            .iter()
            .flatten()
            .any(|p| p.destination_named_port.is_some());
        if address_peer && named_port {
            found.add(&at, CnpProblem::NamedPortWithAddressPeer);
        }
    }
    found.errors
}

struct Found {
    policy: String,
    errors: Vec<CnpError>,
}

impl Found {
    fn add(&mut self, field: impl fmt::Display, problem: CnpProblem) {
        self.errors.push(CnpError {
            policy: self.policy.clone(),
            field: field.to_string(),
            problem,
        });
    }

    /// `minItems: 1` (when `required`) and `maxItems: 25`.
    fn count(&mut self, len: usize, at: &str, required: bool) {
        if required && len == 0 {
            self.add(at, CnpProblem::TooFewItems);
        }
        if len > MAX_ITEMS {
            self.add(at, CnpProblem::TooManyItems { len });
        }
    }

    fn rule_head(&mut self, name: &str, action: Action, at: &str) {
        let len = name.chars().count();
        if len > MAX_RULE_NAME {
            let max = MAX_RULE_NAME;
            self.add(format!("{at}.name"), CnpProblem::TooLong { len, max });
        }
        if action == Action::Unknown {
            self.add(format!("{at}.action"), CnpProblem::UnknownAction);
        }
    }

    fn selector(&mut self, selector: &LabelSelector, at: &str) {
        for (field, problem) in selector_problems(selector, at) {
            self.add(field, CnpProblem::Selector(problem));
        }
    }

    fn namespaced_pod(&mut self, pods: &NamespacedPod, at: &str) {
        if let Some(selector) = &pods.namespace_selector {
            self.selector(selector, &format!("{at}.namespaceSelector"));
        }
        match &pods.pod_selector {
            None => self.add(format!("{at}.podSelector"), CnpProblem::Required),
            Some(selector) => self.selector(selector, &format!("{at}.podSelector")),
        }
    }

    fn ingress_peer(&mut self, peer: &IngressPeer, at: &str) {
        let set = usize::from(peer.namespaces.is_some()) + usize::from(peer.pods.is_some());
        if set != 1 {
            let fields = "namespaces, pods";
            self.add(at, CnpProblem::NotExactlyOne { fields, found: set });
        }
        if let Some(selector) = &peer.namespaces {
            self.selector(selector, &format!("{at}.namespaces"));
        }
        if let Some(pods) = &peer.pods {
            self.namespaced_pod(pods, &format!("{at}.pods"));
        }
    }

    fn egress_peer(&mut self, peer: &EgressPeer, at: &str) {
        let set = [
            peer.namespaces.is_some(),
            peer.pods.is_some(),
            peer.nodes.is_some(),
            peer.networks.is_some(),
            peer.domain_names.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if set != 1 {
            let fields = "namespaces, pods, nodes, networks, domainNames";
            self.add(at, CnpProblem::NotExactlyOne { fields, found: set });
        }
        if let Some(selector) = &peer.namespaces {
            self.selector(selector, &format!("{at}.namespaces"));
        }
        if let Some(pods) = &peer.pods {
            self.namespaced_pod(pods, &format!("{at}.pods"));
        }
        if let Some(selector) = &peer.nodes {
            self.selector(selector, &format!("{at}.nodes"));
        }
        if let Some(networks) = &peer.networks {
            let at = format!("{at}.networks");
            self.count(networks.len(), &at, true);
            let mut seen = BTreeSet::new();
            for (i, cidr) in networks.iter().enumerate() {
                let field = format!("{at}[{i}]");
                if cidr.len() > MAX_CIDR {
                    let (len, max) = (cidr.len(), MAX_CIDR);
                    self.add(&field, CnpProblem::TooLong { len, max });
                }
                // CEL `isCIDR(self)`.
                if parse_cidr(cidr).is_none() {
                    let cidr = cidr.clone();
                    self.add(&field, CnpProblem::InvalidCidr { cidr });
                }
                // `x-kubernetes-list-type: set`.
                if !seen.insert(cidr) {
                    let value = cidr.clone();
                    self.add(&field, CnpProblem::Duplicate { value });
                }
            }
        }
        if peer.domain_names.is_some() {
            self.add(
                format!("{at}.domainNames"),
                CnpProblem::DomainNamesUnsupported,
            );
        }
    }

    fn protocols(&mut self, protocols: Option<&[Protocol]>, rule: &str) {
        let Some(protocols) = protocols else { return };
        let at = format!("{rule}.protocols");
        self.count(protocols.len(), &at, true);
        for (i, protocol) in protocols.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let set = [
                protocol.tcp.is_some(),
                protocol.udp.is_some(),
                protocol.sctp.is_some(),
                protocol.destination_named_port.is_some(),
            ]
            .into_iter()
            .filter(|set| *set)
            .count();
            if set != 1 {
                let fields = "tcp, udp, sctp, destinationNamedPort";
                self.add(&at, CnpProblem::NotExactlyOne { fields, found: set });
            }
            for (name, ports) in [
                ("tcp", &protocol.tcp),
                ("udp", &protocol.udp),
                ("sctp", &protocol.sctp),
            ] {
                let Some(ports) = ports else { continue };
                // `minProperties: 1`: `tcp: {}` is refused.
                match &ports.destination_port {
                    None => self.add(
                        format!("{at}.{name}"),
                        CnpProblem::NotExactlyOne {
                            fields: "destinationPort",
                            found: 0,
                        },
                    ),
                    Some(port) => self.port(port, &format!("{at}.{name}.destinationPort")),
                }
            }
            if protocol.destination_named_port.as_deref() == Some("") {
                let at = format!("{at}.destinationNamedPort");
                self.add(at, CnpProblem::EmptyNamedPort);
            }
        }
    }

    fn port(&mut self, port: &Port, at: &str) {
        let set = usize::from(port.number.is_some()) + usize::from(port.range.is_some());
        if set != 1 {
            let fields = "number, range";
            self.add(at, CnpProblem::NotExactlyOne { fields, found: set });
        }
        let mut in_range = |port: i32, field: String| {
            if !(1..=65535).contains(&port) {
                self.add(field, CnpProblem::PortOutOfRange { port });
            }
        };
        if let Some(number) = port.number {
            in_range(number, format!("{at}.number"));
        }
        if let Some(range) = &port.range {
            in_range(range.start, format!("{at}.range.start"));
            in_range(range.end, format!("{at}.range.end"));
            // CEL `self.start < self.end`.
            if range.start >= range.end {
                let (start, end) = (range.start, range.end);
                self.add(
                    format!("{at}.range"),
                    CnpProblem::RangeNotAscending { start, end },
                );
            }
        }
    }
}

/// A CIDR as CEL's `isCIDR` accepts it (an address and a prefix length within its family);
/// host bits are cleared, as a prefix of that length means. An IPv4-mapped IPv6 block
/// (`::ffff:a.b.c.d/n`, n >= 96) is the IPv4 block a.b.c.d/(n-96), as the NetworkPolicy model
/// reads ipBlock (`policy/model.rs`), so both kinds match an IPv4 pod the same way.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let net = text.parse::<IpNet>().ok()?.trunc();
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .ok()
            .map(IpNet::V4);
    }
    Some(net)
}

#[cfg(test)]
mod tests;
