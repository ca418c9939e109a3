//! The control plane against the kernel: for one node of a synthetic cluster, the time to
//! compile and write the whole state, the time from a policy change to its map write (the
//! change compiled and synced), and the maps' memory as the kernel counts it (`memlock:` in
//! `/proc/self/fdinfo/<map fd>`, which for hash maps preallocates every entry and for LPM
//! tries counts the nodes present), with the entries written.

use std::{collections::BTreeMap, fs, time::Instant};

use anyhow::{Result, bail};
use aya::maps::MapInfo;
use palisade::{
    dataplane::Dataplane,
    k8s::cluster::ObjectKey,
    policy::{ClusterChange, Compiler, NodeView, Update},
};
use serde::Serialize;

use crate::synth::{self, NAMESPACE, NODE, Scale};

#[derive(Serialize)]
pub struct ControlPlane {
    pub pods: usize,
    pub policies: usize,
    pub local_pods: usize,
    pub compile_ms: f64,
    pub sync_ms: f64,
    /// A port added to the last policy: compiled again and written.
    pub change_compile_ms: f64,
    pub change_sync_ms: f64,
    /// The same change applied in place ([`Compiler::apply_change`]) and written with the
    /// compiler's journal, from the state before it (a second compiler and dataplane).
    pub change_in_place_compile_ms: f64,
    pub change_in_place_sync_ms: f64,
    pub entries: BTreeMap<&'static str, usize>,
    /// Per map: bytes the kernel charges (memlock).
    pub memlock: BTreeMap<String, u64>,
}

pub fn measure(pods: usize, policies: usize, extra: usize) -> Result<ControlPlane> {
    let scale = Scale { peers: pods, extra };
    let mut specs = synth::policies(policies);
    let mut cluster = synth::cluster(&scale, &specs)?;
    let addrs = synth::node_addrs();
    let view = NodeView {
        name: NODE,
        addrs: &addrs,
    };
    let mut ifindex: BTreeMap<ObjectKey, u32> = BTreeMap::new();
    ifindex.insert(ObjectKey::new(NAMESPACE, "server"), 2);
    ifindex.insert(ObjectKey::new(NAMESPACE, "client"), 3);
    for k in 0..extra {
        ifindex.insert(
            ObjectKey::new(NAMESPACE, format!("web-{k}")),
            10 + u32::try_from(k)?,
        );
    }
    let mut dataplane = Dataplane::load()?;
    let mut compiler = Compiler::new();
    let mut in_place = InPlace::new(&cluster, &view, &ifindex)?;

    let start = Instant::now();
    let state = compiler.compile(&cluster, &view);
    let compile_ms = ms(start);
    if !state.errors.is_empty() {
        bail!(
            "the synthetic policies do not compile cleanly: {:?}",
            state.errors
        );
    }
    let start = Instant::now();
    dataplane.sync(&state, &ifindex)?;
    let sync_ms = ms(start);
    let entries = BTreeMap::from([
        ("endpoints", state.endpoints.len()),
        ("identities", state.identities.len()),
        ("cidrs", state.cidrs.len()),
        (
            "peers",
            state.endpoints.values().map(|e| e.peers.len()).sum(),
        ),
        (
            "ports",
            state.endpoints.values().map(|e| e.ports.len()).sum(),
        ),
    ]);
    let memlock = map_memory()?;

    // The change: the last policy also allows TCP 5003.
    if let Some(last) = specs.last_mut() {
        last.ports.push(synth::PortRange {
            proto: synth::Proto::Tcp,
            first: 5003,
            last: 5003,
        });
    }
    let changed = synth::cluster(&Scale { peers: 0, ..scale }, &specs)?;
    let changed_key = changed
        .policies
        .keys()
        .find(|k| changed.policies.get(*k) != cluster.policies.get(*k))
        .cloned();
    cluster.policies = changed.policies;
    let (change_in_place_compile_ms, change_in_place_sync_ms) = match changed_key {
        Some(key) => in_place.change(&cluster, &view, &ifindex, &ClusterChange::Policy(key))?,
        None => bail!("the policy change changed no policy"),
    };
    let start = Instant::now();
    let state = compiler.compile(&cluster, &view);
    let change_compile_ms = ms(start);
    let start = Instant::now();
    let report = dataplane.sync(&state, &ifindex)?;
    let change_sync_ms = ms(start);
    if report.writes == 0 {
        bail!("the policy change wrote nothing");
    }
    Ok(ControlPlane {
        pods,
        policies,
        local_pods: 2 + extra,
        compile_ms,
        sync_ms,
        change_compile_ms,
        change_sync_ms,
        change_in_place_compile_ms,
        change_in_place_sync_ms,
        entries,
        memlock,
    })
}

/// A second compiler and dataplane for the in-place change (the first one's maps are left
/// for the full recompile).
struct InPlace {
    compiler: Compiler,
    dataplane: Dataplane,
    state: palisade::policy::NodeState,
}

impl InPlace {
    fn new(
        cluster: &palisade::k8s::cluster::Cluster,
        view: &NodeView<'_>,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<Self> {
        let mut compiler = Compiler::new();
        let mut dataplane = Dataplane::load()?;
        let state = compiler.compile(cluster, view);
        dataplane.sync(&state, ifindex)?;
        compiler.take_journal();
        Ok(Self {
            compiler,
            dataplane,
            state,
        })
    }

    /// (compile, write) milliseconds of `change`, checked against a full compile.
    fn change(
        &mut self,
        cluster: &palisade::k8s::cluster::Cluster,
        view: &NodeView<'_>,
        ifindex: &BTreeMap<ObjectKey, u32>,
        change: &ClusterChange,
    ) -> Result<(f64, f64)> {
        let start = Instant::now();
        let update = self
            .compiler
            .apply_change(&mut self.state, cluster, view, change);
        let compile_ms = ms(start);
        let journal = self.compiler.take_journal();
        let start = Instant::now();
        let report = self
            .dataplane
            .sync_journaled(&self.state, ifindex, Some(&journal))?;
        let sync_ms = ms(start);
        if update != Update::Incremental {
            bail!("the policy change was not applied in place");
        }
        if report.writes == 0 {
            bail!("the policy change applied in place wrote nothing");
        }
        if self.state != self.compiler.clone().compile(cluster, view) {
            bail!("the policy change applied in place differs from a full compile");
        }
        Ok((compile_ms, sync_ms))
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// `memlock:` of every Palisade map this process holds, by map name. Call with one dataplane
/// loaded.
fn map_memory() -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        let Ok(info) = MapInfo::from_id(u32::try_from(id)?) else {
            continue;
        };
        if let Some(name) = info.name_as_str().filter(|n| n.starts_with("PAL_")) {
            *out.entry(name.to_owned()).or_default() += memlock;
        }
    }
    Ok(out)
}
