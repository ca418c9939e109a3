//! Flow records end to end: the real programs emit events on the real kernel, a real
//! `palisade agent` (against a real kube-apiserver) names them, and the real `palisade flows`
//! and `palisade explain` binaries read them over the agent's socket.
//!
//! - A denied probe gives exactly one denied record, naming the isolating policy.
//! - An allowed connection gives exactly one record naming the rule that admitted it.
//! - A flood of denied packets from one pod is held to its budget and the rest counted, while
//!   another pod's events still arrive.
//! - `palisade explain` answers from the live maps and agrees with the reference evaluator.
//! - Audit mode (a namespace annotation) lets the denied connection pass and reports it, and
//!   switching back enforces again, without reloading programs.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use palisade::{
    flows::{FlowRecord, FlowVerdict},
    k8s::cluster::{Cluster, POLICY_MODE_ANNOTATION},
};
use palisade_lab::{
    probe::{ProbeOutcome, probe},
    serve::Proto,
    topology::Topology,
};

use palisade::k8s::fixtures::{apply_yaml, pods_on};
use palisade_integration::{ApiLab, require_root};

/// Pods a, b, c and d of namespace x on node-1, labelled `pod: <name>`: b admits a on port 80,
/// d admits nobody.
fn scenery() -> Cluster {
    let mut scenery = pods_on("node-1", "x", &["a", "b", "c", "d"]);
    apply_yaml(
        &mut scenery,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-d, namespace: x}
spec:
  podSelector: {matchLabels: {pod: d}}
  policyTypes: [Ingress]
"#,
    );
    scenery
}

/// Each source's budget, per second: small, so that the flood is far over it.
const BUDGET: u32 = 20;
/// Datagrams in the flood, each to another port (a new flow, and a denied packet, each).
const FLOOD: u16 = 300;

/// `palisade flows --json` as a child process, its records collected as they come.
struct Follower {
    child: Child,
    records: Arc<Mutex<Vec<FlowRecord>>>,
}

impl Follower {
    fn start(socket: &Path) -> Self {
        let mut child = Command::new(palisade_integration::palisade_bin())
            .args(["flows", "--json", "--socket"])
            .arg(socket)
            .stdout(Stdio::piped())
            .spawn()
            .expect("palisade flows");
        let stdout = child.stdout.take().expect("stdout");
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&records);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let record: FlowRecord = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("palisade flows printed {line:?}: {e}"));
                sink.lock().unwrap().push(record);
            }
        });
        Self { child, records }
    }

    fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Records from index `from` on, once `settle` has passed without new ones arriving (or
    /// 10 s).
    async fn since(&self, from: usize, settle: Duration) -> Vec<FlowRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = self.len();
        loop {
            tokio::time::sleep(settle).await;
            let now = self.len();
            if (now == seen && now > from) || Instant::now() > deadline {
                return self.records.lock().unwrap()[from..].to_vec();
            }
            seen = now;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn explain(socket: &Path, from: &str, to: &str) -> (bool, String) {
    let out = Command::new(palisade_integration::palisade_bin())
        .args(["explain", "--socket"])
        .arg(socket)
        .args([from, to, "TCP/80"])
        .output()
        .expect("palisade explain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn between<'r>(records: &'r [FlowRecord], from: &str, to: &str) -> Vec<&'r FlowRecord> {
    records
        .iter()
        .filter(|r| r.src.pod.as_deref() == Some(from) && r.dst.pod.as_deref() == Some(to))
        .collect()
}

async fn tcp(topology: &Topology, from: &str, to: &str, timeout: Duration) -> ProbeOutcome {
    let (src, dst) = (topology.pod(from).unwrap(), topology.pod(to).unwrap());
    probe(src, SocketAddr::new(dst.addrs[0], 80), Proto::Tcp, timeout).await
}

/// Well under the first SYN retransmission (1 s): one packet, so one denied record.
const ONE_SYN: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_name_the_policy_floods_are_held_to_a_budget_and_audit_reports_without_dropping() {
    require_root();
    let budget = BUDGET.to_string();
    let lab = ApiLab::start(
        scenery(),
        &["--flow-events-per-second", &budget, "--flow-log", "all"],
    )
    .await;
    let ApiLab {
        servers,
        topology,
        mut api,
        pins,
        mut cluster,
    } = lab;
    api.push_statuses(&cluster, |_| true).await.expect("status");
    api.converge().await.expect("converge");
    let socket = api.agent_socket("node-1").expect("socket");
    let follower = Follower::start(&socket);
    // The follower is connected once the agent streams to it; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A denied probe: exactly one denied record, at x/b's ingress, naming its policy.
    let mark = follower.len();
    assert_eq!(
        tcp(&topology, "x/c", "x/b", ONE_SYN).await,
        ProbeOutcome::TimedOut
    );
    let records = follower.since(mark, Duration::from_millis(700)).await;
    let c_to_b = between(&records, "x/c", "x/b");
    let denied: Vec<_> = c_to_b
        .iter()
        .filter(|r| r.verdict == FlowVerdict::Denied)
        .collect();
    assert_eq!(denied.len(), 1, "one denied record: {c_to_b:#?}");
    let denied = denied[0];
    assert_eq!(denied.direction, "ingress");
    assert_eq!(denied.pod.as_deref(), Some("x/b"));
    assert_eq!(denied.reason, "policy-ingress");
    assert_eq!(denied.isolated_by, ["x/b-from-a"]);
    assert_eq!(denied.dst.port, 80);
    assert_eq!(denied.protocol, "TCP");

    // The same question to the agent's live maps.
    let (ok, text) = explain(&socket, "x/c", "x/b");
    assert!(ok, "{text}");
    assert!(text.starts_with("denied"), "{text}");
    assert!(text.contains("x/b-from-a"), "{text}");
    assert!(text.contains("ingress of x/b (ifindex"), "{text}");
    assert!(
        text.contains("agree with the reference evaluator"),
        "{text}"
    );

    // An allowed connection: one record naming the rule (and x/a's unisolated egress).
    let mark = follower.len();
    assert_eq!(
        tcp(&topology, "x/a", "x/b", Duration::from_secs(3)).await,
        ProbeOutcome::Connected
    );
    let records = follower.since(mark, Duration::from_millis(700)).await;
    let a_to_b = between(&records, "x/a", "x/b");
    let by_rule: Vec<_> = a_to_b.iter().filter(|r| !r.allowed_by.is_empty()).collect();
    assert_eq!(by_rule.len(), 1, "one record names a rule: {a_to_b:#?}");
    assert_eq!(by_rule[0].verdict, FlowVerdict::Allowed);
    assert_eq!(by_rule[0].allowed_by, ["x/b-from-a ingress[0]"]);
    assert_eq!(by_rule[0].pod.as_deref(), Some("x/b"));
    assert!(
        a_to_b
            .iter()
            .all(|r| r.verdict == FlowVerdict::Allowed && r.dst.port == 80),
        "{a_to_b:#?}"
    );
    let (ok, text) = explain(&socket, "x/a", "x/b");
    assert!(ok, "{text}");
    assert!(
        text.starts_with("allowed") && text.contains("x/b-from-a rule ingress[0]"),
        "{text}"
    );
    assert!(
        text.contains("allowed by class 0 (x/b-from-a ingress[0])"),
        "{text}"
    );

    // A flood from x/c to x/d (isolated, admits nothing): far over x/c's budget. x/a's denied
    // probe in the same second still gets its record.
    let (c_ip, d_ip) = (
        topology.pod("x/c").unwrap().addrs[0],
        topology.pod("x/d").unwrap().addrs[0],
    );
    // Resolve x/d's neighbour entry first, so that no datagram waits on it and is lost.
    assert_eq!(
        tcp(&topology, "x/a", "x/d", ONE_SYN).await,
        ProbeOutcome::TimedOut
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mark = follower.len();
    let c = topology.pod("x/c").unwrap();
    let sent = c
        .netns
        .run(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for port in 0..FLOOD {
                socket.send_to(b"flood", SocketAddr::new(d_ip, 20_000 + port))?;
            }
            Ok::<_, std::io::Error>(())
        })
        .expect("netns");
    sent.expect("flood");
    assert_eq!(
        tcp(&topology, "x/a", "x/d", ONE_SYN).await,
        ProbeOutcome::TimedOut
    );
    // A new window, then one more datagram: its records carry what the kernel suppressed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.netns
        .run(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.send_to(b"after", SocketAddr::new(d_ip, 19_999))
        })
        .expect("netns")
        .expect("last datagram");
    let records = follower.since(mark, Duration::from_millis(800)).await;
    let from_c: Vec<&FlowRecord> = records.iter().filter(|r| r.src.ip == c_ip).collect();
    let last = from_c
        .iter()
        .position(|r| r.dst.port == 19_999)
        .expect("the datagram after the flood has its records");
    let in_flood = from_c[..last].len();
    let suppressed: u32 = from_c.iter().map(|r| r.suppressed).sum();
    // Each datagram is a new flow at x/c's egress and a drop at x/d's ingress: two events.
    let caused = 2 * usize::from(FLOOD);
    assert!(
        in_flood <= 2 * BUDGET as usize + 2,
        "{in_flood} records from x/c during the flood: its budget is {BUDGET}/s"
    );
    assert!(
        in_flood >= BUDGET as usize / 2,
        "x/c got its budget's worth of records: {in_flood}"
    );
    eprintln!("flood: {caused} events caused, {in_flood} sent, {suppressed} suppressed");
    // Budgets are per-CPU-racy by design; allow a couple of miscounts.
    let accounted = in_flood + suppressed as usize;
    assert!(
        accounted + 2 >= caused && accounted <= caused + 2,
        "every event is either sent or counted: {in_flood} sent + {suppressed} suppressed, \
         {caused} caused"
    );
    let a_to_d = between(&records, "x/a", "x/d");
    assert!(
        a_to_d
            .iter()
            .any(|r| r.verdict == FlowVerdict::Denied && r.isolated_by == ["x/deny-d"]),
        "x/a's denied probe during the flood has its record: {a_to_d:#?}"
    );
    // The kernel's count reaches /metrics at the agent's next heartbeat (every 10 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = api.agent_get("node-1", "/metrics").await.expect("metrics");
        let counted = metrics.lines().any(|l| {
            l.starts_with("palisade_flow_events_total{outcome=\"suppressed\"}")
                && l.rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n + 2 >= u64::from(suppressed))
        });
        let per_policy = metrics.contains(
            "palisade_flows_total{verdict=\"denied\",direction=\"ingress\",policy=\"x/b-from-a\"}",
        );
        if counted && per_policy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "suppressed events and per-policy flows in /metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Audit mode for namespace x: x/c reaches x/b, reported as what policy would have dropped.
    let annotate = |cluster: &mut Cluster, mode: Option<&str>| {
        let ns = std::sync::Arc::make_mut(cluster.namespaces.get_mut("x").unwrap());
        let annotations = ns.metadata.annotations.get_or_insert_default();
        match mode {
            Some(mode) => annotations.insert(POLICY_MODE_ANNOTATION.into(), mode.into()),
            None => annotations.remove(POLICY_MODE_ANNOTATION),
        };
    };
    annotate(&mut cluster, Some("audit"));
    api.push_objects(&cluster).await.expect("annotate");
    api.converge().await.expect("converge");
    let mark = follower.len();
    assert_eq!(
        tcp(&topology, "x/c", "x/b", Duration::from_secs(3)).await,
        ProbeOutcome::Connected,
        "audit mode lets the flow pass"
    );
    let records = follower.since(mark, Duration::from_millis(700)).await;
    let c_to_b = between(&records, "x/c", "x/b");
    let audited: Vec<_> = c_to_b
        .iter()
        .filter(|r| r.verdict == FlowVerdict::Audit)
        .collect();
    assert_eq!(audited.len(), 1, "one audit record: {c_to_b:#?}");
    assert_eq!(audited[0].isolated_by, ["x/b-from-a"]);
    assert_eq!(audited[0].reason, "policy-ingress");
    assert!(
        !c_to_b.iter().any(|r| r.verdict == FlowVerdict::Denied),
        "{c_to_b:#?}"
    );
    let (ok, text) = explain(&socket, "x/c", "x/b");
    assert!(ok && text.contains("audit mode"), "{text}");

    // Back to enforcing: the same connection is dropped again.
    annotate(&mut cluster, None);
    api.push_objects(&cluster).await.expect("annotate");
    api.converge().await.expect("converge");
    assert_eq!(
        tcp(&topology, "x/c", "x/b", ONE_SYN).await,
        ProbeOutcome::TimedOut,
        "enforced again"
    );

    drop(follower);
    drop(servers);
    drop(topology);
    drop(api);
    drop(pins);
}
