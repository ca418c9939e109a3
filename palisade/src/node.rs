//! A node's enforcement worker: the compiler and the dataplane, on a thread that lives in the
//! node's network namespace for its whole life (TC attachment resolves interface names in the
//! calling thread's namespace). `palisade agent` runs one, in the host's namespace or, in the
//! lab, in a node's; the in-process lab runs one per node.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::OwnedFd,
    path::PathBuf,
    sync::{Arc, mpsc},
    thread::{self, JoinHandle},
};

use aya::maps::{MapData, RingBuf};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};

use crate::{
    dataplane::{
        ConntrackSettings, Dataplane, DataplaneError, Established, FlowSettings, SyncReport,
    },
    flows::{
        Attribution,
        reader::SharedAttribution,
        socket::{ExplainAnswer, ExplainRequest},
    },
    k8s::cluster::{Cluster, ObjectKey},
    policy::{ClusterChange, Compiler, NodeState, NodeView, Update, model::PolicyError},
};

/// A local pod's host-side interface in the node namespace.
#[derive(Clone, Debug)]
pub struct Interface {
    pub ifname: String,
    pub ifindex: u32,
}

/// What one sync did.
#[derive(Debug)]
pub struct SyncOutcome {
    pub report: SyncReport,
    /// Established connections cut by the re-check ([`Established::Recheck`]).
    pub cut: usize,
    pub errors: Vec<PolicyError>,
    pub endpoints: usize,
    /// Entries and capacity of each map the agent writes, after the sync.
    pub maps: Vec<MapUsage>,
    /// How the compiler brought its state up to date.
    pub compiled: Compiled,
}

/// How one sync compiled: object changes applied in place, or a full compile (and why).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Changes applied in place.
    pub in_place: usize,
    /// Changes the in-place path handed to a full compile (the first such one recompiles all).
    pub fell_back: usize,
    /// A full compile: asked for (no change list), the first sync, or a fallback.
    pub full: bool,
}

pub use crate::dataplane::MapUsage;

/// What a node worker is started with.
pub struct NodeConfig {
    pub name: String,
    /// The network namespace to enter (the lab's nodes); `None`: the calling thread's.
    pub netns: Option<OwnedFd>,
    /// The node's own addresses (a peer class of their own for policies).
    pub addrs: Vec<IpAddr>,
    pub service_ranges: Vec<IpNet>,
    /// With pins, maps and links are pinned under that bpffs directory: the programs keep
    /// enforcing after the worker is gone ([`NodeWorker::kill`]), and the next worker started
    /// with the same directory adopts them.
    pub pins: Option<PathBuf>,
    pub established: Established,
    /// Flow events, node-wide audit mode and strict uplinks.
    pub flows: FlowSettings,
    /// Idle timeouts of tracked flows.
    pub conntrack: ConntrackSettings,
    /// The Service mark bit ([`palisade_common::SERVICE_MARK`] by default).
    pub service_mark: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("node {node}: entering its network namespace: {source}")]
    EnterNamespace {
        node: String,
        #[source]
        source: nix::Error,
    },
    #[error("node {node}: spawning its worker thread: {source}")]
    Spawn {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: {source}")]
    Dataplane {
        node: String,
        /// Boxed: aya's errors are large, and this travels through every sync's result.
        #[source]
        source: Box<DataplaneError>,
    },
    #[error("node {node}: live explain: {message}")]
    Explain { node: String, message: String },
    #[error("node {node}: the worker thread is gone")]
    Gone { node: String },
}

impl WorkerError {
    /// The `error` label of the agent's sync metrics: what kind of failure, without the details.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::EnterNamespace { .. } => "namespace",
            Self::Spawn { .. } => "spawn",
            Self::Dataplane { source, .. } => source.metric_label(),
            Self::Explain { .. } => "explain",
            Self::Gone { .. } => "gone",
        }
    }
}

/// What the worker thread answers with; the handle adds the node's name.
#[derive(Debug)]
enum Failure {
    EnterNamespace(nix::Error),
    Dataplane(DataplaneError),
    Explain(String),
}

impl From<DataplaneError> for Failure {
    fn from(e: DataplaneError) -> Self {
        Self::Dataplane(e)
    }
}

impl Failure {
    fn on(self, node: &str) -> WorkerError {
        let node = node.to_owned();
        match self {
            Self::EnterNamespace(source) => WorkerError::EnterNamespace { node, source },
            Self::Dataplane(source) => WorkerError::Dataplane {
                node,
                source: Box::new(source),
            },
            Self::Explain(message) => WorkerError::Explain { node, message },
        }
    }
}

enum Command {
    Sync {
        cluster: Arc<Cluster>,
        /// What changed since the last sync; `None`: anything may have (compile it all).
        changes: Option<Vec<ClusterChange>>,
        interfaces: BTreeMap<ObjectKey, Interface>,
        pending: Vec<String>,
        uplinks: Vec<String>,
        reply: mpsc::Sender<Result<SyncOutcome, Failure>>,
    },
    Counters {
        reply: mpsc::Sender<Result<Vec<u64>, Failure>>,
    },
    TakeEvents {
        reply: mpsc::Sender<Result<RingBuf<MapData>, Failure>>,
    },
    Explain {
        request: ExplainRequest,
        reply: mpsc::Sender<Result<ExplainAnswer, Failure>>,
    },
    /// Stop as a killed process would: no detaching, no cleanup.
    Die,
    /// Stop and detach (what dropping the handle does; other senders may still exist).
    Stop,
}

/// Handle to a node agent thread; dropping it stops the thread, which detaches its programs.
pub struct NodeWorker {
    node: String,
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    attribution: SharedAttribution,
}

impl NodeWorker {
    /// Starts the worker: enters the node's namespace, loads (or adopts) the programs and
    /// tells them the cluster's Service ranges.
    pub fn start(config: NodeConfig) -> Result<Self, WorkerError> {
        let NodeConfig {
            name,
            netns,
            addrs,
            service_ranges,
            pins,
            established,
            flows,
            conntrack,
            service_mark,
        } = config;
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Failure>>();
        let node_name = name.clone();
        let attribution: SharedAttribution = Arc::default();
        let published = Arc::clone(&attribution);
        let thread = thread::Builder::new()
            .name(format!("agent-{name}"))
            .spawn(move || {
                if let Some(netns) = netns
                    && let Err(e) = setns(&netns, CloneFlags::CLONE_NEWNET)
                {
                    let _ = ready_tx.send(Err(Failure::EnterNamespace(e)));
                    return;
                }
                let loaded = match &pins {
                    Some(root) => Dataplane::load_pinned_marked(root, service_mark),
                    None => Dataplane::load_marked(service_mark),
                };
                let dataplane = match loaded.and_then(|mut d| {
                    d.set_service_ranges(&service_ranges)?;
                    d.set_flow_settings(flows)?;
                    d.set_conntrack(&conntrack)?;
                    Ok(d)
                }) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let worker = Worker {
                    node: &node_name,
                    addrs: &addrs,
                    established,
                    sweep_every: conntrack.sweep_interval(),
                    attribution: &published,
                };
                worker.serve(dataplane, &rx);
            })
            .map_err(|source| WorkerError::Spawn {
                node: name.clone(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                node: name,
                tx: Some(tx),
                thread: Some(thread),
                attribution,
            }),
            Ok(Err(failure)) => Err(failure.on(&name)),
            Err(_) => Err(WorkerError::Gone { node: name }),
        }
    }

    /// Compiles `cluster` for this node and writes the result; attaches to new interfaces after
    /// their endpoint is written and detaches from interfaces that are gone. `uplinks` are the
    /// node's other interfaces (links to other nodes and to external hosts).
    pub fn sync(
        &self,
        cluster: &Cluster,
        interfaces: BTreeMap<ObjectKey, Interface>,
        uplinks: Vec<String>,
    ) -> Result<SyncOutcome, WorkerError> {
        self.sync_with_pending(cluster, interfaces, Vec::new(), uplinks)
    }

    /// [`Self::sync`], also attaching to `pending`: pod interfaces whose pod is not known yet.
    /// Their programs find no endpoint entry and drop every packet until a later sync writes
    /// one (a new pod is isolated from the moment its interface appears, and opened only as
    /// far as its policies allow).
    pub fn sync_with_pending(
        &self,
        cluster: &Cluster,
        interfaces: BTreeMap<ObjectKey, Interface>,
        pending: Vec<String>,
        uplinks: Vec<String>,
    ) -> Result<SyncOutcome, WorkerError> {
        self.sync_changes(
            Arc::new(cluster.clone()),
            None,
            interfaces,
            pending,
            uplinks,
        )
    }

    /// [`Self::sync_with_pending`] of a cluster that differs from the last one synced only in
    /// `changes` (`None`: in anything): the compiler applies them in place (see
    /// [`Compiler::apply_change`]) and the dataplane writes what differs. The cluster is
    /// shared, not copied: the worker keeps it for naming flows and for `palisade explain`.
    pub fn sync_changes(
        &self,
        cluster: Arc<Cluster>,
        changes: Option<Vec<ClusterChange>>,
        interfaces: BTreeMap<ObjectKey, Interface>,
        pending: Vec<String>,
        uplinks: Vec<String>,
    ) -> Result<SyncOutcome, WorkerError> {
        let (reply, rx) = mpsc::channel();
        self.send(Command::Sync {
            cluster,
            changes,
            interfaces,
            pending,
            uplinks,
            reply,
        })?;
        self.answer(&rx)
    }

    /// Ends the agent the way `kill -9` ends a process: its maps and links stay as they are
    /// (pinned ones keep enforcing), nothing is detached.
    pub fn kill(mut self) {
        let _ = self.send(Command::Die);
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Drop counters by reason.
    pub fn drops(&self) -> Result<Vec<(&'static str, u64)>, WorkerError> {
        Ok(crate::dataplane::drops_by_reason(&self.counters()?))
    }

    /// Every slot of the programs' counters, summed over CPUs (see `palisade_common::Stat`).
    pub fn counters(&self) -> Result<Vec<u64>, WorkerError> {
        let (reply, rx) = mpsc::channel();
        self.send(Command::Counters { reply })?;
        self.answer(&rx)
    }

    /// The ring buffer of flow events; once (the caller reads it from then on).
    pub fn take_events(&self) -> Result<RingBuf<MapData>, WorkerError> {
        let (reply, rx) = mpsc::channel();
        self.send(Command::TakeEvents { reply })?;
        self.answer(&rx)
    }

    /// What the last sync knew, for naming flow events.
    pub fn attribution(&self) -> SharedAttribution {
        Arc::clone(&self.attribution)
    }

    /// A handle that asks this worker for live explanations from any thread.
    pub fn explainer(&self) -> Result<ExplainHandle, WorkerError> {
        Ok(ExplainHandle {
            node: self.node.clone(),
            tx: self.tx.clone().ok_or_else(|| WorkerError::Gone {
                node: self.node.clone(),
            })?,
        })
    }

    /// The worker's answer to a command, or why there is none.
    fn answer<T>(&self, rx: &mpsc::Receiver<Result<T, Failure>>) -> Result<T, WorkerError> {
        rx.recv()
            .map_err(|_| WorkerError::Gone {
                node: self.node.clone(),
            })?
            .map_err(|failure| failure.on(&self.node))
    }

    fn send(&self, command: Command) -> Result<(), WorkerError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(command).ok())
            .ok_or_else(|| WorkerError::Gone {
                node: self.node.clone(),
            })
    }
}

/// Asks a node worker for `palisade explain` answers from the live maps.
#[derive(Clone)]
pub struct ExplainHandle {
    node: String,
    tx: mpsc::Sender<Command>,
}

impl ExplainHandle {
    /// See [`crate::explain::live`]. Blocks until the worker answers: call it from a blocking
    /// context.
    pub fn explain(&self, request: ExplainRequest) -> Result<ExplainAnswer, WorkerError> {
        let (reply, rx) = mpsc::channel();
        let gone = || WorkerError::Gone {
            node: self.node.clone(),
        };
        self.tx
            .send(Command::Explain { request, reply })
            .map_err(|_| gone())?;
        rx.recv()
            .map_err(|_| gone())?
            .map_err(|failure| failure.on(&self.node))
    }
}

impl Drop for NodeWorker {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The worker thread's fixed settings.
struct Worker<'a> {
    node: &'a str,
    addrs: &'a [IpAddr],
    established: Established,
    /// How often expired conntrack entries are swept out between commands.
    sweep_every: std::time::Duration,
    attribution: &'a SharedAttribution,
}

impl Worker<'_> {
    fn serve(&self, mut dataplane: Dataplane, rx: &mpsc::Receiver<Command>) {
        let (node, addrs, established) = (self.node, self.addrs, self.established);
        let mut compiler = Compiler::new();
        match dataplane.highest_ids() {
            Ok((identity, cidr)) => compiler.reserve_ids(identity, cidr),
            Err(e) => tracing::warn!(node, error = %e, "could not read the ids left in the maps"),
        }
        // The last compiled state, while it is what the maps hold (a failed sync forgets it).
        let mut last: Option<NodeState> = None;
        // Interfaces with a program, by name.
        let mut attached: BTreeSet<String> = BTreeSet::new();
        let mut attached_uplinks: Vec<String> = Vec::new();
        // The sweep runs on its own clock, commands or not: a busy node's syncs must not
        // postpone it for ever.
        let mut next_sweep = std::time::Instant::now() + self.sweep_every;
        loop {
            let wait = next_sweep.saturating_duration_since(std::time::Instant::now());
            let received = rx.recv_timeout(wait);
            if std::time::Instant::now() >= next_sweep {
                if let Err(e) = dataplane.sweep_conntrack() {
                    tracing::warn!(node, error = %e, "conntrack sweep failed");
                }
                next_sweep = std::time::Instant::now() + self.sweep_every;
            }
            let command = match received {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match command {
                Command::Sync {
                    cluster,
                    changes,
                    interfaces,
                    pending,
                    uplinks,
                    reply,
                } => {
                    let _span = tracing::info_span!("sync", node).entered();
                    let view = NodeView { name: node, addrs };
                    let (state, compiled) =
                        tracing::info_span!("compile", pods = cluster.pods.len()).in_scope(|| {
                            compile(
                                &mut compiler,
                                last.take(),
                                &cluster,
                                &view,
                                changes.as_deref(),
                            )
                        });
                    let ifindex = interfaces
                        .iter()
                        .map(|(k, i)| (k.clone(), i.ifindex))
                        .collect();
                    let journal = compiler.take_journal();
                    let result = dataplane
                        .sync_journaled(&state, &ifindex, Some(&journal))
                        .map_err(Failure::from)
                        .and_then(|report| {
                            // Only pods whose endpoint entry was just written, and interfaces of
                            // pods not known yet (whose programs drop everything): never attach a
                            // program that would find another pod's rules, or none for a known pod.
                            let wanted: BTreeSet<String> = interfaces
                                .iter()
                                .filter(|(key, i)| {
                                    state.endpoints.contains_key(*key)
                                        || attached.contains(&i.ifname)
                                })
                                .map(|(_, i)| i.ifname.clone())
                                .chain(pending)
                                .collect();
                            // Kept across the switch from pending to known: never a moment without.
                            for ifname in attached.difference(&wanted) {
                                dataplane.detach(ifname);
                            }
                            attached.retain(|i| wanted.contains(i));
                            for ifname in &wanted {
                                if !attached.contains(ifname) {
                                    dataplane.attach(ifname)?;
                                    attached.insert(ifname.clone());
                                }
                            }
                            for uplink in &uplinks {
                                if !attached_uplinks.contains(uplink) {
                                    dataplane.attach_uplink(uplink)?;
                                    attached_uplinks.push(uplink.clone());
                                }
                            }
                            dataplane.release_stale_links();
                            let cut = if established == Established::Recheck {
                                dataplane.recheck_established(&state, &ifindex)?
                            } else {
                                0
                            };
                            Ok(SyncOutcome {
                                report,
                                cut,
                                errors: state.errors.clone(),
                                endpoints: state.endpoints.len(),
                                maps: dataplane.map_usage(),
                                compiled,
                            })
                        });
                    if result.is_ok() {
                        let attribution =
                            Attribution::new(node, addrs, cluster, &state.endpoints, &ifindex);
                        let mut shared = self
                            .attribution
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        *shared = Arc::new(attribution);
                        last = Some(state);
                    }
                    let _ = reply.send(result);
                }
                Command::Counters { reply } => {
                    let counters = dataplane.counters().map(|c| c.to_vec());
                    let _ = reply.send(counters.map_err(Failure::from));
                }
                Command::TakeEvents { reply } => {
                    let _ = reply.send(dataplane.take_events().map_err(Failure::from));
                }
                Command::Explain { request, reply } => {
                    let attribution = crate::flows::reader::current(self.attribution);
                    let answer = crate::explain::live::explain(&dataplane, &attribution, &request);
                    let _ = reply.send(answer.map_err(Failure::Explain));
                }
                Command::Die => return,
                Command::Stop => break,
            }
        }
        for ifname in attached.iter().chain(&attached_uplinks) {
            dataplane.detach(ifname);
        }
    }
}

/// The state for `cluster`: `last` with `changes` applied in place, or a full compile when
/// there is no list of changes or no last state.
fn compile(
    compiler: &mut Compiler,
    last: Option<NodeState>,
    cluster: &Cluster,
    view: &NodeView<'_>,
    changes: Option<&[ClusterChange]>,
) -> (NodeState, Compiled) {
    let mut compiled = Compiled::default();
    let (Some(mut state), Some(changes)) = (last, changes) else {
        compiled.full = true;
        return (compiler.compile(cluster, view), compiled);
    };
    for change in changes {
        if compiled.full {
            // A full compile already saw every change.
            break;
        }
        match compiler.apply_change(&mut state, cluster, view, change) {
            Update::Incremental => compiled.in_place += 1,
            Update::Recompiled => {
                compiled.fell_back += 1;
                compiled.full = true;
            }
        }
    }
    (state, compiled)
}
