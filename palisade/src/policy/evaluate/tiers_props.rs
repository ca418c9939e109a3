//! Properties of the tiers over random mixes of ClusterNetworkPolicies (both tiers, every
//! action, equal priorities) and NetworkPolicies, on the small world of `tiers_tests.rs`:
//! - failing closed never widens: an invalid version of a policy never allows a connection
//!   that the valid one denies;
//! - NetworkPolicy overrides the Baseline tier: for pods a NetworkPolicy isolates in both
//!   directions, Baseline policies change nothing;
//! - the compiled maps, read the way the programs read them (`policy::lookup`), agree with the
//!   evaluator on each side of every probe: a wrong tier order, a wrong Pass or a wrong merge
//!   of classes shows up as a counterexample.

use std::net::IpAddr;

use palisade_common::{DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP};
use proptest::prelude::*;

use super::{
    Endpoint,
    tiers_tests::{allowed, endpoint, judge, world},
};
use crate::{
    k8s::cluster::{Cluster, ObjectKey},
    policy::{
        compile::{Compiler, NodeState, NodeView},
        lookup::admits,
    },
};

const SUBJECTS: &[&str] = &[
    "{namespaces: {}}",
    "{namespaces: {matchLabels: {ns: x}}}",
    "{namespaces: {matchLabels: {ns: \"y\"}}}",
    "{pods: {podSelector: {matchLabels: {app: a}}}}",
    "{pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {app: b}}}}",
];

const INGRESS_PEERS: &[&str] = &[
    "{namespaces: {}}",
    "{namespaces: {matchLabels: {ns: x}}}",
    "{namespaces: {matchLabels: {ns: \"y\"}}}",
    "{pods: {podSelector: {matchLabels: {app: a}}}}",
];

const EGRESS_PEERS: &[&str] = &[
    "{namespaces: {}}",
    "{namespaces: {matchLabels: {ns: \"y\"}}}",
    "{pods: {podSelector: {matchLabels: {app: b}}}}",
    "{networks: [10.244.1.0/24]}",
    "{networks: [0.0.0.0/0]}",
    "{nodes: {matchLabels: {role: infra}}}",
];

/// `None`: no `protocols` (every port).
const PORTS: &[Option<&str>] = &[
    None,
    Some("[{tcp: {destinationPort: {number: 80}}}]"),
    Some("[{udp: {destinationPort: {number: 53}}}]"),
    Some("[{tcp: {destinationPort: {range: {start: 79, end: 8080}}}}]"),
];

const ACTIONS: &[&str] = &["Accept", "Deny", "Pass"];

/// What is probed: pods, a node and an outside address, on three flows.
const ENDS: &[&str] = &["x/a", "x/b", "y/a"];
const OUTSIDE: &[&str] = &["10.244.0.2", "192.0.2.10"];
const FLOWS: &[&str] = &["TCP/80", "UDP/53", "TCP/8080"];

#[derive(Clone, Debug)]
struct Rule {
    action: usize,
    peer: usize,
    ports: usize,
}

#[derive(Clone, Debug)]
struct Cnp {
    baseline: bool,
    priority: i32,
    subject: usize,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

fn rule(peers: usize) -> impl Strategy<Value = Rule> {
    (0..ACTIONS.len(), 0..peers, 0..PORTS.len()).prop_map(|(action, peer, ports)| Rule {
        action,
        peer,
        ports,
    })
}

fn cnp() -> impl Strategy<Value = Cnp> {
    (
        any::<bool>(),
        0..3i32,
        0..SUBJECTS.len(),
        prop::collection::vec(rule(INGRESS_PEERS.len()), 0..3),
        prop::collection::vec(rule(EGRESS_PEERS.len()), 0..3),
    )
        .prop_map(|(baseline, priority, subject, ingress, egress)| Cnp {
            baseline,
            priority,
            subject,
            ingress,
            egress,
        })
}

/// How to break a policy: an invalid port range in its first rule of one direction, an
/// out-of-range priority, or a peer with no field (a field of a later API version) in its first
/// ingress rule.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    IngressRange,
    EgressRange,
    Priority,
    EmptyPeer,
}

fn rules_yaml(
    key: &str,
    peer_key: &str,
    rules: &[Rule],
    peers: &[&str],
    broken: Option<Corruption>,
) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let items: Vec<String> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let range = matches!(
                broken,
                Some(Corruption::IngressRange | Corruption::EgressRange)
            );
            let ports = if range && i == 0 {
                Some("[{tcp: {destinationPort: {range: {start: 90, end: 80}}}}]")
            } else {
                PORTS[r.ports]
            };
            let ports = ports.map_or(String::new(), |p| format!(", protocols: {p}"));
            let peer = if matches!(broken, Some(Corruption::EmptyPeer)) && i == 0 {
                "{futurePeer: {}}"
            } else {
                peers[r.peer]
            };
            format!(
                "{{action: {}, {peer_key}: [{peer}]{ports}}}",
                ACTIONS[r.action]
            )
        })
        .collect();
    format!("\n  {key}: [{}]", items.join(", "))
}

fn cnp_yaml(i: usize, p: &Cnp, broken: Option<Corruption>) -> String {
    let tier = if p.baseline { "Baseline" } else { "Admin" };
    let priority = match broken {
        Some(Corruption::Priority) => 5000,
        _ => p.priority,
    };
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: p{i}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  subject: {}{}{}\n",
        SUBJECTS[p.subject],
        rules_yaml(
            "ingress",
            "from",
            &p.ingress,
            INGRESS_PEERS,
            broken.filter(|c| matches!(c, Corruption::IngressRange | Corruption::EmptyPeer))
        ),
        rules_yaml(
            "egress",
            "to",
            &p.egress,
            EGRESS_PEERS,
            broken.filter(|c| matches!(c, Corruption::EgressRange))
        ),
    )
}

/// NetworkPolicies in `x`: none, a deny-all ingress for `app: a`, an ingress from `y` for it.
const NETWORK_POLICIES: &[&str] = &[
    "",
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-a, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}, policyTypes: [Ingress]}\n",
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-y, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}]}]}\n",
];

/// Every probe: (from, to, flow).
fn probes() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut all = Vec::new();
    for flow in FLOWS {
        for from in ENDS {
            for to in ENDS.iter().chain(OUTSIDE) {
                if from != to {
                    all.push((*from, *to, *flow));
                }
            }
        }
    }
    all
}

fn objects(policies: &[Cnp], broken: Option<(usize, Corruption)>, netpol: usize) -> Vec<String> {
    let mut out: Vec<String> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| cnp_yaml(i, p, broken.filter(|(k, _)| *k == i).map(|(_, c)| c)))
        .collect();
    if !NETWORK_POLICIES[netpol].is_empty() {
        out.push(NETWORK_POLICIES[netpol].to_owned());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn failing_closed_never_allows_what_the_valid_policy_denies(
        policies in prop::collection::vec(cnp(), 1..4),
        which in any::<prop::sample::Index>(),
        corruption in prop_oneof![
            Just(Corruption::IngressRange),
            Just(Corruption::EgressRange),
            Just(Corruption::Priority),
            Just(Corruption::EmptyPeer),
        ],
        netpol in 0..NETWORK_POLICIES.len(),
    ) {
        let k = which.index(policies.len());
        let valid = world(&objects(&policies, None, netpol));
        let invalid = world(&objects(&policies, Some((k, corruption)), netpol));
        for (from, to, flow) in probes() {
            if allowed(&invalid, from, to, flow) {
                prop_assert!(
                    allowed(&valid, from, to, flow),
                    "{from} -> {to} {flow}: allowed once p{k} is broken ({corruption:?})"
                );
            }
        }
    }

    #[test]
    fn baseline_policies_change_nothing_for_pods_network_policy_isolates(
        policies in prop::collection::vec(cnp(), 1..4),
    ) {
        // Every pod of x and y isolated both ways, allowing everything.
        let isolate = |ns: &str| format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: all, namespace: \"{ns}\"}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress], ingress: [{{}}], egress: [{{}}]}}\n"
        );
        let with_all = objects(&policies, None, 0);
        let admin_only: Vec<Cnp> = policies.iter().filter(|p| !p.baseline).cloned().collect();
        let without_baseline = objects(&admin_only, None, 0);
        let mut a = with_all;
        let mut b = without_baseline;
        for ns in ["x", "y"] {
            a.push(isolate(ns));
            b.push(isolate(ns));
        }
        let (a, b) = (world(&a), world(&b));
        for (from, to, flow) in probes() {
            prop_assert_eq!(
                allowed(&a, from, to, flow),
                allowed(&b, from, to, flow),
                "{} -> {} {}", from, to, flow
            );
        }
    }
}

/// The world's node, as the compiler sees it.
fn compile(cluster: &Cluster) -> NodeState {
    let addrs: [IpAddr; 1] = ["10.244.0.1".parse().expect("address")];
    let node = NodeView {
        name: "node-1",
        addrs: &addrs,
    };
    Compiler::new().compile(cluster, &node)
}

/// Each side of `from -> to` on `flow` as the compiled maps judge it, against the evaluator.
fn sides_agree(
    cluster: &Cluster,
    state: &NodeState,
    (from, to, flow): (&str, &str, &str),
) -> Result<(), String> {
    let verdict = judge(cluster, from, to, flow);
    let key = |n: &str| {
        n.split_once('/')
            .map_or(ObjectKey::new("", ""), |(a, b)| ObjectKey::new(a, b))
    };
    let (from_key, to_key) = (key(from), key(to));
    let (a, b) = (
        endpoint(cluster, from, &from_key),
        endpoint(cluster, to, &to_key),
    );
    let (proto, port) = flow.split_once('/').expect("PROTO/PORT");
    let protocol = if proto == "TCP" { PROTO_TCP } else { PROTO_UDP };
    let port: u16 = port.parse().expect("port");
    let sides = [
        (a, b, DIR_EGRESS, verdict.egress.allows()),
        (b, a, DIR_INGRESS, verdict.ingress.allows()),
    ];
    for (subject, peer, direction, expected) in sides {
        let Endpoint::Pod(k, _) = subject else {
            continue;
        };
        let compiled = admits(state, k, direction, peer.addr(), protocol, port);
        if compiled != Some(expected) {
            return Err(format!(
                "{from} -> {to} {flow}, {} of {k}: maps {compiled:?}, evaluator {expected}\n{verdict}",
                if direction == DIR_EGRESS {
                    "egress"
                } else {
                    "ingress"
                },
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_maps_agree_with_the_evaluator_on_tier_mixes(
        policies in prop::collection::vec(cnp(), 1..6),
        which in any::<prop::sample::Index>(),
        corruption in prop::option::of(prop_oneof![
            Just(Corruption::IngressRange),
            Just(Corruption::EgressRange),
            Just(Corruption::Priority),
            Just(Corruption::EmptyPeer),
        ]),
        netpol in 0..NETWORK_POLICIES.len(),
    ) {
        let broken = corruption.map(|c| (which.index(policies.len()), c));
        let objects = objects(&policies, broken, netpol);
        let cluster = world(&objects);
        let state = compile(&cluster);
        for probe in probes() {
            if let Err(e) = sides_agree(&cluster, &state, probe) {
                prop_assert!(false, "{}\n{}", e, objects.join("---\n"));
            }
        }
    }
}
