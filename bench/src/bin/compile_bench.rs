//! Control-plane benchmark (run by `cargo xtask bench`): compile time and peak memory of the
//! policy compiler for one node of a synthetic cluster, the cost of pod changes applied in
//! place ([`Compiler::apply_pod_change`]), and the time from a policy or namespace change to
//! its last write in the kernel maps ([`Compiler::apply_change`], then [`Dataplane::sync`];
//! needs root).
//!
//! Usage: `compile_bench [PODS NAMESPACES POLICIES NODES [CHANGES]]` (default 10000 100 1000
//! 100 200). The changes: CHANGES new pods added one by one, then deleted one by one; every
//! tenth has a label set no other pod has (a new identity), and they are spread over the
//! nodes like the others (so about one in NODES is local). Then CHANGES / 4 policies added,
//! as many existing ones rewritten and the added ones deleted, and CHANGES / 10 namespaces
//! relabelled (each relabel reverted by the next change of the same namespace), each written
//! to the maps before the next.

use std::{
    collections::BTreeMap,
    env,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use palisade::{
    dataplane::Dataplane,
    k8s::cluster::{Cluster, ObjectKey},
    k8s::manifest::{self, Object},
    policy::{ClusterChange, Compiler, NodeState, NodeView, Update},
};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [pods, namespaces, policies, nodes, changes] = match args.as_slice() {
        [] => [10_000, 100, 1_000, 100, 200],
        [a, b, c, d] => [*a, *b, *c, *d, 200],
        [a, b, c, d, e] => [*a, *b, *c, *d, *e],
        _ => anyhow::bail!("usage: compile_bench [PODS NAMESPACES POLICIES NODES [CHANGES]]"),
    };
    if namespaces == 0 || nodes == 0 {
        anyhow::bail!("NAMESPACES and NODES must be at least 1");
    }
    let mut cluster = synthetic(pods, namespaces, policies, nodes)?;
    let addrs: Vec<IpAddr> = vec!["10.244.0.1".parse()?];
    let view = NodeView {
        name: "node-0",
        addrs: &addrs,
    };

    let mut compiler = Compiler::new();
    let mut full = Vec::new();
    let mut state = compiler.compile(&cluster, &view);
    let runs = if pods > 20_000 { 3 } else { 5 };
    for _ in 0..runs {
        let start = Instant::now();
        state = compiler.compile(&cluster, &view);
        full.push(start.elapsed());
    }
    // Before any checking copy is made: what compiling costs.
    let compile_rss = peak_rss_mib();
    let peers: usize = state.endpoints.values().map(|e| e.peers.len()).sum();
    let ports: usize = state.endpoints.values().map(|e| e.ports.len()).sum();

    // New pods, added one by one, then deleted one by one.
    let extra: Vec<(ObjectKey, Pod, Kind)> = (0..changes)
        .map(|i| {
            let ns = format!("ns-{}", i % namespaces);
            let name = format!("extra-{i}");
            let node = format!("node-{}", i % nodes);
            let new_identity = i % 10 == 9;
            let app = if new_identity { 1_000 + i } else { i % 40 };
            let pod = pod(&ns, &name, app, &node, pods + i)?;
            let kind = match (node == view.name, new_identity) {
                (true, _) => Kind::Local,
                (false, false) => Kind::Peer,
                (false, true) => Kind::NewIdentity,
            };
            Ok((ObjectKey::new(ns, name), pod, kind))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut adds = Changes::default();
    for (key, pod, kind) in &extra {
        cluster
            .pods
            .insert(key.clone(), Arc::new(pod.clone().into()));
        adds.apply(&mut compiler, &mut state, (&cluster, &view), key, *kind);
    }
    // Checked once, outside the timings: in place equals a full compile (same ids).
    let equal = state == compiler.clone().compile(&cluster, &view);
    let mut deletes = Changes::default();
    for (key, _, kind) in &extra {
        cluster.pods.remove(key);
        deletes.apply(&mut compiler, &mut state, (&cluster, &view), key, *kind);
    }
    let equal = equal && state == compiler.clone().compile(&cluster, &view);

    // Policy and namespace changes, each applied in place and written to the kernel maps.
    let mut dataplane = Dataplane::load().context(
        "loading the programs for the map-write timings (needs root and a kernel with BPF)",
    )?;
    let ifindex: BTreeMap<ObjectKey, u32> = state
        .endpoints
        .keys()
        .zip(1_000..)
        .map(|(k, i)| (k.clone(), i))
        .collect();
    let start = Instant::now();
    let full_state = compiler.compile(&cluster, &view);
    dataplane.sync(&full_state, &ifindex)?;
    let full_write = start.elapsed();
    state = full_state;
    compiler.take_journal();
    // A sync with nothing to write, comparing every entry with what was written, and with an
    // empty journal: what every change pays before its own writes.
    let (mut compare_all, mut journaled) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let start = Instant::now();
        let report = dataplane.sync(&state, &ifindex)?;
        compare_all.push(start.elapsed());
        let start = Instant::now();
        let again = dataplane.sync_journaled(&state, &ifindex, Some(&compiler.take_journal()))?;
        journaled.push(start.elapsed());
        if report.writes + report.deletes + again.writes + again.deletes > 0 {
            anyhow::bail!("a sync of the state just written wrote again");
        }
    }
    let policy_changes = (changes / 4).max(1);
    // The added policies: every fifth in the namespace of the local pods (ns-0), selecting
    // some of them.
    let added = |k: usize| {
        let ns = if k.is_multiple_of(5) {
            0
        } else {
            (k * 7) % namespaces
        };
        ObjectKey::new(format!("ns-{ns}"), format!("new-{k}"))
    };
    let mut kinds: [Written; 4] = Default::default();
    for k in 0..policy_changes {
        let key = added(k);
        cluster
            .policies
            .insert(key.clone(), Arc::new(own_port(&key, k % 40, 20_000 + k)?));
        kinds[0].apply(
            &mut compiler,
            &mut state,
            &mut dataplane,
            (&cluster, &view, &ifindex),
            &ClusterChange::Policy(key),
        )?;
    }
    for k in 0..policy_changes.min(policies) {
        // Every fifth one of ns-0 (whose policies select local pods).
        let i = if k % 5 == 0 {
            (k / 5 * namespaces) % policies
        } else {
            (k * 37) % policies
        };
        let ns = format!("ns-{}", i % namespaces);
        let key = ObjectKey::new(ns.as_str(), format!("p-{i}"));
        // Its selector, a port of its own.
        cluster
            .policies
            .insert(key.clone(), Arc::new(own_port(&key, i % 20, 30_000 + k)?));
        kinds[1].apply(
            &mut compiler,
            &mut state,
            &mut dataplane,
            (&cluster, &view, &ifindex),
            &ClusterChange::Policy(key),
        )?;
    }
    for k in 0..policy_changes {
        let key = added(k);
        cluster.policies.remove(&key);
        kinds[2].apply(
            &mut compiler,
            &mut state,
            &mut dataplane,
            (&cluster, &view, &ifindex),
            &ClusterChange::Policy(key),
        )?;
    }
    for k in 0..(changes / 10).max(2) {
        // ns-0, ns-10, ...: team-0, whose pods 1 in 20 policies' namespace selectors name
        // (and every policy's egress `namespaceSelector: {}`).
        let name = format!("ns-{}", (k / 2 * 10) % namespaces);
        let ns = Arc::make_mut(cluster.namespaces.get_mut(&name).context("namespace")?);
        let labels = ns.metadata.labels.get_or_insert_default();
        let team = if k % 2 == 0 {
            "moved".to_owned()
        } else {
            format!("team-{}", (k / 2 * 10) % namespaces % 10)
        };
        labels.insert("team".into(), team);
        kinds[3].apply(
            &mut compiler,
            &mut state,
            &mut dataplane,
            (&cluster, &view, &ifindex),
            &ClusterChange::Namespace(name),
        )?;
    }
    let equal = equal && state == compiler.clone().compile(&cluster, &view);
    let selecting_team0 = cluster
        .policies
        .values()
        .filter(|p| serde_json::to_string(&***p).is_ok_and(|t| t.contains("\"team-0\"")))
        .count();

    println!(
        "compile: {pods} pods, {namespaces} namespaces, {policies} policies, {nodes} nodes; compiled for one node"
    );
    println!("  local endpoints              {}", state.endpoints.len());
    println!("  identity entries             {}", state.identities.len());
    println!("  cidr entries                 {}", state.cidrs.len());
    println!("  peer entries                 {peers}");
    println!("  port entries                 {ports}");
    println!(
        "  full compile (median of {runs})    {:.1} ms",
        ms(median(&mut full))
    );
    adds.print("pod add   ");
    deletes.print("pod delete");
    println!("  full compile + map write     {:.1} ms", ms(full_write));
    println!(
        "  map sync, nothing to write   median {:.2} ms comparing every entry, {:.3} ms with the compiler's journal (of 20)",
        ms(median(&mut compare_all)),
        ms(median(&mut journaled))
    );
    for (kind, what) in kinds.iter_mut().zip([
        "policy add   ",
        "policy change",
        "policy delete",
        "ns relabel   ",
    ]) {
        kind.print(what, full[full.len() / 2]);
    }
    println!(
        "  ns relabel: the namespace's team is named by {selecting_team0} policies' namespace selectors; every policy's egress selects all namespaces"
    );
    println!(
        "  in place equals full compile {}",
        if equal { "yes" } else { "NO" }
    );
    println!("  peak RSS (compiling)         {compile_rss:.0} MiB");
    println!(
        "  peak RSS (whole run)         {:.0} MiB (with the checking copies)",
        peak_rss_mib()
    );
    if !equal {
        anyhow::bail!("the state updated in place differs from a full compile");
    }
    Ok(())
}

/// A policy `key` that opens a port of its own on pods `app-{app}` to pods of the same app.
fn own_port(key: &ObjectKey, app: usize, port: usize) -> anyhow::Result<NetworkPolicy> {
    let yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {}, namespace: {}}}\nspec:\n  podSelector: {{matchLabels: {{app: app-{app}}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: app-{app}}}}}}}], ports: [{{port: {port}}}]}}]\n",
        key.name, key.namespace
    );
    match manifest::parse_str(&yaml, "synthetic")?.pop() {
        Some(Object::NetworkPolicy(p)) => Ok(p),
        _ => anyhow::bail!("synthetic policy did not parse as a NetworkPolicy"),
    }
}

/// Changes applied in place and written to the kernel maps: the time of each, the change
/// alone and to the last map write.
#[derive(Default)]
struct Written {
    apply: Vec<Duration>,
    total: Vec<Duration>,
    recompiled: usize,
    writes: usize,
    written_total: usize,
}

impl Written {
    fn apply(
        &mut self,
        compiler: &mut Compiler,
        state: &mut NodeState,
        dataplane: &mut Dataplane,
        (cluster, view, ifindex): (&Cluster, &NodeView<'_>, &BTreeMap<ObjectKey, u32>),
        change: &ClusterChange,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let update = compiler.apply_change(state, cluster, view, change);
        let applied = start.elapsed();
        let journal = compiler.take_journal();
        let report = dataplane.sync_journaled(state, ifindex, Some(&journal))?;
        self.total.push(start.elapsed());
        self.apply.push(applied);
        self.recompiled += usize::from(update == Update::Recompiled);
        self.writes = self.writes.max(report.writes + report.deletes);
        self.written_total += report.writes + report.deletes;
        if !report.failures.is_empty() {
            anyhow::bail!("map writes failed: {:?}", report.failures);
        }
        Ok(())
    }

    fn print(&mut self, what: &str, full: Duration) {
        let n = self.total.len();
        if n == 0 {
            return;
        }
        self.apply.sort();
        self.total.sort();
        let p99 = |v: &[Duration]| v[(n * 99 / 100).min(n - 1)];
        println!(
            "  {what} to map write  median {:.2} ms, p99 {:.2} ms ({:.2}% of a full compile) over {n}; compile alone median {:.2} ms, p99 {:.2} ms; entries written: {} in all, at most {} by one; {} fell back to a full compile",
            ms(self.total[n / 2]),
            ms(p99(&self.total)),
            100.0 * p99(&self.total).as_secs_f64() / full.as_secs_f64(),
            ms(self.apply[n / 2]),
            ms(p99(&self.apply)),
            self.written_total,
            self.writes,
            self.recompiled
        );
    }
}

/// What a changed pod is to the compiled node.
#[derive(Clone, Copy)]
enum Kind {
    /// A peer only, of an identity other pods have.
    Peer,
    /// A peer only, with a label set no other pod has.
    NewIdentity,
    /// On the compiled node: an endpoint too.
    Local,
}

/// Timings of pod changes applied in place, and the largest number of entries one wrote.
#[derive(Default)]
struct Changes {
    times: Vec<Duration>,
    recompiled: usize,
    /// Per [`Kind`].
    max_writes: [usize; 3],
}

impl Changes {
    fn apply(
        &mut self,
        compiler: &mut Compiler,
        state: &mut NodeState,
        (cluster, view): (&Cluster, &NodeView<'_>),
        key: &ObjectKey,
        kind: Kind,
    ) {
        // Entries written are counted on a sample only: the copy costs more than the change.
        let before = (self.times.len() < 40).then(|| state.clone());
        let start = Instant::now();
        let update = compiler.apply_pod_change(state, cluster, view, key);
        self.times.push(start.elapsed());
        self.recompiled += usize::from(update == Update::Recompiled);
        if let Some(before) = before {
            let writes = &mut self.max_writes[kind as usize];
            *writes = (*writes).max(entries_written(&before, state));
        }
    }

    fn print(&mut self, what: &str) {
        if self.times.is_empty() {
            return;
        }
        let n = self.times.len();
        self.times.sort();
        let p99 = self.times[(n * 99 / 100).min(n - 1)];
        println!(
            "  {what} in place          median {:.1} us, p99 {:.1} us over {n} ({} fell back to a full compile)",
            us(self.times[n / 2]),
            us(p99),
            self.recompiled
        );
        println!(
            "  {what} entries written   at most {} (peer), {} (peer, new identity), {} (local pod); first 40",
            self.max_writes[0], self.max_writes[1], self.max_writes[2]
        );
    }
}

/// Map entries that differ between two states (identities, CIDRs, endpoints' peers and ports).
fn entries_written(a: &NodeState, b: &NodeState) -> usize {
    fn diff<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> usize {
        let changed = a.iter().filter(|(k, v)| b.get(k) != Some(v)).count();
        changed + b.keys().filter(|k| !a.contains_key(k)).count()
    }
    let empty = Default::default();
    let endpoints = a.endpoints.keys().chain(b.endpoints.keys());
    let per_endpoint: usize = endpoints
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|key| {
            let (x, y) = (
                a.endpoints.get(key).unwrap_or(&empty),
                b.endpoints.get(key).unwrap_or(&empty),
            );
            diff(&x.peers, &y.peers) + diff(&x.ports, &y.ports)
        })
        .sum();
    diff(&a.identities, &b.identities) + diff(&a.cidrs, &b.cidrs) + per_endpoint
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn peak_rss_mib() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map_or(0.0, |u| u.max_rss() as f64 / 1024.0)
}

fn pod(ns: &str, name: &str, app: usize, node: &str, n: usize) -> anyhow::Result<Pod> {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: app-{app}, tier: t{}}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, ports: [{{name: http, containerPort: {}}}]}}]\nstatus: {{podIPs: [{{ip: 10.{}.{}.{}}}]}}\n",
        app % 3,
        8000 + app % 4,
        100 + n / 65536,
        (n / 256) % 256,
        n % 256
    );
    match manifest::parse_str(&yaml, "synthetic")?.pop() {
        Some(Object::Pod(p)) => Ok(p),
        _ => anyhow::bail!("synthetic pod did not parse as a Pod"),
    }
}

fn policy(ns: &str, i: usize, namespaces: usize) -> anyhow::Result<NetworkPolicy> {
    // A mix: pod selectors, namespace selectors, ports, ranges, named ports and ipBlocks.
    let peer = match i % 4 {
        0 => format!("{{podSelector: {{matchLabels: {{app: app-{}}}}}}}", i % 20),
        1 => format!(
            "{{namespaceSelector: {{matchLabels: {{team: team-{}}}}}}}",
            i % 10
        ),
        2 => format!(
            "{{namespaceSelector: {{matchExpressions: [{{key: team, operator: In, values: [team-{}]}}]}}, podSelector: {{matchLabels: {{tier: t{}}}}}}}",
            i % 10,
            i % 3
        ),
        _ => format!(
            "{{ipBlock: {{cidr: 10.{}.0.0/16, except: [10.{}.{}.0/24]}}}}",
            100 + i % 2,
            100 + i % 2,
            i % 256
        ),
    };
    let ports = match i % 3 {
        0 => format!("[{{port: {}}}]", 80 + i % 50),
        1 => format!(
            "[{{port: {}, endPort: {}}}, {{protocol: UDP, port: 53}}]",
            1000 + i % 100,
            2000 + i % 100
        ),
        _ => "[{port: http}]".to_string(),
    };
    let yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p-{i}, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: app-{}}}}}\n  ingress: [{{from: [{peer}], ports: {ports}}}]\n  egress: [{{to: [{{namespaceSelector: {{}}}}], ports: [{{protocol: UDP, port: 53}}]}}]\n",
        i % 20
    );
    let _ = namespaces;
    match manifest::parse_str(&yaml, "synthetic")?.pop() {
        Some(Object::NetworkPolicy(p)) => Ok(p),
        _ => anyhow::bail!("synthetic policy did not parse as a NetworkPolicy"),
    }
}

fn synthetic(
    pods: usize,
    namespaces: usize,
    policies: usize,
    nodes: usize,
) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::default();
    for n in 0..namespaces {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{team: team-{}}}}}\n",
            n % 10
        );
        for object in manifest::parse_str(&yaml, "synthetic")? {
            cluster.apply(object);
        }
    }
    let mut per_ns: BTreeMap<usize, usize> = BTreeMap::new();
    for p in 0..pods {
        let ns = p % namespaces;
        let idx = per_ns.entry(ns).or_default();
        *idx += 1;
        let name = format!("pod-{idx}");
        let node = format!("node-{}", p % nodes);
        cluster.pods.insert(
            ObjectKey::new(format!("ns-{ns}"), name.as_str()),
            Arc::new(pod(&format!("ns-{ns}"), &name, p % 40, &node, p)?.into()),
        );
    }
    for i in 0..policies {
        let ns = format!("ns-{}", i % namespaces);
        cluster.policies.insert(
            ObjectKey::new(ns.as_str(), format!("p-{i}")),
            Arc::new(policy(&ns, i, namespaces)?),
        );
    }
    Ok(cluster)
}
