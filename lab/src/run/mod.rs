//! `palisade-lab run`: every case, on the real kernel ([`kernel`]) or judged by the reference
//! evaluator alone ([`evaluator`]), with a count of what passed.

mod evaluator;
mod kernel;
mod options;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use palisade::k8s::manifest;

pub use self::options::{RunOptions, narrate};
use crate::{
    case::{Case, load_cases},
    control::percentiles,
};

/// Runs every case; true when all tables of all cases matched.
pub async fn run_cases(dirs: &[PathBuf], options: RunOptions) -> Result<bool> {
    let cases = load_cases(dirs)?;
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut delays = Vec::new();
    for case in &cases {
        println!("=== case {} ({})", case.name, case.dir.display());
        if !case.description.is_empty() {
            println!("    {}", case.description.trim());
        }
        if options.apiserver
            && let Some(why) = unsupported_by_apiserver(case)?
        {
            skipped += 1;
            println!("--- SKIP {} in --apiserver mode: {why}\n", case.name);
            continue;
        }
        let result = if options.model {
            evaluator::run_case(case, &options)
        } else {
            kernel::run_case(case, &options, &mut delays).await
        };
        match result {
            Ok(true) => {
                passed += 1;
                println!("--- PASS {}\n", case.name);
            }
            Ok(false) => {
                failed += 1;
                println!("--- FAIL {}\n", case.name);
            }
            Err(e) => {
                failed += 1;
                println!("--- ERROR {}: {e:#}\n", case.name);
            }
        }
    }
    if skipped > 0 {
        println!("lab: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("lab: {passed} passed, {failed} failed");
    }
    if let Some((p50, p99)) = percentiles(&delays) {
        println!(
            "propagation delay, API write to map write ({} samples): p50 {:.1} ms, p99 {:.1} ms",
            delays.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    Ok(failed == 0)
}

/// Why a case cannot run against the v1.20 API server (with the standard ClusterNetworkPolicy
/// CRD), if it cannot: a field that server does not have would be dropped silently and the
/// case would test something else.
fn unsupported_by_apiserver(case: &Case) -> Result<Option<String>> {
    let files = case
        .cluster
        .iter()
        .chain(case.steps.iter().flat_map(|s| s.apply.iter()));
    for file in files {
        for object in manifest::load_file(file)? {
            if let manifest::Object::ClusterNetworkPolicy(policy) = &object
                && policy
                    .spec
                    .egress
                    .iter()
                    .flat_map(|r| &r.to)
                    .any(|p| p.nodes.is_some())
            {
                return Ok(Some(format!(
                    "{} has a `nodes` peer, which is in the experimental channel: the standard \
                     CRD the lab installs (upstream's, as users install it) prunes it",
                    file.display()
                )));
            }
            if let manifest::Object::NetworkPolicy(policy) = object {
                let rules = policy.spec.iter().flat_map(|spec| {
                    let ingress = spec
                        .ingress
                        .iter()
                        .flatten()
                        .flat_map(|r| r.ports.iter().flatten());
                    let egress = spec
                        .egress
                        .iter()
                        .flatten()
                        .flat_map(|r| r.ports.iter().flatten());
                    ingress.chain(egress).collect::<Vec<_>>()
                });
                if rules.into_iter().any(|port| port.end_port.is_some()) {
                    return Ok(Some(format!(
                        "{} uses endPort, which the v1.20 API server does not have",
                        file.display()
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// The `palisade` binary beside this one (both are built into the same target directory).
pub fn agent_binary() -> Result<PathBuf> {
    let this = std::env::current_exe().context("finding this binary, to run agents")?;
    let beside = this.with_file_name("palisade");
    if !beside.is_file() {
        bail!(
            "no `palisade` binary beside {}: build it (`cargo build -p palisade --bin palisade`) \
             or name one with --agent-binary",
            this.display()
        );
    }
    Ok(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path)
    }

    /// Every ClusterNetworkPolicy case, the shared ones and ours, passes on the reference
    /// evaluator (`cargo xtask test` runs them on the kernel too).
    #[test]
    fn every_cluster_network_policy_case_passes_with_the_model() {
        let dirs = [repo("../shared/conformance/cnp"), repo("tests/cnp-cases")];
        let cases = load_cases(&dirs).unwrap_or_else(|e| panic!("{e}"));
        assert!(cases.len() >= 18, "only {} cases", cases.len());
        for case in &cases {
            let passed = evaluator::run_case(case, &RunOptions::default());
            assert!(matches!(passed, Ok(true)), "{}: {passed:?}", case.name);
        }
    }
}
