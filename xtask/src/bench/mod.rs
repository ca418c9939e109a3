//! `cargo xtask bench [--quick]`: Palisade measured side by side with the floor (no programs),
//! iptables + ipset and nftables, in one run, on the lab's real kernel path; then
//! `BENCHMARKS.md` and plots under `bench/` (`bench/quick/` for `--quick`, which CI and
//! `cargo xtask test` run, so the committed full figures are never overwritten by it).
//!
//! Two release-built programs of `palisade-bench` do the measuring: `compile_bench` (the policy
//! compiler alone: compile time, pod changes in place, peak RSS) and `dataplane_bench` (netperf
//! in the lab, BPF_PROG_TEST_RUN, the control plane against the kernel, map memory; raw figures
//! as JSON). This module renders them ([`report`], [`plot`]).

mod compare;
mod format;
mod plot;
mod report;
mod stats;
mod targets;

use std::{
    fs,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, ensure_setup, require_root, root, run};

/// One cluster size for the compiler alone: pods, namespaces, policies, nodes, pod changes.
struct Scale {
    pods: usize,
    namespaces: usize,
    policies: usize,
    nodes: usize,
    changes: usize,
}

const QUICK: &[Scale] = &[Scale {
    pods: 1_000,
    namespaces: 10,
    policies: 100,
    nodes: 10,
    changes: 100,
}];

/// The size (10,000 pods, 100 namespaces, 1,000 policies) between a small and a large
/// one; every combination of 1k/10k/50k pods and 100/1k/10k policies is measured against the
/// kernel by `dataplane_bench` (the control plane section).
const FULL: &[Scale] = &[
    scale(1_000, 100, 100),
    scale(10_000, 100, 1_000),
    scale(50_000, 500, 10_000),
];

const fn scale(pods: usize, namespaces: usize, policies: usize) -> Scale {
    Scale {
        pods,
        namespaces,
        policies,
        nodes: namespaces,
        changes: 200,
    }
}

pub fn bench(args: &[String]) -> Result<()> {
    let quick = match args {
        [] => false,
        [flag] if flag == "--quick" => true,
        [flag] if flag == "--render" => return render(&root().join("bench"), false, None),
        _ => bail!("usage: cargo xtask bench [--quick | --render]"),
    };
    let started = Instant::now();
    ensure_setup()?;
    require_root(
        "the benchmark creates network namespaces, loads eBPF programs and netfilter rules",
    )?;
    let out = if quick {
        root().join("bench/quick")
    } else {
        root().join("bench")
    };
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    eprintln!("[bench] building compile_bench and dataplane_bench (release profile)");
    let programs = [
        "--release",
        "-p",
        "palisade-bench",
        "--bin",
        "compile_bench",
        "--bin",
        "dataplane_bench",
    ];
    run(cargo(&["build"]).args(programs))?;

    let scales = if quick { QUICK } else { FULL };
    let mut compile = Vec::new();
    for (i, s) in scales.iter().enumerate() {
        eprintln!(
            "[bench] compiler alone {}/{}: {} pods, {} policies",
            i + 1,
            scales.len(),
            s.pods,
            s.policies
        );
        let numbers = [s.pods, s.namespaces, s.policies, s.nodes, s.changes].map(|n| n.to_string());
        // `cargo run` finds the binary wherever the target directory is; nothing is rebuilt.
        let output = cargo(&["run", "--quiet", "--release", "-p", "palisade-bench"])
            .args(["--bin", "compile_bench", "--"])
            .args(numbers)
            .stderr(Stdio::inherit())
            .output()
            .context("running compile_bench")?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        eprint!("{text}");
        if !output.status.success() {
            bail!("compile_bench failed ({})", output.status);
        }
        compile.push(text);
    }

    fs::write(out.join("compile_bench.txt"), compile.concat())
        .context("writing compile_bench.txt")?;
    let figures = out.join("figures.json");
    eprintln!("[bench] dataplane: netperf in the lab, BPF_PROG_TEST_RUN, maps");
    let mut dataplane = cargo(&["run", "--quiet", "--release", "-p", "palisade-bench"]);
    dataplane.args(["--bin", "dataplane_bench", "--"]);
    if quick {
        dataplane.arg("--quick");
    }
    run(dataplane.arg("--out").arg(&figures))?;

    render(&out, quick, Some(started.elapsed()))
}

/// Renders BENCHMARKS.md and the plots from the figures in `out` (`figures.json`,
/// `compile_bench.txt`). `--render` alone re-renders the last full run (after editing
/// `bench/ANALYSIS.md`, say), with the run time recorded then.
fn render(out: &Path, quick: bool, runtime: Option<Duration>) -> Result<()> {
    let figures = out.join("figures.json");
    let text = fs::read_to_string(&figures).with_context(|| {
        format!(
            "reading {}; run `cargo xtask bench` first",
            figures.display()
        )
    })?;
    let figures: serde_json::Value = serde_json::from_str(&text)?;
    let compile = fs::read_to_string(out.join("compile_bench.txt")).unwrap_or_default();
    let runtime_file = out.join("runtime_seconds.txt");
    let runtime = match runtime {
        Some(runtime) => {
            fs::write(&runtime_file, format!("{:.0}\n", runtime.as_secs_f64()))
                .with_context(|| format!("writing {}", runtime_file.display()))?;
            runtime
        }
        None => Duration::from_secs(
            fs::read_to_string(&runtime_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
        ),
    };
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    // The previous run's figures, when kept (a before that cannot be read is left out, said).
    let before_file = root().join("bench").join(compare::BEFORE_FILE);
    let before: Option<serde_json::Value> = match fs::read_to_string(&before_file) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!(
                    "[bench] warning: {}: {e}; no before-and-after",
                    before_file.display()
                );
                None
            }
        },
        Err(_) => None,
    };
    let plots = plot::all(&figures, out)?;
    let markdown = report::render(&report::Inputs {
        figures: &figures,
        compile: &[compile],
        plots: &plots,
        plot_prefix: if quick { "" } else { "bench/" },
        command,
        runtime,
        analysis: fs::read_to_string(root().join("bench/ANALYSIS.md")).ok(),
        before: before.as_ref(),
    });
    let md = if quick {
        out.join("BENCHMARKS.md")
    } else {
        root().join("BENCHMARKS.md")
    };
    fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
    eprintln!(
        "[bench] wrote {} and {} plots (run time {:.0} s)",
        md.display(),
        plots.len(),
        runtime.as_secs_f64()
    );
    Ok(())
}
