//! `palisade agent` against a real API server: a new pod's interface is closed from the moment
//! it exists, before its pod (and so its rules) is known, under `--fail-mode closed`; left open
//! under `--fail-mode open`. Once the kubelet reports the pod's address, its own policies apply.
//! Also checks what the agent serves: `/readyz`, `/status`, `/metrics`.
//!
//! Real kernel, real programs, real kube-apiserver, the real `palisade` binary.

use std::{net::SocketAddr, time::Duration};

use palisade::k8s::cluster::ObjectKey;
use palisade_lab::{probe::probe, serve::Proto, topology::Topology};

use palisade::k8s::{
    cluster::Cluster,
    fixtures::{apply_yaml, pods_on},
};
use palisade_integration::{ApiLab, require_root};

/// Pods a, b and c of namespace x on node-1, labelled `pod: <name>`; b admits only a.
fn scenery() -> Cluster {
    let mut scenery = pods_on("node-1", "x", &["a", "b", "c"]);
    apply_yaml(
        &mut scenery,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
"#,
    );
    scenery
}

async fn connects(topology: &Topology, from: &str, to: &str) -> bool {
    let (src, dst) = (topology.pod(from).unwrap(), topology.pod(to).unwrap());
    probe(
        src,
        SocketAddr::new(dst.addrs[0], 80),
        Proto::Tcp,
        Duration::from_millis(1500),
    )
    .await
    .succeeded()
}

/// x/a is running and known; x/b (isolated, admits x/a) and x/c (no policy) get their
/// interfaces, and the agent is asked about them before and after their status is written.
async fn new_pods(mode: &str) -> (bool, bool, bool, bool) {
    let lab = ApiLab::start(scenery(), &["--fail-mode", mode]).await;
    let ApiLab {
        servers,
        topology,
        mut api,
        pins,
        cluster,
    } = lab;
    // Only x/a is reported running: x/b and x/c have interfaces but no known pod.
    let a = ObjectKey::new("x", "a");
    api.push_statuses(&cluster, |k| *k == a)
        .await
        .expect("status");
    api.converge().await.expect("converge");
    let status = api.agent_status("node-1").await.expect("status");
    let pending = [
        &topology.pod("x/b").unwrap().host_ifname,
        &topology.pod("x/c").unwrap().host_ifname,
    ];
    if mode == "closed" {
        for ifname in pending {
            assert!(
                status.pending_interfaces.contains(ifname),
                "{ifname} should be pending: {status:?}"
            );
        }
    } else {
        assert!(status.pending_interfaces.is_empty(), "{status:?}");
    }
    let before = (
        connects(&topology, "x/a", "x/b").await,
        connects(&topology, "x/a", "x/c").await,
    );

    api.push_statuses(&cluster, |_| true).await.expect("status");
    api.converge().await.expect("converge");
    let status = api.agent_status("node-1").await.expect("status");
    assert!(status.ready);
    assert!(status.pending_interfaces.is_empty(), "{status:?}");
    assert_eq!(status.endpoints, 3);
    let after = (
        connects(&topology, "x/a", "x/b").await,
        connects(&topology, "x/c", "x/b").await,
    );
    // What an operator scrapes.
    assert_eq!(
        api.agent_get("node-1", "/readyz").await.expect("readyz"),
        "ready\n"
    );
    let metrics = api.agent_get("node-1", "/metrics").await.expect("metrics");
    for family in [
        "palisade_policy_implementation_delay_seconds_bucket",
        "palisade_sync_duration_seconds_count",
        "palisade_map_entries{map=\"PAL_ENDPOINTS\"} 3",
        "palisade_endpoints 3",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from:\n{metrics}"
        );
    }
    // The pods' status updates came after the first sync: applied in place, not by compiling
    // everything again.
    let in_place = metrics
        .lines()
        .find_map(|l| l.strip_prefix("palisade_changes_applied_total{how=\"in_place\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        in_place.is_some_and(|n| n > 0),
        "pod changes should be applied in place:\n{metrics}"
    );
    if mode == "closed" {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("palisade_drops_total{reason=\"no-endpoint\"}")),
            "the closed interfaces' drops are counted:\n{metrics}"
        );
    }
    drop(servers);
    drop(topology);
    drop(api);
    drop(pins);
    (before.0, before.1, after.0, after.1)
}

/// Both modes in one test: a process's lab namespaces share one prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pod_interfaces_closed_or_open_until_their_pod_is_known() {
    require_root();
    let (to_b, to_c, a_to_b, c_to_b) = new_pods("closed").await;
    assert!(
        !to_b,
        "x/b's interface must be closed before its rules are written"
    );
    assert!(
        !to_c,
        "x/c's interface must be closed before its pod is known"
    );
    assert!(a_to_b, "then x/b admits x/a, as its policy says");
    assert!(!c_to_b, "and only x/a");

    let (to_b, to_c, a_to_b, c_to_b) = new_pods("open").await;
    assert!(
        to_b && to_c,
        "--fail-mode open: no program on interfaces of unknown pods"
    );
    assert!(a_to_b);
    assert!(!c_to_b, "once known, x/b is isolated");
}
