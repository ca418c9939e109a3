//! `cargo xtask setup`: everything the build and the tests need, installed idempotently.
//!
//! The eBPF programs build with Debian's rustc (it ships a prebuilt `core` for
//! `bpfel-unknown-none`) and bpf-linker built against the same LLVM major; see
//! `../shared/notes/TOOLCHAIN.md`. Every cargo invocation of the workspace therefore runs with
//! [`build_env`]: Debian's cargo first in PATH and rustup's proxies out of it.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Debian packages: the Rust toolchain with the BPF core, LLVM for bpf-linker, rustfmt and
/// clippy of the same release, nftables (the lab translates Services with it, as kube-proxy's
/// nftables mode does), iproute2 for people who want to look around the lab, and what
/// `cargo xtask bench` measures against: iptables and ipset (kube-router's shape), util-linux's
/// nsenter and taskset. netperf comes from non-free: see [`NON_FREE`].
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "rust-web-llvm",
    "llvm-22-dev",
    "rustfmt-web",
    "rust-web-clippy",
    "nftables",
    "iproute2",
    "iptables",
    "ipset",
    "util-linux",
];

/// Packages of Debian's non-free component, installed through a private apt configuration
/// ([`private_apt`]) so the system's sources stay as they are.
const NON_FREE: &[&str] = &["netperf"];

/// The system's deb822 sources file, from which the private configuration is derived.
const SYSTEM_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian's toolchain as rustup knows it (the agent's build.rs asks rustup for it by name).
const RUSTUP_TOOLCHAIN: &str = "palisade-bpf";

/// Where bpf-linker is installed (outside the repository, so a fresh clone reuses it).
pub fn tools_dir() -> PathBuf {
    env::var_os("PALISADE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/palisade-tools")
        })
}

/// PATH and variables for building the workspace with Debian's toolchain.
pub fn build_env(cmd: &mut Command) -> &mut Command {
    let path = format!(
        "{}:/usr/bin:/bin:/usr/sbin:/sbin",
        tools_dir().join("bin").display()
    );
    cmd.env("PATH", path)
        // Exactly the crate that needs a nightly feature; `=1` would make aya-build add
        // `-Z build-std`, which this toolchain cannot do.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO")
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .chain(NON_FREE)
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect()
}

/// Whether Debian's package `name` is installed.
pub fn dpkg_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn bpf_linker_ok() -> bool {
    Command::new(tools_dir().join("bin/bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

/// Whether rustup is absent (nothing to link) or already knows Debian's toolchain.
fn rustup_ok() -> bool {
    match Command::new("rustup")
        .args(["run", RUSTUP_TOOLCHAIN, "rustc", "--version"])
        .output()
    {
        Err(_) => true,
        Ok(out) => out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1.96"),
    }
}

/// True when nothing needs installing (cheap: a few dpkg queries).
pub fn ready() -> bool {
    missing_packages().is_empty() && bpf_linker_ok() && rustup_ok()
}

pub fn setup() -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("Palisade needs Linux (eBPF TC programs, network namespaces)");
    }
    let missing = missing_packages();
    let (non_free, missing): (Vec<&str>, Vec<&str>) =
        missing.into_iter().partition(|p| NON_FREE.contains(p));
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {missing:?}; run `cargo xtask setup` as root (apt-get install)"
            );
        }
        eprintln!("[setup] installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !non_free.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {non_free:?} (non-free); run `cargo xtask setup` as root"
            );
        }
        eprintln!(
            "[setup] installing from Debian's non-free component: {}",
            non_free.join(" ")
        );
        let options = private_apt()?;
        run(Command::new("apt-get")
            .args(&options)
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(&options)
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&non_free)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !bpf_linker_ok() {
        let root = tools_dir();
        eprintln!(
            "[setup] building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 into {} (about 2-3 minutes)",
            root.display()
        );
        run(Command::new("/usr/bin/cargo")
            .args(["install", "--locked", "--root"])
            .arg(&root)
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", "/usr/lib/llvm-22/bin:/usr/bin:/bin")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC"))
        .context("installing bpf-linker")?;
    }
    if !rustup_ok() {
        eprintln!("[setup] linking Debian's rustc into rustup as {RUSTUP_TOOLCHAIN}");
        run(Command::new("rustup").args(["toolchain", "link", RUSTUP_TOOLCHAIN, "/usr"]))?;
    }
    check_kernel()?;
    Ok(())
}

/// An apt configuration of our own (under [`tools_dir`]) whose sources are the system's own
/// entries with `non-free` added to their components, and whose package lists are private: the
/// system's files are never edited (the technique of `xtask/kube/build-kube.sh`). Returns the
/// `-o` options that select it.
fn private_apt() -> Result<Vec<String>> {
    let dir = tools_dir().join("apt");
    let parts = dir.join("parts");
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))
        .and_then(|()| std::fs::create_dir_all(&parts))
        .with_context(|| format!("creating {}", dir.display()))?;
    let system = std::fs::read_to_string(SYSTEM_SOURCES).with_context(|| {
        format!("reading {SYSTEM_SOURCES} (a Debian 12 system's sources, in deb822 form)")
    })?;
    let sources: String = system
        .lines()
        .map(|line| match line.strip_prefix("Components:") {
            Some(components) if !components.split_whitespace().any(|c| c == "non-free") => {
                format!("Components:{components} non-free\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let file = parts.join("non-free.sources");
    std::fs::write(&file, sources).with_context(|| format!("writing {}", file.display()))?;
    Ok(vec![
        "-o".into(),
        "Dir::Etc::SourceList=/dev/null".into(),
        "-o".into(),
        format!("Dir::Etc::SourceParts={}", parts.display()),
        "-o".into(),
        format!("Dir::State::Lists={}", lists.display()),
    ])
}

/// The kernel features the dataplane relies on; a clear message instead of a late failure.
fn check_kernel() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux); Palisade needs Linux >= 6.6 built with CONFIG_DEBUG_INFO_BTF"
        );
    }
    Ok(())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
