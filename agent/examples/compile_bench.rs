//! Control-plane benchmark (run by `cargo xtask bench`): compile time and peak memory of the
//! policy compiler for one node of a synthetic cluster, and the cost of a one-pod change.
//!
//! Usage: `compile_bench [PODS NAMESPACES POLICIES NODES]` (default 10000 100 1000 100).

use std::{
    collections::BTreeMap,
    env,
    net::IpAddr,
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use palisade::{
    cluster::{Cluster, ObjectKey},
    manifest::{self, Object},
    policy::{Compiler, NodeView},
};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [pods, namespaces, policies, nodes] = match args.as_slice() {
        [] => [10_000, 100, 1_000, 100],
        [a, b, c, d] => [*a, *b, *c, *d],
        _ => anyhow::bail!("usage: compile_bench [PODS NAMESPACES POLICIES NODES]"),
    };
    let mut cluster = synthetic(pods, namespaces, policies, nodes)?;
    let addrs: Vec<IpAddr> = vec!["10.244.0.1".parse()?];
    let view = NodeView {
        name: "node-0",
        addrs: &addrs,
    };

    let mut compiler = Compiler::new();
    let mut full = Vec::new();
    let mut state = compiler.compile(&cluster, &view);
    for _ in 0..5 {
        let start = Instant::now();
        state = compiler.compile(&cluster, &view);
        full.push(start.elapsed());
    }
    let peers: usize = state.endpoints.values().map(|e| e.peers.len()).sum();
    let ports: usize = state.endpoints.values().map(|e| e.ports.len()).sum();

    // A pod with an existing label set appears on another node, then goes.
    let mut change = Vec::new();
    for i in 0..5 {
        let key = ObjectKey::new("ns-0", format!("extra-{i}"));
        cluster.pods.insert(
            key.clone(),
            pod("ns-0", &format!("extra-{i}"), 0, "node-1", 60_000 + i)?,
        );
        let start = Instant::now();
        compiler.compile(&cluster, &view);
        change.push(start.elapsed());
        cluster.pods.remove(&key);
    }
    println!(
        "compile: {pods} pods, {namespaces} namespaces, {policies} policies, {nodes} nodes; compiled for one node"
    );
    println!("  local endpoints           {}", state.endpoints.len());
    println!("  identity entries          {}", state.identities.len());
    println!("  cidr entries              {}", state.cidrs.len());
    println!("  peer entries              {peers}");
    println!("  port entries              {ports}");
    println!(
        "  full compile (median of 5)   {:.1} ms",
        ms(median(&mut full))
    );
    println!(
        "  one-pod add (median of 5)    {:.1} ms (full recompute; the incremental path is not built yet)",
        ms(median(&mut change))
    );
    println!("  peak RSS                     {:.0} MiB", peak_rss_mib());
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
            ObjectKey::new(format!("ns-{ns}"), &name),
            pod(&format!("ns-{ns}"), &name, p % 40, &node, p)?,
        );
    }
    for i in 0..policies {
        let ns = format!("ns-{}", i % namespaces);
        cluster.policies.insert(
            ObjectKey::new(&ns, format!("p-{i}")),
            policy(&ns, i, namespaces)?,
        );
    }
    Ok(cluster)
}
