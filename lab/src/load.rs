//! `palisade-lab load`: the control plane under a steady stream of changes, through a real
//! kube-apiserver, to every lab node's real agent and maps.
//!
//! The API server is filled first (namespaces, policies, pods of other nodes as API objects
//! only, created concurrently); then the lab nodes come up, each with its agent and a few real
//! pods under policy. For a while, an open-loop generator then writes policy updates and pod
//! creations and deletions at fixed rates (each write sent on its tick, whether the ones before
//! have answered or not). Every write is timed from just before it is sent to the end of the
//! first map write, on each node, of a sync that included it: an agent's `/status` lists its
//! recent syncs with the resourceVersion each had seen per watch, and this one etcd orders
//! versions (they are its revisions), which the Kubernetes API does not promise in general.
//!
//! Afterwards: every agent must have written exactly the objects the API holds (the `/status`
//! digest), every write must have reached every node (none lost), and a full resync of
//! unchanged objects (SIGHUP) must find nothing to correct in what the changes applied in place
//! left in the maps. Then the agents' memory, and the time a killed agent takes to be ready
//! again on this cluster (its maps pinned and enforcing meanwhile).

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::{
    core::v1::{ContainerPort, Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use serde::Serialize;
use serde_json::json;

use crate::{
    apiserver::objects::{self, delete_now, set_pod_running},
    control::{self, ApiControl, Faults, percentiles},
    pins::PinRoot,
    topology::{NodeHandle, Topology},
};
use palisade::{
    daemon::status::{Phase, Startup, Status, SyncRecord, unix_nanos},
    dataplane::Established,
};

/// What to load the control plane with.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Lab nodes, each with its own agent.
    pub nodes: u8,
    /// Real pods (namespace, interface, address) per lab node.
    pub local_pods: usize,
    /// Pods of other nodes: API objects only.
    pub pods: usize,
    pub namespaces: usize,
    pub policies: usize,
    /// How long the changes go on.
    pub duration: Duration,
    /// Policy updates per second.
    pub policy_updates: u32,
    /// Pod creations and deletions per second (half each).
    pub pod_changes: u32,
    /// The `palisade` binary the agents run.
    pub agent_binary: PathBuf,
}

/// What a run measured; printed, and written as JSON for `cargo xtask bench`.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub nodes: u8,
    pub local_pods_per_node: usize,
    pub pods: usize,
    pub namespaces: usize,
    pub policies: usize,
    pub seconds: f64,
    /// Seconds to write the initial objects into the API server.
    pub fill_seconds: f64,
    /// Seconds from starting the agents (programs loaded, first list of everything) until
    /// every one had written the API's objects.
    pub cold_start_seconds: f64,
    pub policy_writes: usize,
    pub pod_writes: usize,
    /// Writes sent later than their tick because too many were in flight.
    pub late_writes: usize,
    /// Per node: write to map write, in milliseconds.
    pub per_node: BTreeMap<String, NodeFigures>,
    /// Writes some node never showed in a sync.
    pub lost: usize,
    /// Full resyncs of unchanged objects run after the load, and the map entries they
    /// corrected (must be 0).
    pub checks: u64,
    pub check_corrections: u64,
    /// Seconds from a SIGKILLed agent's replacement starting until the lab saw it had written
    /// the API's objects: the first node's agent, the others running (as in a rolling update).
    pub restart_seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeFigures {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub policy_p99_ms: f64,
    pub pod_p99_ms: f64,
    pub syncs: usize,
    pub full_syncs: usize,
    /// Syncs `/status` had forgotten before they were read (their writes may be timed late).
    pub unpolled_syncs: u64,
    /// Resident set of the agent after the load, and its peak, in MiB.
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub restarted_peak_rss_mib: f64,
    /// The agent's own account of its cold start and of its restart (`/status`): when each
    /// phase ended, in seconds since it began.
    pub cold_start: Startup,
    pub restart: Startup,
}

/// How many writes may be waiting for the API server before new ticks wait for them.
const IN_FLIGHT: usize = 64;
/// Concurrent requests while filling the API server.
const FILL_CONCURRENCY: usize = 32;
/// Label values: pods and policies are spread over this many apps, roles and teams.
const APPS: usize = 10;
const ROLES: usize = 5;
const TEAMS: usize = 10;

/// One write the generator made.
#[derive(Clone, Debug)]
struct Write {
    watch: &'static str,
    /// The resourceVersion at which the write's effect is in the watch.
    version: u64,
    sent: SystemTime,
}

pub async fn run(options: LoadOptions) -> Result<LoadReport> {
    if options.nodes == 0 || options.nodes > 8 {
        bail!("--nodes {}: between 1 and 8", options.nodes);
    }
    if options.namespaces == 0 || options.policies == 0 || options.pods < 2 {
        bail!("--namespaces and --policies must be at least 1, --pods at least 2");
    }
    if options.pods > MAX_REMOTE_PODS {
        bail!(
            "--pods {}: at most {MAX_REMOTE_PODS} (their addresses are in 10.244.0.0/16)",
            options.pods
        );
    }
    // Dropped in reverse: pods' namespaces, then agents and the API server, then the pins.
    let mut pins = PinRoot::new();
    let mut api = ApiControl::start(
        options.agent_binary.clone(),
        Established::Keep,
        Faults::default(),
    )
    .await?;
    let mut topology = Topology::new()?;
    let client = api.client();

    let started = Instant::now();
    fill(&client, &options).await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    println!(
        "filled the API server in {fill_seconds:.1} s: {} namespaces, {} policies, {} pods of other nodes",
        options.namespaces, options.policies, options.pods
    );

    let started = Instant::now();
    let mut nodes: Vec<(NodeHandle, PathBuf)> = Vec::new();
    for index in 1..=options.nodes {
        let handle = topology.add_node(&format!("node-{index}"), index)?;
        let pin_dir = pins.node(&handle.netns);
        api.start_agent(&handle, &pin_dir)?;
        nodes.push((handle, pin_dir));
    }
    for (handle, _) in &nodes {
        for j in 0..options.local_pods {
            let name = format!("local-{}-{j}", handle.index);
            let namespace = namespace_name(j % options.namespaces);
            let addr = IpAddr::V4(Ipv4Addr::new(10, 244, 100 + handle.index, j as u8 + 1));
            topology.add_pod(handle, &format!("{namespace}/{name}"), &[addr])?;
            let pod = pod_object(&namespace, &name, &handle.name, j);
            Api::<Pod>::namespaced(client.clone(), &namespace)
                .create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating pod {namespace}/{name}"))?;
            set_pod_running(&client, &namespace, &name, &[addr])
                .await
                .with_context(|| format!("writing the status of {namespace}/{name}"))?;
        }
    }
    api.converge().await?;
    let cold_start_seconds = started.elapsed().as_secs_f64();
    let cold_starts = startups(&api).await?;
    println!(
        "{} agents ready in {cold_start_seconds:.1} s ({} local pods each)",
        options.nodes, options.local_pods
    );

    let syncs = Arc::new(Mutex::new(
        BTreeMap::<String, BTreeMap<u64, SyncRecord>>::new(),
    ));
    let polling = tokio::spawn(poll_syncs(api.status_endpoints(), Arc::clone(&syncs)));
    let generated = generate(&client, &options).await;
    // Until every agent shows the API's objects, then once more for the last syncs.
    let converged = api.converge().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    polling.abort();
    let generated = generated?;
    converged?;
    let syncs = std::mem::take(&mut *syncs.lock().unwrap_or_else(|e| e.into_inner()));

    let mut per_node = BTreeMap::new();
    let mut lost = 0;
    for (node, _) in api.agent_pids() {
        let records = syncs.get(&node).cloned().unwrap_or_default();
        let (figures, missing) = figures(&generated.writes, &records);
        if missing > 0 {
            println!("{node}: {missing} writes never shown in a sync");
        }
        lost += missing;
        per_node.insert(node, figures);
    }
    for (node, pid) in api.agent_pids() {
        let (rss, peak) = memory(pid)?;
        if let Some(f) = per_node.get_mut(&node) {
            f.rss_mib = rss;
            f.peak_rss_mib = peak;
        }
    }

    // A full resync of what every agent already has: in-place application checked.
    let before = statuses(&api).await?;
    api.signal_agents(nix::sys::signal::Signal::SIGHUP)?;
    let (checks, check_corrections) = wait_for_checks(&api, &before).await?;

    // As a rolling update does: one node's agent restarted while the others run.
    let restarted = &nodes[..1];
    for (node, _) in restarted {
        api.kill_agent(&node.name);
    }
    let started = Instant::now();
    api.restart_agents(restarted)?;
    api.converge().await?;
    let restart_seconds = started.elapsed().as_secs_f64();
    let restarts = startups(&api).await?;
    for (node, f) in &mut per_node {
        f.cold_start = cold_starts.get(node).cloned().unwrap_or_default();
        if restarted.iter().any(|(n, _)| n.name == *node) {
            f.restart = restarts.get(node).cloned().unwrap_or_default();
        }
    }
    for (node, pid) in api.agent_pids() {
        if !restarted.iter().any(|(n, _)| n.name == node) {
            continue;
        }
        let (_, peak) = memory(pid)?;
        if let Some(f) = per_node.get_mut(&node) {
            f.restarted_peak_rss_mib = peak;
        }
    }
    drop(topology);
    Ok(LoadReport {
        nodes: options.nodes,
        local_pods_per_node: options.local_pods,
        pods: options.pods,
        namespaces: options.namespaces,
        policies: options.policies,
        seconds: options.duration.as_secs_f64(),
        fill_seconds,
        cold_start_seconds,
        policy_writes: generated.policy_writes,
        pod_writes: generated.pod_writes,
        late_writes: generated.late,
        per_node,
        lost,
        checks,
        check_corrections,
        restart_seconds,
    })
}

impl LoadReport {
    /// The report as text.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} nodes x {} local pods, {} pods of other nodes, {} namespaces, {} policies",
            self.nodes, self.local_pods_per_node, self.pods, self.namespaces, self.policies
        );
        let _ = writeln!(
            out,
            "fill {:.1} s, cold start {:.1} s, restart of a killed agent {:.1} s",
            self.fill_seconds, self.cold_start_seconds, self.restart_seconds
        );
        let _ = writeln!(
            out,
            "{:.0} s of changes: {} policy updates, {} pod writes ({} sent late), lost {}",
            self.seconds, self.policy_writes, self.pod_writes, self.late_writes, self.lost
        );
        let _ = writeln!(
            out,
            "after: {} full resyncs of unchanged objects corrected {} entries",
            self.checks, self.check_corrections
        );
        let _ = writeln!(
            out,
            "{:<8} {:>7} {:>8} {:>8} {:>8} {:>10} {:>8} {:>6} {:>5} {:>8} {:>9} {:>9}",
            "node",
            "samples",
            "p50 ms",
            "p99 ms",
            "max ms",
            "policy p99",
            "pod p99",
            "syncs",
            "full",
            "RSS MiB",
            "peak MiB",
            "restarted"
        );
        for (node, f) in &self.per_node {
            let _ = writeln!(
                out,
                "{node:<8} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>8.1} {:>6} {:>5} {:>8.0} {:>9.0} {:>9.0}",
                f.samples,
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                f.policy_p99_ms,
                f.pod_p99_ms,
                f.syncs,
                f.full_syncs,
                f.rss_mib,
                f.peak_rss_mib,
                f.restarted_peak_rss_mib
            );
        }
        let phases = |s: &Startup| {
            let at = |p: Option<Phase>| {
                p.map_or_else(
                    || "-".to_owned(),
                    |p| format!("{:.2} s (cpu {:.2} s)", p.at_s, p.cpu_s),
                )
            };
            format!(
                "programs {}, listed {}, viewed {}, ready {}",
                at(s.programs),
                at(s.listed),
                at(s.viewed),
                at(s.ready)
            )
        };
        for (node, f) in &self.per_node {
            let _ = writeln!(out, "{node} cold start: {}", phases(&f.cold_start));
            if f.restart != Startup::default() {
                let _ = writeln!(out, "{node} restart:    {}", phases(&f.restart));
            }
        }
        out
    }
}

/// Remote pods' addresses: 10.244.16.0 upwards, skipping the lab's local pods
/// (10.244.100.0/22).
const MAX_REMOTE_PODS: usize = 65_536 - 16 * 256 - 4 * 256 - 256;

fn remote_addr(index: usize) -> IpAddr {
    let mut n = 16 * 256 + index;
    if n >= 100 * 256 {
        n += 4 * 256;
    }
    IpAddr::V4(Ipv4Addr::new(10, 244, (n >> 8) as u8, (n & 0xff) as u8))
}

fn namespace_name(i: usize) -> String {
    format!("load-{i:03}")
}

/// A pod with app, role labels and a named port, bound to `node`.
fn pod_object(namespace: &str, name: &str, node: &str, n: usize) -> Pod {
    let app = format!("a{}", n % APPS);
    let role = format!("r{}", (n / APPS) % ROLES);
    let mut pod = objects::pod(namespace, name, node, &[("app", &app), ("role", &role)]);
    if let Some(container) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        container.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..ContainerPort::default()
        }]);
    }
    pod
}

/// Policy `i`'s ingress at generation `generation`: from pods of one role in namespaces of one
/// team, to a port that moves with each update; every tenth also admits a TEST-NET block.
fn ingress(i: usize, generation: usize) -> serde_json::Value {
    let mut from = vec![json!({
        "namespaceSelector": { "matchLabels": { "team": format!("t{}", i % TEAMS) } },
        "podSelector": { "matchLabels": { "role": format!("r{}", (i + generation) % ROLES) } },
    })];
    if i.is_multiple_of(10) {
        from.push(json!({ "ipBlock": { "cidr": format!("198.51.100.{}/32", (i / 10) % 256) } }));
    }
    json!([{
        "from": from,
        "ports": [
            { "protocol": "TCP", "port": 1024 + (i * 7 + generation) % 60_000 },
            { "protocol": "TCP", "port": "http" },
        ],
    }])
}

fn policy_object(namespace: &str, i: usize) -> Result<NetworkPolicy> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": format!("pol-{i}"), "namespace": namespace },
        "spec": {
            "podSelector": { "matchLabels": { "app": format!("a{}", i % APPS) } },
            "policyTypes": ["Ingress"],
            "ingress": ingress(i, 0),
        },
    }))?)
}

/// Namespaces, policies and the pods of other nodes, written concurrently.
async fn fill(client: &Client, options: &LoadOptions) -> Result<()> {
    stream::iter(0..options.namespaces)
        .map(|i| async move {
            let name = namespace_name(i);
            let team = format!("t{}", i % TEAMS);
            let ns = objects::namespace(&name, &[("team", &team)]);
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .with_context(|| format!("creating namespace {name}"))
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(0..options.policies)
        .map(|i| async move {
            let namespace = namespace_name(i % options.namespaces);
            Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
                .create(&PostParams::default(), &policy_object(&namespace, i)?)
                .await
                .with_context(|| format!("creating networkpolicy {namespace}/pol-{i}"))
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(0..options.pods)
        .map(|n| create_remote_pod(client, options, n, n))
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Creates remote pod `n` with address slot `slot` and reports it running; the version of the
/// status write (the one that makes it a peer).
async fn create_remote_pod(
    client: &Client,
    options: &LoadOptions,
    n: usize,
    slot: usize,
) -> Result<u64> {
    let namespace = namespace_name(n % options.namespaces);
    let name = format!("pod-{n}");
    let node = format!("remote-{}", n % 50);
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &pod_object(&namespace, &name, &node, n),
        )
        .await
        .with_context(|| format!("creating pod {namespace}/{name}"))?;
    let pod = set_pod_running(client, &namespace, &name, &[remote_addr(slot)])
        .await
        .with_context(|| format!("writing the status of {namespace}/{name}"))?;
    version_of(pod.resource_version(), "pod")
}

fn version_of(version: Option<String>, what: &str) -> Result<u64> {
    version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{what}: resourceVersion {version:?} is not an etcd revision"))
}

/// A write, and the pod it deleted (its version is the deletion's, resolved afterwards).
type Unresolved = (Write, Option<String>);

struct Generated {
    writes: Vec<Write>,
    policy_writes: usize,
    pod_writes: usize,
    late: usize,
}

/// A small deterministic generator (xorshift64*): the same run writes the same changes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// The open-loop writer: one tick per write, each write a task of its own.
async fn generate(client: &Client, options: &LoadOptions) -> Result<Generated> {
    let deletions = Deletions::watch(client).await?;
    let writes: Arc<Mutex<Vec<Unresolved>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut generations = vec![0usize; options.policies];
    // Remote pods alive (index, address slot), and slots freed by deletions.
    let alive: Arc<Mutex<Vec<(usize, usize)>>> =
        Arc::new(Mutex::new((0..options.pods).map(|n| (n, n)).collect()));
    let mut free_slots: VecDeque<usize> = VecDeque::new();
    let (mut next_pod, mut next_slot) = (options.pods, options.pods);
    let total = options.policy_updates + options.pod_changes;
    let mut late = 0;
    let (mut policy_writes, mut pod_writes) = (0, 0);
    if total > 0 {
        let period = Duration::from_secs(1) / total;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = Instant::now() + options.duration;
        let mut tick = 0u64;
        while Instant::now() < end {
            ticks.tick().await;
            tick += 1;
            let permit = match Arc::clone(&limit).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    late += 1;
                    Arc::clone(&limit).acquire_owned().await?
                }
            };
            // Interleave the two kinds in proportion.
            let is_policy = (tick * u64::from(options.policy_updates)) % u64::from(total)
                < u64::from(options.policy_updates);
            let client = client.clone();
            let (writes, errors) = (Arc::clone(&writes), Arc::clone(&errors));
            if is_policy {
                policy_writes += 1;
                let i = rng.below(options.policies);
                generations[i] += 1;
                let (namespace, generation) =
                    (namespace_name(i % options.namespaces), generations[i]);
                tasks.spawn(async move {
                    let _permit = permit;
                    let sent = SystemTime::now();
                    let patch = json!({ "spec": { "ingress": ingress(i, generation) } });
                    let result = Api::<NetworkPolicy>::namespaced(client, &namespace)
                        .patch(
                            &format!("pol-{i}"),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await
                        .with_context(|| format!("updating networkpolicy {namespace}/pol-{i}"))
                        .and_then(|p| version_of(p.resource_version(), "networkpolicy"));
                    record(&writes, &errors, ("networkpolicies", None), sent, result);
                });
            } else {
                pod_writes += 1;
                let options = options.clone();
                let alive = Arc::clone(&alive);
                // Creations and deletions alternate.
                let taken = if pod_writes % 2 == 0 {
                    let mut pods = alive.lock().unwrap_or_else(|e| e.into_inner());
                    let picked = rng.below(pods.len());
                    (pods.len() > 1).then(|| pods.swap_remove(picked))
                } else {
                    None
                };
                if let Some((n, slot)) = taken {
                    free_slots.push_back(slot);
                    let namespace = namespace_name(n % options.namespaces);
                    tasks.spawn(async move {
                        let _permit = permit;
                        let sent = SystemTime::now();
                        let result = Api::<Pod>::namespaced(client, &namespace)
                            .delete(&format!("pod-{n}"), &delete_now())
                            .await
                            .with_context(|| format!("deleting pod {namespace}/pod-{n}"))
                            .map(|_| 0);
                        // The answer carries the pod's version before the deletion; the
                        // deletion's own is in the watch event (see `Deletions`).
                        let key = format!("{namespace}/pod-{n}");
                        record(&writes, &errors, ("pods", Some(key)), sent, result);
                    });
                } else {
                    let n = next_pod;
                    next_pod += 1;
                    // An address freed long enough ago that its deletion has landed (an IPAM
                    // reuses them too), else a new one.
                    let slot = if free_slots.len() > IN_FLIGHT {
                        free_slots.pop_front().unwrap_or_default()
                    } else {
                        next_slot += 1;
                        next_slot - 1
                    };
                    if slot >= MAX_REMOTE_PODS {
                        bail!("out of remote pod addresses");
                    }
                    tasks.spawn(async move {
                        let _permit = permit;
                        let sent = SystemTime::now();
                        let result = create_remote_pod(&client, &options, n, slot).await;
                        if result.is_ok() {
                            alive
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((n, slot));
                        }
                        record(&writes, &errors, ("pods", None), sent, result);
                    });
                }
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    if !errors.is_empty() {
        bail!("{} writes failed; the first: {}", errors.len(), errors[0]);
    }
    let writes = std::mem::take(&mut *writes.lock().unwrap_or_else(|e| e.into_inner()));
    let writes = deletions.resolve(writes).await?;
    Ok(Generated {
        writes,
        policy_writes,
        pod_writes,
        late,
    })
}

/// Records a write that answered `result` (its version), or its error; `deleted`: the
/// object it deleted, whose version comes from the deletion's watch event.
fn record(
    writes: &Mutex<Vec<Unresolved>>,
    errors: &Mutex<Vec<String>>,
    (watch, deleted): (&'static str, Option<String>),
    sent: SystemTime,
    result: Result<u64>,
) {
    match result {
        Ok(version) => writes.lock().unwrap_or_else(|e| e.into_inner()).push((
            Write {
                watch,
                version,
                sent,
            },
            deleted,
        )),
        Err(e) => errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{e:#}")),
    }
}

/// How often each agent's `/status` is read while the changes go on (it remembers
/// [`palisade::daemon::status::RECENT_SYNCS`] syncs: many seconds at the least sync interval).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Reads every agent's recent syncs until aborted, keeping each sync once.
async fn poll_syncs(
    endpoints: Vec<(String, SocketAddr)>,
    syncs: Arc<Mutex<BTreeMap<String, BTreeMap<u64, SyncRecord>>>>,
) {
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticks.tick().await;
        for (node, addr) in &endpoints {
            let Ok(status) = control::status_at(*addr).await else {
                continue;
            };
            let mut syncs = syncs.lock().unwrap_or_else(|e| e.into_inner());
            let node = syncs.entry(node.clone()).or_default();
            for record in status.recent_syncs {
                node.entry(record.sync).or_insert(record);
            }
        }
    }
}

/// Per write, the first sync on this node that included it; the figures, and how many writes
/// no sync included.
fn figures(writes: &[Write], records: &BTreeMap<u64, SyncRecord>) -> (NodeFigures, usize) {
    // Per watch, the syncs in order with the version each included, as numbers.
    let included = |record: &SyncRecord, watch: &str| -> Option<u64> {
        record.versions.get(watch).and_then(|v| v.parse().ok())
    };
    let mut all = Vec::new();
    let (mut policy, mut pod) = (Vec::new(), Vec::new());
    let mut missing = 0;
    for write in writes {
        let first = records
            .values()
            .find(|r| included(r, write.watch).is_some_and(|v| v >= write.version));
        let Some(record) = first else {
            missing += 1;
            continue;
        };
        let sent = unix_nanos(write.sent);
        let delay = Duration::from_nanos(record.at_unix_nanos.saturating_sub(sent) as u64);
        all.push(delay);
        if write.watch == "networkpolicies" {
            policy.push(delay);
        } else {
            pod.push(delay);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = |samples: &[Duration]| percentiles(samples).map_or(0.0, |(_, p99)| ms(p99));
    let (p50, p99_all) = percentiles(&all).map_or((0.0, 0.0), |(a, b)| (ms(a), ms(b)));
    let figures = NodeFigures {
        samples: all.len(),
        p50_ms: p50,
        p99_ms: p99_all,
        max_ms: all.iter().copied().max().map_or(0.0, ms),
        policy_p99_ms: p99(&policy),
        pod_p99_ms: p99(&pod),
        syncs: records.len(),
        full_syncs: records.values().filter(|r| r.full).count(),
        unpolled_syncs: gaps(records),
        ..NodeFigures::default()
    };
    (figures, missing)
}

/// Syncs missing from what was polled (`/status` forgot them before they were read).
fn gaps(records: &BTreeMap<u64, SyncRecord>) -> u64 {
    let (Some(first), Some(last)) = (records.keys().next(), records.keys().next_back()) else {
        return 0;
    };
    last - first + 1 - records.len() as u64
}

/// Resident set and its peak, in MiB, of process `pid`.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{path}: no {name}"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// What `read` takes of every agent's `/status`, by node.
async fn by_node<T>(api: &ApiControl, read: fn(Status) -> T) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for (node, _) in api.agent_pids() {
        let status = api.agent_status(&node).await?;
        out.push((node, read(status)));
    }
    Ok(out)
}

/// Every agent's account of its start, by node.
async fn startups(api: &ApiControl) -> Result<BTreeMap<String, Startup>> {
    Ok(by_node(api, |s| s.startup).await?.into_iter().collect())
}

/// Every agent's checks so far (full resyncs of unchanged objects) and the entries they
/// corrected.
async fn statuses(api: &ApiControl) -> Result<Vec<(String, u64, u64)>> {
    let checks = by_node(api, |s| (s.checks, s.check_corrections)).await?;
    Ok(checks.into_iter().map(|(n, (c, k))| (n, c, k)).collect())
}

/// Waits until every agent has run a check since `before`; the checks run and the entries
/// they corrected, summed over the agents.
async fn wait_for_checks(api: &ApiControl, before: &[(String, u64, u64)]) -> Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = statuses(api).await?;
        let done = now.iter().all(|(node, checks, _)| {
            before
                .iter()
                .find(|(n, _, _)| n == node)
                .is_none_or(|(_, was, _)| checks > was)
        });
        if done {
            let mut sum = (0, 0);
            for (node, checks, corrections) in &now {
                let (_, was_checks, was_corrections) = before
                    .iter()
                    .find(|(n, _, _)| n == node)
                    .cloned()
                    .unwrap_or_default();
                sum.0 += checks - was_checks;
                sum.1 += corrections - was_corrections;
            }
            return Ok(sum);
        }
        if Instant::now() > deadline {
            bail!(
                "after SIGHUP, not every agent ran a full resync of unchanged objects in 60 s: {now:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The revision of each pod deletion, from a watch of pods opened before the first write.
struct Deletions {
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Deletions {
    async fn watch(client: &Client) -> Result<Self> {
        let pods = Api::<Pod>::all(client.clone());
        let list = pods
            .list_metadata(&ListParams::default().limit(1))
            .await
            .context("listing pods for their resourceVersion")?;
        let from = list
            .metadata
            .resource_version
            .context("a list of pods without a resourceVersion")?;
        let stream = pods
            .watch(&WatchParams::default().timeout(290), &from)
            .await
            .context("watching pods for deletions")?;
        let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let into = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Deleted(pod) = event {
                    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                    if let Some(version) = pod.resource_version().and_then(|v| v.parse().ok()) {
                        into.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, version);
                    }
                }
            }
        });
        Ok(Self { seen, task })
    }

    /// The writes with every deletion's version filled in (waiting for the last events).
    async fn resolve(self, writes: Vec<Unresolved>) -> Result<Vec<Write>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let missing: Vec<&String> = {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                writes
                    .iter()
                    .filter_map(|(_, key)| key.as_ref())
                    .filter(|key| !seen.contains_key(*key))
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            if Instant::now() > deadline || self.task.is_finished() {
                bail!(
                    "{} pod deletions never showed in a watch of pods (the first: {})",
                    missing.len(),
                    missing[0]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.task.abort();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        Ok(writes
            .into_iter()
            .map(|(mut write, key)| {
                if let Some(version) = key.and_then(|k| seen.get(&k).copied()) {
                    write.version = version;
                }
                write
            })
            .collect())
    }
}
