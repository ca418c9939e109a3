//! The only code that touches eBPF programs and maps: loading the embedded object, attaching the
//! two TC programs to a pod's host-side veth, writing a [`NodeState`] into the maps, and (with
//! the `test-run` feature, for the integration tests and the benchmark) running a loaded
//! program on a crafted frame (`test_run.rs`).

mod conntrack;
mod established;
mod events;
mod local_addrs;
pub mod pin;
mod sync;
#[cfg(feature = "test-run")]
mod test_run;
pub mod uninstall;

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{LpmTrie, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLinkId,
    },
};
use ipnet::IpNet;
use palisade_common::{
    ALL_MAPS, Addr, DROP_REASONS, GLOBAL_SERVICE_MARK, MAP_SERVICES, MAP_STATS, PROG_FROM_POD,
    PROG_FROM_UPLINK, PROG_TO_POD, PROG_UPLINK, SERVICE_MARK, STAT_SLOTS,
};

#[cfg(feature = "test-run")]
pub use self::test_run::{LOOPBACK_IFINDEX, TestRunOutcome};
pub use self::{
    conntrack::ConntrackSettings,
    established::Established,
    events::{FlowSettings, LiveDecision},
    sync::SyncReport,
};
use crate::{
    k8s::cluster::ObjectKey,
    policy::{Journal, NodeState},
};

/// The programs, built by `build.rs` from the `palisade-ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this binary was built without its eBPF programs (AYA_BUILD_SKIP was set); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("service mark {mark:#x}: must be exactly one bit (--service-mark)")]
    ServiceMark { mark: u32 },
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
    #[error("bpffs: {what}: {source}")]
    Pin {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("map {map}: {op} failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
}

impl DataplaneError {
    /// A short, fixed name of the failure's kind, for metric labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoObject => "no_object",
            Self::ServiceMark { .. } => "service_mark",
            Self::Load(_) => "load",
            Self::Missing { .. } => "missing",
            Self::Program { .. } => "program",
            Self::Attach { .. } => "attach",
            Self::Pin { .. } => "pin",
            Self::Map { .. } => "map",
        }
    }
}

/// One map's fill: entries written against its capacity (`max_entries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: usize,
}

/// One program's link on an interface.
enum LinkHandle {
    /// Owned by the loaded program: goes with this process.
    Owned(&'static str, SchedClassifierLinkId),
    /// Pinned in bpffs: outlives this process until released.
    Pinned(PinnedLink),
}

/// Links of one interface, detached when the pod (or the uplink) goes.
struct Attachment {
    links: Vec<LinkHandle>,
}

/// Loaded programs and maps of one node.
pub struct Dataplane {
    ebpf: Ebpf,
    attached: BTreeMap<String, Attachment>,
    written: sync::Written,
    pins: Option<pin::PinDir>,
    /// The first sync reads back what an earlier agent left in pinned maps.
    adopted: bool,
    /// A write of the last sync failed: the next compares everything, whatever its journal.
    compare_all: bool,
    local_addrs: local_addrs::LocalAddrs,
    /// The Service ranges last written (see [`Self::set_service_ranges`]).
    service_ranges: Vec<IpNet>,
    /// The event and audit settings last written (see [`Self::set_flow_settings`]).
    flow_settings: FlowSettings,
    /// The conntrack timeouts last written (see [`Self::set_conntrack`]).
    conntrack: ConntrackSettings,
}

impl Dataplane {
    /// Loads the embedded programs with private maps and links, gone with this process (tests).
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_marked(SERVICE_MARK)
    }

    /// [`Self::load`] with `service_mark` as the Service mark bit (see
    /// [`palisade_common::SERVICE_MARK`]).
    pub fn load_marked(service_mark: u32) -> Result<Self, DataplaneError> {
        Self::load_with_limits(None, &[], service_mark)
    }

    /// Loads the embedded programs against the maps pinned under `root` (created and pinned
    /// when missing), and pins every link it attaches there: see [`pin`]. Mounts bpffs first
    /// if needed.
    pub fn load_pinned(root: &Path) -> Result<Self, DataplaneError> {
        Self::load_pinned_marked(root, SERVICE_MARK)
    }

    /// [`Self::load_pinned`] with `service_mark` as the Service mark bit.
    pub fn load_pinned_marked(root: &Path, service_mark: u32) -> Result<Self, DataplaneError> {
        pin::ensure_bpffs()?;
        Self::load_with_limits(Some(pin::PinDir::new(root)?), &[], service_mark)
    }

    /// [`Self::load`] with some maps smaller than in production: for tests that must fill a
    /// map to see what a failed write does.
    pub fn load_with_max_entries(limits: &[(&'static str, u32)]) -> Result<Self, DataplaneError> {
        Self::load_with_limits(None, limits, SERVICE_MARK)
    }

    fn load_with_limits(
        pins: Option<pin::PinDir>,
        limits: &[(&'static str, u32)],
        service_mark: u32,
    ) -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        if service_mark.count_ones() != 1 {
            return Err(DataplaneError::ServiceMark { mark: service_mark });
        }
        let mut loader = EbpfLoader::new();
        loader.override_global(GLOBAL_SERVICE_MARK, &service_mark, true);
        // Debugging the programs: the verifier's whole log in a load error.
        if std::env::var_os("PALISADE_VERIFIER_LOG").is_some() {
            loader
                .verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
        for &(name, max) in limits {
            loader.map_max_entries(name, max);
        }
        let paths: Vec<(&str, PathBuf)> = pins
            .iter()
            .flat_map(|p| ALL_MAPS.iter().map(move |name| (*name, p.map(name))))
            .collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(DataplaneError::Load)?;
        for name in ALL_MAPS {
            if ebpf.map(name).is_none() {
                return Err(DataplaneError::Missing { kind: "map", name });
            }
        }
        for name in [PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK, PROG_FROM_UPLINK] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| DataplaneError::Program {
                    what: "loading",
                    name,
                    source,
                })?;
        }
        Ok(Self {
            ebpf,
            attached: BTreeMap::new(),
            written: sync::Written::default(),
            pins,
            adopted: false,
            compare_all: true,
            local_addrs: local_addrs::LocalAddrs::default(),
            service_ranges: Vec::new(),
            flow_settings: FlowSettings {
                events: false,
                ..FlowSettings::default()
            },
            conntrack: ConntrackSettings::default(),
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

    /// Attaches the uplink programs to one of the node's other interfaces (a link to another
    /// node or to the outside): on egress, Service flows of local pods translated towards
    /// another node are judged; on ingress, packets carrying a local pod's or the node's own
    /// source address are dropped. They need no endpoint entry.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        self.attach_programs(
            ifname,
            &[
                (PROG_UPLINK, TcAttachType::Egress),
                (PROG_FROM_UPLINK, TcAttachType::Ingress),
            ],
        )
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
            let attached = classifier(&mut self.ebpf, name)
                .and_then(|program| {
                    program
                        .attach(ifname, kind)
                        .map_err(|source| DataplaneError::Attach {
                            ifname: ifname.to_string(),
                            source,
                        })
                })
                .and_then(|id| self.keep(ifname, name, id));
            match attached {
                Ok(link) => links.push(link),
                Err(error) => {
                    // Leave nothing half attached.
                    self.attached
                        .insert(ifname.to_string(), Attachment { links });
                    self.detach(ifname);
                    return Err(error);
                }
            }
        }
        self.attached
            .insert(ifname.to_string(), Attachment { links });
        Ok(())
    }

    /// Pins a fresh link when this dataplane pins (releasing older links of the same program on
    /// that interface, now that the new one runs), or leaves it with its program.
    fn keep(
        &mut self,
        ifname: &str,
        name: &'static str,
        id: SchedClassifierLinkId,
    ) -> Result<LinkHandle, DataplaneError> {
        let Some(pins) = &self.pins else {
            return Ok(LinkHandle::Owned(name, id));
        };
        let program = classifier(&mut self.ebpf, name)?;
        let link = program
            .take_link(id)
            .map_err(|source| DataplaneError::Program {
                what: "taking the link of",
                name,
                source,
            })?;
        let link = FdLink::try_from(link).map_err(|e| DataplaneError::Pin {
            what: format!("{name} on {ifname}: a TCX link without an fd"),
            source: std::io::Error::other(e),
        })?;
        pins.pin_link(ifname, name, link).map(LinkHandle::Pinned)
    }

    /// Detaches from an interface (a no-op if the interface is already gone with its pod).
    pub fn detach(&mut self, ifname: &str) {
        let Some(attachment) = self.attached.remove(ifname) else {
            return;
        };
        for link in attachment.links {
            match link {
                LinkHandle::Owned(name, id) => {
                    if let Ok(program) = classifier(&mut self.ebpf, name)
                        && let Err(e) = program.detach(id)
                    {
                        tracing::debug!(ifname, program = name, error = %e, "detach");
                    }
                }
                LinkHandle::Pinned(link) => {
                    // The program leaves the interface when the last reference (this one) goes.
                    if let Err(e) = link.unpin() {
                        tracing::warn!(ifname, error = %e, "could not unpin a link");
                    }
                }
            }
        }
        if let Some(pins) = &self.pins {
            pins.release_interface(ifname);
        }
    }

    /// Releases the pinned links an earlier agent left on interfaces this one has not attached
    /// to (their pods went while no agent ran). Call after the first sync's attachments.
    pub fn release_stale_links(&mut self) {
        let Some(pins) = &self.pins else {
            return;
        };
        for ifname in pins.linked_interfaces() {
            if !self.attached.contains_key(&ifname) {
                tracing::info!(ifname, "releasing links of a pod that is gone");
                pins.release_interface(&ifname);
            }
        }
        pins.release_other_versions(|ifname| self.attached.contains_key(ifname));
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
        self.service_ranges = ranges.to_vec();
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
        self.sync_journaled(state, ifindex, None)
    }

    /// [`Self::sync`] of a state that differs from the one this dataplane last synced at most
    /// where `journal` says ([`crate::policy::Compiler::take_journal`]; `None`: anywhere): only
    /// those entries (and endpoints whose interface changed) are compared with what was
    /// written, so a sync after one change costs what the change touches, not what the node
    /// holds. After a sync with failed writes the next one compares everything.
    pub fn sync_journaled(
        &mut self,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
        journal: Option<&Journal>,
    ) -> Result<SyncReport, DataplaneError> {
        let journal = journal.filter(|j| !j.all && !self.compare_all);
        let mut adopted = SyncReport::default();
        if !self.adopted {
            adopted = self.written.adopt(&mut self.ebpf, ifindex)?;
            self.local_addrs.adopt(&mut self.ebpf)?;
            self.adopted = true;
        }
        // Addresses before the endpoints that send from them, removed after.
        let added = self.local_addrs.add(&mut self.ebpf, state, ifindex)?;
        self.compare_all = true;
        let mut report = self
            .written
            .apply(&mut self.ebpf, state, ifindex, journal)?;
        report.deletes += self.forget_flows(&report.switched_off)?;
        let removed = self
            .local_addrs
            .remove_stale(&mut self.ebpf, state, ifindex)?;
        report.writes += adopted.writes + added;
        report.deletes += adopted.deletes + removed;
        self.compare_all = !report.failures.is_empty();
        Ok(report)
    }

    /// The highest pod identity and CIDR class the maps hold (left by an earlier agent when
    /// they are pinned): see [`crate::policy::Compiler::reserve_ids`].
    pub fn highest_ids(&self) -> Result<(u32, u32), DataplaneError> {
        sync::highest_ids(&self.ebpf)
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

    /// How full each map the agent writes is: the entries this process keeps there (its own
    /// copy, so no map is scanned) against the map's capacity.
    pub fn map_usage(&self) -> Vec<MapUsage> {
        self.written
            .entry_counts()
            .into_iter()
            .map(|(map, entries)| MapUsage {
                map,
                entries,
                capacity: match self.ebpf.map(map) {
                    Some(aya::maps::Map::HashMap(data) | aya::maps::Map::LpmTrie(data)) => {
                        data.info().map_or(0, |info| info.max_entries() as usize)
                    }
                    _ => 0,
                },
            })
            .collect()
    }

    /// Drop counters summed over CPUs, by reason name.
    pub fn drops(&self) -> Result<Vec<(&'static str, u64)>, DataplaneError> {
        Ok(drops_by_reason(&self.counters()?))
    }
}

/// The drop counters of [`Dataplane::counters`], by reason name.
pub fn drops_by_reason(counters: &[u64]) -> Vec<(&'static str, u64)> {
    DROP_REASONS
        .iter()
        .map(|r| {
            (
                r.name(),
                counters.get(r.stat_index() as usize).copied().unwrap_or(0),
            )
        })
        .collect()
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(missing_program(name))?
        .try_into()
        .map_err(not_a_classifier(name))
}

fn missing_program(name: &'static str) -> DataplaneError {
    DataplaneError::Missing {
        kind: "program",
        name,
    }
}

fn not_a_classifier(name: &'static str) -> impl Fn(ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program {
        what: "converting",
        name,
        source,
    }
}
