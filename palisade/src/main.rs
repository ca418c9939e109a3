//! `palisade`: the agent (what the DaemonSet runs) and its tools, `explain`, `flows` and
//! `uninstall`. The lab is its own binary, `palisade-lab` (crate `palisade-lab`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use palisade::daemon::{LogFormat, process};

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "A Kubernetes NetworkPolicy dataplane in eBPF"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `palisade=debug`. Default: `info`
    /// for the agent, `warn` for the tools.
    #[arg(long, env = "PALISADE_LOG", global = true)]
    log: Option<String>,
    /// Log line format.
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The node agent (what the DaemonSet runs): watches the API server and enforces
    /// NetworkPolicy for this node's pods. Serves /metrics, /healthz, /readyz and /status.
    Agent(Box<palisade::daemon::Config>),
    /// Why a connection is allowed or denied: asked of the node's running agent (its live maps
    /// and its reference evaluator), or, with -f, worked out from manifests.
    Explain {
        /// Manifests (Namespaces, Pods, NetworkPolicies); repeatable. Without them, the agent
        /// on this node answers.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// The agent's socket.
        #[arg(long, env = "PALISADE_SOCKET", default_value = palisade::flows::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Source: namespace/pod or an address.
        from: String,
        /// Destination: namespace/pod or an address.
        to: String,
        /// PROTO/PORT, e.g. TCP/80.
        flow: String,
    },
    /// Follow the node agent's flow records: denied packets and new connections, with the
    /// policy that allowed or isolates each.
    Flows {
        /// The agent's socket.
        #[arg(long, env = "PALISADE_SOCKET", default_value = palisade::flows::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Only flows with an end in this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only flows with this pod at an end (`name` or `namespace/name`).
        #[arg(long)]
        pod: Option<String>,
        /// Only flows with this verdict.
        #[arg(long, value_enum)]
        verdict: Option<palisade::flows::FlowVerdict>,
        /// Only flows with this port at an end.
        #[arg(long)]
        port: Option<u16>,
        /// JSON lines instead of one readable line per flow.
        #[arg(long)]
        json: bool,
        /// Stop after this many flows.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Take Palisade off this node, after its DaemonSet is deleted (`manifests/uninstall/` runs
    /// it on every node): detaches every program the agents pinned under the pin root (every
    /// ABI version), unpins their links and maps, removes the directories, and says what it
    /// removed. Refuses while an agent answers on its socket. Running it again is harmless.
    Uninstall {
        /// The agents' pin root (`palisade agent --pin-root`).
        #[arg(long, env = "PALISADE_PIN_ROOT", default_value = palisade::dataplane::pin::DEFAULT_ROOT)]
        pin_root: PathBuf,
        /// The agent's socket: while an agent answers there, nothing is removed, as that agent
        /// would pin again what it attaches next.
        #[arg(long, env = "PALISADE_SOCKET", default_value = palisade::flows::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Wait up to this long for a running agent to stop (a pod still terminating) before
        /// refusing.
        #[arg(long, default_value_t = 0)]
        wait_seconds: u64,
        /// Remove everything even while an agent answers: its programs are detached under it,
        /// and it enforces nothing until it restarts.
        #[arg(long)]
        force: bool,
    },
}

/// Whether an agent answers on `socket` (a file a killed agent left refuses connections).
fn agent_answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// `palisade uninstall`: see [`Command::Uninstall`].
async fn uninstall(
    pin_root: &Path,
    socket: &Path,
    wait: Duration,
    force: bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + wait;
    while agent_answers(socket) && !force {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "an agent is running: it answers on {} (stop it first: `kubectl delete -k \
                 manifests/`, or --wait-seconds for one that is stopping; --force detaches its \
                 programs under it); nothing removed",
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = palisade::dataplane::uninstall::uninstall(pin_root)?;
    println!("{done}");
    Ok(done.failures.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log.clone().unwrap_or_else(|| {
        match cli.command {
            Command::Agent(_) => "info",
            _ => process::TOOL_LOG_FILTER,
        }
        .to_owned()
    });
    process::init_logs(&level, cli.log_format);
    process::run_main("palisade", async {
        match cli.command {
            Command::Agent(config) => {
                let shutdown = process::shutdown_signal()?;
                palisade::daemon::run(*config, shutdown)
                    .await
                    .map(|()| true)
            }
            Command::Explain {
                files,
                socket,
                from,
                to,
                flow,
            } if files.is_empty() => {
                let request = palisade::flows::socket::ExplainRequest { from, to, flow };
                palisade::flows::socket::Client::explain(&socket, request)
                    .await
                    .map(|answer| {
                        for line in &answer.lines {
                            println!("{line}");
                        }
                        answer.agrees
                    })
            }
            Command::Explain {
                files,
                from,
                to,
                flow,
                ..
            } => palisade::explain::explain(&files, &from, &to, &flow).map(|explanation| {
                for line in &explanation.lines {
                    println!("{line}");
                }
                explanation.exact
            }),
            Command::Flows {
                socket,
                namespace,
                pod,
                verdict,
                port,
                json,
                count,
            } => {
                let filter = palisade::flows::FlowFilter {
                    namespace,
                    pod,
                    verdict,
                    port,
                };
                palisade::flows::socket::follow(&socket, filter, json, count)
                    .await
                    .map(|()| true)
            }
            Command::Uninstall {
                pin_root,
                socket,
                wait_seconds,
                force,
            } => uninstall(&pin_root, &socket, Duration::from_secs(wait_seconds), force).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pin root for the agent and `uninstall` (daemon/config.rs spells its default as a
    /// literal: this holds the two equal).
    #[test]
    fn uninstall_looks_where_the_agent_pins() {
        let agent = Cli::try_parse_from(["palisade", "agent", "--node-name", "n"]).expect("agent");
        let uninstall = Cli::try_parse_from(["palisade", "uninstall"]).expect("uninstall");
        let (
            Command::Agent(config),
            Command::Uninstall {
                pin_root, socket, ..
            },
        ) = (agent.command, uninstall.command)
        else {
            panic!("parsed as other commands");
        };
        assert_eq!(config.pin_root, pin_root);
        assert_eq!(config.socket, socket);
        assert_eq!(pin_root, Path::new(palisade::dataplane::pin::DEFAULT_ROOT));
    }
}
