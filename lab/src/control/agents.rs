//! One `palisade agent` process per lab node, and what the lab reads from it.

use std::{
    fs::File,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{services::service_ranges, topology::NodeHandle};
use palisade::{daemon::Status, dataplane::Established};

/// One `palisade agent` process of a lab node.
pub struct AgentProcess {
    pub(super) node: String,
    pub(super) child: Child,
    pub(super) status_addr: SocketAddr,
    pub(super) log: PathBuf,
    /// Where `palisade flows` and `palisade explain` reach it.
    pub(super) socket: PathBuf,
}

impl AgentProcess {
    pub(super) fn start(
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
    pub(super) async fn status(&self) -> Result<Status> {
        let body = http_get(self.status_addr, "/status").await?;
        serde_json::from_str(&body).context("parsing /status")
    }

    /// Ends the process as `kill -9` would: its pinned programs and maps stay.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(super) fn log_tail(&self) -> String {
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
pub(super) async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
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
