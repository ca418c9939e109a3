//! `palisade-lab`: a cluster made of network namespaces on this machine, running the real
//! agent and programs, probed cell by cell against conformance truth tables.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use palisade::{
    daemon::{LogFormat, process},
    dataplane::Established,
};
use palisade_lab::{cleanup, control::Faults, load, run};

#[derive(Parser)]
#[command(
    name = "palisade-lab",
    version,
    about = "A cluster made of network namespaces on this machine, running Palisade's real dataplane"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `palisade=debug`. Default: `warn`.
    #[arg(long, env = "PALISADE_LOG", global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(long, value_enum, default_value_t = Established::Keep)]
        established: Established,
        /// Hold the cluster in a real kube-apiserver (built by `cargo xtask kube`) and run a
        /// `palisade agent` process per node; the lab plays the kubelet.
        #[arg(long, conflicts_with = "model")]
        apiserver: bool,
        /// With --apiserver: the `palisade` binary the agents run. Default: the one beside
        /// this binary.
        #[arg(long, env = "PALISADE_BIN")]
        agent_binary: Option<PathBuf>,
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
    /// The control plane under load through a real kube-apiserver: fill it with namespaces,
    /// policies and pods of other nodes, start an agent per lab node, then write policy
    /// updates and pod creations and deletions at fixed rates and time each write to every
    /// node's map write. Fails if a write never reached a node, or if a full resync afterwards
    /// finds the maps differ from a full compile.
    Load {
        /// Lab nodes, each with its agent.
        #[arg(long, default_value_t = 2)]
        nodes: u8,
        /// Real pods per lab node.
        #[arg(long, default_value_t = 10)]
        local_pods: usize,
        /// Pods of other nodes (API objects only).
        #[arg(long, default_value_t = 50_000)]
        pods: usize,
        #[arg(long, default_value_t = 500)]
        namespaces: usize,
        #[arg(long, default_value_t = 10_000)]
        policies: usize,
        /// Seconds of changes.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Policy updates per second.
        #[arg(long, default_value_t = 20)]
        policy_updates: u32,
        /// Pod creations and deletions per second.
        #[arg(long, default_value_t = 50)]
        pod_changes: u32,
        /// The `palisade` binary the agents run. Default: the one beside this binary.
        #[arg(long, env = "PALISADE_BIN")]
        agent_binary: Option<PathBuf>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Remove what ended lab runs left behind (namespaces and pins of runs whose process is
    /// gone); a live run's are never touched.
    Clean,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_logs(
        cli.log.as_deref().unwrap_or(process::TOOL_LOG_FILTER),
        LogFormat::Text,
    );
    process::run_main("palisade-lab", async {
        match cli.command {
            Command::Run {
                cases,
                narrate,
                model,
                established,
                apiserver,
                agent_binary,
                restart_agents,
                restart_apiserver,
                hold,
            } => {
                let options = run::RunOptions {
                    narrate,
                    model,
                    established,
                    apiserver,
                    agent_binary,
                    faults: Faults {
                        restart_agents,
                        restart_apiserver,
                    },
                    hold,
                };
                // Handlers first: a signal that arrives while the lab is being built must not
                // kill the process with namespaces behind. On SIGINT or SIGTERM the run future
                // is dropped, and with it every namespace it created (owners clean up in Drop).
                let shutdown = process::shutdown_signal()?;
                tokio::select! {
                    r = run::run_cases(&cases, options) => r,
                    s = shutdown => if hold {
                        println!("{s}: the lab is removed");
                        Ok(true)
                    } else {
                        Err(anyhow::anyhow!("interrupted by {s}; lab namespaces removed"))
                    },
                }
            }
            Command::Load {
                nodes,
                local_pods,
                pods,
                namespaces,
                policies,
                seconds,
                policy_updates,
                pod_changes,
                agent_binary,
                json,
            } => {
                let options = load::LoadOptions {
                    nodes,
                    local_pods,
                    pods,
                    namespaces,
                    policies,
                    duration: std::time::Duration::from_secs(seconds),
                    policy_updates,
                    pod_changes,
                    agent_binary: match agent_binary {
                        Some(path) => path,
                        None => run::agent_binary()?,
                    },
                };
                let shutdown = process::shutdown_signal()?;
                let report = tokio::select! {
                    r = load::run(options) => r?,
                    s = shutdown => anyhow::bail!("interrupted by {s}; lab namespaces removed"),
                };
                print!("{}", report.render());
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                }
                Ok(report.lost == 0 && report.check_corrections == 0)
            }
            Command::Clean => cleanup::clean_stale()
                .map(|n| {
                    println!("removed {n} lab namespace(s)");
                    true
                })
                .map_err(Into::into),
        }
    })
}
