//! Changes applied in place ([`Compiler::apply_change`]) give exactly the state a full compile
//! of the changed cluster gives: random clusters, then random sequences of pod adds, deletes,
//! label changes and renames of named ports, policy adds, rewrites and deletes, and namespace
//! label and audit-mode changes, each checked against a full compile by a copy of the same
//! compiler (so that ids match).

use std::collections::{BTreeMap, BTreeSet};

use proptest::{
    collection::vec,
    prelude::*,
    sample::{Index, select},
    strategy::ValueTree,
};

use std::{net::IpAddr, sync::Arc};

use super::{
    Builder, EXTERNALS, NAMESPACES, NODE, NS_KEYS, NS_VALUES, POD_KEYS, POD_VALUES, PORT_NAMES,
    PodGen, PolicyGen, Scenario, node_addrs,
};
use super::{pod_gen, policy_gen, scenario};
use crate::{
    k8s::cluster::{
        Cluster, NAMESPACE_NAME_LABEL, ObjectKey, POLICY_MODE_ANNOTATION, is_host_network,
        pod_addrs,
    },
    policy::{ClusterChange, Compiler, Journal, NodeState, NodeView, compile::Update},
};

#[derive(Clone, Debug)]
enum Op {
    /// A new pod (its index keeps its name and addresses apart from the scenario's, unless
    /// `reuse` asks for the addresses of scenario pod `reuse`), on this node or another.
    Add {
        pod: PodGen,
        reuse: Option<Index>,
        local: bool,
    },
    Delete(Index),
    Relabel(Index, Vec<(&'static str, &'static str)>),
    /// New names for a pod's container ports (by position; `None` unnames one).
    RenamePorts(Index, Vec<Option<&'static str>>),
    /// A new policy, or (`Some`) a new version of an existing one.
    Policy(PolicyGen, Option<Index>),
    DeletePolicy(Index),
    /// New labels for a namespace, and whether it is in audit mode.
    Namespace(Index, Vec<(&'static str, &'static str)>, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let labels = vec((select(POD_KEYS), select(POD_VALUES)), 0..=2);
    prop_oneof![
        4 => (pod_gen(), proptest::option::weighted(0.1, any::<Index>()), prop::bool::weighted(0.3))
            .prop_map(|(pod, reuse, local)| Op::Add { pod, reuse, local }),
        3 => any::<Index>().prop_map(Op::Delete),
        3 => (any::<Index>(), labels.clone()).prop_map(|(i, l)| Op::Relabel(i, l)),
        1 => (any::<Index>(), vec(proptest::option::weighted(0.8, select(PORT_NAMES)), 1..=3))
            .prop_map(|(i, n)| Op::RenamePorts(i, n)),
        3 => (policy_gen(), proptest::option::weighted(0.5, any::<Index>()))
            .prop_map(|(p, i)| Op::Policy(p, i)),
        2 => any::<Index>().prop_map(Op::DeletePolicy),
        2 => (any::<Index>(), vec((select(NS_KEYS), select(NS_VALUES)), 0..=2), prop::bool::weighted(0.2))
            .prop_map(|(i, l, audit)| Op::Namespace(i, l, audit)),
    ]
}

fn owned(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A builder that knows the cluster's addresses (what ipBlocks are built around).
fn builder_for(cluster: &Cluster) -> Builder {
    let mut b = Builder::default();
    for pod in cluster.pods.values().filter(|p| !is_host_network(p)) {
        b.addrs.extend(pod_addrs(pod));
    }
    b.addrs.extend(
        EXTERNALS
            .iter()
            .map(|a| a.parse::<IpAddr>().expect("address")),
    );
    b
}

/// Applies `op` to the cluster; the object it changed, if any.
fn apply(cluster: &mut Cluster, step: usize, op: &Op) -> Option<ClusterChange> {
    let keys: Vec<ObjectKey> = cluster.pods.keys().cloned().collect();
    let policies: Vec<ObjectKey> = cluster.policies.keys().cloned().collect();
    match op {
        Op::Add { pod, reuse, local } => {
            let i = reuse.map_or(100 + step, |r| r.index(6));
            let ns = NAMESPACES[pod.ns.index(cluster.namespaces.len())];
            let mut b = Builder::default();
            b.pod(i, ns, pod);
            let (key, mut pod) = b.cluster.pods.pop_first()?;
            let key = ObjectKey::new(key.namespace, format!("new{step}"));
            Arc::make_mut(&mut pod).metadata.name = Some(key.name.to_string());
            if !local {
                Arc::make_mut(&mut pod).node_name = Some("node-2".into());
            }
            cluster.pods.insert(key.clone(), pod);
            Some(ClusterChange::Pod(key))
        }
        Op::Delete(i) if !keys.is_empty() => {
            let key = keys[i.index(keys.len())].clone();
            cluster.pods.remove(&key);
            Some(ClusterChange::Pod(key))
        }
        Op::Relabel(i, labels) if !keys.is_empty() => {
            let key = keys[i.index(keys.len())].clone();
            let pod = Arc::make_mut(cluster.pods.get_mut(&key)?);
            pod.labels = crate::k8s::cluster::intern_labels(Some(owned(labels)));
            Some(ClusterChange::Pod(key))
        }
        Op::RenamePorts(i, names) if !keys.is_empty() => {
            let key = keys[i.index(keys.len())].clone();
            let pod = Arc::make_mut(cluster.pods.get_mut(&key)?);
            let mut used = Vec::new();
            for (port, name) in pod.ports.iter_mut().zip(names.iter().cycle()) {
                // Names stay unique within the pod.
                port.0 = name
                    .filter(|n| !used.contains(n))
                    .map(str::to_owned)
                    .unwrap_or_default();
                used.extend(*name);
            }
            Some(ClusterChange::Pod(key))
        }
        Op::Policy(policy, replace) => {
            let ns = NAMESPACES[policy.ns.index(cluster.namespaces.len())];
            let mut b = builder_for(cluster);
            b.policy(100 + step, ns, policy);
            let (_, mut new) = b.cluster.policies.pop_first()?;
            let key = match replace {
                Some(i) if !policies.is_empty() => policies[i.index(policies.len())].clone(),
                _ => ObjectKey::new(ns, format!("new{step}")),
            };
            Arc::make_mut(&mut new).metadata.namespace = Some(key.namespace.to_string());
            Arc::make_mut(&mut new).metadata.name = Some(key.name.to_string());
            cluster.policies.insert(key.clone(), new);
            Some(ClusterChange::Policy(key))
        }
        Op::DeletePolicy(i) if !policies.is_empty() => {
            let key = policies[i.index(policies.len())].clone();
            cluster.policies.remove(&key);
            Some(ClusterChange::Policy(key))
        }
        Op::Namespace(i, labels, audit) => {
            let names: Vec<String> = cluster.namespaces.keys().cloned().collect();
            let name = names.get(i.index(names.len().max(1)))?.clone();
            let ns = Arc::make_mut(cluster.namespaces.get_mut(&name)?);
            let mut labels = owned(labels);
            labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
            ns.metadata.labels = Some(labels);
            let annotations = ns.metadata.annotations.get_or_insert_default();
            if *audit {
                annotations.insert(POLICY_MODE_ANNOTATION.to_owned(), "audit".to_owned());
            } else {
                annotations.remove(POLICY_MODE_ANNOTATION);
            }
            Some(ClusterChange::Namespace(name))
        }
        Op::Delete(_) | Op::Relabel(..) | Op::RenamePorts(..) | Op::DeletePolicy(_) => None,
    }
}

/// Changes applied, and of those in place, by kind (pods, policies, namespaces).
type Counts = [(usize, usize); 3];

/// Applies `ops` to the cluster `batch` at a time (a watcher can deliver several changes
/// before a sync reads the caches), then each change of the batch in place with the cluster
/// after all of them, and compares with a full compile after every batch.
fn check_changes(s: &Scenario, ops: &[Op], batch: usize) -> Result<Counts, TestCaseError> {
    let addrs = node_addrs();
    let view = NodeView {
        name: NODE,
        addrs: &addrs,
    };
    let mut compiler = Compiler::new();
    let mut cluster = s.cluster.clone();
    let mut state = compiler.compile(&cluster, &view);
    let mut counts = Counts::default();
    compiler.take_journal();
    for (first, group) in ops.chunks(batch.max(1)).enumerate() {
        let before = state.clone();
        let mut changes = Vec::new();
        for (i, op) in group.iter().enumerate() {
            if let Some(change) = apply(&mut cluster, first * batch + i, op) {
                changes.push(change);
            }
        }
        for change in &changes {
            let kind = match change {
                ClusterChange::Pod(_) => 0,
                ClusterChange::Policy(_) => 1,
                ClusterChange::Namespace(_) => 2,
                ClusterChange::ClusterPolicy(_) | ClusterChange::Node(_) => {
                    unreachable!("not generated here")
                }
            };
            counts[kind].0 += 1;
            if compiler.apply_change(&mut state, &cluster, &view, change) == Update::Incremental {
                counts[kind].1 += 1;
            }
        }
        let journal = compiler.take_journal();
        let missed = unjournaled(&before, &state, &journal);
        prop_assert!(
            missed.is_empty(),
            "batch {first} ({group:?}: {changes:?}): changed but not in the journal: {missed:?}"
        );
        let full = compiler.clone().compile(&cluster, &view);
        prop_assert!(
            state == full,
            "batch {first} ({group:?}: {changes:?}): the state updated in place differs from a \
             full compile\nin place: {state:#?}\nfull: {full:#?}"
        );
        // Classes keep their bits across changes (`compile/slots.rs`); what the bits grant is
        // what a compile numbering them afresh grants.
        let mut fresh = compiler.clone();
        fresh.forget_class_slots();
        let dense = fresh.compile(&cluster, &view);
        prop_assert_eq!(
            grants(&state),
            grants(&dense),
            "batch {}: {:?}",
            first,
            changes
        );
    }
    Ok(counts)
}

/// What each endpoint grants, whatever bit each class holds: its flags, and per direction
/// every class with the peers, port entries and "any" masks that carry its bit, sorted; and
/// any bit set where no class is (an empty slot's bit must be in no entry).
fn grants(state: &NodeState) -> BTreeMap<ObjectKey, (u32, [Vec<String>; 2])> {
    let of = |ep: &crate::policy::compile::EndpointState, d: usize| {
        let dir = u8::try_from(d).expect("a direction");
        let beyond =
            u32::try_from(ep.classes[d].len()).map_or(0, |n| (!0u64).checked_shl(n).unwrap_or(0));
        let empty: u64 = (ep.classes[d].iter().enumerate())
            .filter(|(_, c)| c.rules.is_empty())
            .fold(beyond, |m, (i, _)| m | 1 << i);
        let peers = ep.peers.iter().filter(|((pd, _), _)| *pd == dir);
        let ports = ep.ports.iter().filter(|((pd, _, _), _)| *pd == dir);
        let mut classes: Vec<String> = (ep.classes[d].iter().enumerate())
            .filter(|(_, c)| !c.rules.is_empty())
            .map(|(i, class)| {
                let bit = 1u64 << i;
                let p: Vec<u32> = (peers.clone())
                    .filter(|(_, m)| *m & bit != 0)
                    .map(|((_, id), _)| *id)
                    .collect();
                let n: Vec<String> = (ports.clone())
                    .filter(|(_, m)| *m & bit != 0)
                    .map(|(k, _)| format!("{k:?}"))
                    .collect();
                let any = (ep.any_peer[d] & bit != 0, ep.any_port[d] & bit != 0);
                format!("{class:?} peers {p:?} ports {n:?} any {any:?}")
            })
            .collect();
        classes.sort();
        let stray = (peers.map(|(_, m)| *m).chain(ports.map(|(_, m)| *m)))
            .chain([ep.any_peer[d], ep.any_port[d]])
            .fold(0, |a, m| a | (m & empty));
        if stray != 0 {
            classes.push(format!("bits {stray:#x} set where no class is"));
        }
        classes
    };
    (state.endpoints.iter())
        .map(|(k, ep)| (k.clone(), (ep.flags, [of(ep, 0), of(ep, 1)])))
        .collect()
}

/// What differs between two states and the journal does not name (with `all`, nothing).
fn unjournaled(a: &NodeState, b: &NodeState, journal: &Journal) -> Vec<String> {
    if journal.all {
        return Vec::new();
    }
    let mut missed = Vec::new();
    let addrs = a.identities.keys().chain(b.identities.keys());
    for addr in addrs.collect::<BTreeSet<_>>() {
        if a.identities.get(addr) != b.identities.get(addr) && !journal.identities.contains(addr) {
            missed.push(format!("identity of {addr:?}"));
        }
    }
    if a.cidrs != b.cidrs && !journal.cidrs {
        missed.push("cidrs".to_owned());
    }
    let keys = a.endpoints.keys().chain(b.endpoints.keys());
    for key in keys.collect::<BTreeSet<_>>() {
        if a.endpoints.get(key) != b.endpoints.get(key) && !journal.endpoints.contains(key) {
            missed.push(format!("endpoint {key}"));
        }
    }
    missed
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn changes_applied_in_place_equal_a_full_compile(
        s in scenario(),
        ops in vec(op(), 1..=16),
        batch in prop_oneof![3 => Just(1usize), 1 => 2usize..=4],
    ) {
        check_changes(&s, &ops, batch)?;
    }
}

/// Most random changes take the in-place path (the property above would hold trivially if
/// everything fell back to a full compile).
#[test]
fn most_changes_are_applied_in_place() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut total = Counts::default();
    for _ in 0..128 {
        let s = scenario()
            .new_tree(&mut runner)
            .expect("scenario")
            .current();
        let ops = vec(op(), 8).new_tree(&mut runner).expect("ops").current();
        let counts = check_changes(&s, &ops, 1).expect("in place equals full");
        for (t, c) in total.iter_mut().zip(counts) {
            t.0 += c.0;
            t.1 += c.1;
        }
    }
    for ((changes, in_place), kind) in total.into_iter().zip(["pod", "policy", "namespace"]) {
        assert!(
            changes > 50 && in_place * 4 > changes * 3,
            "{in_place} of {changes} {kind} changes in place"
        );
    }
}
