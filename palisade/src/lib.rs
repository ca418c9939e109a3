//! Palisade's agent and its tools: what the DaemonSet image ships.
//!
//! Layers, each using only those listed before it:
//! - [`k8s`]: the Kubernetes objects a node knows (keys, manifests, the cluster snapshot);
//! - [`policy`]: a pure resolver from those objects to dataplane state, and the reference
//!   evaluator (no aya import);
//! - [`dataplane`]: the only code that touches eBPF programs and maps;
//! - [`flows`]: the programs' flow events, named after the policies that decided them;
//! - [`node`]: a node's worker, the compiler and the dataplane on a thread in the node's
//!   network namespace;
//! - [`explain`]: why a connection is allowed or denied, from manifests or a running agent;
//! - [`daemon`]: `palisade agent`, the DaemonSet process (watches, sync loop, metrics).
//!
//! The lab (network-namespace clusters, probes, conformance cases) is the crate
//! `palisade-lab`, built on this one and never shipped.

pub mod daemon;
pub mod dataplane;
pub mod explain;
pub mod flows;
pub mod k8s;
pub mod node;
pub mod policy;
