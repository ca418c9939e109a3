//! `cargo xtask cluster` and `cargo xtask e2e`: a real Kubernetes v1.20.2 cluster (kubelet,
//! containerd, runc, the CNI's ptp plugin, kube-proxy in iptables mode) with one network
//! namespace per node, Palisade deployed on it by `kubectl apply -k` of `manifests/`, and the
//! upstream e2e NetworkPolicy suite run against it.
//!
//! The shell scripts in `xtask/cluster/` do the node work (see `common.sh` for the layout);
//! this module builds what they need (the Kubernetes binaries and the images, without a
//! registry), installs the node's Debian packages and runs them in order.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{build, build_release, kube, require_root, root, run, toolchain};

/// What a node runs beside the Kubernetes binaries, from Debian.
const NODE_PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "debootstrap",
    "socat",
    "conntrack",
    "iptables",
    "curl",
    "bc",
    "etcd-server",
    // The flow generator and the benchmark driver (xtask/cluster/*.py).
    "python3",
];

/// The Kubernetes binaries a cluster and the e2e run need (built from the same tree).
pub const NODE_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "e2e.test",
    "ginkgo",
    "agnhost",
    "pause",
];

/// Which agent binary goes into the image.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    /// The release build: what the Dockerfile ships.
    Release,
    /// The debug build the tests already made (the smoke test: saves a release build).
    Debug,
}

/// Set by the test suite: its scripts work on a cluster of its own (other namespaces, cgroups,
/// state directory and host port), never on one a developer keeps up.
static TEST_CLUSTER: AtomicBool = AtomicBool::new(false);

pub fn script(name: &str) -> Command {
    let mut cmd = Command::new(if name.ends_with(".py") {
        "python3"
    } else {
        "bash"
    });
    cmd.arg(root().join("xtask/cluster").join(name))
        .env("PALISADE_KUBE_BIN", kube::bin_dir());
    if TEST_CLUSTER.load(Ordering::Relaxed) {
        cmd.env("PALISADE_CLUSTER_NAME", "palkt")
            .env("PALISADE_CLUSTER_API_PORT", "36444")
            .env_remove("PALISADE_CLUSTER_DIR");
    }
    cmd
}

/// Where the cluster keeps its state (as `common.sh` decides it).
pub fn state_dir() -> PathBuf {
    let name = if TEST_CLUSTER.load(Ordering::Relaxed) {
        "palkt".to_owned()
    } else {
        env::var("PALISADE_CLUSTER_NAME").unwrap_or_else(|_| "palk".to_owned())
    };
    env::var_os("PALISADE_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/palisade-cluster-{name}")))
}

/// `cargo xtask cluster up [--nodes N] [--debug] [--no-agent] | down [--purge] | exec [--node I] CMD...`
pub fn cluster(args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask cluster up [--nodes N] [--debug] [--no-agent] | down [--purge] \
                 | exec [--node I] CMD... | deploy [--debug] | undeploy | smoke | restarts | image-equivalence \
                 | netperf [ROUNDS [RUNS]]";
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{usage}");
    };
    match cmd.as_str() {
        "up" => {
            let mut nodes = 2;
            let mut profile = Profile::Release;
            let mut agent = true;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--nodes" => {
                        nodes = it
                            .next()
                            .and_then(|n| n.parse().ok())
                            .filter(|n| (1..=9).contains(n))
                            .context("--nodes takes a number from 1 to 9")?;
                    }
                    "--debug" => profile = Profile::Debug,
                    "--no-agent" => agent = false,
                    other => bail!("unknown argument {other:?}; {usage}"),
                }
            }
            let image = prepare(profile)?;
            up(nodes)?;
            if agent {
                deploy(&image)?;
            }
            print_access(nodes);
            Ok(())
        }
        "down" => down(rest.iter().any(|a| a == "--purge")),
        "exec" => {
            let (node, cmd) = match rest {
                [flag, n, cmd @ ..] if flag == "--node" => (n.as_str(), cmd),
                cmd => ("1", cmd),
            };
            if cmd.is_empty() {
                bail!("{usage}");
            }
            run(script("exec.sh").arg(node).args(cmd))
        }
        "deploy" => {
            let profile = if rest.iter().any(|a| a == "--debug") {
                Profile::Debug
            } else {
                Profile::Release
            };
            let image = prepare(profile)?;
            deploy(&image)
        }
        "undeploy" => undeploy(),
        "smoke" => smoke(),
        "restarts" => {
            // The agent restarted, rolled to another image and its DaemonSet re-created, under
            // live flows, on two nodes.
            let (image, binary) = prepare_image(Profile::Release, NODE_BINARIES)?;
            let roll = format!("{image}-b");
            run(script("images.sh").arg(&binary).arg(&roll))?;
            up(2)?;
            deploy(&image)?;
            run(script("smoke.sh")
                .arg(root())
                .args(["restart", "rollout", "recreate"])
                .env("ROLL_IMAGE", &roll))
        }
        "image-equivalence" => {
            // The image's contents against the Dockerfile's runtime stage, built in a chroot.
            let (_, binary) = prepare_image(Profile::Release, SMOKE_BINARIES)?;
            run(script("image-equivalence.sh").arg(binary))
        }
        "netperf" => {
            let image = prepare(Profile::Release)?;
            up(2)?;
            deploy(&image)?;
            let out = root().join("bench/cluster_netperf.md");
            run(script("netperf.py")
                .arg(&image)
                .arg(root().join("manifests"))
                .arg(&out)
                .args(rest))
        }
        other => bail!("unknown cluster command {other:?}; {usage}"),
    }
}

/// The binaries of a cluster without the e2e suite's.
const SMOKE_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "agnhost",
    "pause",
];

/// Installs and builds everything a node needs, makes the images; returns the agent's image.
pub fn prepare(profile: Profile) -> Result<String> {
    prepare_with(profile, NODE_BINARIES)
}

fn prepare_with(profile: Profile, binaries: &[&str]) -> Result<String> {
    prepare_image(profile, binaries).map(|(image, _)| image)
}

/// The image and the binary in it.
fn prepare_image(profile: Profile, binaries: &[&str]) -> Result<(String, PathBuf)> {
    require_root("the cluster creates network namespaces and runs a kubelet")?;
    install_node_packages()?;
    kube::ensure_binaries(binaries)?;
    let binary = match profile {
        Profile::Release => build_release()?,
        Profile::Debug => build()?.palisade,
    };
    let image = image_ref(&binary)?;
    eprintln!("[cluster] images: pause, agnhost, {image}");
    run(script("images.sh").arg(&binary).arg(&image))?;
    Ok((image, binary))
}

pub fn up(nodes: usize) -> Result<()> {
    eprintln!("[cluster] {nodes} node(s)");
    run(script("up.sh").arg(nodes.to_string()))
}

pub fn down(purge: bool) -> Result<()> {
    let mut cmd = script("down.sh");
    if purge {
        cmd.arg("--purge");
    }
    run(&mut cmd)
}

pub fn deploy(image: &str) -> Result<()> {
    eprintln!("[cluster] kubectl apply -k manifests/ (image {image})");
    run(script("deploy.sh").arg(image).arg(root().join("manifests")))
}

pub fn undeploy() -> Result<()> {
    eprintln!("[cluster] kubectl delete -k manifests/, then the uninstall path");
    run(script("deploy.sh")
        .arg("--delete")
        .arg(root().join("manifests")))
}

fn print_access(nodes: usize) {
    let dir = state_dir();
    println!(
        "\ncluster up: {nodes} node(s), Palisade from manifests/\n  \
         kubectl --kubeconfig {}/kubeconfig get pods -A      (the API server, forwarded to the host's loopback)\n  \
         cargo xtask cluster exec [--node I] CMD...          (a command inside node I's namespaces)\n  \
         cargo xtask cluster down                            (stops it; --purge also drops its state)",
        dir.display()
    );
}

/// `localhost/palisade:<version>-<hash of the binary>`: a new binary is a new image, so a
/// rollout to it is a real image change.
fn image_ref(binary: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(binary)
        .output()
        .context("sha256sum")?;
    let sum = String::from_utf8_lossy(&out.stdout);
    let hash = sum.get(..12).context("sha256sum printed nothing")?;
    Ok(format!(
        "localhost/palisade:{}-{hash}",
        env!("CARGO_PKG_VERSION")
    ))
}

fn install_node_packages() -> Result<()> {
    let missing: Vec<&str> = NODE_PACKAGES
        .iter()
        .copied()
        .filter(|p| !toolchain::dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("[cluster] installing {}", missing.join(" "));
    // No package may start its daemon (containerd, etcd) in the host's namespaces at install
    // time: policy-rc.d refuses every service start while it exists.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        run(Command::new("chmod").arg("+x").arg(policy))?;
    }
    let result = run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        run(Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=600",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
            ])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if ours {
        fs::remove_file(policy).context("removing policy-rc.d")?;
    }
    result
}

/// The real-node smoke test of `cargo xtask test`: a one-node cluster of its own (named
/// `palkt`, so a developer's cluster is left alone), Palisade deployed from `manifests/` with
/// the debug build, `smoke.sh` (the quick-start through kube-proxy, the agent pod restarted
/// under live flows), and the cluster taken down whatever happened.
pub fn smoke() -> Result<()> {
    TEST_CLUSTER.store(true, Ordering::Relaxed);
    let image = prepare_with(Profile::Debug, SMOKE_BINARIES)?;
    down(true)?;
    let started = Instant::now();
    let result = up(1)
        .and_then(|()| deploy(&image))
        .and_then(|()| run(script("smoke.sh").arg(root())));
    let teardown = down(true);
    eprintln!(
        "[test] real node: {} after {:.0} s",
        if result.is_ok() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    result.and(teardown)
}

/// `cargo xtask e2e [--nodes N,...] [--skip-baseline]`: v1.20.2's NetworkPolicy specs, first
/// without Palisade (they must fail: the suite detects a missing dataplane), then with it.
pub fn e2e(args: &[String]) -> Result<()> {
    let mut node_counts = vec![1, 2];
    let mut baseline = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => {
                node_counts = it
                    .next()
                    .context("--nodes takes a list, e.g. 1,2")?
                    .split(',')
                    .map(|n| n.parse().context("--nodes takes numbers"))
                    .collect::<Result<_>>()?;
            }
            "--skip-baseline" => baseline = false,
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask e2e [--nodes 1,2] [--skip-baseline]"
            ),
        }
    }
    let image = prepare(Profile::Release)?;
    let results = shared_results_dir();
    for nodes in node_counts {
        down(true)?;
        up(nodes)?;
        if baseline {
            undeploy()?;
            suite(nodes, "baseline", &results)?;
        }
        deploy(&image)?;
        suite(nodes, "palisade", &results)?;
    }
    down(false)
}

/// Where `cargo xtask e2e` commits its summaries (the full logs stay in the state directory).
fn shared_results_dir() -> PathBuf {
    root().join("conformance/e2e")
}

fn suite(nodes: usize, label: &str, results: &Path) -> Result<()> {
    let started = Instant::now();
    eprintln!("[e2e] {nodes} node(s), {label}");
    let dir = state_dir().join(format!("e2e-{nodes}-node-{label}"));
    fs::create_dir_all(&dir)?;
    fs::create_dir_all(results)?;
    // A failing suite is a result, not an error: the summary says what failed.
    let status = script("e2e.sh")
        .arg(nodes.to_string())
        .arg(&dir)
        .status()
        .context("running e2e.sh")?;
    let summary = results.join(format!("{nodes}-node-{label}.txt"));
    fs::copy(dir.join("summary.txt"), &summary)
        .with_context(|| format!("e2e.sh wrote no summary in {}", dir.display()))?;
    eprintln!(
        "[e2e] {nodes} node(s), {label}: {status} after {:.0} s; {} (logs in {})",
        started.elapsed().as_secs_f64(),
        summary.display(),
        dir.display()
    );
    Ok(())
}
