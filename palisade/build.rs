//! Builds the eBPF programs (crate `palisade-ebpf`) for the BPF target and leaves the object in
//! `$OUT_DIR/palisade`, where `dataplane::loader` embeds it.
//!
//! The build needs Debian's rustc with the prebuilt BPF core and `bpf-linker` in PATH; `cargo xtask`
//! arranges both (see `xtask/src/toolchain.rs`). Where rustup is in PATH (cargo puts
//! `$CARGO_HOME/bin` there for subcommands such as clippy), aya-build runs `rustup run
//! <toolchain>`, so `cargo xtask setup` links Debian's toolchain into rustup as
//! [`TOOLCHAIN`]. Tools that only analyse the agent (rustfmt,
//! rust-analyzer) may set `AYA_BUILD_SKIP=1`: an empty object is then embedded and the agent
//! refuses to load it at run time with a clear error.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// Debian's rustc, linked into rustup by `cargo xtask setup` (`rustup toolchain link`).
const TOOLCHAIN: &str = "palisade-bpf";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join("palisade");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        if !object.exists() {
            fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let root = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let ebpf_dir = root.join("..").join("ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    if let Ok(out) = std::process::Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        && !out.status.success()
    {
        return Err(anyhow!(
            "rustup has no toolchain {TOOLCHAIN}: run `cargo xtask setup` (it links Debian's rustc, which can build for BPF)"
        ));
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "palisade-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
}
