//! A case on the real kernel: build its cluster in network namespaces, run the real agent on
//! each node (in this process, or a `palisade agent` process per node against a real API
//! server), apply the steps and probe every cell of every truth table.

use palisade::k8s::addresses::AddressBook;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use futures::future::join_all;

use super::options::{RunOptions, narrate};
use crate::{
    case::{Case, CaseProto, Probe, Via},
    control::ApiControl,
    node::{self, Interface},
    pins::PinRoot,
    probe::probe,
    serve::{Proto, ServerHandle, serve},
    services::{Services, service_ranges},
    table::{Comparison, compare},
    topology::{NodeHandle, PodHandle, Topology, link_ifname},
};
use palisade::{
    dataplane::Established,
    k8s::cluster::{Cluster, ObjectKey, container_ports, is_host_network, pod_node},
    k8s::manifest,
};

/// How long one probe may take. A dropped SYN is retransmitted after 1 s, so 2 s lets one
/// retransmission through before a cell counts as blocked.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra attempts for cells expected to connect that did not (never for cells expected to be
/// blocked: an intermittent leak is still a leak).
const RETRIES: usize = 2;

/// The lab's view of one case's cluster.
struct Lab {
    // Dropped first: the namespaces go before the agents detach (their links go with them).
    topology: Topology,
    nodes: BTreeMap<String, LabNode>,
    /// Hosts outside the cluster, by table name (`world/<name>`), wired to node-1.
    externals: BTreeMap<String, PodHandle>,
    cluster: Cluster,
    servers: BTreeMap<ObjectKey, ServerHandle>,
    external_servers: Vec<ServerHandle>,
    services: Services,
    addresses: AddressBook,
    /// Pods the lab does not run (hostNetwork), with the reason.
    unplaced: BTreeMap<ObjectKey, String>,
    established: Established,
    /// The API server and agent processes (`--apiserver`); after the topology, so pods'
    /// namespaces go before their agents.
    api: Option<ApiControl>,
    /// Last: the pinned maps go once the agents have released their links.
    pins: PinRoot,
}

/// A node of the lab and its own agent (in this process, or a `palisade agent` process).
struct LabNode {
    handle: NodeHandle,
    pins: PathBuf,
    agent: Option<palisade::node::NodeWorker>,
}

/// The node external hosts hang off.
const FIRST_NODE: &str = "node-1";

pub(super) async fn run_case(
    case: &Case,
    options: &RunOptions,
    delays: &mut Vec<Duration>,
) -> Result<bool> {
    let api = if options.apiserver {
        let binary = match &options.agent_binary {
            Some(b) => b.clone(),
            None => super::agent_binary()?,
        };
        Some(ApiControl::start(binary, options.established, options.faults).await?)
    } else {
        None
    };
    let mut lab = Lab {
        api,
        established: options.established,
        topology: Topology::new()?,
        nodes: BTreeMap::new(),
        externals: BTreeMap::new(),
        cluster: Cluster::default(),
        servers: BTreeMap::new(),
        external_servers: Vec::new(),
        services: Services::default(),
        addresses: AddressBook::default(),
        unplaced: BTreeMap::new(),
        pins: PinRoot::new(),
    };
    let first = lab.node(FIRST_NODE)?;
    for external in &case.externals {
        let name = format!("world/{}", external.name);
        let handle = lab.topology.add_external(&first, &name, &[external.ip])?;
        let ports: Vec<(Proto, u16)> = external
            .ports
            .iter()
            .map(|(proto, port)| (proto_of_case(*proto), *port))
            .collect();
        lab.external_servers.push(serve(&handle, &ports)?);
        lab.externals.insert(name, handle);
    }
    for file in &case.cluster {
        for object in manifest::load_file(file)? {
            lab.cluster.apply(object);
        }
    }
    lab.reconcile().await?;
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
        lab.reconcile().await?;
        for probe in &step.probes {
            ok &= lab.probe_table(i + 1, probe, options).await?;
        }
    }
    if let Some(api) = &mut lab.api {
        delays.append(&mut api.delays);
    }
    if options.hold && lab.api.is_some() {
        lab.hold()?;
        std::future::pending::<()>().await;
    }
    Ok(ok)
}

impl Lab {
    /// What `lab run --hold` prints: where the API server, the agents and the pods are.
    fn hold(&self) -> Result<()> {
        let Some(api) = &self.api else {
            return Ok(());
        };
        println!("\nThe lab stays up until Ctrl-C, which removes all of it.");
        println!(
            "  API server: kubectl --kubeconfig {}",
            api.kubeconfig().display()
        );
        for name in self.nodes.keys() {
            println!(
                "  {name}: palisade flows --socket {}",
                api.agent_socket(name)?.display()
            );
        }
        println!("  pods (run a command in one with `ip netns exec NETNS ...`):");
        for pod in self.topology.pods() {
            let addrs: Vec<String> = pod.addrs.iter().map(ToString::to_string).collect();
            println!(
                "    {:<28} {:<24} netns {}",
                pod.key,
                addrs.join(","),
                pod.netns.name()
            );
        }
        Ok(())
    }

    /// The node called `name` (`node-<index>`), created with its agent, its links to the other
    /// nodes and its Service translation the first time a pod lands on it.
    fn node(&mut self, name: &str) -> Result<NodeHandle> {
        if let Some(node) = self.nodes.get(name) {
            return Ok(node.handle.clone());
        }
        let index = name
            .strip_prefix("node-")
            .and_then(|i| i.parse::<u8>().ok())
            .filter(|i| (1..=254).contains(i))
            .with_context(|| {
                format!("spec.nodeName {name:?}: the lab's nodes are named node-1 ... node-254")
            })?;
        let handle = self.topology.add_node(name, index)?;
        let pins = self.pins.node(&handle.netns);
        let agent = match &mut self.api {
            Some(api) => {
                api.start_agent(&handle, &pins)?;
                None
            }
            None => Some(node::start(
                &handle,
                &service_ranges(),
                Some(pins.clone()),
                self.established,
            )?),
        };
        self.services.install(&handle.netns)?;
        self.nodes.insert(
            name.to_owned(),
            LabNode {
                handle: handle.clone(),
                pins,
                agent,
            },
        );
        Ok(handle)
    }

    /// Makes the namespaces match the cluster (pods created on their node, removed, served,
    /// given a Service), then syncs every node's agent: endpoints are written before their
    /// programs are attached.
    async fn reconcile(&mut self) -> Result<()> {
        // With an API server: the objects first (a kubelet learns of a pod from the API), and
        // the faults asked for in the middle of the changes.
        let mut agents_killed = false;
        if let Some(api) = &mut self.api {
            api.push_objects(&self.cluster).await?;
            agents_killed = api.kill_agents_if_asked();
            api.restart_apiserver_if_asked().await?;
        }
        let wanted: BTreeSet<ObjectKey> = self.cluster.pods.keys().cloned().collect();
        let existing: Vec<ObjectKey> = self.servers.keys().cloned().collect();
        for key in existing {
            if !wanted.contains(&key) {
                self.servers.remove(&key);
                self.services.remove(&key);
                self.topology.remove_pod(&key.to_string())?;
            }
        }
        self.unplaced.retain(|k, _| wanted.contains(k));
        let keys: Vec<ObjectKey> = self.cluster.pods.keys().cloned().collect();
        for key in keys {
            if self.servers.contains_key(&key) {
                // A pod re-applied from a manifest (no status) keeps the address it runs with,
                // as the kubelet keeps reporting it.
                self.addresses(&key)?;
                continue;
            }
            if self.unplaced.contains_key(&key) {
                continue;
            }
            let Some(pod) = self.cluster.pods.get(&key) else {
                continue;
            };
            if is_host_network(pod) {
                self.unplaced.insert(key, "hostNetwork pods".into());
                continue;
            }
            let node_name = pod_node(pod).to_string();
            let ports: Vec<(Proto, u16)> = container_ports(pod)
                .iter()
                .filter_map(|(_, protocol, port)| proto_of(*protocol).map(|p| (p, *port)))
                .collect();
            let node = self.node(&node_name)?;
            let addrs = self.addresses(&key)?;
            let handle = self.topology.add_pod(&node, &key.to_string(), &addrs)?;
            let server = serve(&handle, &ports)?;
            self.services.set(&key, &addrs, &ports);
            self.servers.insert(key, server);
        }
        for node in self.nodes.values() {
            self.services.install(&node.handle.netns)?;
        }
        if let Some(api) = &mut self.api {
            if agents_killed {
                let nodes: Vec<_> = self
                    .nodes
                    .values()
                    .map(|n| (n.handle.clone(), n.pins.clone()))
                    .collect();
                api.restart_agents(&nodes)?;
            }
            let servers = &self.servers;
            api.push_statuses(&self.cluster, |key| servers.contains_key(key))
                .await?;
            return api.converge().await;
        }
        for (name, node) in &self.nodes {
            let Some(agent) = &node.agent else { continue };
            let interfaces = self
                .topology
                .pods()
                .filter(|p| p.node.name == *name && !self.externals.contains_key(&p.key))
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
            // Links to the other nodes and to the external hosts: where Service flows leave.
            let uplinks = self
                .nodes
                .values()
                .filter(|other| other.handle.name != *name)
                .map(|other| link_ifname(&other.handle))
                .chain(
                    self.externals
                        .values()
                        .filter(|e| e.node.name == *name)
                        .map(|e| e.host_ifname.clone()),
                )
                .collect();
            let outcome = agent.sync(&self.cluster, interfaces, uplinks)?;
            for e in &outcome.errors {
                println!("    policy error ({name}): {e}");
            }
            for f in &outcome.report.failures {
                println!("    DATAPLANE WRITE FAILED ({name}), pod isolated: {f}");
            }
            tracing::debug!(
                node = %name,
                writes = outcome.report.writes,
                deletes = outcome.report.deletes,
                endpoints = outcome.endpoints,
                "synced"
            );
        }
        Ok(())
    }

    fn addresses(&mut self, key: &ObjectKey) -> Result<Vec<IpAddr>> {
        let Some(pod) = self.cluster.pods.get_mut(key) else {
            bail!("no pod {key}")
        };
        Ok(self.addresses.addresses(key, std::sync::Arc::make_mut(pod)))
    }

    async fn probe_table(
        &self,
        step: usize,
        probe_spec: &Probe,
        options: &RunOptions,
    ) -> Result<bool> {
        let (proto, port) = probe_spec.connect;
        let via = match probe_spec.via {
            Via::PodIp => "pod-ip",
            Via::Service => "service",
        };
        println!("step {step}: {proto}/{port} via {via}");
        let mut skipped = BTreeSet::new();
        let table = &probe_spec.expect;
        // Cells to probe: (row, column) -> (source pod, destination address).
        let mut cells: Vec<(String, String, &PodHandle, IpAddr)> = Vec::new();
        for row in &table.rows {
            for col in &table.columns {
                if row == col || !skipped.is_empty() {
                    continue;
                }
                match (self.pod_handle(row), self.destination(col, probe_spec.via)) {
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
        let proto = proto_of_case(proto);
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

    /// The pod (or external host) a table names.
    fn pod_handle(&self, name: &str) -> Result<&PodHandle, String> {
        if let Some(external) = self.externals.get(name) {
            return Ok(external);
        }
        let key = parse_key(name).ok_or_else(|| format!("{name} is not namespace/pod"))?;
        if let Some(why) = self.unplaced.get(&key) {
            return Err(why.clone());
        }
        self.topology
            .pod(name)
            .ok_or_else(|| format!("{name}: no such pod"))
    }

    /// Where a probe to column `name` goes: the pod's first address (IPv4 first), or its
    /// Service's ClusterIP of that family; `None` for a name that is not in the case.
    fn destination(&self, name: &str, via: Via) -> Result<Option<IpAddr>, String> {
        let handle = match self.pod_handle(name) {
            Ok(h) => h,
            Err(why) if why.ends_with("no such pod") => return Ok(None),
            Err(why) => return Err(why),
        };
        let Some(addr) = handle
            .addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(handle.addrs.first())
            .copied()
        else {
            return Ok(None);
        };
        match via {
            Via::PodIp => Ok(Some(addr)),
            Via::Service => {
                let key = parse_key(name).ok_or_else(|| format!("{name} is not namespace/pod"))?;
                self.services
                    .cluster_ip(&key, addr)
                    .map(Some)
                    .ok_or_else(|| format!("{name} has no Service"))
            }
        }
    }
}

fn proto_of_case(proto: CaseProto) -> Proto {
    match proto {
        CaseProto::Tcp => Proto::Tcp,
        CaseProto::Udp => Proto::Udp,
        CaseProto::Sctp => Proto::Sctp,
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
