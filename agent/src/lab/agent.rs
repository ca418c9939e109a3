//! One lab node's in-process agent: a [`NodeAgent`] in the node's namespace.

use ipnet::IpNet;

use super::topology::NodeHandle;
use crate::{
    dataplane::Established,
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
        flows: crate::dataplane::FlowSettings::default(),
    })
}
