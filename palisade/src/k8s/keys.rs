//! How objects are named and what a manifest leaves out: `namespace/name` keys, the defaults
//! `kubectl apply` and a kubelet would fill in, and Kubernetes protocol names.

use std::sync::Arc;

use palisade_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

/// The label every namespace carries with its own name (set by the API server since v1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Where `kubectl apply` puts an object whose manifest names no namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The node of a pod whose manifest gives no `spec.nodeName`.
pub const DEFAULT_NODE: &str = "node-1";

/// `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes protocol names to IP protocol numbers. `protocol` omitted means TCP.
pub fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(PROTO_TCP),
        "UDP" => Some(PROTO_UDP),
        "SCTP" => Some(PROTO_SCTP),
        _ => None,
    }
}

/// [`protocol_number`] the other way: the Kubernetes name of an IP protocol number.
pub fn protocol_name(number: u8) -> Option<&'static str> {
    match number {
        PROTO_TCP => Some("TCP"),
        PROTO_UDP => Some("UDP"),
        PROTO_SCTP => Some("SCTP"),
        _ => None,
    }
}
