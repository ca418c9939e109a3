//! The Kubernetes side, read-only: how objects are named ([`keys`]), manifests as `kubectl
//! apply` reads them ([`manifest`]), the snapshot of Namespaces, Pods and NetworkPolicies a node
//! knows ([`cluster`]), and the addresses handed to pods whose manifest gives none
//! ([`addresses`], for `palisade explain -f` and the lab). Tests build objects with `fixtures`
//! (this crate's tests, and others with the `fixtures` feature).

pub mod addresses;
pub mod cluster;
pub mod cnp;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod keys;
pub mod manifest;
