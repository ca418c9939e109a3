//! One lab node's in-process agent: a [`NodeAgent`] in the node's namespace.

use ipnet::IpNet;

use super::topology::NodeHandle;
use crate::{
    dataplane::{Established, FlowSettings},
    node::{AgentError, NodeAgent, NodeConfig},
};

pub use crate::node::Interface;

/// Starts the agent of `node`, its maps and links pinned under `pins` when given.
pub fn start(
    node: &NodeHandle,
    service_ranges: &[IpNet],
    pins: Option<std::path::PathBuf>,
    established: Established,
) -> Result<NodeAgent, AgentError> {
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
) -> Result<NodeAgent, AgentError> {
    let netns = node.netns.fd().map_err(|e| AgentError::Failed {
        node: node.name.clone(),
        message: e.to_string(),
    })?;
    NodeAgent::start(NodeConfig {
        name: node.name.clone(),
        netns: Some(netns),
        addrs: vec![node.addr_v4().into(), node.addr_v6().into()],
        service_ranges: service_ranges.to_vec(),
        pins,
        established,
        flows,
    })
}
