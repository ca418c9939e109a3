//! The policy resolver: pure functions from Kubernetes objects to dataplane state, with no aya
//! import. [`model`] reads NetworkPolicies (with the API server's defaulting), [`compile`] turns
//! a snapshot into the map entries of one node, and [`lookup`] answers verdicts from those
//! entries exactly as the eBPF programs do.

pub mod compile;
pub mod evaluate;
pub mod lookup;
pub mod model;
pub mod ports;
pub mod selector;
pub mod tiers;

pub use compile::{ClusterChange, Compiler, Journal, NodeState, NodeView, Update};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
