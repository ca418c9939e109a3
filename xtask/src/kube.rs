//! `cargo xtask kube`: a real Kubernetes v1.20.2 API server for the agent's tests.
//!
//! No registry reachable from here ships kube-apiserver, so `kube/build-kube.sh` builds it (with
//! kube-controller-manager and kubectl) from Debian's source package of `kubernetes`; see
//! `../shared/notes/KUBE-APISERVER.md`. The binaries are cached outside the repository, where
//! `palisade::lab::apiserver` looks for them; etcd is Debian's `etcd-server`.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{root, run, toolchain};

/// What the tests start or run; the script builds exactly those missing.
const BINARIES: &[&str] = &["kube-apiserver", "kube-controller-manager", "kubectl"];

/// Same rule as `palisade::lab::apiserver::bin_dir`: `$PALISADE_KUBE_BIN`, else
/// `~/.cache/palisade-kube`.
pub fn bin_dir() -> PathBuf {
    env::var_os("PALISADE_KUBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/palisade-kube")
        })
}

fn missing_binaries<'a>(wanted: &[&'a str]) -> Vec<&'a str> {
    let dir = bin_dir();
    wanted
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect()
}

fn etcd_present() -> bool {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file())
}

/// Builds whatever is missing (about 10 minutes for the servers on 2 cores) or says "cached".
pub fn ensure() -> Result<()> {
    ensure_binaries(BINARIES)
}

/// Builds those of `wanted` that are missing (the real node's: kubelet, kube-proxy,
/// kube-scheduler, e2e.test, ginkgo, agnhost, pause; see `kube/build-kube.sh`).
pub fn ensure_binaries(wanted: &[&str]) -> Result<()> {
    let dir = bin_dir();
    let missing = missing_binaries(wanted);
    if missing.is_empty() {
        eprintln!("[kube] cached: {}", dir.display());
    } else {
        if !toolchain::is_root() {
            bail!(
                "{} missing from {}; run `cargo xtask kube` as root (it apt-installs Go and etcd)",
                missing.join(", "),
                dir.display()
            );
        }
        eprintln!(
            "[kube] building {} v1.20.2 into {} (about 10 minutes for the servers; cached afterwards)",
            missing.join(", "),
            dir.display()
        );
        run(Command::new("bash")
            .arg(root().join("xtask/kube/build-kube.sh"))
            .arg(&dir)
            .args(&missing))
        .context("building Kubernetes from Debian's source package")?;
    }
    if !etcd_present() {
        if !toolchain::is_root() {
            bail!("etcd is missing; run `cargo xtask kube` as root (apt-get install etcd-server)");
        }
        eprintln!("[kube] installing etcd-server");
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "etcd-server",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}
