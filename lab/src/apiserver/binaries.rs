//! Where the Kubernetes binaries the harness runs are found: kube-apiserver,
//! kube-controller-manager and kubectl built by `cargo xtask kube`, etcd from Debian.

use std::{env, path::PathBuf};

use super::{ApiServerError, BIN_ENV, Result};

/// The folder holding kube-apiserver, kube-controller-manager and kubectl:
/// `$PALISADE_KUBE_BIN`, else `~/.cache/palisade-kube`.
pub fn bin_dir() -> PathBuf {
    env::var_os(BIN_ENV).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/palisade-kube")
    })
}

/// kubectl v1.20.2 from [`bin_dir`] if built there, else the first on PATH.
pub fn kubectl_path() -> Result<PathBuf> {
    let built = bin_dir().join("kubectl");
    if built.is_file() {
        return Ok(built);
    }
    on_path("kubectl").ok_or_else(|| ApiServerError::KubectlMissing { dir: bin_dir() })
}

fn on_path(name: &str) -> Option<PathBuf> {
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[derive(Clone)]
pub(super) struct Binaries {
    pub(super) apiserver: PathBuf,
    pub(super) kcm: PathBuf,
    pub(super) etcd: PathBuf,
}

impl Binaries {
    pub(super) fn find_in(dir: PathBuf) -> Result<Binaries> {
        let apiserver = dir.join("kube-apiserver");
        let kcm = dir.join("kube-controller-manager");
        let missing: Vec<String> = [&apiserver, &kcm]
            .into_iter()
            .filter(|p| !p.is_file())
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        if !missing.is_empty() {
            return Err(ApiServerError::BinariesMissing {
                dir,
                missing: missing.join(" and "),
            });
        }
        let etcd = on_path("etcd")
            .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
            .ok_or(ApiServerError::EtcdMissing)?;
        Ok(Binaries {
            apiserver,
            kcm,
            etcd,
        })
    }
}
