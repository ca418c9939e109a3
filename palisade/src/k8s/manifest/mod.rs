//! Kubernetes manifests as `kubectl apply` reads them: multi-document YAML (`---`) and
//! `kind: List`, turned into typed objects; and the checks the API server makes before
//! accepting one ([`validate`]), so that a case holding a policy no cluster would accept fails
//! loudly instead of testing something that cannot exist.
//!
//! Reading is in `parse.rs` ([`load_file`], [`parse_str`]); the API server's checks are in
//! `validation.rs` ([`validate`], [`validate_policy`], [`validate_pod`], the label rules).

mod parse;
#[cfg(test)]
mod tests;
mod validation;

use std::{fmt, path::PathBuf};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};

use super::cnp::ClusterNetworkPolicy;

pub use self::{
    parse::{load_file, parse_str},
    validation::{
        FieldProblem, selector_problems, valid_label_key, valid_label_value, validate,
        validate_cluster_policy, validate_pod, validate_policy,
    },
};

/// One object of a manifest.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "objects are read once per manifest and moved into the cluster; boxing would only \
              add noise to every match"
)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    /// `policy.networking.k8s.io/v1alpha2`, cluster-scoped.
    ClusterNetworkPolicy(ClusterNetworkPolicy),
    /// A Node: its labels and `status.addresses`, for ClusterNetworkPolicy `nodes` peers.
    Node(Node),
    /// Any other kind (Services among them: the lab makes one per pod by itself).
    Ignored {
        kind: String,
        name: String,
    },
}

impl Object {
    pub fn kind(&self) -> &str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::ClusterNetworkPolicy(_) => "ClusterNetworkPolicy",
            Object::Node(_) => "Node",
            Object::Ignored { kind, .. } => kind,
        }
    }
}

/// Where an object sits in a file: `document 2` (counted from 1, as a reader counts), or
/// `document 2 items[0]` inside a `kind: List`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub document: u32,
    pub item: Option<u32>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read the manifest: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: document {document}: invalid YAML: {source}")]
    Syntax {
        origin: String,
        document: u32,
        source: serde_yaml_ng::Error,
    },
    #[error(
        "{origin}: {at}: not a Kubernetes object (expected a mapping with apiVersion and kind)"
    )]
    NotAnObject { origin: String, at: Position },
    #[error("{origin}: {at}: {kind} has no {field}")]
    MissingField {
        origin: String,
        at: Position,
        kind: String,
        field: &'static str,
    },
    /// `object` is the kind and name: `NetworkPolicy x/allow-b`.
    #[error("{origin}: {at}: {object}: apiVersion {api_version:?} is not served, use {expected}")]
    UnsupportedApiVersion {
        origin: String,
        at: Position,
        object: String,
        api_version: String,
        expected: &'static str,
    },
    /// `detail` is the YAML deserializer's message, which starts with the path of the offending
    /// field (`spec.containers[0].ports[0].containerPort: invalid type: ...`).
    #[error("{origin}: {at}: {kind} {object}: {detail}")]
    Malformed {
        origin: String,
        at: Position,
        kind: String,
        object: String,
        detail: String,
    },
    /// An object that the API server would reject (see [`validate`]).
    #[error("{kind} {object}: {field}: {problem}")]
    Invalid {
        kind: &'static str,
        object: String,
        field: String,
        problem: FieldProblem,
    },
    /// A ClusterNetworkPolicy that upstream's CRD refuses (see [`crate::k8s::cnp::validate`]).
    #[error(transparent)]
    InvalidCluster(crate::k8s::cnp::CnpError),
}
