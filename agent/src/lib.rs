//! Palisade's agent, lab and tools.
//!
//! Layers: [`cluster`] (the Kubernetes objects a node knows), [`policy`] (a pure resolver from
//! those objects to dataplane state; no aya import), [`dataplane`] (the only code that touches
//! eBPF maps and programs), [`lab`] (network-namespace clusters, probes and conformance cases).

pub mod agent;
pub mod cluster;
pub mod dataplane;
pub mod explain;
pub mod flows;
pub mod lab;
pub mod manifest;
pub mod node;
pub mod policy;
