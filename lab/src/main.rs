//! `palisade-lab`: a cluster made of network namespaces on this machine, running the real
//! agent and programs, probed cell by cell against conformance truth tables.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use palisade::{
    daemon::{LogFormat, process},
    dataplane::Established,
};
use palisade_lab::{cleanup, control::Faults, run};

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
            Command::Clean => cleanup::clean_stale()
                .map(|n| {
                    println!("removed {n} lab namespace(s)");
                    true
                })
                .map_err(Into::into),
        }
    })
}
