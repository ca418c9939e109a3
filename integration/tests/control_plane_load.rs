//! The control plane under load through a real kube-apiserver, at a scale that fits the test
//! run (`cargo xtask bench` runs the 50,000 pods / 10,000 policies): two lab nodes, each
//! with its agent, take open-loop policy updates and pod creations and deletions. Every write
//! must reach every node's maps, and the full resync SIGHUP forces afterwards must find nothing
//! to correct: the in-place state equals a full compile of the same objects.
//!
//! Needs root and the binaries of `cargo xtask kube`; without them it fails saying so.

use std::time::Duration;

use palisade_integration::{palisade_bin, require_root};
use palisade_lab::load::{LoadOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_reaches_every_node_and_matches_a_full_compile() {
    require_root();
    let report = run(LoadOptions {
        nodes: 2,
        local_pods: 4,
        pods: 1_000,
        namespaces: 20,
        policies: 100,
        duration: Duration::from_secs(5),
        policy_updates: 10,
        pod_changes: 20,
        agent_binary: palisade_bin(),
    })
    .await
    .unwrap_or_else(|e| panic!("the load run failed: {e:#}"));
    eprint!("{}", report.render());
    assert!(
        report.policy_writes >= 40 && report.pod_writes >= 80,
        "the generator wrote too little to test anything: {} policy and {} pod writes",
        report.policy_writes,
        report.pod_writes
    );
    assert_eq!(report.lost, 0, "writes never seen in a node's sync");
    assert_eq!(report.per_node.len(), 2, "a node reported nothing");
    for (node, figures) in &report.per_node {
        assert_eq!(
            figures.samples,
            report.policy_writes + report.pod_writes,
            "{node} timed fewer writes than were made"
        );
        assert!(figures.syncs > 0, "{node} never synced");
    }
    assert!(
        report.checks >= 2,
        "the check resync did not run on every node ({} checks)",
        report.checks
    );
    assert_eq!(
        report.check_corrections, 0,
        "a full resync corrected map entries the in-place syncs had left wrong"
    );
    assert!(
        report.restart_seconds > 0.0,
        "the restarted agents were not timed"
    );
    // Each agent's own account of its start (`/status`): every phase over, in order, and the
    // CPU it had used by then never more than this machine's cores' worth of the time.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let ordered = |node: &str, what: &str, s: &palisade::daemon::status::Startup| {
        let phases = [s.programs, s.listed, s.viewed, s.ready];
        assert!(
            phases.iter().all(Option::is_some),
            "{node}'s {what} left a phase unreported: {s:?}"
        );
        let phases: Vec<_> = phases.into_iter().flatten().collect();
        assert!(
            phases
                .windows(2)
                .all(|w| w[0].at_s <= w[1].at_s && w[0].cpu_s <= w[1].cpu_s),
            "{node}'s {what} phases out of order: {s:?}"
        );
        assert!(
            phases.iter().all(|p| p.cpu_s <= cores * p.at_s + 0.1),
            "{node}'s {what}: more CPU than time allows: {s:?}"
        );
    };
    for (node, figures) in &report.per_node {
        ordered(node, "cold start", &figures.cold_start);
    }
    let restarted: Vec<_> = (report.per_node.iter())
        .filter(|(_, f)| f.restart != Default::default())
        .collect();
    assert_eq!(
        restarted.len(),
        1,
        "one agent is restarted, as a rolling update would"
    );
    for (node, figures) in restarted {
        ordered(node, "restart", &figures.restart);
    }
}
