//! A write the maps refuse never leaves a pod with more access than its new policy grants:
//! the pod is isolated with no rules until its rules fit, and the failure is reported.
//!
//! The peer map is made tiny (two entries) so that a policy naming four peers cannot be written.
//! Judged through `BPF_PROG_TEST_RUN` at loopback, where the server's endpoint is written.

use std::{collections::BTreeMap, net::IpAddr};

use palisade::{
    dataplane::{Dataplane, LOOPBACK_IFINDEX},
    k8s::cluster::{Cluster, ObjectKey},
    k8s::fixtures::{apply_yaml, apps},
    policy::{Compiler, NodeView},
};
use palisade_common::{MAP_PEERS, PROG_TO_POD};

use palisade_integration::{frames, require_root};

const PASS: i32 = -1;
const DROP: i32 = 2;

/// Everyone may connect: no peer entries needed.
const OPEN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{}]
"#;

/// Four named peers on port 80: four peer entries, more than the map holds.
const FOUR_PEERS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from:
        - podSelector:
            matchExpressions:
              - {key: app, operator: In, values: [client, o1, o2, o3]}
      ports: [{port: 80}]
"#;

fn syn(sport: u16) -> Vec<u8> {
    frames::syn4([10, 0, 0, 20], [10, 0, 0, 10], sport, 80)
}

#[test]
fn a_policy_that_does_not_fit_isolates_the_pod_until_one_does() {
    require_root();
    let mut dataplane =
        Dataplane::load_with_max_entries(&[(MAP_PEERS, 2)]).expect("load with a tiny peer map");
    let mut cluster = apps(
        "x",
        &[
            ("server", "10.0.0.10"),
            ("client", "10.0.0.20"),
            ("o1", "10.0.0.31"),
            ("o2", "10.0.0.32"),
            ("o3", "10.0.0.33"),
        ],
    );
    let node_addrs = [IpAddr::from([10, 0, 0, 1])];
    let view = NodeView {
        name: "node-1",
        addrs: &node_addrs,
    };
    let mut compiler = Compiler::new();
    let ifindex = BTreeMap::from([(ObjectKey::new("x", "server"), LOOPBACK_IFINDEX)]);
    let mut sync = |dataplane: &mut Dataplane, cluster: &mut Cluster, policy: &str| {
        apply_yaml(cluster, policy);
        let state = compiler.compile(cluster, &view);
        dataplane
            .sync(&state, &ifindex)
            .expect("the sync itself runs")
    };
    let run = |dataplane: &Dataplane, sport| {
        dataplane
            .test_run(PROG_TO_POD, &syn(sport), LOOPBACK_IFINDEX)
            .expect("test run")
            .action
    };

    let report = sync(&mut dataplane, &mut cluster, OPEN);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        run(&dataplane, 40000),
        PASS,
        "open policy admits the client"
    );

    let report = sync(&mut dataplane, &mut cluster, FOUR_PEERS);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(
        report.failures[0].contains("x/server"),
        "the failure names the pod: {:?}",
        report.failures
    );
    assert_eq!(
        run(&dataplane, 40001),
        DROP,
        "the new policy would admit the client, but could not be written: the old open rules must not stay either"
    );

    let report = sync(&mut dataplane, &mut cluster, OPEN);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        run(&dataplane, 40002),
        PASS,
        "rules that fit are written whole again"
    );
}
