//! The reference evaluator against the API's sentences, one test per sentence.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use palisade_common::{PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

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
            world
                .cluster
                .namespaces
                .insert(name.into(), std::sync::Arc::new(ns));
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
            .map(|(n, p, port)| format!("{{name: \"{n}\", protocol: {p}, containerPort: {port}}}"))
            .collect();
        let ips: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
        let (labels, ports, ips) = (labels.join(", "), ports.join(", "), ips.join(", "));
        let yaml = format!(
            "metadata: {{name: {name}, namespace: \"{ns}\", labels: {{{labels}}}}}\nspec:\n{extra}  containers: [{{name: c, ports: [{ports}]}}]\nstatus: {{podIPs: [{ips}]}}\n"
        );
        let pod: Pod = serde_yaml_ng::from_str(&yaml).expect("test pod");
        self.cluster
            .pods
            .insert(ObjectKey::new(ns, name), std::sync::Arc::new(pod.into()));
        self
    }

    fn policy(mut self, yaml: &str) -> Self {
        let policy: NetworkPolicy = serde_yaml_ng::from_str(yaml).expect("test policy");
        let key = ObjectKey::new(
            policy.metadata.namespace.clone().unwrap_or_default(),
            policy.metadata.name.clone().unwrap_or_default(),
        );
        self.cluster
            .policies
            .insert(key, std::sync::Arc::new(policy));
        self
    }

    /// `from`/`to`: `ns/pod` (at its address of the other end's family) or an address.
    fn verdict(&self, from: &str, to: &str, protocol: u8, port: u16) -> Verdict {
        let family = [from, to]
            .iter()
            .find_map(|s| s.parse().ok())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let keys = [from, to].map(|s| s.split_once('/').map(|(ns, name)| ObjectKey::new(ns, name)));
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
    let egress_only = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    assert!(egress_only.allowed("y/a", "x/a", PROTO_TCP, 80));
    assert!(!egress_only.allowed("x/a", "y/a", PROTO_TCP, 8080));
}

#[test]
fn an_empty_ingress_list_allows_no_traffic_and_serves_solely_to_isolate() {
    let w = xy()
        .policy("metadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  ingress: []\n");
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
