//! `palisade lab`: a cluster made of network namespaces on one machine, running the real agent
//! logic and the real eBPF programs, probed cell by cell against conformance truth tables.

pub mod addresses;
pub mod agent;
pub mod apiserver;
pub mod case;
pub mod kubelet;
pub mod model;
pub mod netns;
pub mod pins;
pub mod probe;
pub mod run;
pub mod sctp;
pub mod serve;
pub mod services;
pub mod table;
pub mod topology;
