//! The established-connection setting: with `Recheck`, a policy change cuts the tracked flows
//! the new policy denies and keeps the others; with `Keep` (the default) every tracked flow
//! goes on. Judged through `BPF_PROG_TEST_RUN` at loopback, where the server's endpoint is.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use palisade::{
    dataplane::{ConntrackSettings, Dataplane, LOOPBACK_IFINDEX},
    k8s::cluster::{Cluster, ObjectKey},
    k8s::fixtures::{apply_yaml, apps},
    policy::{Compiler, NodeView},
};
use palisade_common::PROG_TO_POD;

use palisade_integration::{frames, require_root};

const PASS: i32 = -1;
const DROP: i32 = 2;

fn policy(apps: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: server, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
    - from:
        - podSelector:
            matchExpressions:
              - {{key: app, operator: In, values: [{apps}]}}
      ports: [{{port: 80}}]
"#
    )
}

/// The SYN opening the flow `from:sport -> server:80` (judged by policy, every time).
fn opening(from: [u8; 4], sport: u16) -> Vec<u8> {
    frames::syn4(from, [10, 0, 0, 10], sport, 80)
}

/// A later packet of the flow `from:sport -> server:80`.
fn packet(from: [u8; 4], sport: u16) -> Vec<u8> {
    frames::ack4(from, [10, 0, 0, 10], sport, 80)
}

const CLIENT: [u8; 4] = [10, 0, 0, 20];
const OTHER: [u8; 4] = [10, 0, 0, 30];

struct Node {
    dataplane: Dataplane,
    cluster: Cluster,
    compiler: Compiler,
    ifindex: BTreeMap<ObjectKey, u32>,
}

impl Node {
    fn new() -> Self {
        require_root();
        let cluster = apps(
            "x",
            &[
                ("server", "10.0.0.10"),
                ("client", "10.0.0.20"),
                ("other", "10.0.0.30"),
            ],
        );
        Self {
            dataplane: Dataplane::load().expect("load"),
            cluster,
            compiler: Compiler::new(),
            ifindex: BTreeMap::from([(ObjectKey::new("x", "server"), LOOPBACK_IFINDEX)]),
        }
    }

    /// Applies a policy and syncs; returns the state written.
    fn apply(&mut self, apps: &str) -> palisade::policy::NodeState {
        apply_yaml(&mut self.cluster, &policy(apps));
        let node_addrs = [IpAddr::from([10, 0, 0, 1])];
        let view = NodeView {
            name: "node-1",
            addrs: &node_addrs,
        };
        let state = self.compiler.compile(&self.cluster, &view);
        let report = self.dataplane.sync(&state, &self.ifindex).expect("sync");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        state
    }

    fn run(&self, frame: &[u8]) -> i32 {
        self.dataplane
            .test_run(PROG_TO_POD, frame, LOOPBACK_IFINDEX)
            .expect("test run")
            .action
    }
}

#[test]
fn recheck_cuts_the_flows_a_new_policy_denies_and_keeps_the_others() {
    let mut node = Node::new();
    node.apply("client, other");
    assert_eq!(node.run(&opening(CLIENT, 41000)), PASS, "client admitted");
    assert_eq!(node.run(&opening(OTHER, 42000)), PASS, "other admitted");

    let state = node.apply("other");
    // Not cut yet: the flow is tracked, and tracking is what `Keep` relies on.
    assert_eq!(
        node.run(&packet(CLIENT, 41000)),
        PASS,
        "tracked flow before the re-check"
    );
    assert_eq!(
        node.run(&opening(CLIENT, 41001)),
        DROP,
        "a new flow is judged by the new policy"
    );
    let ifindex = node.ifindex.clone();
    let cut = node
        .dataplane
        .recheck_established(&state, &ifindex)
        .expect("recheck");
    assert_eq!(cut, 1, "only the client's flow is no longer admitted");
    assert_eq!(
        node.run(&packet(CLIENT, 41000)),
        DROP,
        "the client's flow is cut"
    );
    assert_eq!(
        node.run(&packet(OTHER, 42000)),
        PASS,
        "the other flow goes on"
    );
}

#[test]
fn keep_lets_established_flows_outlive_the_policy_that_admitted_them() {
    let mut node = Node::new();
    node.apply("client");
    assert_eq!(node.run(&opening(CLIENT, 43000)), PASS);
    node.apply("other");
    for _ in 0..3 {
        assert_eq!(
            node.run(&packet(CLIENT, 43000)),
            PASS,
            "kept across the change"
        );
    }
    assert_eq!(
        node.run(&opening(CLIENT, 43001)),
        DROP,
        "new flows follow the new policy"
    );
    assert_eq!(
        node.run(&opening(CLIENT, 43000)),
        DROP,
        "a new connection on the kept flow's ports is a new flow"
    );
}

#[test]
fn an_idle_flow_expires_by_its_state_and_the_sweep_removes_it() {
    let mut node = Node::new();
    node.apply("client");
    assert_eq!(node.run(&opening(CLIENT, 44000)), PASS);
    node.apply("other");
    assert_eq!(
        node.run(&packet(CLIENT, 44000)),
        PASS,
        "kept while it is not idle past its timeout"
    );
    // A SYN whose reply was never seen lives `tcp_syn`: a millisecond here.
    let short = ConntrackSettings {
        tcp_syn: Duration::from_millis(1),
        ..ConntrackSettings::default()
    };
    node.dataplane.set_conntrack(&short).expect("timeouts");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        node.run(&packet(CLIENT, 44000)),
        DROP,
        "an expired entry admits nothing: judged by the new policy"
    );
    let removed = node.dataplane.sweep_conntrack().expect("sweep");
    assert_eq!(removed, 1, "the sweep removes the expired entry");
    assert_eq!(node.dataplane.sweep_conntrack().expect("sweep"), 0);
}
