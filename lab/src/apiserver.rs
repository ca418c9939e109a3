//! A real Kubernetes API server for tests: etcd, kube-apiserver and kube-controller-manager
//! (v1.20.2, built by `cargo xtask kube`) on loopback, in a fresh state directory per run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), palisade_lab::apiserver::ApiServerError> {
//! use palisade_lab::apiserver::ApiServer;
//! let cluster = ApiServer::start().await?;
//! let client = cluster.client();
//! // ... create Namespaces, Pods and NetworkPolicies with kube-rs, or run `cluster.kubectl()?`
//! # Ok(()) }
//! ```
//!
//! What v1.20 means for a test (see `../shared/notes/KUBE-APISERVER.md`):
//! - Namespaces get no automatic `kubernetes.io/metadata.name` label: set it
//!   ([`objects::namespace`] does).
//! - No scheduler and no kubelet: give pods a `spec.nodeName` and write their IPs and phase
//!   through the `/status` subresource yourself ([`objects::set_pod_running`]).
//! - Delete pods with grace period 0 ([`objects::delete_now`]), or they stay Terminating.
//! - NetworkPolicy `endPort` does not exist yet: the server drops the field.
//!
//! Each run lives in `/tmp/palisade-kube-<pid>-<n>/`: `pki/`, `tokens.csv`, `kubeconfig`,
//! `etcd-data/` and the logs `etcd.log`, `apiserver.log`, `kcm.log`. Every port is picked free
//! at start, so runs in parallel (or a leftover) never collide. The children are in process
//! groups of their own with SIGKILL as parent-death signal: they die with the test process even
//! when it crashes, and the next start removes state directories whose process is gone. Drop
//! stops them (SIGTERM, SIGKILL after 5 s) and removes the directory.

mod binaries;
mod commands;
pub mod objects;
mod pki;
mod process;

use self::binaries::Binaries;
pub use self::binaries::{bin_dir, kubectl_path};

use std::{
    env, fs, io,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use self::{
    commands::{apiserver_cmd, etcd_cmd, kcm_cmd, kubeconfig_yaml},
    pki::Pki,
    process::{Proc, STATE_PREFIX, Spawner},
};

/// How long the API server may take to answer `/readyz` (about 4 s on an idle machine; the
/// shared build machines are often far from idle).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Starts tried when a port picked free is taken before the server binds it.
const PORT_ATTEMPTS: u32 = 3;

/// How much of a log an error message quotes.
const LOG_TAIL: u64 = 3000;

/// Where `cargo xtask kube` puts the binaries unless `PALISADE_KUBE_BIN` says otherwise.
pub const BIN_ENV: &str = "PALISADE_KUBE_BIN";

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error(
        "{missing} not found in {}: build them with `cargo xtask kube` (about 10 minutes once, \
         cached afterwards), or set {BIN_ENV} to a folder holding kube-apiserver and \
         kube-controller-manager v1.20",
        dir.display()
    )]
    BinariesMissing { dir: PathBuf, missing: String },
    #[error(
        "etcd is neither on PATH nor at /usr/bin/etcd: install Debian's etcd-server \
         (`cargo xtask kube` does)"
    )]
    EtcdMissing,
    #[error(
        "kubectl is neither in {} nor on PATH: `cargo xtask kube` builds it",
        dir.display()
    )]
    KubectlMissing { dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("generating the {what}: {source}")]
    Certificate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("finding free loopback ports: {source}")]
    Ports { source: io::Error },
    #[error("starting {what} ({}): {source}", program.display())]
    Spawn {
        what: &'static str,
        program: PathBuf,
        source: io::Error,
    },
    #[error("{what} exited ({status}) before the API server was ready; end of {}:\n{tail}", log.display())]
    Exited {
        what: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the API server at {url} was not ready after {waited:?} (last answer: {last}); end of {}:\n{tail}",
        log.display()
    )]
    NotReady {
        url: String,
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("loading the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error("building a client from {}: {source}", path.display())]
    Client { path: PathBuf, source: kube::Error },
}

impl ApiServerError {
    fn io(path: &Path, source: io::Error) -> ApiServerError {
        ApiServerError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub type Result<T, E = ApiServerError> = std::result::Result<T, E>;

/// The state directory, removed on drop (after the processes using it are stopped: it is the
/// last field of [`ApiServer`] and the first local of [`ApiServer::start`]).
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running etcd + kube-apiserver + kube-controller-manager. See the module documentation.
pub struct ApiServer {
    // Fields drop in this order: the controller-manager, the API server and etcd are stopped
    // (each `Proc` stops itself on drop), then the spawner thread ends, then the state
    // directory goes.
    kcm: Proc,
    apiserver: Proc,
    etcd: Proc,
    spawner: Spawner,
    bins: Binaries,
    pki: Pki,
    api_port: u16,
    etcd_port: u16,
    kubeconfig: PathBuf,
    tokens: PathBuf,
    config: kube::Config,
    state: StateDir,
}

static RUNS: AtomicU32 = AtomicU32::new(0);

impl ApiServer {
    /// Starts etcd, the API server and the controller-manager and waits until `/readyz`
    /// answers and the `default` namespace exists. Takes about 4-5 s.
    pub async fn start() -> Result<ApiServer> {
        let bins = Binaries::find_in(bin_dir())?;
        let tmp = env::temp_dir();
        process::sweep_leftovers(&tmp);
        let mut attempt = 1;
        loop {
            match ApiServer::start_once(&tmp, bins.clone()).await {
                // A port picked free was taken before etcd or the API server bound it (by an
                // outgoing connection of another test, say): pick others.
                Err(ApiServerError::Exited { ref tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_once(tmp: &Path, bins: Binaries) -> Result<ApiServer> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("{STATE_PREFIX}{}-{n}", std::process::id()));
        // A directory of an earlier process that had our pid: nothing of it is running.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|source| ApiServerError::io(&dir, source))?;
        let state = StateDir(dir);
        let dir = &state.0;

        let pki = Pki::write(&dir.join("pki"))?;
        let token = admin_token();
        let tokens = dir.join("tokens.csv");
        write(&tokens, &format!("{token},admin,admin,system:masters\n"))?;
        let [api_port, etcd_port, etcd_peer] = process::free_ports()?;
        let kubeconfig = dir.join("kubeconfig");
        write(&kubeconfig, &kubeconfig_yaml(api_port, &pki.ca_crt, &token))?;
        let config = load_config(&kubeconfig).await?;

        let spawner = Spawner::new().map_err(|source| ApiServerError::Spawn {
            what: "the spawner thread",
            program: PathBuf::new(),
            source,
        })?;
        let mut etcd = spawner.spawn(
            "etcd",
            etcd_cmd(&bins.etcd, dir, etcd_port, etcd_peer),
            &dir.join("etcd.log"),
        )?;
        let mut apiserver = spawner.spawn(
            "kube-apiserver",
            apiserver_cmd(&bins.apiserver, dir, &pki, &tokens, api_port, etcd_port),
            &dir.join("apiserver.log"),
        )?;
        wait_ready(&mut etcd, &mut apiserver, &config, api_port).await?;
        let kcm = spawner.spawn(
            "kube-controller-manager",
            kcm_cmd(&bins.kcm, &kubeconfig, &pki),
            &dir.join("kcm.log"),
        )?;
        Ok(ApiServer {
            kcm,
            apiserver,
            etcd,
            spawner,
            bins,
            pki,
            api_port,
            etcd_port,
            kubeconfig,
            tokens,
            config,
            state,
        })
    }

    /// Stops kube-apiserver alone as a rolling restart would (SIGTERM; SIGKILL if it has not
    /// exited after 5 s, which v1.20 with open watches often needs) and starts it again on the
    /// same port with the same etcd and certificates; returns once it is ready (7-12 s on the
    /// shared build machine). Clients made before keep working: they reconnect, and watchers
    /// with a backoff go on. The controller-manager stays and reconnects.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.stop();
        self.start_apiserver_again().await
    }

    /// As [`Self::restart_apiserver`], but the API server is killed (SIGKILL), as by a crash or
    /// the OOM killer: connections are reset, nothing is closed cleanly.
    pub async fn kill_and_restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.kill();
        self.start_apiserver_again().await
    }

    async fn start_apiserver_again(&mut self) -> Result<()> {
        let log = self.apiserver.log.clone();
        self.apiserver = self.spawner.spawn(
            "kube-apiserver",
            apiserver_cmd(
                &self.bins.apiserver,
                &self.state.0,
                &self.pki,
                &self.tokens,
                self.api_port,
                self.etcd_port,
            ),
            &log,
        )?;
        wait_ready(
            &mut self.etcd,
            &mut self.apiserver,
            &self.config,
            self.api_port,
        )
        .await
    }

    /// A kubeconfig for this cluster (token auth as `admin`, in group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A new client for this cluster, with a connection pool of its own.
    pub fn client(&self) -> kube::Client {
        // The same configuration built a client when the server was started; what could fail
        // (reading the CA, setting up TLS) has therefore succeeded once already.
        kube::Client::try_from(self.config.clone())
            .unwrap_or_else(|e| panic!("a client from {}: {e}", self.kubeconfig.display()))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The state directory of this run (certificates, kubeconfig, etcd data, logs).
    pub fn state_dir(&self) -> &Path {
        &self.state.0
    }

    /// `kubectl --kubeconfig <ours>`, ready for more arguments.
    pub fn kubectl(&self) -> Result<Command> {
        let mut cmd = Command::new(kubectl_path()?);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(cmd)
    }

    /// `(name, pid)` of every process of the cluster.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        [&self.etcd, &self.apiserver, &self.kcm]
            .iter()
            .map(|p| (p.name, p.pid()))
            .collect()
    }

    /// The end of the API server's log, for a test's failure message.
    pub fn apiserver_log_tail(&self) -> String {
        self.apiserver.log_tail(LOG_TAIL)
    }
}

/// Waits until the API server answers `/readyz` and the `default` namespace exists; fails early
/// if etcd or the API server exits.
async fn wait_ready(
    etcd: &mut Proc,
    apiserver: &mut Proc,
    config: &kube::Config,
    api_port: u16,
) -> Result<()> {
    let mut config = config.clone();
    config.connect_timeout = Some(Duration::from_secs(1));
    config.read_timeout = Some(Duration::from_secs(5));
    config.default_retry = false;
    let client = kube::Client::try_from(config).map_err(|source| ApiServerError::Client {
        path: PathBuf::from("kubeconfig"),
        source,
    })?;
    let started = Instant::now();
    let mut last = String::from("none yet");
    while started.elapsed() < READY_TIMEOUT {
        for proc in [&mut *etcd, &mut *apiserver] {
            if let Some(status) = proc.exited() {
                return Err(ApiServerError::Exited {
                    what: proc.name,
                    status,
                    log: proc.log.clone(),
                    tail: proc.log_tail(LOG_TAIL),
                });
            }
        }
        // /readyz covers etcd and the post-start hooks (RBAC's bootstrap roles among them);
        // the `default` namespace comes from a controller of the server a moment later.
        match get(&client, "/readyz").await {
            Ok(_) => match get(&client, "/api/v1/namespaces/default").await {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("namespace default: {e}"),
            },
            Err(e) => last = format!("/readyz: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiServerError::NotReady {
        url: format!("https://127.0.0.1:{api_port}"),
        waited: READY_TIMEOUT,
        last,
        log: apiserver.log.clone(),
        tail: apiserver.log_tail(LOG_TAIL),
    })
}

async fn get(client: &kube::Client, path: &str) -> Result<String, kube::Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|source| ApiServerError::io(path, source))
}

/// A token nobody else on the machine can guess (the server listens on loopback only, but
/// other users of the machine share loopback).
fn admin_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not secret then, still unique per run.
        bytes[..4].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn load_config(path: &Path) -> Result<kube::Config> {
    let err = |source| ApiServerError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(err)?;
    // Fail here, not in `client()`, if TLS cannot be set up from these files.
    kube::Client::try_from(config.clone()).map_err(|source| ApiServerError::Client {
        path: path.to_owned(),
        source,
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_named_with_their_folder_and_the_command_that_builds_them() {
        let dir = PathBuf::from("/nonexistent/palisade-kube");
        let Err(e) = Binaries::find_in(dir) else {
            panic!("binaries found in a folder that does not exist");
        };
        let message = e.to_string();
        assert!(
            message.starts_with(
                "kube-apiserver and kube-controller-manager not found in /nonexistent/palisade-kube"
            ),
            "{message}"
        );
        assert!(message.contains("cargo xtask kube"), "{message}");
        assert!(message.contains(BIN_ENV), "{message}");
    }

    #[test]
    fn the_kubeconfig_names_the_server_the_ca_and_the_token() {
        let yaml = kubeconfig_yaml(16443, Path::new("/tmp/x/pki/ca.crt"), "abc");
        let parsed = Kubeconfig::from_yaml(&yaml).expect("a kubeconfig");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:16443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/tmp/x/pki/ca.crt")
        );
        assert_eq!(parsed.current_context.as_deref(), Some("palisade-test"));
    }
}
