//! The only code that touches eBPF programs and maps: loading the embedded object, attaching the
//! two TC programs to a pod's host-side veth, writing a [`NodeState`] into the maps, and running
//! a loaded program on a crafted frame (`test_run.rs`).

mod local_addrs;
mod sync;
mod test_run;

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfError,
    maps::{LpmTrie, MapError, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use ipnet::IpNet;
use palisade_common::{
    ALL_MAPS, Addr, DROP_REASONS, MAP_SERVICES, MAP_STATS, PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK,
    STAT_SLOTS,
};

pub use self::{
    sync::SyncReport,
    test_run::{LOOPBACK_IFINDEX, TestRunOutcome},
};
use crate::{cluster::ObjectKey, policy::NodeState};

/// The programs, built by `build.rs` from the `palisade-ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this binary was built without its eBPF programs (AYA_BUILD_SKIP was set); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error(
        "loading the eBPF object failed (needs root or CAP_BPF+CAP_NET_ADMIN, and a kernel with BTF): {0}"
    )]
    Load(#[source] EbpfError),
    #[error("the eBPF object has no {kind} named {name}; agent and programs are out of step")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("{what} program {name}: {source}")]
    Program {
        what: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching to interface {ifname}: {source}")]
    Attach {
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {map}: {op} failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
}

/// Links of one interface, detached when the pod (or the uplink) goes.
struct Attachment {
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

/// Loaded programs and maps of one node.
pub struct Dataplane {
    ebpf: Ebpf,
    attached: BTreeMap<String, Attachment>,
    written: sync::Written,
    local_addrs: local_addrs::LocalAddrs,
}

impl Dataplane {
    /// Loads the embedded programs and checks that every map `palisade_common` names exists.
    pub fn load() -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(DataplaneError::Load)?;
        for name in ALL_MAPS {
            if ebpf.map(name).is_none() {
                return Err(DataplaneError::Missing { kind: "map", name });
            }
        }
        for name in [PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing {
                    kind: "program",
                    name,
                })?
                .try_into()
                .map_err(|source| DataplaneError::Program {
                    what: "converting",
                    name,
                    source,
                })?;
            program.load().map_err(|source| DataplaneError::Program {
                what: "loading",
                name,
                source,
            })?;
        }
        Ok(Self {
            ebpf,
            attached: BTreeMap::new(),
            written: sync::Written::default(),
            local_addrs: local_addrs::LocalAddrs::default(),
        })
    }

    /// Attaches both pod programs to `ifname` (TCX links; resolved in the calling thread's
    /// network namespace). Call only after the endpoint's entry is in the maps ([`Self::sync`]),
    /// so the pod is never judged without its policy.
    pub fn attach(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        self.attach_programs(
            ifname,
            &[
                (PROG_FROM_POD, TcAttachType::Ingress),
                (PROG_TO_POD, TcAttachType::Egress),
            ],
        )
    }

    /// Attaches the uplink program to the egress of one of the node's other interfaces (a link
    /// to another node or to the outside), where Service flows of local pods translated towards
    /// another node are judged. It needs no endpoint entry.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        self.attach_programs(ifname, &[(PROG_UPLINK, TcAttachType::Egress)])
    }

    fn attach_programs(
        &mut self,
        ifname: &str,
        programs: &[(&'static str, TcAttachType)],
    ) -> Result<(), DataplaneError> {
        if self.attached.contains_key(ifname) {
            return Ok(());
        }
        let mut links = Vec::new();
        for &(name, kind) in programs {
            let program = classifier(&mut self.ebpf, name)?;
            match program.attach(ifname, kind) {
                Ok(link) => links.push((name, link)),
                Err(source) => {
                    // Leave nothing half attached.
                    self.attached
                        .insert(ifname.to_string(), Attachment { links });
                    self.detach(ifname);
                    return Err(DataplaneError::Attach {
                        ifname: ifname.to_string(),
                        source,
                    });
                }
            }
        }
        self.attached
            .insert(ifname.to_string(), Attachment { links });
        Ok(())
    }

    /// Detaches from an interface (a no-op if the interface is already gone with its pod).
    pub fn detach(&mut self, ifname: &str) {
        let Some(attachment) = self.attached.remove(ifname) else {
            return;
        };
        for (name, link) in attachment.links {
            if let Ok(program) = classifier(&mut self.ebpf, name)
                && let Err(e) = program.detach(link)
            {
                tracing::debug!(ifname, program = name, error = %e, "detach");
            }
        }
    }

    /// Replaces the cluster's Service address ranges: egress of isolated pods towards them is
    /// judged after kube-proxy's translation (see `palisade_common::MAP_ORIGINAL_DST`).
    pub fn set_service_ranges(&mut self, ranges: &[IpNet]) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_SERVICES)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: MAP_SERVICES,
            })?;
        let mut trie: LpmTrie<_, Addr, u32> =
            LpmTrie::try_from(map).map_err(|source| DataplaneError::Map {
                map: MAP_SERVICES,
                op: "open",
                source,
            })?;
        let wanted: Vec<Key<Addr>> = ranges
            .iter()
            .map(|net| {
                let prefix = crate::policy::compile::Prefix::from_net(net);
                Key::new(prefix.len, prefix.addr)
            })
            .collect();
        // Add before removing, so no range is ever missing in between.
        for key in &wanted {
            trie.insert(key, 1, 0)
                .map_err(|source| DataplaneError::Map {
                    map: MAP_SERVICES,
                    op: "insert",
                    source,
                })?;
        }
        let stale: Vec<Key<Addr>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !wanted
                    .iter()
                    .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data())
            })
            .collect();
        for key in stale {
            let _ = trie.remove(&key);
        }
        Ok(())
    }

    /// Writes `state` for the endpoints whose host-side interface index is known, removing what
    /// the previous sync wrote and `state` no longer has. The endpoints' own addresses (source
    /// validation) go in before any endpoint is switched on and out after it is switched off.
    pub fn sync(
        &mut self,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<SyncReport, DataplaneError> {
        let added = self.local_addrs.add(&mut self.ebpf, state, ifindex)?;
        let mut report = self.written.apply(&mut self.ebpf, state, ifindex)?;
        let removed = self
            .local_addrs
            .remove_stale(&mut self.ebpf, state, ifindex)?;
        report.writes += added;
        report.deletes += removed;
        Ok(report)
    }

    /// Every slot of [`MAP_STATS`] summed over CPUs, indexed by `Stat` and
    /// `DropReason::stat_index`.
    pub fn counters(&self) -> Result<[u64; STAT_SLOTS as usize], DataplaneError> {
        let map = self.ebpf.map(MAP_STATS).ok_or(DataplaneError::Missing {
            kind: "map",
            name: MAP_STATS,
        })?;
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| DataplaneError::Map {
                map: MAP_STATS,
                op: "open",
                source,
            })?;
        let mut out = [0u64; STAT_SLOTS as usize];
        for (index, slot) in (0..STAT_SLOTS).zip(out.iter_mut()) {
            let values = stats.get(&index, 0).map_err(|source| DataplaneError::Map {
                map: MAP_STATS,
                op: "read",
                source,
            })?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }

    /// Drop counters summed over CPUs, by reason name.
    pub fn drops(&self) -> Result<Vec<(&'static str, u64)>, DataplaneError> {
        let counters = self.counters()?;
        Ok(DROP_REASONS
            .iter()
            .map(|r| (r.name(), counters[r.stat_index() as usize]))
            .collect())
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            what: "converting",
            name,
            source,
        })
}
