//! The lab: a cluster made of network namespaces on one machine, running the real agent logic
//! and the real eBPF programs, probed cell by cell against conformance truth tables
//! (`palisade-lab run`). Never part of the shipped `palisade` binary.
//!
//! - the cluster: [`netns`] (namespaces), [`cleanup`] (what crashed runs left), [`topology`] (nodes, pods, external
//!   hosts and their links), [`pins`] (each run's own bpffs tree), [`services`] (kube-proxy's
//!   translation in nftables), [`node`] (a node's in-process worker);
//! - traffic: [`serve`] (servers in pods), [`probe`] (connection attempts), [`sctp`] (SCTP over
//!   raw sockets, for kernels without it);
//! - cases: [`case`] (the case format), [`table`] (truth tables and their comparison),
//!   [`run`] (cases on the kernel, or judged by the reference evaluator);
//! - the real control plane: [`apiserver`] (etcd, kube-apiserver and controller-manager on
//!   loopback), [`control`] (the lab playing kubectl and the kubelet, with a `palisade agent` per node).

pub mod apiserver;
pub mod case;
pub mod cleanup;
pub mod control;
pub mod load;
pub mod netns;
pub mod node;
pub mod pins;
pub mod probe;
pub mod run;
pub mod sctp;
pub mod serve;
pub mod services;
pub mod table;
pub mod topology;
