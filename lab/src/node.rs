//! One lab node's in-process worker: a [`NodeWorker`] in the node's namespace.

use ipnet::IpNet;

use crate::{netns::LabError, topology::NodeHandle};
use palisade::{
    dataplane::{ConntrackSettings, Established, FlowSettings},
    node::{NodeConfig, NodeWorker, WorkerError},
};

pub use palisade::node::Interface;

/// Starts the agent of `node`, its maps and links pinned under `pins` when given.
pub fn start(
    node: &NodeHandle,
    service_ranges: &[IpNet],
    pins: Option<std::path::PathBuf>,
    established: Established,
) -> Result<NodeWorker, StartError> {
    start_with_flows(
        node,
        service_ranges,
        pins,
        established,
        FlowSettings::default(),
    )
}

/// [`start`] with other flow event settings (the benchmark's events on and off).
pub fn start_with_flows(
    node: &NodeHandle,
    service_ranges: &[IpNet],
    pins: Option<std::path::PathBuf>,
    established: Established,
    flows: FlowSettings,
) -> Result<NodeWorker, StartError> {
    start_configured(
        node,
        service_ranges,
        pins,
        established,
        flows,
        ConntrackSettings::default(),
    )
}

/// [`start_with_flows`] with other conntrack timeouts (tests of expiry).
pub fn start_configured(
    node: &NodeHandle,
    service_ranges: &[IpNet],
    pins: Option<std::path::PathBuf>,
    established: Established,
    flows: FlowSettings,
    conntrack: ConntrackSettings,
) -> Result<NodeWorker, StartError> {
    let netns = node.netns.fd().map_err(|source| StartError::Namespace {
        node: node.name.clone(),
        source,
    })?;
    Ok(NodeWorker::start(NodeConfig {
        name: node.name.clone(),
        netns: Some(netns),
        addrs: vec![node.addr_v4().into(), node.addr_v6().into()],
        service_ranges: service_ranges.to_vec(),
        pins,
        established,
        flows,
        conntrack,
        service_mark: palisade_common::SERVICE_MARK,
    })?)
}

/// Why a lab node's worker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("node {node}: opening its network namespace: {source}")]
    Namespace {
        node: String,
        #[source]
        source: LabError,
    },
    #[error(transparent)]
    Worker(#[from] WorkerError),
}
