//! One lab node's in-process worker: a [`NodeWorker`] in the node's namespace.

use ipnet::IpNet;

use super::topology::NodeHandle;
use palisade::{
    dataplane::{Established, FlowSettings},
    node::{NodeConfig, NodeWorker, WorkerError},
};

pub use palisade::node::Interface;

/// Starts the agent of `node`, its maps and links pinned under `pins` when given.
pub fn start(
    node: &NodeHandle,
    service_ranges: &[IpNet],
    pins: Option<std::path::PathBuf>,
    established: Established,
) -> Result<NodeWorker, WorkerError> {
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
) -> Result<NodeWorker, WorkerError> {
    let netns = node.netns.fd().map_err(|e| WorkerError::Failed {
        node: node.name.clone(),
        message: e.to_string(),
    })?;
    NodeWorker::start(NodeConfig {
        name: node.name.clone(),
        netns: Some(netns),
        addrs: vec![node.addr_v4().into(), node.addr_v6().into()],
        service_ranges: service_ranges.to_vec(),
        pins,
        established,
        flows,
    })
}
