//! The Kubernetes side, read-only: how objects are named ([`keys`]), manifests as `kubectl
//! apply` reads them ([`manifest`]), the snapshot of Namespaces, Pods and NetworkPolicies a node
//! knows ([`cluster`]), and the addresses handed to pods whose manifest gives none
//! ([`addresses`], for `palisade explain -f` and the lab).

pub mod addresses;
pub mod cluster;
pub mod keys;
pub mod manifest;
