//! The real-API-server harness (`palisade_lab::apiserver`) against kube-apiserver v1.20.2:
//! objects the agent will watch can be created, given a kubelet's status and watched; the
//! manifests pass the server's own validation; a restarted API server keeps everything; and
//! nothing outlives the harness.
//!
//! These need the binaries of `cargo xtask kube` (not root). Without them every test fails with
//! the message saying so: a skipped test would hide a machine that cannot run them.

use std::{
    net::IpAddr,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use palisade_lab::apiserver::{
    ApiServer,
    objects::{self, NAMESPACE_NAME_LABEL},
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

async fn start() -> ApiServer {
    let started = Instant::now();
    let cluster = ApiServer::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the test API server: {e}"));
    eprintln!(
        "API server ready at {} after {:?} (state in {})",
        cluster.url(),
        started.elapsed(),
        cluster.state_dir().display()
    );
    cluster
}

/// Every pod a watcher sees applied, as `(namespace/name, podIP)`, in order.
fn watch_pods(client: Client) -> mpsc::UnboundedReceiver<(String, Option<String>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client);
        // default_backoff: the watcher retries through the restart instead of ending.
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(pod)) => {
                    let key = format!(
                        "{}/{}",
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default()
                    );
                    let ip = pod.status.and_then(|s| s.pod_ip);
                    if tx.send((key, ip)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                // Connection refused while the server restarts: the backoff retries.
                Err(_) => continue,
            }
        }
    });
    rx
}

/// Waits until the watcher reports `key` with `ip`.
async fn seen(rx: &mut mpsc::UnboundedReceiver<(String, Option<String>)>, key: &str, ip: &str) {
    let wanted = (key.to_owned(), Some(ip.to_owned()));
    tokio::time::timeout(WAIT, async {
        while let Some(event) = rx.recv().await {
            if event == wanted {
                return;
            }
        }
        panic!("the watcher ended before seeing {key} at {ip}");
    })
    .await
    .unwrap_or_else(|_| panic!("the watcher did not see {key} at {ip} within {WAIT:?}"));
}

fn policy(namespace: &str) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-clients", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                "ports": [{"protocol": "TCP", "port": 80}]
            }]
        }
    }))
    .expect("a NetworkPolicy")
}

#[tokio::test]
async fn objects_are_created_given_a_status_watched_and_survive_an_apiserver_restart() {
    let mut cluster = start().await;
    let client = cluster.client();
    let mut events = watch_pods(client.clone());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces
        .create(
            &PostParams::default(),
            &objects::namespace("shop", &[("team", "a")]),
        )
        .await
        .expect("create namespace");
    let labels = ns.metadata.labels.expect("labels");
    assert_eq!(labels[NAMESPACE_NAME_LABEL], "shop");
    assert_eq!(labels["team"], "a");

    // A pod right after its namespace: no service-account admission to race.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    pods.create(
        &PostParams::default(),
        &objects::pod("shop", "web", "node-1", &[("app", "web")]),
    )
    .await
    .expect("create pod");
    let ips: [IpAddr; 2] = [
        "10.244.1.5".parse().unwrap(),
        "fd00:10:244:1::5".parse().unwrap(),
    ];
    let pod = objects::set_pod_running(&client, "shop", "web", &ips)
        .await
        .expect("write the pod's status");
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.1.5"));
    let pod_ips: Vec<String> = status.pod_ips.into_iter().flatten().map(|p| p.ip).collect();
    assert_eq!(pod_ips, ["10.244.1.5", "fd00:10:244:1::5"]);
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some("node-1")
    );
    seen(&mut events, "shop/web", "10.244.1.5").await;

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy("shop"))
        .await
        .expect("create NetworkPolicy");

    // A rolling restart (SIGTERM), then a crash (SIGKILL): each time the old client
    // reconnects, a new one works, every object is still there, and the watcher started
    // before goes on and sees a pod made after.
    for (round, crash) in [(1, false), (2, true)] {
        let started = Instant::now();
        let restarted = if crash {
            cluster.kill_and_restart_apiserver().await
        } else {
            cluster.restart_apiserver().await
        };
        restarted.unwrap_or_else(|e| panic!("restart (crash: {crash}): {e}"));
        eprintln!(
            "API server restarted in {:?} (crash: {crash})",
            started.elapsed()
        );
        let fresh = cluster.client();
        for client in [&client, &fresh] {
            everything_is_still_there(client).await;
        }
        let name = format!("client-{round}");
        let ip = format!("10.244.2.{round}");
        pods.create(
            &PostParams::default(),
            &objects::pod("shop", &name, "node-2", &[("role", "client")]),
        )
        .await
        .expect("create a pod after the restart");
        objects::set_pod_running(&client, "shop", &name, &[ip.parse().unwrap()])
            .await
            .expect("status after the restart");
        seen(&mut events, &format!("shop/{name}"), &ip).await;
    }

    // Deleted at once, not left Terminating for a kubelet that does not exist.
    pods.delete("client-1", &objects::delete_now())
        .await
        .expect("delete pod");
    let deadline = Instant::now() + WAIT;
    while pods.get_opt("client-1").await.expect("get pod").is_some() {
        assert!(Instant::now() < deadline, "the pod stayed after delete_now");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn everything_is_still_there(client: &Client) {
    let pod = Api::<Pod>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .expect("the pod after the restart");
    assert_eq!(
        pod.status.and_then(|s| s.pod_ip).as_deref(),
        Some("10.244.1.5")
    );
    let names: Vec<String> = Api::<NetworkPolicy>::namespaced(client.clone(), "shop")
        .list(&ListParams::default())
        .await
        .expect("policies after the restart")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["web-from-clients"]);
    Api::<Namespace>::all(client.clone())
        .get("shop")
        .await
        .expect("the namespace after the restart");
}

fn kubectl(cluster: &ApiServer, args: &[&str]) -> Output {
    let mut cmd = cluster.kubectl().unwrap_or_else(|e| panic!("{e}"));
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn the_manifests_pass_the_servers_validation() {
    let cluster = start().await;
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let manifests = manifests.to_str().expect("a UTF-8 path");
    // `-k`, not `-f`: `-f manifests/` would send kustomization.yaml to the server as an object
    // of a kind it does not know. A server-side dry run persists nothing, so the namespace the
    // other objects live in is created for real first (or they would be rejected as being in a
    // namespace that does not exist).
    kubectl(
        &cluster,
        &["apply", "-f", &format!("{manifests}/namespace.yaml")],
    );
    let dry = kubectl(&cluster, &["apply", "--dry-run=server", "-k", manifests]);
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(said.contains("daemonset.apps/"), "{said}");
    assert!(said.contains("server dry run"), "{said}");

    // Then for real, and the DaemonSet is there as the server stored it.
    kubectl(&cluster, &["apply", "-k", manifests]);
    let sets: Vec<DaemonSet> = Api::<DaemonSet>::all(cluster.client())
        .list(&ListParams::default())
        .await
        .expect("list DaemonSets")
        .items;
    assert_eq!(sets.len(), 1, "{sets:?}");
}

#[tokio::test]
async fn dropping_the_harness_leaves_no_process_and_no_state() {
    let cluster = start().await;
    let pids = cluster.pids();
    let state = cluster.state_dir().to_owned();
    assert_eq!(pids.len(), 3, "{pids:?}");
    for (name, pid) in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) is not running"
        );
    }
    assert!(state.join("kubeconfig").is_file());
    let started = Instant::now();
    drop(cluster);
    eprintln!("stopped in {:?}", started.elapsed());
    for (name, pid) in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) outlived the harness"
        );
    }
    assert!(!state.exists(), "{} is still there", state.display());
}
