//! `cargo xtask`: the one entry point for building, testing and demonstrating Palisade.
//!
//! - `setup`: install what the build and the tests need (idempotent; fast when all is there).
//! - `build`: the agent with its embedded eBPF programs.
//! - `demo`: build and run the quick-start walkthrough in the lab.
//! - `test`: formatting, clippy, unit and kernel tests, and the conformance cases in the lab.
//! - `kube`: build (or find cached) the Kubernetes v1.20.2 binaries the API-server tests use.
//! - `lab ARGS...`: `palisade-lab ARGS...` with a fresh build.
//! - `bench [--quick | --render]`: Palisade against the floor, iptables and nftables (see `bench/`).
//! - `cluster up [--nodes N] | down | exec CMD...`: a real Kubernetes node per network
//!   namespace (kubelet, containerd, kube-proxy), Palisade deployed from `manifests/`.
//! - `e2e [--nodes 1,2]`: the upstream NetworkPolicy e2e suite on it, without and with Palisade.

mod bench;
mod cluster;
mod kube;
mod toolchain;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};

/// Every shared upstream case runs on the real kernel in `cargo xtask test`; probes the lab
/// cannot make yet are printed as skipped.
const CONFORMANCE: &str = "conformance/upstream";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .map(|(c, r)| (c.as_str(), r))
        .unwrap_or(("help", &[]));
    match cmd {
        "setup" => toolchain::setup(),
        "build" => match rest {
            [] => build().map(drop),
            [flag] if flag == "--release" => build_release().map(drop),
            _ => bail!("usage: cargo xtask build [--release]"),
        },
        "demo" => demo(),
        "test" => test(),
        "kube" => kube::ensure(),
        "lab" => {
            let lab = build()?.lab;
            run(Command::new(lab).args(rest))
        }
        "bench" => bench::bench(rest),
        "cluster" => cluster::cluster(rest),
        "e2e" => cluster::e2e(rest),
        "help" | "-h" | "--help" => {
            println!(
                "usage: cargo xtask <setup|build|demo|test|kube|lab ARGS...|bench [--quick|--render]|\
                 cluster up|down|exec|deploy|undeploy|e2e>"
            );
            Ok(())
        }
        other => bail!("unknown command {other:?}; try `cargo xtask help`"),
    }
}

fn root() -> PathBuf {
    // xtask/ is one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn shared() -> PathBuf {
    root().join("../shared")
}

fn ensure_setup() -> Result<()> {
    if !toolchain::ready() {
        toolchain::setup()?;
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("/usr/bin/cargo");
    toolchain::build_env(&mut cmd)
        .args(args)
        .current_dir(root());
    cmd
}

/// The debug binaries (shared with the tests).
struct Binaries {
    /// `palisade`: the agent and its tools, what the image ships.
    palisade: PathBuf,
    /// `palisade-lab`: the lab, which runs `palisade` beside it for `--apiserver`.
    lab: PathBuf,
}

/// Builds the agent with its eBPF programs and the lab (debug profile, shared with the tests).
fn build() -> Result<Binaries> {
    ensure_setup()?;
    eprintln!("[build] palisade (agent and eBPF programs) and palisade-lab");
    run(&mut cargo(&[
        "build",
        "-p",
        "palisade",
        "--bin",
        "palisade",
        "-p",
        "palisade-lab",
        "--bin",
        "palisade-lab",
    ]))?;
    let dir = root().join("target/debug");
    Ok(Binaries {
        palisade: dir.join("palisade"),
        lab: dir.join("palisade-lab"),
    })
}

/// Builds the agent in the release profile (what the container image ships).
fn build_release() -> Result<PathBuf> {
    ensure_setup()?;
    eprintln!("[build] palisade agent and its eBPF programs, release profile");
    run(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "palisade",
        "--bin",
        "palisade",
    ]))?;
    Ok(root().join("target/release/palisade"))
}

fn demo() -> Result<()> {
    let lab = build()?.lab;
    require_root("the demo creates network namespaces and loads eBPF programs")?;
    run(Command::new(lab)
        .args(["run", "--narrate"])
        .arg(root().join("examples/quick-start")))
}

fn test() -> Result<()> {
    ensure_setup()?;
    require_root("the tests create network namespaces and load eBPF programs")?;
    // integration/tests/apiserver.rs (and the lab's --apiserver runs) need a real kube-apiserver.
    kube::ensure()?;
    eprintln!("[test] rustfmt");
    run(&mut cargo(&["fmt", "--all", "--", "--check"]))
        .context("run `cargo fmt --all` to fix formatting")?;
    eprintln!("[test] clippy");
    run(&mut cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The integration tests run the binaries of this build.
    let binaries = build()?;
    eprintln!("[test] unit tests (the default members: no root, no kernel)");
    run(&mut cargo(&["test"]))?;
    eprintln!("[test] integration tests: the real kernel and a real API server");
    // Two test threads: kernel tests share bpffs, namespaces and two cores.
    run(cargo(&[
        "test",
        "-p",
        "palisade-integration",
        "--",
        "--test-threads=2",
    ])
    .env("PALISADE_BIN", &binaries.palisade)
    .env("PALISADE_LAB_BIN", &binaries.lab))?;
    let lab = binaries.lab;
    let cases = shared().join(CONFORMANCE);
    if !cases.is_dir() {
        bail!(
            "{} is missing: the shared conformance cases live beside the repository",
            cases.display()
        );
    }
    // The shared upstream and ClusterNetworkPolicy cases, ours (two nodes, externals, IPv6,
    // the tiers) and the quick-start.
    let all = [
        cases,
        shared().join("conformance/cnp"),
        root().join("tests/cases"),
        root().join("tests/cnp-cases"),
        root().join("examples/quick-start"),
    ];
    eprintln!("[test] every case with the reference evaluator (--model)");
    run(Command::new(&lab).args(["run", "--model"]).args(&all))?;
    eprintln!("[test] every case on the real kernel");
    run(Command::new(&lab).arg("run").args(&all))?;
    eprintln!(
        "[test] every case v1.20 can express, through a real API server, a palisade agent \
         process per node"
    );
    run(Command::new(&lab).args(["run", "--apiserver"]).args(&all))?;
    // Cases with updates (pod and namespace labels, policy update and delete, pod re-created,
    // two nodes): agents killed, then the API server restarted, mid-change in every step.
    let changing = [
        shared().join(CONFORMANCE).join("20-updated-policy"),
        shared()
            .join(CONFORMANCE)
            .join("24-deny-ingress-to-updated-pod"),
        shared()
            .join(CONFORMANCE)
            .join("33-stop-enforcing-after-delete"),
        root().join("tests/cases/pod-recreate"),
        root().join("tests/cases/namespace-labels"),
        root().join("tests/cases/two-nodes"),
        root().join("tests/cnp-cases/tiers-and-networkpolicy"),
    ];
    eprintln!("[test] the same, with every agent killed in the middle of each step");
    run(Command::new(&lab)
        .args(["run", "--apiserver", "--restart-agents"])
        .args(&changing))?;
    eprintln!("[test] the same, with the API server restarted in the middle of each step");
    run(Command::new(&lab)
        .args(["run", "--apiserver", "--restart-apiserver"])
        .args(&changing))?;
    eprintln!(
        "[test] a real node: kubelet, containerd and kube-proxy in a network namespace, the \
         DaemonSet from manifests/, the quick-start through a ClusterIP, the agent pod \
         restarted under live flows"
    );
    cluster::smoke()?;
    eprintln!("[test] bench --quick, so the benchmark cannot rot");
    bench::bench(&["--quick".to_owned()])
}

fn require_root(why: &str) -> Result<()> {
    if !toolchain::is_root() {
        bail!("run as root: {why}");
    }
    Ok(())
}

/// Runs a command with inherited output; an error names the command and its status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(())
}
