//! `cargo xtask bench [--quick]`: the policy compiler's figures at a few cluster sizes, from the
//! `compile_bench` example built in release: full compile, pod adds and deletes applied in
//! place (median and p99), map entries and peak RSS. `--quick` runs one small size (what
//! `cargo xtask test` runs).

use anyhow::{Result, bail};

use crate::{cargo, ensure_setup, run};

/// One cluster size: pods, namespaces, policies, nodes, pod changes timed.
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
/// one; about 20 seconds in all on two cores (the example is built first).
const FULL: &[Scale] = &[
    Scale {
        pods: 1_000,
        namespaces: 100,
        policies: 100,
        nodes: 100,
        changes: 200,
    },
    Scale {
        pods: 10_000,
        namespaces: 100,
        policies: 1_000,
        nodes: 100,
        changes: 200,
    },
    Scale {
        pods: 50_000,
        namespaces: 500,
        policies: 10_000,
        nodes: 500,
        changes: 200,
    },
];

pub fn bench(args: &[String]) -> Result<()> {
    let scales = match args {
        [] => FULL,
        [quick] if quick == "--quick" => QUICK,
        _ => bail!("usage: cargo xtask bench [--quick]"),
    };
    ensure_setup()?;
    eprintln!("[bench] compile_bench example, release profile");
    let example = [
        "--release",
        "-p",
        "palisade-agent",
        "--example",
        "compile_bench",
    ];
    // The compiler alone: no eBPF object needed, so none is built for the release profile.
    run(cargo(&["build"]).args(example).env("AYA_BUILD_SKIP", "1"))?;
    for scale in scales {
        let numbers = [
            scale.pods,
            scale.namespaces,
            scale.policies,
            scale.nodes,
            scale.changes,
        ]
        .map(|n| n.to_string());
        // `cargo run` finds the binary wherever the target directory is; nothing is rebuilt.
        run(cargo(&["run", "--quiet"])
            .env("AYA_BUILD_SKIP", "1")
            .args(example)
            .arg("--")
            .args(numbers))?;
    }
    Ok(())
}
