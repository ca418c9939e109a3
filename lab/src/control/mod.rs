//! `palisade-lab run --apiserver`: a real kube-apiserver holds the cluster and real
//! `palisade agent` processes, one per lab node, watch it. The lab plays the kubelet: it
//! writes the case's objects through the API, creates each pod's namespace and interface on
//! the node the pod names, reports the pod's addresses and phase through the status
//! subresource, and waits until every agent has written exactly the objects the API holds
//! (the digest each agent serves on `/status`). The time from the lab's last write of a step
//! to each agent's map write is the propagation delay.

mod agents;
mod writes;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{Api, Client, api::ListParams};

use self::agents::{AgentProcess, http_get};
use crate::{apiserver::ApiServer, topology::NodeHandle};
use palisade::{
    daemon::{Status, status::Digest},
    dataplane::Established,
    k8s::{
        cluster::{Cluster, ObjectKey},
        cnp::ClusterNetworkPolicy,
    },
};

/// How long agents may take to catch up with a step.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`ApiControl::converge`] reads the API's digest while agents are behind.
const DIGEST_EVERY: Duration = Duration::from_secs(1);

/// Faults injected while a case runs, to show the agents recover.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Kill every agent (SIGKILL) in the middle of each step's changes and start new ones.
    pub restart_agents: bool,
    /// Restart the API server in the middle of each step's changes.
    pub restart_apiserver: bool,
}

/// The API server side of a lab case.
pub struct ApiControl {
    // Agents go before the server.
    agents: BTreeMap<String, AgentProcess>,
    server: ApiServer,
    client: Client,
    binary: PathBuf,
    established: Established,
    faults: Faults,
    /// More flags for every agent started from now on.
    agent_args: Vec<String>,
    logs: tempdir::Dir,
    /// The objects as the lab last wrote them.
    applied: Cluster,
    /// Addresses reported in each pod's status.
    reported: BTreeMap<ObjectKey, Vec<IpAddr>>,
    /// When the lab last wrote to the API in this step.
    last_write: Option<SystemTime>,
    /// Agents that ran before this step's first write: only their delays are propagation
    /// (a new agent's first sync also loads programs and lists everything).
    steady: BTreeSet<String>,
    /// API write to map write, one sample per node and step.
    pub delays: Vec<Duration>,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl ApiControl {
    /// Starts a fresh API server for one case.
    pub async fn start(binary: PathBuf, established: Established, faults: Faults) -> Result<Self> {
        let server = ApiServer::start().await?;
        let client = server.client();
        install_cluster_network_policy_crd(&client).await?;
        Ok(Self {
            agents: BTreeMap::new(),
            server,
            client,
            binary,
            established,
            faults,
            agent_args: Vec::new(),
            logs: tempdir::Dir::new("palisade-lab-agents")?,
            applied: Cluster::default(),
            reported: BTreeMap::new(),
            last_write: None,
            steady: BTreeSet::new(),
            delays: Vec::new(),
        })
    }

    /// Starts the agent of a new lab node.
    pub fn start_agent(&mut self, node: &NodeHandle, pins: &Path) -> Result<()> {
        let agent = AgentProcess::start(
            &self.binary,
            node,
            self.server.kubeconfig(),
            pins,
            self.established,
            self.logs.path(),
            &self.agent_args,
        )?;
        self.agents.insert(node.name.clone(), agent);
        Ok(())
    }

    /// Passes `args` to every agent started from now on.
    pub fn set_agent_args(&mut self, args: &[&str]) {
        self.agent_args = args.iter().map(|a| (*a).to_owned()).collect();
    }

    /// GET `path` (`/status`, `/metrics`, `/readyz`) from `node`'s agent.
    pub async fn agent_get(&self, node: &str, path: &str) -> Result<String> {
        let agent = self
            .agents
            .get(node)
            .with_context(|| format!("no agent on {node}"))?;
        http_get(agent.status_addr, path).await
    }

    /// The kubeconfig of the API server (for `kubectl --kubeconfig`).
    pub fn kubeconfig(&self) -> &Path {
        self.server.kubeconfig()
    }

    /// The local socket of `node`'s agent (`palisade flows --socket`, `palisade explain
    /// --socket`).
    pub fn agent_socket(&self, node: &str) -> Result<PathBuf> {
        let agent = self
            .agents
            .get(node)
            .with_context(|| format!("no agent on {node}"))?;
        Ok(agent.socket.clone())
    }

    /// `node`'s agent's `/status`.
    pub async fn agent_status(&self, node: &str) -> Result<Status> {
        serde_json::from_str(&self.agent_get(node, "/status").await?).context("parsing /status")
    }

    /// `(node, address of its /status)` of every agent.
    pub fn status_endpoints(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.agents
            .values()
            .map(|a| (a.node.clone(), a.status_addr))
            .collect()
    }

    fn wrote(&mut self) {
        self.last_write = Some(SystemTime::now());
    }

    /// A client of the API server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `(node, pid)` of every agent process.
    pub fn agent_pids(&self) -> Vec<(String, u32)> {
        self.agents
            .values()
            .map(|a| (a.node.clone(), a.child.id()))
            .collect()
    }

    /// Kills every agent now (SIGKILL: the pinned state stays); [`Self::restart_agents`]
    /// starts new ones.
    pub fn kill_agents(&mut self) {
        for agent in self.agents.values_mut() {
            agent.kill();
        }
    }

    /// Ends `node`'s agent as `kill -9` would (its pinned programs and maps stay).
    pub fn kill_agent(&mut self, node: &str) {
        if let Some(agent) = self.agents.get_mut(node) {
            agent.kill();
        }
    }

    /// Sends `signal` to every agent (SIGHUP: a full resync).
    pub fn signal_agents(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        for agent in self.agents.values() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.child.id() as i32), signal)
                .with_context(|| format!("signalling the agent of {}", agent.node))?;
        }
        Ok(())
    }

    /// Kills every agent now, if asked to ([`Faults::restart_agents`]).
    pub fn kill_agents_if_asked(&mut self) -> bool {
        if !self.faults.restart_agents {
            return false;
        }
        for agent in self.agents.values_mut() {
            agent.kill();
        }
        true
    }

    /// Starts the agents killed by [`Self::kill_agents_if_asked`] again.
    pub fn restart_agents(&mut self, nodes: &[(NodeHandle, PathBuf)]) -> Result<()> {
        self.steady.clear();
        for (node, pins) in nodes {
            self.agents.remove(&node.name);
            self.start_agent(node, pins)?;
        }
        Ok(())
    }

    /// Restarts the API server, if asked to ([`Faults::restart_apiserver`]).
    pub async fn restart_apiserver_if_asked(&mut self) -> Result<()> {
        if self.faults.restart_apiserver {
            self.server.kill_and_restart_apiserver().await?;
            self.client = self.server.client();
        }
        Ok(())
    }

    /// The digest of everything the API server holds now, as the agents compute it.
    async fn digest(&self) -> Result<String> {
        let lp = ListParams::default();
        let mut digest = Digest::default();
        // Metadata is all the digest reads.
        for ns in Api::<Namespace>::all(self.client.clone())
            .list_metadata(&lp)
            .await?
        {
            digest.add_object(&ns);
        }
        for pod in Api::<Pod>::all(self.client.clone())
            .list_metadata(&lp)
            .await?
        {
            digest.add_object(&pod);
        }
        for policy in Api::<NetworkPolicy>::all(self.client.clone())
            .list_metadata(&lp)
            .await?
        {
            digest.add_object(&policy);
        }
        for policy in Api::<ClusterNetworkPolicy>::all(self.client.clone())
            .list(&lp)
            .await?
        {
            digest.add_object(&policy);
        }
        for node in Api::<Node>::all(self.client.clone()).list(&lp).await? {
            digest.add_object(&node);
        }
        Ok(digest.finish())
    }

    /// Waits until every agent's maps hold exactly what the API server holds, and records the
    /// propagation delay of this step's last write.
    pub async fn converge(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        // Namespaces being deleted change until they are gone: the digest is read again at
        // least every DIGEST_EVERY, and once more when every agent shows it (converged only if
        // it is still the API's). Not every round: at 50,000 pods a list is seconds of the
        // API server's and this process's CPU, taken from the agents being waited for.
        let mut want = self.digest().await?;
        let mut read_at = Instant::now();
        loop {
            if read_at.elapsed() > DIGEST_EVERY {
                want = self.digest().await?;
                read_at = Instant::now();
            }
            let mut behind = Vec::new();
            let mut synced = Vec::new();
            for agent in self.agents.values() {
                match agent.status().await {
                    Ok(status) if status.synced_digest.as_deref() == Some(want.as_str()) => {
                        if self.steady.contains(&agent.node) {
                            synced.push(status.synced_at_unix_nanos);
                        }
                    }
                    Ok(status) => behind.push(format!(
                        "{}: synced {:?}, pods without interface {:?}, errors {:?}",
                        agent.node,
                        status.synced_digest,
                        status.pods_without_interface,
                        status.errors
                    )),
                    Err(e) => behind.push(format!("{}: {e:#}", agent.node)),
                }
            }
            if behind.is_empty() {
                let now = self.digest().await?;
                read_at = Instant::now();
                if now != want {
                    want = now;
                    continue;
                }
                if let Some(written) = self.last_write.take() {
                    let written = palisade::daemon::status::unix_nanos(written);
                    for at in synced.into_iter().flatten() {
                        if at > written {
                            self.delays
                                .push(Duration::from_nanos((at - written) as u64));
                        }
                    }
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .agents
                    .values()
                    .map(|a| format!("--- agent {} log:\n{}", a.node, a.log_tail()))
                    .collect();
                bail!(
                    "agents did not converge in {CONVERGE_TIMEOUT:?} on {want}:\n{}\n{}",
                    behind.join("\n"),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The `/status` an agent serves at `addr`.
/// Installs the ClusterNetworkPolicy CRD (the one the agent's types generate, which
/// `palisade/src/k8s/cnp/tests.rs` holds to upstream's) and waits until it is served.
pub async fn install_cluster_network_policy_crd(client: &Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds
        .create(
            &kube::api::PostParams::default(),
            &palisade::k8s::cnp::crd(),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e).context("installing the ClusterNetworkPolicy CRD"),
    }
    let served: Api<ClusterNetworkPolicy> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match served.list(&ListParams::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the ClusterNetworkPolicy CRD is not served after 30 s");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn status_at(addr: std::net::SocketAddr) -> Result<Status> {
    serde_json::from_str(&http_get(addr, "/status").await?).context("parsing /status")
}

/// p50 and p99 of `samples` (nearest rank).
pub fn percentiles(samples: &[Duration]) -> Option<(Duration, Duration)> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank =
        |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    Some((rank(0.50), rank(0.99)))
}
