//! One lab node's agent: the real compiler and the real dataplane, on a thread that lives in the
//! node's network namespace for its whole life (TC attachment resolves interface names in the
//! calling thread's namespace, and each node of the lab has its own).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::mpsc,
    thread::{self, JoinHandle},
};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};

use super::topology::NodeHandle;
use crate::{
    cluster::{Cluster, ObjectKey},
    dataplane::{Dataplane, Established, SyncReport},
    policy::{Compiler, NodeView, model::PolicyError},
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
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node {node}: {message}")]
    Failed { node: String, message: String },
    #[error("node {node}: the agent thread is gone")]
    Gone { node: String },
}

enum Command {
    Sync {
        cluster: Box<Cluster>,
        interfaces: BTreeMap<ObjectKey, Interface>,
        uplinks: Vec<String>,
        reply: mpsc::Sender<Result<SyncOutcome, String>>,
    },
    Drops {
        reply: mpsc::Sender<Result<Vec<(&'static str, u64)>, String>>,
    },
    /// Stop as a killed process would: no detaching, no cleanup.
    Die,
}

/// Handle to a node agent thread; dropping it stops the thread, which detaches its programs.
pub struct NodeAgent {
    node: String,
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeAgent {
    /// Starts the agent of `node`: enters its namespace, loads the programs and tells them the
    /// cluster's Service ranges.
    ///
    /// With `pins`, maps and links are pinned under that bpffs directory: the programs keep
    /// enforcing after the agent is gone ([`Self::kill`]), and the next agent started with the
    /// same directory adopts them.
    pub fn start(
        node: &NodeHandle,
        service_ranges: &[IpNet],
        pins: Option<PathBuf>,
        established: Established,
    ) -> Result<Self, AgentError> {
        let service_ranges = service_ranges.to_vec();
        let name = node.name.clone();
        let fail = |message: String| AgentError::Failed {
            node: name.clone(),
            message,
        };
        let netns = node.netns.fd().map_err(|e| fail(e.to_string()))?;
        let addrs: Vec<IpAddr> = vec![node.addr_v4().into(), node.addr_v6().into()];
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let node_name = name.clone();
        let thread = thread::Builder::new()
            .name(format!("agent-{name}"))
            .spawn(move || {
                if let Err(e) = setns(&netns, CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(format!("entering the node namespace: {e}")));
                    return;
                }
                let loaded = match &pins {
                    Some(root) => Dataplane::load_pinned(root),
                    None => Dataplane::load(),
                };
                let dataplane = match loaded.and_then(|mut d| {
                    d.set_service_ranges(&service_ranges)?;
                    Ok(d)
                }) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                serve(&node_name, &addrs, dataplane, established, &rx);
            })
            .map_err(|e| fail(format!("spawning the agent thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                node: name,
                tx: Some(tx),
                thread: Some(thread),
            }),
            Ok(Err(message)) => Err(fail(message)),
            Err(_) => Err(AgentError::Gone { node: name }),
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
    ) -> Result<SyncOutcome, AgentError> {
        let (reply, rx) = mpsc::channel();
        self.send(Command::Sync {
            cluster: Box::new(cluster.clone()),
            interfaces,
            uplinks,
            reply,
        })?;
        rx.recv()
            .map_err(|_| AgentError::Gone {
                node: self.node.clone(),
            })?
            .map_err(|message| AgentError::Failed {
                node: self.node.clone(),
                message,
            })
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
    pub fn drops(&self) -> Result<Vec<(&'static str, u64)>, AgentError> {
        let (reply, rx) = mpsc::channel();
        self.send(Command::Drops { reply })?;
        rx.recv()
            .map_err(|_| AgentError::Gone {
                node: self.node.clone(),
            })?
            .map_err(|message| AgentError::Failed {
                node: self.node.clone(),
                message,
            })
    }

    fn send(&self, command: Command) -> Result<(), AgentError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(command).ok())
            .ok_or_else(|| AgentError::Gone {
                node: self.node.clone(),
            })
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    node: &str,
    addrs: &[IpAddr],
    mut dataplane: Dataplane,
    established: Established,
    rx: &mpsc::Receiver<Command>,
) {
    let mut compiler = Compiler::new();
    match dataplane.highest_ids() {
        Ok((identity, cidr)) => compiler.reserve_ids(identity, cidr),
        Err(e) => tracing::warn!(node, error = %e, "could not read the ids left in the maps"),
    }
    let mut attached: BTreeMap<ObjectKey, Interface> = BTreeMap::new();
    let mut attached_uplinks: Vec<String> = Vec::new();
    while let Ok(command) = rx.recv() {
        match command {
            Command::Sync {
                cluster,
                interfaces,
                uplinks,
                reply,
            } => {
                let view = NodeView { name: node, addrs };
                let state = compiler.compile(&cluster, &view);
                let ifindex = interfaces
                    .iter()
                    .map(|(k, i)| (k.clone(), i.ifindex))
                    .collect();
                let result = dataplane
                    .sync(&state, &ifindex)
                    .map_err(|e| e.to_string())
                    .and_then(|report| {
                        for (key, iface) in &attached {
                            if interfaces.get(key).is_none_or(|i| i.ifname != iface.ifname) {
                                dataplane.detach(&iface.ifname);
                            }
                        }
                        attached
                            .retain(|k, i| interfaces.get(k).is_some_and(|n| n.ifname == i.ifname));
                        for (key, iface) in &interfaces {
                            // Only pods whose endpoint entry was just written: never attach a
                            // program that would find no policy for its pod.
                            if state.endpoints.contains_key(key) && !attached.contains_key(key) {
                                dataplane.attach(&iface.ifname).map_err(|e| e.to_string())?;
                                attached.insert(key.clone(), iface.clone());
                            }
                        }
                        for uplink in &uplinks {
                            if !attached_uplinks.contains(uplink) {
                                dataplane.attach_uplink(uplink).map_err(|e| e.to_string())?;
                                attached_uplinks.push(uplink.clone());
                            }
                        }
                        dataplane.release_stale_links();
                        let cut = if established == Established::Recheck {
                            dataplane
                                .recheck_established(&state, &ifindex)
                                .map_err(|e| e.to_string())?
                        } else {
                            0
                        };
                        Ok(SyncOutcome {
                            report,
                            cut,
                            errors: state.errors.clone(),
                            endpoints: state.endpoints.len(),
                        })
                    });
                let _ = reply.send(result);
            }
            Command::Drops { reply } => {
                let _ = reply.send(dataplane.drops().map_err(|e| e.to_string()));
            }
            Command::Die => return,
        }
    }
    for ifname in attached
        .values()
        .map(|i| &i.ifname)
        .chain(&attached_uplinks)
    {
        dataplane.detach(ifname);
    }
}
