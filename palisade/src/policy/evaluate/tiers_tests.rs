//! The tiers against the API's sentences, one test per sentence of the semantics
//! (`shared/conformance/cnp/README.md` and the v1alpha2 types' documentation).

use palisade_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use super::*;
use crate::k8s::manifest::parse_str;

/// Namespaces `x` and `y`; pods `x/a` (web = TCP 80, dns = UDP 53), `x/b` (TCP 80, alt =
/// TCP 8080), `y/a` (web = TCP 8080, TCP 80), `x/h` (hostNetwork on node-1); nodes `node-1`
/// (`role: worker`, 10.244.0.1) and `node-2` (`role: infra`, 10.244.0.2).
const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: "y", labels: {ns: "y"}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]}]}
status: {podIPs: [{ip: 10.244.1.10}, {ip: "fd00::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}, {name: alt, containerPort: 8080}]}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: "y", labels: {app: a}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}, {containerPort: 80}]}]}
status: {podIP: 10.244.2.10}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: x, labels: {app: h}}
spec: {hostNetwork: true, containers: [{name: c}]}
status: {podIP: 10.244.0.1}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {role: worker}}
status: {addresses: [{type: InternalIP, address: 10.244.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {role: infra}}
status: {addresses: [{type: InternalIP, address: 10.244.0.2}]}
"#;

/// A ClusterNetworkPolicy in one line: `cnp("deny", "Admin", 10, "{namespaces: {}}",
/// "ingress: [...]")`.
fn cnp(name: &str, tier: &str, priority: i32, subject: &str, rules: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  \
         subject: {subject}\n  {rules}\n"
    )
}

/// A NetworkPolicy in namespace `x` selecting `app: <pod>`, with `spec` added.
fn netpol(name: &str, pod: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, \
         namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{app: {pod}}}}}\n  {spec}\n"
    )
}

pub(super) fn world(objects: &[String]) -> Cluster {
    let mut cluster = Cluster::default();
    let text = std::iter::once(WORLD.to_owned())
        .chain(objects.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n---\n");
    for object in parse_str(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}")) {
        cluster.apply(object);
    }
    cluster
}

/// The verdict for `from` (`ns/pod` or an address) to `to` on `flow` (`TCP/80`).
pub(super) fn judge(cluster: &Cluster, from: &str, to: &str, flow: &str) -> Verdict {
    let node_addrs: [IpAddr; 1] = ["10.244.0.1".parse().expect("address")];
    let nodes = [NodeView {
        name: "node-1",
        addrs: &node_addrs,
    }];
    let (proto, port) = flow.split_once('/').expect("PROTO/PORT");
    let protocol = match proto {
        "TCP" => PROTO_TCP,
        "UDP" => PROTO_UDP,
        _ => PROTO_SCTP,
    };
    let port: u16 = port.parse().expect("port");
    let keys: Vec<ObjectKey> = [from, to]
        .iter()
        .map(|n| {
            n.split_once('/')
                .map_or(ObjectKey::new("", ""), |(a, b)| ObjectKey::new(a, b))
        })
        .collect();
    let (a, b) = (
        endpoint(cluster, from, &keys[0]),
        endpoint(cluster, to, &keys[1]),
    );
    Evaluator::new(cluster, &nodes).evaluate(a, b, protocol, port)
}

/// `name` as an address (whoever owns it) or as the pod `key`.
pub(super) fn endpoint<'a>(cluster: &'a Cluster, name: &str, key: &'a ObjectKey) -> Endpoint<'a> {
    match name.parse::<IpAddr>() {
        Ok(addr) => Endpoint::at(cluster, addr),
        Err(_) => Endpoint::pod(cluster, key).unwrap_or_else(|| panic!("no pod {name}")),
    }
}

pub(super) fn allowed(cluster: &Cluster, from: &str, to: &str, flow: &str) -> bool {
    judge(cluster, from, to, flow).allowed
}

const ALL: &str = "{namespaces: {}}";
const X: &str = "{namespaces: {matchLabels: {ns: x}}}";
const Y: &str = "{namespaces: {matchLabels: {ns: \"y\"}}}";

fn ingress(action: &str, from: &str) -> String {
    format!("ingress: [{{action: {action}, from: [{from}]}}]")
}

fn egress(action: &str, to: &str) -> String {
    format!("egress: [{{action: {action}, to: [{to}]}}]")
}

#[test]
fn without_any_policy_every_pod_reaches_every_pod() {
    let c = world(&[]);
    assert!(allowed(&c, "x/a", "y/a", "TCP/80"));
}

#[test]
fn an_admin_deny_is_final_even_where_a_network_policy_allows() {
    let c = world(&[
        cnp("deny", "Admin", 10, X, &ingress("Deny", Y)),
        netpol("allow-all", "a", "ingress: [{}]"),
    ]);
    let v = judge(&c, "y/a", "x/a", "TCP/80");
    assert!(!v.allowed);
    assert!(matches!(v.ingress, DirectionVerdict::DeniedByTier(ref id) if id.policy == "deny"));
}

#[test]
fn an_admin_accept_is_final_even_where_a_network_policy_isolates() {
    let c = world(&[
        cnp("accept", "Admin", 10, X, &ingress("Accept", Y)),
        netpol("deny-all", "a", "policyTypes: [Ingress]"),
    ]);
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
    assert!(
        !allowed(&c, "x/b", "x/a", "TCP/80"),
        "not from y: NetworkPolicy decides"
    );
}

#[test]
fn an_egress_deny_drops_the_connection_whatever_the_destination_allows() {
    let c = world(&[
        cnp("deny", "Admin", 10, X, &egress("Deny", Y)),
        cnp("accept", "Admin", 20, Y, &ingress("Accept", X)),
    ]);
    let v = judge(&c, "x/a", "y/a", "TCP/80");
    assert!(!v.allowed);
    assert!(v.ingress.allows(), "the destination's side accepts");
}

#[test]
fn an_egress_accept_still_needs_the_destinations_ingress() {
    let c = world(&[
        cnp("accept", "Admin", 10, Y, &egress("Accept", X)),
        netpol("deny-all", "a", "policyTypes: [Ingress]"),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
    assert!(allowed(&c, "y/a", "x/b", "TCP/80"));
}

#[test]
fn pass_hands_the_connection_to_network_policy() {
    let pass = cnp("pass", "Admin", 10, X, &ingress("Pass", Y));
    let c = world(&[
        pass.clone(),
        netpol("deny-all", "a", "policyTypes: [Ingress]"),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
    let c = world(&[pass, netpol("allow-all", "a", "ingress: [{}]")]);
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
}

#[test]
fn pass_skips_the_rest_of_its_tier() {
    let c = world(&[
        cnp("pass", "Admin", 10, X, &ingress("Pass", Y)),
        cnp("deny", "Admin", 20, X, &ingress("Deny", Y)),
    ]);
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
}

#[test]
fn pass_in_the_admin_tier_goes_on_to_the_baseline_tier() {
    let c = world(&[
        cnp("pass", "Admin", 10, X, &ingress("Pass", Y)),
        cnp("deny", "Baseline", 10, X, &ingress("Deny", Y)),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
}

#[test]
fn pass_in_the_baseline_tier_leaves_the_default_allow() {
    let c = world(&[
        cnp("pass", "Baseline", 10, X, &ingress("Pass", Y)),
        cnp("deny", "Baseline", 20, X, &ingress("Deny", Y)),
    ]);
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
}

#[test]
fn network_policy_overrides_the_baseline_tier_for_pods_it_isolates() {
    let c = world(&[
        cnp("deny", "Baseline", 10, X, &ingress("Deny", Y)),
        netpol("allow-all", "a", "ingress: [{}]"),
    ]);
    assert!(
        allowed(&c, "y/a", "x/a", "TCP/80"),
        "isolated: NetworkPolicy allows"
    );
    assert!(
        !allowed(&c, "y/a", "x/b", "TCP/80"),
        "not isolated: Baseline denies"
    );
    let c = world(&[
        cnp("accept", "Baseline", 10, X, &ingress("Accept", Y)),
        netpol("deny-all", "a", "policyTypes: [Ingress]"),
    ]);
    assert!(
        !allowed(&c, "y/a", "x/a", "TCP/80"),
        "isolated: NetworkPolicy denies"
    );
}

#[test]
fn network_policy_decides_only_in_the_direction_it_isolates() {
    let c = world(&[
        cnp("deny", "Baseline", 10, X, &egress("Deny", Y)),
        netpol("ingress-only", "a", "ingress: [{}]"),
    ]);
    assert!(
        !allowed(&c, "x/a", "y/a", "TCP/80"),
        "egress of x/a is not isolated"
    );
}

#[test]
fn a_lower_priority_value_is_tried_first() {
    let c = world(&[
        cnp("accept", "Admin", 5, X, &ingress("Accept", Y)),
        cnp("deny", "Admin", 6, X, &ingress("Deny", Y)),
    ]);
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
    let c = world(&[
        cnp("accept", "Admin", 7, X, &ingress("Accept", Y)),
        cnp("deny", "Admin", 6, X, &ingress("Deny", Y)),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
}

#[test]
fn within_a_policy_the_first_rule_written_that_matches_decides() {
    let rules = format!(
        "ingress: [{{action: Deny, from: [{Y}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}]}}, {{action: Accept, from: [{Y}]}}]"
    );
    let c = world(&[
        cnp("p", "Admin", 1, X, &rules),
        netpol("deny-all", "a", "policyTypes: [Ingress]"),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
    assert!(allowed(&c, "y/a", "x/a", "UDP/53"));
}

#[test]
fn two_policies_of_one_tier_and_priority_are_tried_by_name() {
    let c = world(&[
        cnp("a-deny", "Admin", 5, X, &ingress("Deny", Y)),
        cnp("b-accept", "Admin", 5, X, &ingress("Accept", Y)),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
    let c = world(&[
        cnp("b-deny", "Admin", 5, X, &ingress("Deny", Y)),
        cnp("a-accept", "Admin", 5, X, &ingress("Accept", Y)),
    ]);
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
}

#[test]
fn a_pods_subject_selects_by_namespace_and_pod_labels() {
    let subject =
        "{pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {app: a}}}}";
    let c = world(&[cnp("deny", "Admin", 1, subject, &ingress("Deny", ALL))]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
    assert!(allowed(&c, "y/a", "x/b", "TCP/80"), "x/b is not a subject");
    assert!(allowed(&c, "x/a", "y/a", "TCP/80"), "y/a is not a subject");
}

#[test]
fn a_pods_subject_without_namespace_selector_selects_in_every_namespace() {
    let subject = "{pods: {podSelector: {matchLabels: {app: a}}}}";
    let c = world(&[cnp("deny", "Admin", 1, subject, &ingress("Deny", ALL))]);
    assert!(!allowed(&c, "x/b", "y/a", "TCP/80"));
    assert!(!allowed(&c, "x/b", "x/a", "TCP/80"));
}

#[test]
fn match_expressions_select_subjects_and_peers() {
    let subject = "{namespaces: {matchExpressions: [{key: ns, operator: NotIn, values: [\"y\"]}]}}";
    let peer = "{pods: {podSelector: {matchExpressions: [{key: app, operator: In, values: [b]}]}}}";
    let c = world(&[cnp("deny", "Admin", 1, subject, &ingress("Deny", peer))]);
    assert!(!allowed(&c, "x/b", "x/a", "TCP/80"));
    assert!(allowed(&c, "y/a", "x/a", "TCP/80"));
    assert!(allowed(&c, "x/b", "y/a", "TCP/80"));
}

#[test]
fn networks_match_pod_addresses_too() {
    let c = world(&[cnp(
        "deny",
        "Admin",
        1,
        X,
        &egress("Deny", "{networks: [0.0.0.0/0]}"),
    )]);
    assert!(!allowed(&c, "x/a", "y/a", "TCP/80"));
    assert!(!allowed(&c, "x/a", "192.0.2.10", "TCP/80"));
    let c = world(&[cnp(
        "deny",
        "Admin",
        1,
        X,
        &egress("Deny", "{networks: [10.244.2.0/24]}"),
    )]);
    assert!(!allowed(&c, "x/a", "y/a", "TCP/80"));
    assert!(allowed(&c, "x/a", "x/b", "TCP/80"));
}

#[test]
fn an_ipv4_network_never_matches_an_ipv6_address() {
    let c = world(&[cnp(
        "deny",
        "Admin",
        1,
        Y,
        &egress("Deny", "{networks: [0.0.0.0/0]}"),
    )]);
    assert!(allowed(&c, "y/a", "fd00::99", "TCP/80"));
    let c = world(&[cnp(
        "deny",
        "Admin",
        1,
        Y,
        &egress("Deny", "{networks: [\"::/0\"]}"),
    )]);
    assert!(!allowed(&c, "y/a", "fd00::99", "TCP/80"));
}

#[test]
fn a_nodes_peer_matches_the_addresses_of_the_nodes_it_selects() {
    let c = world(&[cnp(
        "deny",
        "Admin",
        1,
        X,
        &egress("Deny", "{nodes: {matchLabels: {role: infra}}}"),
    )]);
    assert!(!allowed(&c, "x/a", "10.244.0.2", "TCP/80"));
    assert!(
        allowed(&c, "x/a", "10.244.0.1", "TCP/80"),
        "node-1 is a worker"
    );
    let c = world(&[cnp("deny", "Admin", 1, X, &egress("Deny", "{nodes: {}}"))]);
    assert!(
        !allowed(&c, "x/a", "10.244.0.1", "TCP/80"),
        "empty: every node"
    );
    assert!(allowed(&c, "x/a", "y/a", "TCP/80"), "pods are not nodes");
}

#[test]
fn a_port_number_matches_that_port_and_protocol_only() {
    let rules = format!(
        "ingress: [{{action: Deny, from: [{ALL}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}]"
    );
    let c = world(&[cnp("p", "Admin", 1, X, &rules)]);
    assert!(!allowed(&c, "y/a", "x/a", "UDP/53"));
    assert!(
        allowed(&c, "y/a", "x/a", "TCP/53"),
        "a UDP rule never matches TCP"
    );
    assert!(allowed(&c, "y/a", "x/a", "UDP/54"));
}

#[test]
fn a_port_range_is_inclusive() {
    let rules = format!(
        "ingress: [{{action: Deny, from: [{ALL}], protocols: [{{sctp: {{destinationPort: {{range: {{start: 9003, end: 9005}}}}}}}}]}}]"
    );
    let c = world(&[cnp("p", "Admin", 1, X, &rules)]);
    for port in [9003, 9004, 9005] {
        assert!(
            !allowed(&c, "y/a", "x/a", &format!("SCTP/{port}")),
            "{port}"
        );
    }
    assert!(allowed(&c, "y/a", "x/a", "SCTP/9006"));
    assert!(allowed(&c, "y/a", "x/a", "SCTP/9002"));
}

#[test]
fn a_named_port_resolves_on_each_destination_pod() {
    let rules = format!(
        "egress: [{{action: Deny, to: [{ALL}], protocols: [{{destinationNamedPort: web}}]}}]"
    );
    let c = world(&[cnp(
        "p",
        "Admin",
        1,
        "{pods: {podSelector: {matchLabels: {app: b}}}}",
        &rules,
    )]);
    assert!(!allowed(&c, "x/b", "x/a", "TCP/80"), "web is TCP 80 on x/a");
    assert!(
        allowed(&c, "x/b", "x/a", "UDP/80"),
        "with that port's protocol"
    );
    assert!(
        !allowed(&c, "x/b", "y/a", "TCP/8080"),
        "web is TCP 8080 on y/a"
    );
    assert!(
        allowed(&c, "x/b", "y/a", "TCP/80"),
        "80 is not named web on y/a"
    );
}

#[test]
fn a_pod_reaching_its_own_address_is_not_subject() {
    let c = world(&[cnp(
        "deny",
        "Admin",
        1,
        ALL,
        &egress("Deny", "{networks: [0.0.0.0/0]}"),
    )]);
    let key = ObjectKey::new("x", "a");
    let me = Endpoint::pod(&c, &key).expect("x/a");
    let v = Evaluator::new(&c, &[]).evaluate(me, me, PROTO_TCP, 80);
    assert!(v.allowed);
}

#[test]
fn host_network_pods_are_neither_subjects_nor_pod_peers() {
    let c = world(&[cnp("deny", "Admin", 1, X, &ingress("Deny", X))]);
    assert!(
        allowed(&c, "x/a", "10.244.0.1", "TCP/80"),
        "x/h is no subject"
    );
    assert!(
        allowed(&c, "10.244.0.1", "x/a", "TCP/80"),
        "x/h is no pod peer"
    );
}

#[test]
fn an_invalid_direction_fails_closed_to_deny_all_for_the_subjects() {
    let rules = format!(
        "ingress: [{{action: Accept, from: [{Y}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 90, end: 80}}}}}}}}]}}]\n  {}",
        egress("Accept", Y)
    );
    let c = world(&[cnp("bad", "Admin", 1, X, &rules)]);
    let v = judge(&c, "y/a", "x/a", "TCP/85");
    assert!(!v.allowed);
    assert!(
        matches!(v.ingress, DirectionVerdict::DeniedByTier(ref id) if id.index.is_none()),
        "{v}"
    );
    assert!(
        !allowed(&c, "x/b", "x/a", "TCP/80"),
        "every peer of the subject"
    );
    assert!(
        allowed(&c, "x/a", "y/a", "TCP/80"),
        "egress had no error: its rule stands"
    );
    assert!(allowed(&c, "y/a", "y/a", "TCP/80"));
}

#[test]
fn an_invalid_tier_fails_closed_in_the_admin_tier() {
    let c = world(&[
        cnp("bad", "Platform", 1, X, &ingress("Accept", Y)),
        netpol("allow-all", "a", "ingress: [{}]"),
    ]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"), "before NetworkPolicy");
    assert!(
        allowed(&c, "x/a", "y/a", "TCP/80"),
        "no egress rules: egress untouched"
    );
}

#[test]
fn an_invalid_subject_fails_closed_for_every_pod_it_could_name() {
    let subject = "{namespaces: {matchLabels: {ns: x}, matchExpressions: [{key: app, operator: in, values: [a]}]}}";
    let c = world(&[cnp("bad", "Admin", 1, subject, &ingress("Accept", Y))]);
    assert!(!allowed(&c, "y/a", "x/a", "TCP/80"));
    assert!(
        !allowed(&c, "y/a", "x/b", "TCP/80"),
        "the unreadable requirement is dropped"
    );
    assert!(
        allowed(&c, "x/a", "y/a", "TCP/80"),
        "namespace y is outside any reading"
    );
}

#[test]
fn domain_names_fail_closed_too() {
    let rules = "egress: [{action: Accept, to: [{domainNames: [example.com]}]}]";
    let c = world(&[cnp("dns", "Admin", 1, X, rules)]);
    assert!(!allowed(&c, "x/a", "y/a", "TCP/80"));
}

#[test]
fn the_verdict_names_the_deciding_policy_tier_and_rule() {
    let rules = format!("ingress: [{{name: no-y, action: Deny, from: [{Y}]}}]");
    let c = world(&[cnp("guard", "Admin", 3, X, &rules)]);
    let text = judge(&c, "y/a", "x/a", "TCP/80").to_string();
    assert!(
        text.contains("ingress of x/a denied by clusternetworkpolicy guard (Admin, priority 3) rule 0 \"no-y\""),
        "{text}"
    );
}
