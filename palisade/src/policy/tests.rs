//! The compiler judged through the userspace replica of the eBPF lookup, one test per semantic
//! sentence of the NetworkPolicy API (names follow `../shared/notes/FIELD.md`).

use std::net::IpAddr;

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use palisade_common::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

mod classes;

use super::{Compiler, NodeView, Update, compile::NodeState, lookup::admits};
use crate::k8s::cluster::{Cluster, NAMESPACE_NAME_LABEL, ObjectKey};

const NODE_ADDR: &str = "10.244.0.1";

/// A cluster built in sentences: `World::new().ns("x", &[("ns","x")]).pod("x", "a", "10.244.1.10", &[("pod","a")], &[])`.
#[derive(Default)]
struct World {
    cluster: Cluster,
}

impl World {
    fn new() -> Self {
        Self::default()
    }

    fn ns(mut self, name: &str, labels: &[(&str, &str)]) -> Self {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        let mut l: std::collections::BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert(NAMESPACE_NAME_LABEL.into(), name.into());
        ns.metadata.labels = Some(l);
        self.cluster
            .namespaces
            .insert(name.into(), std::sync::Arc::new(ns));
        self
    }

    /// `ports`: (name, protocol, port).
    fn pod(
        mut self,
        ns: &str,
        name: &str,
        ip: &str,
        labels: &[(&str, &str)],
        ports: &[(&str, &str, i32)],
    ) -> Self {
        let ports_yaml: String = ports
            .iter()
            .map(|(n, p, port)| {
                format!("        - {{name: \"{n}\", protocol: {p}, containerPort: {port}}}\n")
            })
            .collect();
        let labels_yaml: String = labels
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        let yaml = format!(
            "metadata:\n  name: {name}\n  namespace: \"{ns}\"\n  labels:\n{labels_yaml}    _: \"\"\nspec:\n  containers:\n    - name: c\n      ports:\n{ports_yaml}        - {{containerPort: 1}}\nstatus:\n  podIPs:\n    - ip: {ip}\n"
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

    fn compile(&self) -> NodeState {
        let addrs: Vec<IpAddr> = vec![NODE_ADDR.parse().expect("addr")];
        Compiler::new().compile(
            &self.cluster,
            &NodeView {
                name: "node-1",
                addrs: &addrs,
            },
        )
    }
}

/// Whether `from` (`ns/pod` or an address) may open `proto`/`port` to `to`: the source's egress
/// AND the destination's ingress, as the two hooks judge it.
fn allowed(
    state: &NodeState,
    world: &World,
    from: &str,
    to: &str,
    protocol: u8,
    port: u16,
) -> bool {
    let addr = |s: &str| -> (Option<ObjectKey>, IpAddr) {
        match s.split_once('/') {
            Some((ns, pod)) => {
                let key = ObjectKey::new(ns, pod);
                let pod = &world.cluster.pods[&key];
                let ip = crate::k8s::cluster::pod_addrs(pod)[0];
                (Some(key), ip)
            }
            None => (None, s.parse().expect("address")),
        }
    };
    let (src_key, src_ip) = addr(from);
    let (dst_key, dst_ip) = addr(to);
    let egress = src_key
        .is_none_or(|k| admits(state, &k, DIR_EGRESS, dst_ip, protocol, port).expect("endpoint"));
    let ingress = dst_key
        .is_none_or(|k| admits(state, &k, DIR_INGRESS, src_ip, protocol, port).expect("endpoint"));
    egress && ingress
}

fn xy() -> World {
    World::new()
        .ns("x", &[("ns", "x")])
        .ns("y", &[("ns", "y")])
        .pod(
            "x",
            "a",
            "10.244.1.10",
            &[("pod", "a")],
            &[("serve-80-tcp", "TCP", 80)],
        )
        .pod(
            "x",
            "b",
            "10.244.1.11",
            &[("pod", "b")],
            &[("serve-80-tcp", "TCP", 80)],
        )
        .pod(
            "y",
            "a",
            "10.244.2.10",
            &[("pod", "a")],
            &[("serve-80-tcp", "TCP", 80)],
        )
        .pod(
            "y",
            "b",
            "10.244.2.11",
            &[("pod", "b")],
            &[("http", "TCP", 81)],
        )
}

#[test]
fn a_pod_not_selected_by_any_policy_is_not_isolated() {
    let w = xy();
    let s = w.compile();
    assert!(allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 80));
    assert!(allowed(&s, &w, "192.0.2.1", "x/a", PROTO_UDP, 9));
}

#[test]
fn an_egress_only_policy_written_without_policy_types_also_isolates_ingress() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  egress: [{}]\n",
    );
    let s = w.compile();
    assert!(
        !allowed(&s, &w, "x/b", "x/a", PROTO_TCP, 80),
        "ingress isolated by defaulting"
    );
    assert!(
        allowed(&s, &w, "x/a", "y/a", PROTO_TCP, 80),
        "egress allowed by the empty rule"
    );
}

#[test]
fn empty_ingress_list_denies_and_a_list_with_one_empty_rule_allows_all() {
    let deny =
        xy().policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: []\n");
    let s = deny.compile();
    assert!(!allowed(&s, &deny, "y/a", "x/a", PROTO_TCP, 80));
    let allow = xy()
        .policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{}]\n");
    let s = allow.compile();
    assert!(allowed(&s, &allow, "y/a", "x/a", PROTO_TCP, 80));
    assert!(
        allowed(&s, &allow, "192.0.2.1", "x/a", PROTO_ICMP, 0),
        "empty ports allow every protocol"
    );
}

#[test]
fn a_pod_selector_alone_selects_peers_in_the_policy_namespace_only() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n",
    );
    let s = w.compile();
    assert!(allowed(&s, &w, "x/b", "x/a", PROTO_TCP, 80));
    assert!(!allowed(&s, &w, "y/b", "x/a", PROTO_TCP, 80));
}

#[test]
fn namespace_and_pod_selector_in_one_peer_are_anded_and_in_two_peers_ored() {
    let and = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]\n",
    );
    let s = and.compile();
    assert!(allowed(&s, &and, "y/a", "x/a", PROTO_TCP, 80));
    assert!(!allowed(&s, &and, "y/b", "x/a", PROTO_TCP, 80));
    assert!(!allowed(&s, &and, "x/b", "x/a", PROTO_TCP, 80));
    let or = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]\n",
    );
    let s = or.compile();
    assert!(allowed(&s, &or, "y/b", "x/a", PROTO_TCP, 80));
    assert!(allowed(&s, &or, "x/b", "x/a", PROTO_TCP, 80));
}

#[test]
fn a_udp_or_sctp_rule_never_admits_tcp_and_protocol_defaults_to_tcp() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{protocol: UDP, port: 80}, {protocol: SCTP, port: 80}, {port: 81}]\n",
    );
    let s = w.compile();
    assert!(!allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 80));
    assert!(allowed(&s, &w, "y/a", "x/a", PROTO_UDP, 80));
    assert!(allowed(&s, &w, "y/a", "x/a", PROTO_SCTP, 80));
    assert!(allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 81));
    assert!(!allowed(&s, &w, "y/a", "x/a", PROTO_UDP, 81));
}

#[test]
fn end_port_makes_an_inclusive_range() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 1000, endPort: 2000}]\n",
    );
    let s = w.compile();
    for (port, ok) in [
        (999, false),
        (1000, true),
        (1500, true),
        (2000, true),
        (2001, false),
    ] {
        assert_eq!(
            allowed(&s, &w, "y/a", "x/a", PROTO_TCP, port),
            ok,
            "port {port}"
        );
    }
}

#[test]
fn peers_and_ports_of_different_rules_do_not_combine() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]\n    ports: [{port: 80}]\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]\n    ports: [{port: 81}]\n",
    );
    let s = w.compile();
    assert!(allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 80));
    assert!(!allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 81));
    assert!(allowed(&s, &w, "y/b", "x/a", PROTO_TCP, 81));
    assert!(!allowed(&s, &w, "y/b", "x/a", PROTO_TCP, 80));
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: http}, {port: serve-80-tcp}]\n",
    );
    let s = w.compile();
    assert!(
        allowed(&s, &w, "x/a", "y/b", PROTO_TCP, 81),
        "y/b names 81 http"
    );
    assert!(!allowed(&s, &w, "x/a", "y/b", PROTO_TCP, 80));
    assert!(
        allowed(&s, &w, "x/a", "y/a", PROTO_TCP, 80),
        "y/a names 80 serve-80-tcp"
    );
    assert!(!allowed(&s, &w, "x/a", "y/a", PROTO_TCP, 81));
    assert!(
        !allowed(&s, &w, "x/a", "192.0.2.1", PROTO_TCP, 81),
        "an egress named port to a non-pod address never matches"
    );
}

#[test]
fn ip_block_matches_pod_addresses_and_except_is_per_peer() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}\n    - ipBlock: {cidr: 10.244.2.11/32}\n",
    );
    let s = w.compile();
    assert!(
        allowed(&s, &w, "x/b", "x/a", PROTO_TCP, 80),
        "pod address inside the block"
    );
    assert!(!allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 80), "excepted");
    assert!(
        allowed(&s, &w, "y/b", "x/a", PROTO_TCP, 80),
        "excepted by one peer, allowed by another"
    );
    assert!(!allowed(&s, &w, "192.0.2.1", "x/a", PROTO_TCP, 80));
}

#[test]
fn ipv6_blocks_never_match_ipv4_addresses() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: \"::/0\"}}]\n",
    );
    let s = w.compile();
    assert!(!allowed(&s, &w, "x/b", "x/a", PROTO_TCP, 80));
    assert!(allowed(&s, &w, "2001:db8::1", "x/a", PROTO_TCP, 80));
}

#[test]
fn traffic_from_the_node_to_its_own_pods_is_always_allowed() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    let s = w.compile();
    assert!(allowed(&s, &w, NODE_ADDR, "x/a", PROTO_TCP, 80));
    assert!(!allowed(&s, &w, "y/a", "x/a", PROTO_TCP, 80));
}

#[test]
fn an_invalid_policy_isolates_its_pods_without_allowing_anything() {
    let w = xy().policy(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n  - {}\n",
    );
    let s = w.compile();
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].field, "spec.ingress[0].from[0].ipBlock.cidr");
    assert!(
        !allowed(&s, &w, "x/b", "x/a", PROTO_TCP, 80),
        "the valid allow-all rule is not applied either"
    );
    assert!(
        allowed(&s, &w, "x/a", "x/b", PROTO_TCP, 80),
        "other pods keep working"
    );
}

#[test]
fn a_new_pod_with_an_existing_label_set_costs_one_identity_entry() {
    let policy = "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]\n";
    let mut compiler = Compiler::new();
    let addrs: Vec<IpAddr> = vec![NODE_ADDR.parse().expect("addr")];
    let view = NodeView {
        name: "node-1",
        addrs: &addrs,
    };
    let before = compiler.compile(&xy().policy(policy).cluster, &view);
    let grown = xy().policy(policy).pod(
        "y",
        "c",
        "10.244.2.12",
        &[("pod", "a")],
        &[("serve-80-tcp", "TCP", 80)],
    );
    let after = compiler.compile(&grown.cluster, &view);
    assert_eq!(after.identities.len() - before.identities.len(), 1);
    let x_a = ObjectKey::new("x", "a");
    assert_eq!(
        before.endpoints[&x_a], after.endpoints[&x_a],
        "the policy's entries do not change"
    );
    assert!(allowed(&after, &grown, "y/c", "x/a", PROTO_TCP, 80));
}

#[test]
fn a_pod_of_an_existing_identity_is_added_and_deleted_in_place_as_its_address_alone() {
    let policy = "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]\n";
    let mut compiler = Compiler::new();
    let addrs: Vec<IpAddr> = vec![NODE_ADDR.parse().expect("addr")];
    let view = NodeView {
        name: "node-1",
        addrs: &addrs,
    };
    let before = compiler.compile(&xy().policy(policy).cluster, &view);
    // y/c has the labels and ports of y/a (the same identity), on another node.
    let mut grown = xy().policy(policy).pod(
        "y",
        "c",
        "10.244.2.12",
        &[("pod", "a")],
        &[("serve-80-tcp", "TCP", 80)],
    );
    let c = ObjectKey::new("y", "c");
    if let Some(pod) = grown.cluster.pods.get_mut(&c) {
        std::sync::Arc::make_mut(pod).node_name = Some("node-2".into());
    }
    let mut state = before.clone();
    let update = compiler.apply_pod_change(&mut state, &grown.cluster, &view, &c);
    assert_eq!(update, Update::Incremental);
    let mut expected = before.clone();
    let ip: IpAddr = "10.244.2.12".parse().expect("addr");
    let y_a = before.identities
        [&palisade_common::Addr::from("10.244.2.10".parse::<std::net::IpAddr>().expect("addr"))];
    expected
        .identities
        .insert(palisade_common::Addr::from(ip), y_a);
    assert_eq!(state, expected, "one identity entry, nothing else");
    assert!(allowed(&state, &grown, "10.244.2.12", "x/a", PROTO_TCP, 80));

    let update = compiler.apply_pod_change(&mut state, &xy().policy(policy).cluster, &view, &c);
    assert_eq!(update, Update::Incremental);
    assert_eq!(state, before, "deleted: back to where it was");
}
