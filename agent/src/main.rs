//! `palisade`: the agent binary and its tools.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use palisade::{agent::LogFormat, lab};

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
    Agent(Box<palisade::agent::Config>),
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
    /// A cluster made of network namespaces on this machine, running the real dataplane.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Run connectivity cases (folders with a case.yaml) and compare every truth table.
    Run {
        /// Case folders.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
        /// After each table, say in one line what it showed.
        #[arg(long)]
        narrate: bool,
        /// Judge with the reference evaluator only (no kernel, no root needed).
        #[arg(long)]
        model: bool,
        /// What a policy change does to established connections: keep them, or judge them
        /// again and cut those no longer allowed.
        #[arg(long, value_enum, default_value_t = palisade::dataplane::Established::Keep)]
        established: palisade::dataplane::Established,
        /// Hold the cluster in a real kube-apiserver (built by `cargo xtask kube`) and run a
        /// `palisade agent` process per node; the lab plays the kubelet.
        #[arg(long, conflicts_with = "model")]
        apiserver: bool,
        /// With --apiserver: kill every agent in the middle of each step's changes, and start
        /// new ones.
        #[arg(long, requires = "apiserver")]
        restart_agents: bool,
        /// With --apiserver: restart the API server in the middle of each step's changes.
        #[arg(long, requires = "apiserver")]
        restart_apiserver: bool,
        /// With --apiserver: keep the lab up after the last step, with its API server, agents
        /// and pods, and print how to reach them (`palisade flows`, `palisade explain`,
        /// `kubectl`, `ip netns exec`); Ctrl-C removes it.
        #[arg(long, requires = "apiserver")]
        hold: bool,
    },
    /// Remove every lab namespace, including those of other or crashed runs.
    Clean,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log.clone().unwrap_or_else(|| {
        match cli.command {
            Command::Agent(_) => "info",
            // kube-client logs every failed request, such as the lab's polls of an API server
            // that is still starting; the lab's own errors come back as results.
            _ => "warn,kube_client::client::builder=off",
        }
        .to_owned()
    });
    let filter = tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(config) => {
                let shutdown = shutdown_signal()?;
                palisade::agent::run(*config, shutdown).await.map(|()| true)
            }
            Command::Lab {
                command:
                    LabCommand::Run {
                        cases,
                        narrate,
                        model,
                        established,
                        apiserver,
                        restart_agents,
                        restart_apiserver,
                        hold,
                    },
            } => {
                let options = lab::run::RunOptions {
                    narrate,
                    model,
                    established,
                    apiserver,
                    agent_binary: None,
                    faults: lab::kubelet::Faults {
                        restart_agents,
                        restart_apiserver,
                    },
                    hold,
                };
                // Handlers first: a signal that arrives while the lab is being built must not
                // kill the process with namespaces behind. On SIGINT or SIGTERM the run future
                // is dropped, and with it every namespace it created (owners clean up in Drop).
                let shutdown = shutdown_signal()?;
                tokio::select! {
                    r = lab::run::run_cases(&cases, options) => r,
                    s = shutdown => if hold {
                        println!("{s}: the lab is removed");
                        Ok(true)
                    } else {
                        Err(anyhow::anyhow!("interrupted by {s}; lab namespaces removed"))
                    },
                }
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
            } => palisade::explain::explain(&files, &from, &to, &flow).map(|lines| {
                for line in lines {
                    println!("{line}");
                }
                true
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
            Command::Lab {
                command: LabCommand::Clean,
            } => lab::netns::clean_all()
                .map(|n| {
                    println!("removed {n} lab namespace(s)");
                    true
                })
                .map_err(Into::into),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("palisade: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Registers SIGINT and SIGTERM handlers now and resolves when either arrives.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}
