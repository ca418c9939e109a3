//! `palisade-lab run --model`: the cases judged by the reference evaluator alone, without a
//! kernel or root. Every probe is answerable here (Services, externals, other nodes, SCTP): a
//! Service probe is judged against its backend pod, as kube-proxy's translation makes it.

use palisade::k8s::addresses::AddressBook;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, bail};
use palisade_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use super::options::{RunOptions, narrate};
use crate::{
    case::{Case, CaseProto, Probe, Via},
    table::compare,
};
use palisade::{
    k8s::cluster::{Cluster, ObjectKey, container_ports},
    k8s::manifest,
    policy::{
        NodeView,
        evaluate::{Endpoint, Evaluator},
    },
};

/// Node addresses as the kernel lab gives them (`10.244.0.<index>`).
const NODES: [(&str, [u8; 4]); 2] = [("node-1", [10, 244, 0, 1]), ("node-2", [10, 244, 0, 2])];

pub fn run_case(case: &Case, options: &RunOptions) -> Result<bool> {
    let mut cluster = Cluster::default();
    let mut book = AddressBook::default();
    for file in &case.cluster {
        for object in manifest::load_file(file)? {
            cluster.apply(object);
        }
    }
    let mut ok = true;
    for (i, step) in case.steps.iter().enumerate() {
        for reference in &step.delete {
            cluster
                .delete(reference)
                .with_context(|| format!("step {}: delete", i + 1))?;
        }
        for file in &step.apply {
            for object in manifest::load_file(file)? {
                cluster.apply(object);
            }
        }
        for spec in &step.label {
            cluster
                .label(spec)
                .with_context(|| format!("step {}: label", i + 1))?;
        }
        for (key, pod) in cluster.pods.iter_mut() {
            book.addresses(key, std::sync::Arc::make_mut(pod));
        }
        // What the evaluator will fail closed for, said once per step.
        for policy in Evaluator::new(&cluster, &[]).cluster_policies() {
            for error in &policy.errors {
                println!("step {}: warning: {error} (fails closed)", i + 1);
            }
        }
        for probe in &step.probes {
            ok &= probe_table(&cluster, case, i + 1, probe, options)?;
        }
    }
    Ok(ok)
}

fn probe_table(
    cluster: &Cluster,
    case: &Case,
    step: usize,
    probe: &Probe,
    options: &RunOptions,
) -> Result<bool> {
    let (proto, port) = probe.connect;
    let via = if probe.via == Via::Service {
        "service"
    } else {
        "pod-ip"
    };
    println!("step {step}: {proto}/{port} via {via} (model)");
    let protocol = match proto {
        CaseProto::Tcp => PROTO_TCP,
        CaseProto::Udp => PROTO_UDP,
        CaseProto::Sctp => PROTO_SCTP,
    };
    let addrs: Vec<[IpAddr; 1]> = NODES
        .iter()
        .map(|(_, a)| [IpAddr::V4(Ipv4Addr::from(*a))])
        .collect();
    let nodes: Vec<NodeView<'_>> = NODES
        .iter()
        .zip(&addrs)
        .map(|((name, _), a)| NodeView { name, addrs: a })
        .collect();
    let evaluator = Evaluator::new(cluster, &nodes);
    let table = &probe.expect;
    let mut observed = std::collections::BTreeMap::new();
    for row in &table.rows {
        for col in &table.columns {
            if row == col {
                continue;
            }
            let (from, _) = endpoint(cluster, case, row)?;
            let (to, serves) = endpoint(cluster, case, col)?;
            // A port the destination does not serve is refused, whatever the policy says.
            let allowed =
                serves(protocol, port) && evaluator.evaluate(from, to, protocol, port).allowed;
            observed.insert((row.clone(), col.clone()), allowed);
        }
    }
    let comparison = compare(table, &|row: &str, col: &str| {
        observed.get(&(row.to_string(), col.to_string())).copied()
    });
    for line in comparison.render().lines() {
        println!("    {line}");
    }
    if options.narrate {
        println!("    => {}", narrate(table, &observed));
    }
    Ok(comparison.mismatches().is_empty())
}

type Serves = Box<dyn Fn(u8, u16) -> bool>;

/// A table name as an evaluator endpoint, and what it serves.
fn endpoint<'a>(cluster: &'a Cluster, case: &Case, name: &str) -> Result<(Endpoint<'a>, Serves)> {
    if let Some(ext) = name.strip_prefix("world/") {
        let Some(external) = case.external(ext) else {
            bail!("table names {name}, which the case does not declare")
        };
        let ports: Vec<(u8, u16)> = external
            .ports
            .iter()
            .map(|(p, port)| {
                let proto = match p {
                    CaseProto::Tcp => PROTO_TCP,
                    CaseProto::Udp => PROTO_UDP,
                    CaseProto::Sctp => PROTO_SCTP,
                };
                (proto, *port)
            })
            .collect();
        return Ok((
            Endpoint::Address(external.ip),
            Box::new(move |proto, port| ports.contains(&(proto, port))),
        ));
    }
    let Some((ns, pod)) = name.split_once('/') else {
        bail!("{name} is not namespace/pod")
    };
    let Some((key, pod)) = cluster.pods.get_key_value(&ObjectKey::new(ns, pod)) else {
        bail!("table names {name}, which is not a pod at this step")
    };
    let Some(endpoint) = Endpoint::pod(cluster, key) else {
        bail!("pod {name} has no address")
    };
    let ports: Vec<(u8, u16)> = container_ports(pod)
        .iter()
        .map(|(_, proto, port)| (*proto, *port))
        .collect();
    Ok((
        endpoint,
        Box::new(move |proto, port| ports.contains(&(proto, port))),
    ))
}
