//! `palisade uninstall` takes Palisade off a node whose agent is gone: the programs the agent
//! left attached (by design: pinned links outlive it) leave every pod interface and the uplink,
//! the pins go, and traffic the last policy denied flows again. It refuses while the agent
//! runs, refuses a directory that is not on bpffs, and a second run finds nothing.
//!
//! Real kernel, real programs, real kube-apiserver, the real `palisade` binary for the agent
//! and for `uninstall`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::net::UnixListener,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use palisade::k8s::fixtures::{apply_yaml, pods_on};
use palisade_integration::{ApiLab, palisade_bin, require_root, wire::Capture};
use palisade_lab::{
    netns::NetNs,
    probe::probe,
    serve::Proto,
    topology::{PodHandle, Topology},
};

/// Pods a, b and c of namespace x on node-1; b admits nobody.
fn scenery() -> palisade::k8s::cluster::Cluster {
    let mut scenery = pods_on("node-1", "x", &["a", "b", "c"]);
    apply_yaml(
        &mut scenery,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-admits-nobody, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
"#,
    );
    scenery
}

/// Palisade's programs on each interface of `netns` (TCX, both directions), by interface name.
fn palisade_programs(netns: &NetNs) -> BTreeMap<String, usize> {
    netns
        .run(|| {
            let interfaces = nix::net::if_::if_nameindex().expect("interfaces");
            interfaces
                .iter()
                .map(|interface| {
                    let name = interface.name().to_string_lossy().into_owned();
                    let count = [TcAttachType::Ingress, TcAttachType::Egress]
                        .into_iter()
                        .filter_map(|kind| SchedClassifier::query_tcx(&name, kind).ok())
                        .flat_map(|(_, programs)| programs)
                        // The kernel keeps 15 characters of a program's name.
                        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("palisade")))
                        .count();
                    (name, count)
                })
                .collect()
        })
        .expect("in the node's namespace")
}

fn total(programs: &BTreeMap<String, usize>) -> usize {
    programs.values().sum()
}

fn uninstall(args: &[&str]) -> Output {
    Command::new(palisade_bin())
        .arg("uninstall")
        .args(args)
        .env("PALISADE_LOG", "warn")
        .output()
        .expect("palisade uninstall runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
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

/// Sends three UDP datagrams carrying `marker` from `from` to `to` (port 9: nothing listens,
/// the receiver's capture is what counts).
fn send_marked(from: &PodHandle, to: &PodHandle, marker: &'static [u8]) {
    let dst = SocketAddr::new(to.addrs[0], 9);
    from.netns
        .run(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
            for _ in 0..3 {
                socket.send_to(marker, dst).expect("send");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .expect("in the pod's namespace");
}

/// Whether a datagram carrying `marker` sent from `from` reaches `to`'s `eth0`.
fn arrives(from: &PodHandle, to: &PodHandle, marker: &'static [u8]) -> bool {
    let capture = Capture::open(&to.netns, "eth0");
    send_marked(from, to, marker);
    capture.sees(marker, Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_takes_every_program_off_the_node_once_the_agent_is_gone() {
    require_root();
    let ApiLab {
        servers,
        mut topology,
        mut api,
        mut pins,
        cluster,
    } = ApiLab::start(scenery(), &[]).await;
    let node = topology.nodes()[0].clone();
    let pin_root = pins.node(&node.netns);
    // An uplink: a host outside the cluster, wired to the node.
    topology
        .add_external(
            &node,
            "world/ext",
            &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))],
        )
        .expect("external host");
    api.push_statuses(&cluster, |_| true).await.expect("status");
    api.converge().await.expect("converge");

    // Every pod interface and the uplink carry the agent's programs.
    let uplink = topology.pod("world/ext").unwrap().host_ifname.clone();
    let mut interfaces: Vec<String> = topology.pods().map(|p| p.host_ifname.clone()).collect();
    interfaces.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let programs = palisade_programs(&node.netns);
        if interfaces
            .iter()
            .all(|i| programs.get(i).is_some_and(|&n| n >= 2))
        {
            break programs;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never attached to all of {interfaces:?}: {programs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (a, b, c) = (
        topology.pod("x/a").unwrap().clone(),
        topology.pod("x/b").unwrap().clone(),
        topology.pod("x/c").unwrap().clone(),
    );
    assert!(
        !connects(&topology, "x/a", "x/b").await,
        "x/b admits nobody"
    );
    assert!(connects(&topology, "x/a", "x/c").await, "x/c has no policy");

    // A live agent: nothing is removed.
    let socket = api.agent_socket("node-1").expect("socket");
    let pin_root_arg = pin_root.to_str().expect("a UTF-8 path");
    let socket_arg = socket.to_str().expect("a UTF-8 path");
    let refused = uninstall(&["--pin-root", pin_root_arg, "--socket", socket_arg]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("an agent is running"),
        "{}",
        text(&refused)
    );
    assert_eq!(palisade_programs(&node.netns), before);

    // The agent dies as `kill -9` ends it: its socket file stays, its programs stay attached
    // and go on enforcing the last policy.
    api.kill_agents();
    assert!(socket.exists(), "a killed agent leaves its socket file");
    assert_eq!(palisade_programs(&node.netns), before);
    assert!(
        !arrives(&a, &b, b"uninstall: denied before"),
        "x/b still admits nobody with the agent gone"
    );
    assert!(
        arrives(&a, &c, b"uninstall: control before"),
        "the control datagram reaches x/c"
    );

    // What the uninstall DaemonSet runs while the agent's pod terminates: it waits as long as
    // an agent answers (a stand-in listening on another socket), and goes on once none does.
    let stand_in_path = socket.with_extension("stand-in.sock");
    let stand_in = UnixListener::bind(&stand_in_path).expect("a stand-in agent");
    let waiting = Command::new(palisade_bin())
        .args([
            "uninstall",
            "--pin-root",
            pin_root_arg,
            "--wait-seconds",
            "60",
        ])
        .arg("--socket")
        .arg(&stand_in_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("palisade uninstall runs");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        palisade_programs(&node.netns),
        before,
        "nothing removed while an agent answers"
    );
    drop(stand_in);
    let done = waiting.wait_with_output().expect("palisade uninstall ends");
    assert!(done.status.success(), "{}", text(&done));
    let report = String::from_utf8_lossy(&done.stdout);
    eprintln!("palisade uninstall said:\n{report}");
    let attached = before.values().filter(|&&n| n > 0).count();
    let summary = format!(
        "uninstalled {} links on {attached} interfaces",
        total(&before)
    );
    assert!(report.contains(&summary), "{summary:?} in:\n{report}");
    assert!(report.contains(&uplink), "the uplink is named:\n{report}");

    let after = palisade_programs(&node.netns);
    assert_eq!(total(&after), 0, "programs left: {after:?}");
    assert!(!pin_root.exists(), "{} is gone", pin_root.display());
    assert!(
        arrives(&a, &b, b"uninstall: denied after"),
        "with the programs gone, x/b receives what its policy denied"
    );
    assert!(connects(&topology, "x/a", "x/b").await);
    eprintln!(
        "programs attached before uninstall: {} on {attached} interfaces ({before:?}); after: {}",
        total(&before),
        total(&after)
    );

    // Again: nothing left, and that is no error.
    let again = uninstall(&["--pin-root", pin_root_arg, "--socket", socket_arg]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to uninstall"),
        "{}",
        text(&again)
    );

    drop(servers);
    drop(topology);
    drop(api);
    drop(pins);
}

/// A directory that is not on bpffs holds no pins: `uninstall` refuses it and leaves it whole.
#[test]
fn uninstall_refuses_a_directory_off_bpffs() {
    require_root();
    let root = std::env::temp_dir().join(format!("palisade-not-bpffs-{}", std::process::id()));
    let version = root.join(format!("v{}/maps", palisade_common::ABI_VERSION));
    std::fs::create_dir_all(&version).expect("scratch directory");
    std::fs::write(version.join("PAL_ENDPOINTS"), b"").expect("scratch file");
    let out = uninstall(&[
        "--pin-root",
        root.to_str().expect("UTF-8"),
        "--socket",
        "/nonexistent/palisade.sock",
    ]);
    let kept = version.join("PAL_ENDPOINTS").exists();
    let _ = std::fs::remove_dir_all(&root);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not on bpffs"),
        "{}",
        text(&out)
    );
    assert!(kept, "nothing removed");
}
