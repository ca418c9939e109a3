//! Pod changes applied in place ([`Compiler::apply_pod_change`]) give exactly the state a full
//! compile of the changed cluster gives: random clusters, then random pod adds, deletes and
//! label changes, each checked against a full compile by a copy of the same compiler (so that
//! ids match).

use std::collections::BTreeMap;

use proptest::{
    collection::vec,
    prelude::*,
    sample::{Index, select},
    strategy::ValueTree,
};

use super::{Builder, NAMESPACES, NODE, POD_KEYS, POD_VALUES, PodGen, Scenario, node_addrs};
use super::{pod_gen, scenario};
use crate::{
    k8s::cluster::{Cluster, ObjectKey},
    policy::{Compiler, NodeView, compile::PodUpdate},
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
}

fn op() -> impl Strategy<Value = Op> {
    let labels = vec((select(POD_KEYS), select(POD_VALUES)), 0..=2);
    prop_oneof![
        4 => (pod_gen(), proptest::option::weighted(0.1, any::<Index>()), prop::bool::weighted(0.3))
            .prop_map(|(pod, reuse, local)| Op::Add { pod, reuse, local }),
        3 => any::<Index>().prop_map(Op::Delete),
        3 => (any::<Index>(), labels).prop_map(|(i, l)| Op::Relabel(i, l)),
    ]
}

/// Applies `op` to the cluster; the key of the pod it changed, if any.
fn apply(cluster: &mut Cluster, step: usize, op: &Op) -> Option<ObjectKey> {
    let keys: Vec<ObjectKey> = cluster.pods.keys().cloned().collect();
    match op {
        Op::Add { pod, reuse, local } => {
            let i = reuse.map_or(100 + step, |r| r.index(6));
            let ns = NAMESPACES[pod.ns.index(cluster.namespaces.len())];
            let mut b = Builder::default();
            b.pod(i, ns, pod);
            let (key, mut pod) = b.cluster.pods.pop_first()?;
            let key = ObjectKey::new(key.namespace, format!("new{step}"));
            pod.metadata.name = Some(key.name.clone());
            if !local && let Some(spec) = &mut pod.spec {
                spec.node_name = Some("node-2".into());
            }
            cluster.pods.insert(key.clone(), pod);
            Some(key)
        }
        Op::Delete(i) if !keys.is_empty() => {
            let key = keys[i.index(keys.len())].clone();
            cluster.pods.remove(&key);
            Some(key)
        }
        Op::Relabel(i, labels) if !keys.is_empty() => {
            let key = keys[i.index(keys.len())].clone();
            let pod = cluster.pods.get_mut(&key)?;
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            pod.metadata.labels = Some(labels);
            Some(key)
        }
        Op::Delete(_) | Op::Relabel(..) => None,
    }
}

fn check_changes(s: &Scenario, ops: &[Op]) -> Result<usize, TestCaseError> {
    let addrs = node_addrs();
    let view = NodeView {
        name: NODE,
        addrs: &addrs,
    };
    let mut compiler = Compiler::new();
    let mut cluster = s.cluster.clone();
    let mut state = compiler.compile(&cluster, &view);
    let mut in_place = 0;
    for (step, op) in ops.iter().enumerate() {
        let Some(key) = apply(&mut cluster, step, op) else {
            continue;
        };
        if compiler.apply_pod_change(&mut state, &cluster, &view, &key) == PodUpdate::Incremental {
            in_place += 1;
        }
        let full = compiler.clone().compile(&cluster, &view);
        prop_assert!(
            state == full,
            "step {step} ({op:?} on {key}): the state updated in place differs from a full \
             compile\nin place: {state:#?}\nfull: {full:#?}"
        );
    }
    Ok(in_place)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pod_changes_applied_in_place_equal_a_full_compile(
        s in scenario(),
        ops in vec(op(), 1..=12),
    ) {
        check_changes(&s, &ops)?;
    }
}

/// Most random changes take the in-place path (the property above would hold trivially if
/// everything fell back to a full compile).
#[test]
fn most_pod_changes_are_applied_in_place() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut changes, mut in_place) = (0, 0);
    for _ in 0..64 {
        let s = scenario()
            .new_tree(&mut runner)
            .expect("scenario")
            .current();
        let ops = vec(op(), 8).new_tree(&mut runner).expect("ops").current();
        changes += ops.len();
        in_place += check_changes(&s, &ops).expect("in place equals full");
    }
    assert!(
        in_place * 2 > changes,
        "{in_place} of {changes} changes in place"
    );
}
