//! `palisade lab run`: build each case's cluster in network namespaces, run the real agent on
//! it, apply the steps and probe every cell of every truth table.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use futures::future::join_all;

use super::{
    addresses::AddressBook,
    agent::{Interface, NodeAgent},
    case::{Case, CaseProto, Probe, Via, load_cases},
    probe::probe,
    serve::{Proto, ServerHandle, serve},
    table::{Comparison, compare},
    topology::{NodeHandle, PodHandle, Topology},
};
use crate::{
    cluster::{Cluster, ObjectKey, container_ports, is_host_network, pod_node},
    manifest,
};

/// How long one probe may take. A dropped SYN is retransmitted after 1 s, so 2 s lets one
/// retransmission through before a cell counts as blocked.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra attempts for cells expected to connect that did not (never for cells expected to be
/// blocked: an intermittent leak is still a leak).
const RETRIES: usize = 2;

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Print a one-line reading of each table (the demo).
    pub narrate: bool,
    /// Judge with the reference evaluator only: no kernel, no root.
    pub model: bool,
}

/// Runs every case; true when all tables of all cases matched.
pub async fn run_cases(dirs: &[PathBuf], options: RunOptions) -> Result<bool> {
    let cases = load_cases(dirs)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &cases {
        println!("=== case {} ({})", case.name, case.dir.display());
        if !case.description.is_empty() {
            println!("    {}", case.description.trim());
        }
        let result = if options.model {
            super::model::run_case(case, options)
        } else {
            run_case(case, options).await
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
    println!("lab: {passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The lab's view of one case's cluster.
struct Lab {
    topology: Topology,
    node: NodeHandle,
    agent: NodeAgent,
    cluster: Cluster,
    servers: BTreeMap<ObjectKey, ServerHandle>,
    addresses: AddressBook,
    /// Pods the lab cannot place yet (on another node), by key.
    unplaced: BTreeMap<ObjectKey, String>,
}

async fn run_case(case: &Case, options: RunOptions) -> Result<bool> {
    let mut topology = Topology::new()?;
    let node = topology.add_node("node-1", 1)?;
    let agent = NodeAgent::start(&node)?;
    let mut lab = Lab {
        topology,
        node,
        agent,
        cluster: Cluster::default(),
        servers: BTreeMap::new(),
        addresses: AddressBook::default(),
        unplaced: BTreeMap::new(),
    };
    for file in &case.cluster {
        for object in manifest::load_file(file)? {
            lab.cluster.apply(object);
        }
    }
    lab.reconcile()?;
    let mut ok = true;
    for (i, step) in case.steps.iter().enumerate() {
        for reference in &step.delete {
            lab.cluster
                .delete(reference)
                .with_context(|| format!("step {}: delete", i + 1))?;
        }
        for file in &step.apply {
            for object in manifest::load_file(file)? {
                lab.cluster.apply(object);
            }
        }
        for spec in &step.label {
            lab.cluster
                .label(spec)
                .with_context(|| format!("step {}: label", i + 1))?;
        }
        lab.reconcile()?;
        for probe in &step.probes {
            ok &= lab.probe_table(i + 1, probe, case, options).await?;
        }
    }
    Ok(ok)
}

impl Lab {
    /// Makes the namespaces match the cluster (pods created, removed, served), then syncs the
    /// agent: endpoints are written before their programs are attached.
    fn reconcile(&mut self) -> Result<()> {
        let wanted: BTreeSet<ObjectKey> = self.cluster.pods.keys().cloned().collect();
        let existing: Vec<ObjectKey> = self.servers.keys().cloned().collect();
        for key in existing {
            let gone = !wanted.contains(&key);
            if gone {
                self.servers.remove(&key);
                self.topology.remove_pod(&key.to_string())?;
            }
        }
        self.unplaced.retain(|k, _| wanted.contains(k));
        let keys: Vec<ObjectKey> = self.cluster.pods.keys().cloned().collect();
        for key in keys {
            if self.servers.contains_key(&key) || self.unplaced.contains_key(&key) {
                continue;
            }
            let Some(pod) = self.cluster.pods.get(&key) else {
                continue;
            };
            if is_host_network(pod) {
                self.unplaced.insert(key, "hostNetwork pods".into());
                continue;
            }
            let node = pod_node(pod).to_string();
            if node != self.node.name {
                self.unplaced
                    .insert(key, format!("pods on {node} (second node)"));
                continue;
            }
            let ports: Vec<(Proto, u16)> = container_ports(pod)
                .into_iter()
                .filter_map(|(_, protocol, port)| proto_of(protocol).map(|p| (p, port)))
                .collect();
            let addrs = self.addresses(&key)?;
            let handle = self
                .topology
                .add_pod(&self.node, &key.to_string(), &addrs)?;
            let server = serve(&handle, &ports)?;
            self.servers.insert(key, server);
        }
        let interfaces = self
            .topology
            .pods()
            .filter_map(|p| {
                let key = parse_key(&p.key)?;
                Some((
                    key,
                    Interface {
                        ifname: p.host_ifname.clone(),
                        ifindex: p.host_ifindex,
                    },
                ))
            })
            .collect();
        let outcome = self.agent.sync(&self.cluster, interfaces)?;
        for e in &outcome.errors {
            println!("    policy error: {e}");
        }
        tracing::debug!(
            writes = outcome.report.writes,
            deletes = outcome.report.deletes,
            endpoints = outcome.endpoints,
            "synced"
        );
        Ok(())
    }

    fn addresses(&mut self, key: &ObjectKey) -> Result<Vec<IpAddr>> {
        let Some(pod) = self.cluster.pods.get_mut(key) else {
            bail!("no pod {key}")
        };
        Ok(self.addresses.addresses(key, pod))
    }

    async fn probe_table(
        &self,
        step: usize,
        probe_spec: &Probe,
        case: &Case,
        options: RunOptions,
    ) -> Result<bool> {
        let (proto, port) = probe_spec.connect;
        let via = match probe_spec.via {
            Via::PodIp => "pod-ip",
            Via::Service => "service",
        };
        println!("step {step}: {proto}/{port} via {via}");
        let mut skipped = BTreeSet::new();
        if probe_spec.via == Via::Service {
            skipped.insert(
                "via: service (Service translation comes with the dataplane issue)".to_string(),
            );
        }
        if proto == CaseProto::Sctp {
            skipped.insert(
                "SCTP (this kernel has no SCTP sockets; the raw-socket responder comes later)"
                    .to_string(),
            );
        }
        let table = &probe_spec.expect;
        // Cells to probe: (row, column) -> (source pod, destination address).
        let mut cells: Vec<(String, String, &PodHandle, IpAddr)> = Vec::new();
        for row in &table.rows {
            for col in &table.columns {
                if row == col || !skipped.is_empty() {
                    continue;
                }
                match (self.pod_handle(row), self.destination(col, case)) {
                    (Ok(src), Ok(Some(dst))) => cells.push((row.clone(), col.clone(), src, dst)),
                    (Err(why), _) | (_, Err(why)) => {
                        skipped.insert(why);
                    }
                    (_, Ok(None)) => bail!("table names {col}, which is not a pod of this case"),
                }
            }
        }
        for why in &skipped {
            println!("    skipped (not supported yet): {why}");
        }
        let proto = match proto {
            CaseProto::Tcp => Proto::Tcp,
            CaseProto::Udp => Proto::Udp,
            CaseProto::Sctp => Proto::Sctp,
        };
        let mut observed: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut pending: Vec<_> = cells.iter().collect();
        for attempt in 0..=RETRIES {
            let results: Vec<((String, String), bool)> =
                join_all(pending.iter().map(|cell| async move {
                    let (row, col, src, dst) = cell;
                    let outcome =
                        probe(src, SocketAddr::new(*dst, port), proto, PROBE_TIMEOUT).await;
                    ((row.clone(), col.clone()), outcome.succeeded())
                }))
                .await;
            observed.extend(results);
            pending.retain(|cell| {
                let (row, col) = (&cell.0, &cell.1);
                table.expected(row, col) == Some(true)
                    && observed.get(&(row.clone(), col.clone())) == Some(&false)
            });
            if pending.is_empty() || attempt == RETRIES {
                break;
            }
        }
        let comparison: Comparison = compare(table, &|row: &str, col: &str| {
            observed.get(&(row.to_string(), col.to_string())).copied()
        });
        print!("{}", indent(&comparison.render()));
        if options.narrate {
            println!("    => {}", narrate(table, &observed));
        }
        Ok(comparison.mismatches().is_empty())
    }

    fn pod_handle(&self, name: &str) -> Result<&PodHandle, String> {
        if name.starts_with("world/") {
            return Err("external hosts".into());
        }
        let key = parse_key(name).ok_or_else(|| format!("{name} is not namespace/pod"))?;
        if let Some(why) = self.unplaced.get(&key) {
            return Err(why.clone());
        }
        self.topology
            .pod(name)
            .ok_or_else(|| format!("{name}: no such pod"))
    }

    fn destination(&self, name: &str, case: &Case) -> Result<Option<IpAddr>, String> {
        if name.starts_with("world/") {
            let _ = case;
            return Err("external hosts".into());
        }
        let handle = match self.pod_handle(name) {
            Ok(h) => h,
            Err(why) if why.ends_with("no such pod") => return Ok(None),
            Err(why) => return Err(why),
        };
        Ok(handle
            .addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(handle.addrs.first())
            .copied())
    }
}

fn proto_of(number: u8) -> Option<Proto> {
    match number {
        palisade_common::PROTO_TCP => Some(Proto::Tcp),
        palisade_common::PROTO_UDP => Some(Proto::Udp),
        palisade_common::PROTO_SCTP => Some(Proto::Sctp),
        _ => None,
    }
}

fn parse_key(name: &str) -> Option<ObjectKey> {
    let (ns, pod) = name.split_once('/')?;
    Some(ObjectKey::new(ns, pod))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// One line saying, for each destination, who reached it.
pub(super) fn narrate(
    table: &super::table::Table,
    observed: &BTreeMap<(String, String), bool>,
) -> String {
    let mut parts = Vec::new();
    for col in &table.columns {
        let sources: Vec<&String> = table.rows.iter().filter(|r| *r != col).collect();
        let reached: Vec<&str> = sources
            .iter()
            .filter(|r| observed.get(&((**r).clone(), col.clone())) == Some(&true))
            .map(|r| r.as_str())
            .collect();
        let text = match (reached.len(), sources.len()) {
            (0, _) => format!("{col} is reachable from nobody"),
            (n, m) if n == m => format!("{col} is reachable from everyone"),
            _ => format!("{col} is reachable only from {}", reached.join(", ")),
        };
        parts.push(text);
    }
    parts.join("; ")
}
