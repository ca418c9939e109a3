//! The kernel's run-time statistics of the programs attached in a node, beside netperf: the
//! time each Palisade program spends per packet under real traffic.
//!
//! `BPF_ENABLE_STATS` (aya's [`enable_stats`]) turns the accounting on for as long as its file
//! descriptor is held and off again when it is closed, so nothing global outlives a
//! [`RunTimeStats`]. The programs are found where they run: the TCX programs attached to the
//! given interfaces in the node's namespace, one entry per program (both pods' veths carry the
//! same two programs), named as the kernel keeps them (16 bytes with the NUL, so
//! `palisade_from_pod` is `palisade_from_p`).

use std::{collections::BTreeMap, os::fd::OwnedFd, sync::Arc};

use anyhow::{Context as _, Result};
use aya::{
    programs::{SchedClassifier, TcAttachType},
    sys::{Stats, enable_stats},
};
use palisade_common::{PROG_FROM_POD, PROG_TO_POD};
use palisade_lab::netns::NetNs;

/// The programs whose cost is read.
pub const PROGRAMS: [&str; 2] = [PROG_FROM_POD, PROG_TO_POD];
/// Longest program name the kernel keeps (`BPF_OBJ_NAME_LEN` less the NUL).
const KERNEL_NAME_LEN: usize = 15;

/// Run-time statistics on while this lives.
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    pub fn enable() -> Result<Self> {
        let fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (run time)")?;
        Ok(Self { _fd: fd })
    }
}

/// A program's accumulated run time and runs, since it was loaded (while stats were on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl Counts {
    /// What accumulated between `before` and `self`.
    pub fn since(self, before: Self) -> Self {
        Self {
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
        }
    }
}

/// One TCX program attached to one of the interfaces.
struct Attached {
    id: u32,
    name: String,
    counts: Counts,
}

/// Every TCX program attached (ingress or egress) to `ifnames` in `netns`.
fn attached(netns: &Arc<NetNs>, ifnames: &[String]) -> Result<Vec<Attached>> {
    let ifnames = ifnames.to_vec();
    netns
        .run(move || -> Result<Vec<Attached>> {
            let mut out = Vec::new();
            for ifname in &ifnames {
                for kind in [TcAttachType::Ingress, TcAttachType::Egress] {
                    let (_, programs) = SchedClassifier::query_tcx(ifname, kind)
                        .with_context(|| format!("querying the TCX programs of {ifname}"))?;
                    out.extend(programs.iter().map(|p| Attached {
                        id: p.id(),
                        name: p.name_as_str().unwrap_or_default().to_owned(),
                        counts: Counts {
                            run_time_ns: u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX),
                            run_cnt: p.run_count(),
                        },
                    }));
                }
            }
            Ok(out)
        })
        .context("entering the node's namespace")?
}

/// The names of the TCX programs on `ifnames` (empty where nothing is attached).
pub fn attached_names(netns: &Arc<NetNs>, ifnames: &[String]) -> Result<Vec<String>> {
    Ok(attached(netns, ifnames)?
        .into_iter()
        .map(|a| a.name)
        .collect())
}

/// The counts of each of [`PROGRAMS`] attached to `ifnames`, each program once.
pub fn snapshot(netns: &Arc<NetNs>, ifnames: &[String]) -> Result<BTreeMap<&'static str, Counts>> {
    let mut seen = Vec::new();
    let mut out = BTreeMap::new();
    for program in attached(netns, ifnames)? {
        let Some(&name) = PROGRAMS
            .iter()
            .find(|p| p[..p.len().min(KERNEL_NAME_LEN)] == program.name)
        else {
            continue;
        };
        if seen.contains(&program.id) {
            continue;
        }
        seen.push(program.id);
        let total: &mut Counts = out.entry(name).or_default();
        total.run_time_ns += program.counts.run_time_ns;
        total.run_cnt += program.counts.run_cnt;
    }
    Ok(out)
}
