//! `palisade agent`: the DaemonSet process. It watches Pods, Namespaces and NetworkPolicies,
//! and keeps the node's programs and maps in step with them.
//!
//! One loop does all the work. Watch events and the node's link and route changes only wake
//! it; it then waits out the least interval between syncs (coalescing whatever else arrives),
//! brings its view of the caches up to date (the changed objects only, see `watch/view.rs`),
//! finds the local pods' interfaces, and hands both to the node's [`NodeWorker`], which
//! compiles and writes the difference. Nothing is written before
//! every cache has listed once, a resync runs periodically regardless, and pods whose interface
//! was not found are retried with backoff. The programs and maps are pinned, so the agent can
//! stop (upgrade, crash) without a packet going unjudged: it leaves them as they are on exit,
//! and the next agent adopts them.

mod backoff;
pub mod config;
mod flow_log;
mod http;
pub mod links;
mod metrics;
pub mod process;
pub mod status;
mod watch;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::fd::OwnedFd,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::mpsc;

use self::{
    backoff::Backoff,
    http::Shared,
    links::Links,
    metrics::{Metrics, label},
    watch::{Caches, Views},
};
pub use self::{
    config::{Config, FailMode, FlowLog, LogFormat},
    status::Status,
    watch::Change,
};
use crate::{
    k8s::cluster::{ObjectKey, pod_addrs},
    node::{NodeConfig, NodeWorker, SyncOutcome},
    policy::ClusterChange,
};

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = &'static str>) -> Result<()> {
    let began = Instant::now();
    let shared = Arc::new(Shared {
        metrics: Arc::new(Metrics::new()),
        status: Mutex::new(Status {
            node: config.node_name.clone(),
            ..Status::default()
        }),
        heartbeat: AtomicU64::new(0),
        liveness_timeout: config.resync_period() * 2 + Duration::from_secs(60),
    });
    shared.beat();
    let bound = http::serve(config.metrics_addr, Arc::clone(&shared))
        .await
        .with_context(|| format!("serving metrics on {}", config.metrics_addr))?;
    tracing::info!(node = %config.node_name, metrics = %bound, "palisade agent starting");

    let netns: Option<OwnedFd> = match &config.netns {
        Some(path) => Some(
            File::open(path)
                .map(OwnedFd::from)
                .with_context(|| format!("--netns {}: cannot open it", path.display()))?,
        ),
        None => None,
    };
    let (changes_tx, mut changes) = mpsc::unbounded_channel::<Change>();
    let links = Links::open(
        netns.as_ref(),
        config.pod_interface_prefixes.clone(),
        changes_tx.clone(),
    )?;
    let node_addrs = links.node_addrs().await?;
    tracing::info!(addrs = ?node_addrs, "node addresses");
    let worker = NodeWorker::start(NodeConfig {
        name: config.node_name.clone(),
        netns: netns.as_ref().map(OwnedFd::try_clone).transpose()?,
        addrs: node_addrs,
        service_ranges: config.service_cidrs.clone(),
        pins: Some(config.pin_root.clone()),
        established: config.established,
        flows: config.flow_settings(),
        conntrack: config.conntrack_settings(),
        service_mark: config.service_mark,
    })?;
    shared.startup(began, "programs", |s| &mut s.programs);
    let _flows = flow_log::start(&config, &worker, &shared.metrics)?;

    let client = client(&config).await?;
    let caches = Caches::start(&client, changes_tx, &shared.metrics).await;
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(
        "waiting for the first list of pods, namespaces, networkpolicies, nodes and \
         clusternetworkpolicies"
    );
    tokio::select! {
        ready = caches.ready() => {
            ready.context("a watch ended before its first list")?;
            shared.startup(began, "listed", |s| &mut s.listed);
        }
        signal = &mut shutdown => {
            tracing::info!(signal, "stopping before the first sync; the pinned state stays");
            worker.kill();
            return Ok(());
        }
    }

    let mut sync_loop = SyncLoop {
        config: &config,
        shared: &shared,
        caches: &caches,
        views: Views::new(&config.node_name),
        began,
        links: &links,
        worker: &worker,
        counters_seen: BTreeMap::new(),
        retry: Backoff::exact(Duration::from_millis(250), Duration::from_secs(30)),
        last_interfaces: None,
    };
    let mut pending = Pending::default();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let mut last_sync = Instant::now() - config.min_sync_interval();
    let mut resync = tokio::time::interval(config.resync_period());
    resync.tick().await;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
    let mut retry_at: Option<tokio::time::Instant> = None;
    // The first sync runs at once.
    let mut wake = true;
    loop {
        if !wake {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(change) = changes.recv() => pending.note(change),
                _ = resync.tick() => {
                    tracing::debug!("periodic resync");
                    pending.changed = None;
                }
                Some(()) = hangup.recv() => {
                    tracing::info!("SIGHUP: a full resync");
                    pending.changed = None;
                }
                () = retry => tracing::debug!("retrying pods without an interface"),
                _ = heartbeat.tick() => {
                    sync_loop.export_counters();
                    shared.beat();
                    continue;
                }
                signal = &mut shutdown => {
                    tracing::info!(signal, "stopping; the programs keep enforcing the last state");
                    break;
                }
            }
        }
        wake = false;
        // Coalesce: whatever arrives until the least interval is over goes into this sync.
        tokio::time::sleep_until((last_sync + config.min_sync_interval()).into()).await;
        while let Ok(change) = changes.try_recv() {
            pending.note(change);
        }
        last_sync = Instant::now();
        let objects = pending
            .changed
            .replace(BTreeSet::new())
            .map(|c| c.into_iter().collect());
        match sync_loop.sync(objects, &pending.versions).await {
            Ok(missing) => {
                let written = Instant::now();
                for at in pending.arrivals.drain(..) {
                    shared
                        .metrics
                        .implementation_delay
                        .observe(written.duration_since(at).as_secs_f64());
                }
                retry_at = if missing {
                    Some((written + sync_loop.retry.next()).into())
                } else {
                    sync_loop.retry.reset();
                    None
                };
            }
            Err(e) => {
                let kind = e
                    .downcast_ref::<crate::node::WorkerError>()
                    .map_or("other", crate::node::WorkerError::metric_label);
                let mut labels = label("result", "error");
                labels.push(("error", kind.to_owned()));
                shared.metrics.syncs.get_or_create(&labels).inc();
                tracing::error!(error = %format!("{e:#}"), "sync failed; retrying");
                pending.changed = None;
                retry_at = Some((Instant::now() + sync_loop.retry.next()).into());
            }
        }
        shared.beat();
    }
    // As a crash would: links and maps stay pinned and keep enforcing.
    worker.kill();
    Ok(())
}

/// What a successful sync saw, for `/status`.
struct Synced<'a> {
    digest: String,
    at: SystemTime,
    versions: &'a BTreeMap<String, String>,
    /// A full resync of what the sync before had (see [`Status::checks`]).
    check: bool,
}

/// What the next sync is to include.
#[derive(Default)]
struct Pending {
    /// When each API change since the last sync arrived (for the implementation delay).
    arrivals: Vec<Instant>,
    /// The objects changed since the last sync; `None`: compile everything (the first sync, a
    /// relist, the periodic resync, SIGHUP, after a failed sync).
    changed: Option<BTreeSet<ClusterChange>>,
    /// Per watch, the resourceVersion of the last change seen (the next sync includes it).
    versions: BTreeMap<String, String>,
}

impl Pending {
    /// Records a change: its arrival, its version, and the object it names (a relist names
    /// none: everything is compiled again).
    fn note(&mut self, change: Change) {
        if !change.api {
            return;
        }
        self.arrivals.push(change.at);
        if let Some((resource, version)) = change.version {
            self.versions.insert(resource.to_owned(), version);
        }
        match (change.object, self.changed.as_mut()) {
            (Some(object), Some(set)) => {
                set.insert(object);
            }
            (None, _) => self.changed = None,
            (Some(_), None) => {}
        }
    }
}

async fn client(config: &Config) -> Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig, and neither $KUBECONFIG, an in-cluster service account nor ~/.kube/config works")?,
    };
    kube::Client::try_from(kube_config).context("building the API client")
}

struct SyncLoop<'a> {
    config: &'a Config,
    shared: &'a Shared,
    caches: &'a Caches,
    /// The cluster as the last sync saw it, kept up to date one changed object at a time.
    views: Views,
    /// When the agent began (for [`status::Startup`]).
    began: Instant,
    links: &'a Links,
    worker: &'a NodeWorker,
    /// Kernel counters as last exported, by (label, value).
    counters_seen: BTreeMap<(&'static str, &'static str), u64>,
    /// Retries of pods whose interface was not found, and of failed syncs: 250 ms doubling to
    /// 30 s (the node's own state; nothing to spread across nodes).
    retry: Backoff,
    /// The local interfaces of the last successful sync (a full resync that finds the same
    /// objects and interfaces checks the maps).
    last_interfaces: Option<Vec<(ObjectKey, u32)>>,
}

impl SyncLoop<'_> {
    /// One sync of the objects in `changes` (`None`: of everything) that includes the API
    /// changes up to `versions`; true when some local pod's interface was not found (to retry).
    async fn sync(
        &mut self,
        changes: Option<Vec<ClusterChange>>,
        versions: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let started = Instant::now();
        let view = self.views.update(self.caches, changes.as_deref());
        self.shared.startup(self.began, "viewed", |s| &mut s.viewed);
        let cluster = Arc::clone(&view.cluster);
        let digest = view.digest.finish();
        let local: Vec<(ObjectKey, Vec<std::net::IpAddr>)> = view
            .local
            .iter()
            .filter_map(|key| {
                let addrs = pod_addrs(cluster.pods.get(key)?);
                (!addrs.is_empty()).then(|| (key.clone(), addrs))
            })
            .collect();
        let discovery = self.links.discover(&local).await?;
        let pending = match self.config.fail_mode {
            FailMode::Closed => discovery.unknown.clone(),
            FailMode::Open => Vec::new(),
        };
        // A full compile of exactly the objects and interfaces the last sync had: what it
        // writes, in-place application got wrong.
        let interfaces: Vec<(ObjectKey, u32)> = discovery
            .interfaces
            .iter()
            .map(|(k, i)| (k.clone(), i.ifindex))
            .collect();
        let check = changes.is_none()
            && self.last_interfaces.as_ref() == Some(&interfaces)
            && self
                .shared
                .status
                .lock()
                .is_ok_and(|s| s.synced_digest.as_deref() == Some(digest.as_str()));
        let outcome = tokio::task::block_in_place(|| {
            self.worker.sync_changes(
                Arc::clone(&cluster),
                changes,
                discovery.interfaces.clone(),
                pending.clone(),
                discovery.uplinks.clone(),
            )
        })?;
        let synced_at = SystemTime::now();
        self.shared
            .metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        self.last_interfaces = outcome.report.failures.is_empty().then_some(interfaces);
        let synced = Synced {
            digest,
            at: synced_at,
            versions,
            check,
        };
        self.record(&outcome, &discovery, &pending, synced);
        self.export_counters();
        tracing::debug!(
            endpoints = outcome.endpoints,
            writes = outcome.report.writes,
            deletes = outcome.report.deletes,
            swaps = outcome.report.swaps,
            in_place = outcome.compiled.in_place,
            full_compile = outcome.compiled.full,
            missing = discovery.missing.len(),
            pending = pending.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "synced"
        );
        Ok(!discovery.missing.is_empty())
    }

    fn record(
        &self,
        outcome: &SyncOutcome,
        discovery: &links::Discovery,
        pending: &[String],
        synced: Synced<'_>,
    ) {
        let Synced {
            digest,
            at: synced_at,
            versions,
            check,
        } = synced;
        let metrics = &self.shared.metrics;
        let corrections = outcome.report.writes + outcome.report.deletes;
        if check {
            metrics.check_corrections.inc_by(corrections as u64);
            if corrections > 0 {
                tracing::error!(
                    corrections,
                    "a full resync of unchanged objects wrote entries: in-place application \
                     had left the maps different from a full compile (now corrected)"
                );
            }
        }
        metrics.syncs.get_or_create(&label("result", "ok")).inc();
        let compiled = outcome.compiled;
        let applied = |how: &str| metrics.changes_applied.get_or_create(&label("how", how));
        applied("in_place").inc_by(compiled.in_place as u64);
        applied("full").inc_by(compiled.fell_back as u64);
        metrics.endpoints.set(outcome.endpoints as i64);
        metrics.pending_interfaces.set(pending.len() as i64);
        metrics
            .pods_without_interface
            .set(discovery.missing.len() as i64);
        metrics.policy_errors.set(outcome.errors.len() as i64);
        for usage in &outcome.maps {
            let map = label("map", usage.map);
            metrics
                .map_entries
                .get_or_create(&map)
                .set(usage.entries as i64);
            metrics
                .map_capacity
                .get_or_create(&map)
                .set(usage.capacity as i64);
            if usage.capacity > 0 {
                metrics
                    .map_pressure
                    .get_or_create(&map)
                    .set(usage.entries as f64 / usage.capacity as f64);
            }
        }
        for e in &outcome.errors {
            tracing::warn!(error = %e, "policy problem");
        }
        for f in &outcome.report.failures {
            tracing::error!(failure = %f, "map write failed; the pod is isolated until it succeeds");
        }
        self.shared.startup(self.began, "ready", |s| &mut s.ready);
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        status.ready = true;
        // The time the maps first held this set of objects (a later sync of the same set,
        // for a link event or a resync, does not move it).
        if status.synced_digest.as_deref() != Some(digest.as_str()) {
            status.synced_digest = Some(digest);
            status.synced_at_unix_nanos = Some(status::unix_nanos(synced_at));
        }
        status.syncs += 1;
        if check {
            status.checks += 1;
            status.check_corrections += corrections as u64;
        }
        if status.recent_syncs.len() == status::RECENT_SYNCS {
            status.recent_syncs.pop_front();
        }
        let sync = status.syncs;
        status.recent_syncs.push_back(status::SyncRecord {
            sync,
            at_unix_nanos: status::unix_nanos(synced_at),
            versions: versions.clone(),
            in_place: compiled.in_place,
            full: compiled.full,
            writes: outcome.report.writes,
            deletes: outcome.report.deletes,
        });
        status.endpoints = outcome.endpoints;
        status.pods_without_interface = discovery.missing.iter().map(ToString::to_string).collect();
        status.pending_interfaces = pending.to_vec();
        status.errors = outcome
            .errors
            .iter()
            .map(ToString::to_string)
            .chain(outcome.report.failures.iter().cloned())
            .collect();
        status.maps = outcome
            .maps
            .iter()
            .map(|u| (u.map.to_owned(), (u.entries, u.capacity)))
            .collect();
    }

    /// Adds what the kernel counted since the last export to the drop and flow event
    /// counters.
    fn export_counters(&mut self) {
        use palisade_common::{DROP_REASONS, Stat};
        let counters = match self.worker.counters() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the kernel's counters");
                return;
            }
        };
        let metrics = &self.shared.metrics;
        let drops = DROP_REASONS
            .iter()
            .map(|r| (&metrics.drops, "reason", r.name(), r.stat_index()));
        let events = [
            ("sent", Stat::EventsSent),
            ("suppressed", Stat::EventsSuppressed),
            ("lost", Stat::EventsLost),
        ]
        .into_iter()
        .map(|(name, stat)| (&metrics.flow_events, "outcome", name, stat as u32));
        for (family, key, name, index) in drops.chain(events) {
            let count = counters.get(index as usize).copied().unwrap_or(0);
            let seen = self.counters_seen.entry((key, name)).or_insert(0);
            if count > *seen {
                family
                    .get_or_create(&label(key, name))
                    .inc_by(count - *seen);
                *seen = count;
            }
        }
    }
}
