//! `palisade lab run --apiserver`: a real kube-apiserver holds the cluster and real
//! `palisade agent` processes, one per lab node, watch it. The lab plays the kubelet: it
//! writes the case's objects through the API, creates each pod's namespace and interface on
//! the node the pod names, reports the pod's addresses and phase through the status
//! subresource, and waits until every agent has written exactly the objects the API holds
//! (the digest each agent serves on `/status`). The time from the lab's last write of a step
//! to each agent's map write is the propagation delay.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    apiserver::{
        ApiServer,
        objects::{delete_now, set_pod_running},
    },
    services::service_ranges,
    topology::NodeHandle,
};
use palisade::{
    daemon::{Status, status::Digest},
    dataplane::Established,
    k8s::cluster::{Cluster, DEFAULT_NODE, ObjectKey, pod_addrs},
};

/// How long agents may take to catch up with a step.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// One `palisade agent` process of a lab node.
pub struct AgentProcess {
    node: String,
    child: Child,
    status_addr: SocketAddr,
    log: PathBuf,
    /// Where `palisade flows` and `palisade explain` reach it.
    socket: PathBuf,
}

impl AgentProcess {
    fn start(
        binary: &Path,
        node: &NodeHandle,
        kubeconfig: &Path,
        pins: &Path,
        established: Established,
        logs: &Path,
        extra_args: &[String],
    ) -> Result<Self> {
        // A free port on loopback for /status and /metrics.
        let status_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = logs.join(format!("agent-{}.log", node.name));
        let socket = logs.join(format!("agent-{}.sock", node.name));
        let out = File::options().create(true).append(true).open(&log)?;
        let ranges: Vec<String> = service_ranges().iter().map(ToString::to_string).collect();
        let established = match established {
            Established::Keep => "keep",
            Established::Recheck => "recheck",
        };
        let mut command = Command::new(binary);
        command
            .arg("agent")
            .args(["--node-name", &node.name])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--netns")
            .arg(node.netns.path())
            .arg("--pin-root")
            .arg(pins)
            .args(["--metrics-addr", &status_addr.to_string()])
            .args(["--service-cidr", &ranges.join(",")])
            .args(["--pod-interface-prefix", "pv"])
            .args(["--min-sync-interval-ms", "10"])
            .args(["--established", established])
            .arg("--socket")
            .arg(&socket)
            .args(extra_args)
            .env("PALISADE_LOG", "info,kube=warn,tower=warn,hyper=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; the agent dies with the lab, even a killed one.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} agent", binary.display()))?;
        Ok(Self {
            node: node.name.clone(),
            child,
            status_addr,
            log,
            socket,
        })
    }

    /// The agent's `/status`, or an error while it is not serving yet.
    async fn status(&self) -> Result<Status> {
        let body = http_get(self.status_addr, "/status").await?;
        serde_json::from_str(&body).context("parsing /status")
    }

    /// Ends the process as `kill -9` would: its pinned programs and maps stay.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SIGTERM: the agent leaves its pinned state, which the lab's pin root removes.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

/// A plain HTTP/1.0 GET on loopback (the agent's own endpoints).
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

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

/// An object as the lab creates it: what a user would write (no server-set metadata, no
/// status).
fn fresh(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..ObjectMeta::default()
    }
}

/// A merge patch setting `new` labels and annotations and removing those only `old` has.
fn metadata_patch(old: &ObjectMeta, new: &ObjectMeta) -> Option<serde_json::Value> {
    let diff = |old: &Option<BTreeMap<String, String>>, new: &Option<BTreeMap<String, String>>| {
        let (old, new) = (
            old.clone().unwrap_or_default(),
            new.clone().unwrap_or_default(),
        );
        if old == new {
            return None;
        }
        let mut map = serde_json::Map::new();
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            map.insert(key.clone(), serde_json::Value::Null);
        }
        for (k, v) in &new {
            map.insert(k.clone(), json!(v));
        }
        Some(serde_json::Value::Object(map))
    };
    let mut metadata = serde_json::Map::new();
    if let Some(labels) = diff(&old.labels, &new.labels) {
        metadata.insert("labels".into(), labels);
    }
    if let Some(annotations) = diff(&old.annotations, &new.annotations) {
        metadata.insert("annotations".into(), annotations);
    }
    (!metadata.is_empty()).then(|| json!({ "metadata": metadata }))
}

impl ApiControl {
    /// Starts a fresh API server for one case.
    pub async fn start(binary: PathBuf, established: Established, faults: Faults) -> Result<Self> {
        let server = ApiServer::start().await?;
        let client = server.client();
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

    fn wrote(&mut self) {
        self.last_write = Some(SystemTime::now());
    }

    /// Writes what changed in `desired` since the last call: namespaces, policies, pods
    /// (created without status, relabelled, deleted at once as a kubelet confirms a kill).
    pub async fn push_objects(&mut self, desired: &Cluster) -> Result<()> {
        self.last_write = None;
        self.steady = self.agents.keys().cloned().collect();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let post = PostParams::default();
        let patch = PatchParams::default();
        for (name, ns) in &desired.namespaces {
            match self.applied.namespaces.get(name) {
                None => {
                    self.wrote();
                    let object = Namespace {
                        metadata: fresh(&ns.metadata),
                        ..Namespace::default()
                    };
                    match namespaces.create(&post, &object).await {
                        Ok(_) => {}
                        // `default` and the system namespaces exist from the start.
                        Err(kube::Error::Api(status)) if status.code == 409 => {
                            let current = namespaces.get(name).await?;
                            if let Some(p) = metadata_patch(&current.metadata, &ns.metadata) {
                                namespaces
                                    .patch(name, &patch, &Patch::Merge(p))
                                    .await
                                    .with_context(|| format!("labelling namespace {name}"))?;
                            }
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("creating namespace {name}"));
                        }
                    }
                }
                Some(old) => {
                    if let Some(p) = metadata_patch(&old.metadata, &ns.metadata) {
                        self.wrote();
                        namespaces
                            .patch(name, &patch, &Patch::Merge(p))
                            .await
                            .with_context(|| format!("labelling namespace {name}"))?;
                    }
                }
            }
        }
        for (key, policy) in &desired.policies {
            let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &key.namespace);
            let mut object = NetworkPolicy {
                metadata: fresh(&policy.metadata),
                spec: policy.spec.clone(),
            };
            match self.applied.policies.get(key) {
                None => {
                    self.wrote();
                    api.create(&post, &object)
                        .await
                        .with_context(|| format!("creating networkpolicy {key}"))?;
                }
                Some(old)
                    if old.spec != policy.spec || old.metadata.labels != policy.metadata.labels =>
                {
                    let current = api.get(&key.name).await?;
                    object.metadata.resource_version = current.resource_version();
                    self.wrote();
                    api.replace(&key.name, &post, &object)
                        .await
                        .with_context(|| format!("replacing networkpolicy {key}"))?;
                }
                Some(_) => {}
            }
        }
        let gone: Vec<ObjectKey> = self
            .applied
            .policies
            .keys()
            .filter(|k| !desired.policies.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &key.namespace);
            self.wrote();
            api.delete(&key.name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting networkpolicy {key}"))?;
        }
        let gone: Vec<ObjectKey> = self
            .applied
            .pods
            .keys()
            .filter(|k| !desired.pods.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
            self.wrote();
            api.delete(&key.name, &delete_now())
                .await
                .with_context(|| format!("deleting pod {key}"))?;
            self.reported.remove(&key);
        }
        for (key, pod) in &desired.pods {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
            match self.applied.pods.get(key) {
                None => {
                    let mut spec = pod.spec.clone().unwrap_or_default();
                    spec.node_name
                        .get_or_insert_with(|| DEFAULT_NODE.to_owned());
                    let object = Pod {
                        metadata: fresh(&pod.metadata),
                        spec: Some(spec),
                        status: None,
                    };
                    self.wrote();
                    api.create(&post, &object)
                        .await
                        .with_context(|| format!("creating pod {key}"))?;
                }
                Some(old) => {
                    if let Some(p) = metadata_patch(&old.metadata, &pod.metadata) {
                        self.wrote();
                        api.patch(&key.name, &patch, &Patch::Merge(p))
                            .await
                            .with_context(|| format!("labelling pod {key}"))?;
                    }
                }
            }
        }
        let gone: Vec<String> = self
            .applied
            .namespaces
            .keys()
            .filter(|k| !desired.namespaces.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            self.wrote();
            namespaces
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting namespace {name}"))?;
        }
        self.applied = desired.clone();
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

    /// Reports the addresses and phase of pods whose interface exists (`placed`), as a kubelet
    /// does once the pod's sandbox is up.
    pub async fn push_statuses(
        &mut self,
        desired: &Cluster,
        placed: impl Fn(&ObjectKey) -> bool,
    ) -> Result<()> {
        for (key, pod) in &desired.pods {
            let addrs = pod_addrs(pod);
            if addrs.is_empty() || !placed(key) || self.reported.get(key) == Some(&addrs) {
                continue;
            }
            self.wrote();
            set_pod_running(&self.client, &key.namespace, &key.name, &addrs)
                .await
                .with_context(|| format!("writing the status of pod {key}"))?;
            self.reported.insert(key.clone(), addrs);
        }
        Ok(())
    }

    /// The digest of everything the API server holds now, as the agents compute it.
    async fn digest(&self) -> Result<String> {
        let lp = ListParams::default();
        let mut digest = Digest::default();
        for ns in Api::<Namespace>::all(self.client.clone()).list(&lp).await? {
            digest.add_object(&ns);
        }
        for pod in Api::<Pod>::all(self.client.clone()).list(&lp).await? {
            digest.add_object(&pod);
        }
        for policy in Api::<NetworkPolicy>::all(self.client.clone())
            .list(&lp)
            .await?
        {
            digest.add_object(&policy);
        }
        Ok(digest.finish())
    }

    /// Waits until every agent's maps hold exactly what the API server holds, and records the
    /// propagation delay of this step's last write.
    pub async fn converge(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        // Namespaces being deleted change until they are gone: read the digest each round.
        loop {
            let want = self.digest().await?;
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
