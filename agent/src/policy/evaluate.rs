//! The reference evaluator: what the NetworkPolicy API (networking.k8s.io/v1) says about one
//! connection, read straight from the objects, one API sentence at a time.
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
//! what it selects and allows nothing.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use palisade_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use super::{
    compile::{NodeView, container_ports, is_host_network, pod_addrs},
    model::{Peer, Policy, PolicyError, Port, Rule},
    selector::matches,
};
use crate::cluster::{Cluster, NAMESPACE_NAME_LABEL, ObjectKey, pod_labels, pod_node};

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
        !matches!(self, Self::Denied { .. })
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
        Self {
            cluster,
            nodes,
            policies,
            errors,
        }
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
    fn pod(&self, end: Endpoint<'_>) -> Result<&'a Pod, NotAPod> {
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

    fn is_node_of(&self, pod: &Pod, addr: IpAddr) -> bool {
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
                    Some(selector) => {
                        let mut labels = self
                            .cluster
                            .namespace_labels(&key.namespace)
                            .cloned()
                            .unwrap_or_default();
                        // Set by the API server on every namespace since v1.21.
                        labels
                            .entry(NAMESPACE_NAME_LABEL.to_owned())
                            .or_insert_with(|| key.namespace.clone());
                        matches(selector, &labels)
                    }
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

/// "TCP", "UDP", ... or the number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        PROTO_SCTP => "SCTP".into(),
        PROTO_ICMP => "ICMP".into(),
        PROTO_ICMPV6 => "ICMPv6".into(),
        other => format!("protocol {other}"),
    }
}

/// `allowed: egress of x/a not isolated; ingress of y/b allowed by y/allow-x rule ingress[0]`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = if self.allowed { "allowed" } else { "denied" };
        if self.egress == DirectionVerdict::Itself {
            return write!(
                f,
                "{outcome}: {} to itself (policy never applies to a pod's own traffic)",
                self.from
            );
        }
        let flow = match self.protocol {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
                format!("{}/{}", protocol_name(self.protocol), self.port)
            }
            other => protocol_name(other),
        };
        let side = |f: &mut fmt::Formatter<'_>,
                    direction: Direction,
                    verdict: &DirectionVerdict,
                    subject: &str,
                    peer: &str| {
            let d = direction.name();
            match verdict {
                DirectionVerdict::NotApplicable(NotAPod::Address) => {
                    write!(f, "{d}: {subject} is not a pod")
                }
                DirectionVerdict::NotApplicable(NotAPod::HostNetwork) => write!(
                    f,
                    "{d}: {subject} is a hostNetwork pod (not subject to policy)"
                ),
                DirectionVerdict::NotApplicable(NotAPod::Unknown) => {
                    write!(f, "{d}: {subject} is not a known pod")
                }
                DirectionVerdict::Itself => write!(f, "{d} of {subject} to itself"),
                DirectionVerdict::NotIsolated => write!(f, "{d} of {subject} not isolated"),
                DirectionVerdict::FromNode => {
                    write!(f, "{d} of {subject} from its own node (always allowed)")
                }
                DirectionVerdict::AllowedBy(rules) => {
                    write!(f, "{d} of {subject} allowed by ")?;
                    for (i, rule) in rules.iter().enumerate() {
                        let sep = if i == 0 { "" } else { ", " };
                        write!(f, "{sep}{} rule {d}[{}]", rule.policy, rule.index)?;
                    }
                    Ok(())
                }
                DirectionVerdict::Denied { isolating } => {
                    let names: Vec<String> = isolating.iter().map(ToString::to_string).collect();
                    let with = if direction == Direction::Ingress {
                        "from"
                    } else {
                        "to"
                    };
                    write!(
                        f,
                        "{d} of {subject} denied: isolated by {} and no rule admits {flow} {with} {peer}",
                        names.join(", ")
                    )
                }
            }
        };
        write!(f, "{outcome}: ")?;
        side(f, Direction::Egress, &self.egress, &self.from, &self.to)?;
        write!(f, "; ")?;
        side(f, Direction::Ingress, &self.ingress, &self.to, &self.from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy};

    use super::*;

    const NODE: &str = "10.244.0.1";

    /// A cluster in sentences: namespaces `x` and `y` (labelled `ns: x|y`), then pods and
    /// policies: `World::new().pod("x/a", &["10.244.1.10"], &[("pod", "a")], &[("http", "TCP", 80)])`.
    struct World {
        cluster: Cluster,
        nodes: Vec<IpAddr>,
    }

    impl World {
        fn new() -> Self {
            let mut world = Self {
                cluster: Cluster::default(),
                nodes: vec![NODE.parse().expect("node address")],
            };
            for name in ["x", "y"] {
                let mut ns = Namespace::default();
                ns.metadata.name = Some(name.into());
                ns.metadata.labels = Some(BTreeMap::from([
                    ("ns".into(), name.into()),
                    (NAMESPACE_NAME_LABEL.into(), name.into()),
                ]));
                world.cluster.namespaces.insert(name.into(), ns);
            }
            world
        }

        fn pod(
            self,
            key: &str,
            ips: &[&str],
            labels: &[(&str, &str)],
            ports: &[(&str, &str, u16)],
        ) -> Self {
            self.pod_yaml(key, ips, labels, ports, "")
        }

        fn host_network_pod(self, key: &str, ip: &str, labels: &[(&str, &str)]) -> Self {
            self.pod_yaml(key, &[ip], labels, &[], "  hostNetwork: true\n")
        }

        fn pod_yaml(
            mut self,
            key: &str,
            ips: &[&str],
            labels: &[(&str, &str)],
            ports: &[(&str, &str, u16)],
            extra: &str,
        ) -> Self {
            let (ns, name) = key.split_once('/').expect("ns/name");
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}: \"{v}\""))
                .collect();
            let ports: Vec<String> = ports
                .iter()
                .map(|(n, p, port)| {
                    format!("{{name: \"{n}\", protocol: {p}, containerPort: {port}}}")
                })
                .collect();
            let ips: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
            let (labels, ports, ips) = (labels.join(", "), ports.join(", "), ips.join(", "));
            let yaml = format!(
                "metadata: {{name: {name}, namespace: \"{ns}\", labels: {{{labels}}}}}\nspec:\n{extra}  containers: [{{name: c, ports: [{ports}]}}]\nstatus: {{podIPs: [{ips}]}}\n"
            );
            let pod: Pod = serde_yaml_ng::from_str(&yaml).expect("test pod");
            self.cluster.pods.insert(ObjectKey::new(ns, name), pod);
            self
        }

        fn policy(mut self, yaml: &str) -> Self {
            let policy: NetworkPolicy = serde_yaml_ng::from_str(yaml).expect("test policy");
            let key = ObjectKey::new(
                policy.metadata.namespace.clone().unwrap_or_default(),
                policy.metadata.name.clone().unwrap_or_default(),
            );
            self.cluster.policies.insert(key, policy);
            self
        }

        /// `from`/`to`: `ns/pod` (at its address of the other end's family) or an address.
        fn verdict(&self, from: &str, to: &str, protocol: u8, port: u16) -> Verdict {
            let family = [from, to]
                .iter()
                .find_map(|s| s.parse().ok())
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let keys =
                [from, to].map(|s| s.split_once('/').map(|(ns, name)| ObjectKey::new(ns, name)));
            let nodes = [NodeView {
                name: "node-1",
                addrs: &self.nodes,
            }];
            let from = self.end(&keys[0], from, family);
            let to = self.end(&keys[1], to, family);
            evaluate(&self.cluster, &nodes, from, to, protocol, port)
        }

        fn end<'k>(&self, key: &'k Option<ObjectKey>, text: &str, family: IpAddr) -> Endpoint<'k> {
            match key {
                Some(key) => Endpoint::pod_like(&self.cluster, key, family)
                    .expect("a pod with an address of that family"),
                None => Endpoint::Address(text.parse().expect("address")),
            }
        }

        fn allowed(&self, from: &str, to: &str, protocol: u8, port: u16) -> bool {
            self.verdict(from, to, protocol, port).allowed
        }
    }

    fn xy() -> World {
        World::new()
            .pod(
                "x/a",
                &["10.244.1.10"],
                &[("pod", "a")],
                &[("http", "TCP", 80)],
            )
            .pod(
                "x/b",
                &["10.244.1.11"],
                &[("pod", "b")],
                &[("http", "TCP", 80)],
            )
            .pod(
                "y/a",
                &["10.244.2.10"],
                &[("pod", "a")],
                &[("http", "TCP", 8080), ("dns", "UDP", 53)],
            )
            .pod(
                "y/b",
                &["10.244.2.11", "fd00:10:244:2::11"],
                &[("pod", "b")],
                &[],
            )
    }

    #[test]
    fn traffic_is_allowed_to_a_pod_if_there_are_no_network_policies_selecting_it() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n",
        );
        let v = w.verdict("y/a", "x/a", PROTO_TCP, 80);
        assert_eq!(
            (v.allowed, &v.egress, &v.ingress),
            (
                true,
                &DirectionVerdict::NotIsolated,
                &DirectionVerdict::NotIsolated
            )
        );
        assert!(!w.allowed("y/a", "x/b", PROTO_TCP, 80));
    }

    #[test]
    fn all_policies_are_assumed_to_affect_ingress_and_those_with_an_egress_section_egress() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  egress: [{}]\n");
        assert!(
            !w.allowed("x/b", "x/a", PROTO_TCP, 80),
            "ingress isolated by defaulting"
        );
        assert!(
            w.allowed("x/a", "192.0.2.1", PROTO_TCP, 80),
            "egress allowed by the empty rule"
        );
        let egress_only = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n");
        assert!(egress_only.allowed("y/a", "x/a", PROTO_TCP, 80));
        assert!(!egress_only.allowed("x/a", "y/a", PROTO_TCP, 8080));
    }

    #[test]
    fn an_empty_ingress_list_allows_no_traffic_and_serves_solely_to_isolate() {
        let w = xy().policy(
            "metadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  ingress: []\n",
        );
        let v = w.verdict("y/a", "x/a", PROTO_TCP, 80);
        assert_eq!(
            v.ingress,
            DirectionVerdict::Denied {
                isolating: vec![ObjectKey::new("x", "deny")]
            }
        );
        assert_eq!(v.egress, DirectionVerdict::NotIsolated);
    }

    #[test]
    fn if_from_and_ports_are_empty_or_missing_the_rule_matches_all_sources_ports_and_protocols() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [], ports: []}]\n");
        assert!(w.allowed("192.0.2.1", "x/a", PROTO_ICMP, 0));
        assert!(w.allowed("y/a", "x/a", PROTO_SCTP, 9));
    }

    #[test]
    fn the_traffic_must_match_both_ports_and_from_of_one_rule() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - {from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}\n  - {from: [{ipBlock: {cidr: 192.0.2.0/24}}], ports: [{port: 81}]}\n",
        );
        assert!(w.allowed("x/b", "x/a", PROTO_TCP, 80));
        assert!(!w.allowed("x/b", "x/a", PROTO_TCP, 81));
        assert!(w.allowed("192.0.2.1", "x/a", PROTO_TCP, 81));
        assert!(!w.allowed("192.0.2.1", "x/a", PROTO_TCP, 80));
    }

    #[test]
    fn a_pod_selector_alone_selects_pods_in_the_policys_own_namespace() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]\n");
        assert!(w.allowed("x/b", "x/a", PROTO_TCP, 80));
        assert!(!w.allowed("y/a", "x/a", PROTO_TCP, 80));
    }

    #[test]
    fn namespace_and_pod_selector_in_one_peer_are_anded_and_peers_are_ored() {
        let and = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]\n",
        );
        assert!(and.allowed("y/a", "x/a", PROTO_TCP, 80));
        assert!(!and.allowed("y/b", "x/a", PROTO_TCP, 80));
        assert!(!and.allowed("x/b", "x/a", PROTO_TCP, 80));
        let or = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]\n",
        );
        assert!(or.allowed("y/b", "x/a", PROTO_TCP, 80));
        assert!(or.allowed("x/b", "x/a", PROTO_TCP, 80));
    }

    #[test]
    fn an_empty_namespace_selector_selects_all_namespaces_and_names_come_from_the_name_label() {
        let all = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]\n");
        assert!(all.allowed("y/b", "x/a", PROTO_TCP, 80));
        assert!(!all.allowed("192.0.2.1", "x/a", PROTO_TCP, 80));
        let by_name = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]\n",
        );
        assert!(by_name.allowed("y/b", "x/a", PROTO_TCP, 80));
        assert!(!by_name.allowed("x/b", "x/a", PROTO_TCP, 80));
    }

    #[test]
    fn protocol_defaults_to_tcp_and_a_udp_or_sctp_rule_never_admits_tcp() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: UDP, port: 80}, {protocol: SCTP}, {port: 81}]}]\n",
        );
        assert!(!w.allowed("y/a", "x/a", PROTO_TCP, 80));
        assert!(w.allowed("y/a", "x/a", PROTO_UDP, 80));
        assert!(
            w.allowed("y/a", "x/a", PROTO_SCTP, 1),
            "port omitted: every port of the protocol"
        );
        assert!(w.allowed("y/a", "x/a", PROTO_TCP, 81));
        assert!(!w.allowed("y/a", "x/a", PROTO_UDP, 81));
        assert!(!w.allowed("y/a", "x/a", PROTO_ICMP, 0));
    }

    #[test]
    fn end_port_makes_an_inclusive_range() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 1000, endPort: 2000}]}]\n");
        for (port, ok) in [
            (999, false),
            (1000, true),
            (1500, true),
            (2000, true),
            (2001, false),
        ] {
            assert_eq!(w.allowed("y/a", "x/a", PROTO_TCP, port), ok, "port {port}");
        }
    }

    #[test]
    fn a_named_port_is_the_destination_pods_container_port_of_that_name_and_protocol() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{ports: [{port: http}]}]\n  egress: [{ports: [{port: http}, {port: dns, protocol: UDP}]}]\n",
        );
        assert!(
            w.allowed("y/a", "x/a", PROTO_TCP, 80),
            "ingress: x/a's own http is 80"
        );
        assert!(!w.allowed("y/a", "x/a", PROTO_TCP, 8080));
        assert!(
            w.allowed("x/a", "y/a", PROTO_TCP, 8080),
            "egress: y/a's http is 8080"
        );
        assert!(!w.allowed("x/a", "y/a", PROTO_TCP, 80));
        assert!(w.allowed("x/a", "y/a", PROTO_UDP, 53));
        assert!(
            !w.allowed("x/a", "y/a", PROTO_TCP, 53),
            "name and protocol both"
        );
        assert!(
            !w.allowed("x/a", "y/b", PROTO_TCP, 80),
            "y/b has no http port"
        );
    }

    #[test]
    fn an_egress_named_port_never_matches_a_non_pod_destination() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: http}]}]\n");
        assert!(!w.allowed("x/a", "192.0.2.1", PROTO_TCP, 80));
        assert!(w.allowed("x/a", "x/b", PROTO_TCP, 80));
    }

    #[test]
    fn an_egress_named_port_resolves_for_a_pod_inside_an_ip_block() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.244.2.0/24}}], ports: [{port: http}]}]\n",
        );
        assert!(w.allowed("x/a", "y/a", PROTO_TCP, 8080));
        assert!(!w.allowed("x/a", "y/a", PROTO_TCP, 80));
    }

    #[test]
    fn ip_block_matches_pod_addresses_and_except_is_per_peer() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}\n    - ipBlock: {cidr: 10.244.2.11/32}\n",
        );
        assert!(
            w.allowed("x/b", "x/a", PROTO_TCP, 80),
            "a pod address inside the block"
        );
        assert!(!w.allowed("y/a", "x/a", PROTO_TCP, 80), "excepted");
        assert!(
            w.allowed("y/b", "x/a", PROTO_TCP, 80),
            "excepted by one peer, allowed by another"
        );
        assert!(!w.allowed("192.0.2.1", "x/a", PROTO_TCP, 80));
    }

    #[test]
    fn ipv4_and_ipv6_never_mix_and_a_dual_stack_pod_is_matched_at_the_address_in_use() {
        let w = xy().policy(
            "metadata: {name: p, namespace: y}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: \"::/0\"}}]}]\n",
        );
        assert!(!w.allowed("y/b", "192.0.2.1", PROTO_TCP, 80));
        assert!(w.allowed("y/b", "2001:db8::1", PROTO_TCP, 80));
        let v4 = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}]\n");
        assert!(v4.allowed("y/b", "x/a", PROTO_TCP, 80));
        let y_b = ObjectKey::new("y", "b");
        let x_a = ObjectKey::new("x", "a");
        let from_v6 = Endpoint::Pod(&y_b, "fd00:10:244:2::11".parse().expect("v6"));
        let to = Endpoint::Pod(&x_a, "fd00:10:244:1::10".parse().expect("v6"));
        assert!(!evaluate(&v4.cluster, &[], from_v6, to, PROTO_TCP, 80).allowed);
    }

    #[test]
    fn traffic_from_the_pods_local_node_is_allowed() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n");
        assert_eq!(
            w.verdict(NODE, "x/a", PROTO_TCP, 80).ingress,
            DirectionVerdict::FromNode
        );
        assert!(
            !w.allowed("x/a", NODE, PROTO_TCP, 80),
            "only ingress from the node is special"
        );
        assert!(
            !w.allowed("10.244.0.2", "x/a", PROTO_TCP, 80),
            "another node is not"
        );
    }

    #[test]
    fn a_pod_can_always_reach_itself() {
        let w = xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n");
        let v = w.verdict("x/a", "x/a", PROTO_UDP, 9);
        assert!(v.allowed);
        assert_eq!(
            v.to_string(),
            "allowed: x/a to itself (policy never applies to a pod's own traffic)"
        );
    }

    #[test]
    fn host_network_pods_are_neither_targets_nor_peers() {
        let w = xy().host_network_pod("x/h", "10.244.0.2", &[("pod", "b")]).policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]\n",
        );
        let h = ObjectKey::new("x", "h");
        let x_a = ObjectKey::new("x", "a");
        let (hosted, a) = (
            Endpoint::pod(&w.cluster, &h).expect("x/h"),
            Endpoint::pod(&w.cluster, &x_a).expect("x/a"),
        );
        let to_host = evaluate(&w.cluster, &[], a, hosted, PROTO_TCP, 80);
        assert_eq!(
            to_host.ingress,
            DirectionVerdict::NotApplicable(NotAPod::HostNetwork),
            "selected by podSelector {{}}, yet not isolated"
        );
        assert!(to_host.allowed);
        let from_host = evaluate(&w.cluster, &[], hosted, a, PROTO_TCP, 80);
        assert_eq!(
            from_host.egress,
            DirectionVerdict::NotApplicable(NotAPod::HostNetwork)
        );
        assert!(!from_host.allowed, "labelled pod=b, yet not a peer");
        assert!(w.allowed("x/b", "x/a", PROTO_TCP, 80));
    }

    #[test]
    fn a_policy_that_fails_validation_isolates_its_pods_with_no_rules() {
        let w = xy().policy(
            "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.0.2.0/24]}}]\n  - {}\n",
        );
        let v = w.verdict("x/b", "x/a", PROTO_TCP, 80);
        assert_eq!(
            v.ingress,
            DirectionVerdict::Denied {
                isolating: vec![ObjectKey::new("x", "p")]
            }
        );
        assert!(
            w.allowed("x/a", "x/b", PROTO_TCP, 80),
            "other pods keep working"
        );
        assert_eq!(Evaluator::new(&w.cluster, &[]).errors().len(), 1);
    }

    #[test]
    fn rules_of_every_policy_selecting_the_pod_are_combined_additively() {
        let w = xy()
            .policy("metadata: {name: web, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 80}]}]\n")
            .policy("metadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n")
            .policy("metadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 81}]}, {from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]\n");
        let v = w.verdict("y/a", "x/a", PROTO_TCP, 80);
        let rule = |name: &str, index| RuleId {
            policy: ObjectKey::new("x", name),
            index,
        };
        assert_eq!(
            v.ingress,
            DirectionVerdict::AllowedBy(vec![rule("from-y", 1), rule("web", 0)])
        );
        assert_eq!(
            v.to_string(),
            "allowed: egress of y/a not isolated; ingress of x/a allowed by x/from-y rule ingress[1], x/web rule ingress[0]"
        );
        assert_eq!(
            w.verdict("x/a", "x/b", PROTO_UDP, 53).to_string(),
            "denied: egress of x/a not isolated; ingress of x/b denied: isolated by x/deny, x/web and no rule admits UDP/53 from x/a"
        );
        assert_eq!(
            w.verdict("x/b", "192.0.2.1", PROTO_TCP, 80).to_string(),
            "allowed: egress of x/b not isolated; ingress: 192.0.2.1 is not a pod"
        );
    }

    #[test]
    fn an_address_that_belongs_to_a_pod_is_that_pod() {
        let w = xy();
        assert_eq!(
            Endpoint::at(&w.cluster, "10.244.1.11".parse().expect("ip")),
            Endpoint::Pod(
                &ObjectKey::new("x", "b"),
                "10.244.1.11".parse().expect("ip")
            )
        );
        assert!(matches!(
            Endpoint::at(&w.cluster, "192.0.2.1".parse().expect("ip")),
            Endpoint::Address(_)
        ));
    }
}
