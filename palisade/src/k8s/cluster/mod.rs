//! The Kubernetes objects the agent (or the lab) knows: a snapshot of Namespaces, Pods and
//! NetworkPolicies, keyed by namespace and name, and of the cluster-scoped ClusterNetworkPolicies
//! and Nodes, keyed by name.
//!
//! The snapshot and how `apply`, `delete` and `label` change it are here; how those steps name
//! objects and label edits is in `reference.rs`, and what a Pod says about itself in `pod.rs`.

mod pod;
mod reference;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

pub use self::{
    pod::{
        Labels, PodInfo, PodMeta, container_ports, intern_labels, is_host_network, pod_addrs,
        pod_ips, pod_key, pod_labels, pod_node,
    },
    reference::{LabelChange, LabelEdit, ObjectRef},
};
pub use super::keys::{DEFAULT_NAMESPACE, DEFAULT_NODE, NAMESPACE_NAME_LABEL, ObjectKey};
use super::{cnp::ClusterNetworkPolicy, manifest::Object};

/// A consistent view of the cluster. The objects are shared, not owned: the agent's snapshot
/// points at its watch caches' copies (one copy of each object, however many snapshots), and a
/// clone copies pointers. Change one with [`Arc::make_mut`] (which copies it if it is shared).
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub pods: BTreeMap<ObjectKey, Arc<PodInfo>>,
    pub policies: BTreeMap<ObjectKey, Arc<NetworkPolicy>>,
    /// ClusterNetworkPolicies by name (cluster-scoped: deleting a namespace leaves them).
    pub cluster_policies: BTreeMap<String, Arc<ClusterNetworkPolicy>>,
    /// Nodes by name: their labels and addresses, for ClusterNetworkPolicy `nodes` peers.
    pub nodes: BTreeMap<String, Arc<Node>>,
}

/// A Namespace annotation: `audit` puts every pod of the namespace in audit mode (policy is
/// evaluated and would-be drops are reported as flows with verdict `audit`, but traffic
/// passes); anything else, or none, enforces.
pub const POLICY_MODE_ANNOTATION: &str = "palisade.io/policy-mode";

/// Whether `namespace` asks for audit mode ([`POLICY_MODE_ANNOTATION`]).
pub fn namespace_audited(cluster: &Cluster, namespace: &str) -> bool {
    cluster
        .namespaces
        .get(namespace)
        .and_then(|ns| ns.metadata.annotations.as_ref())
        .and_then(|a| a.get(POLICY_MODE_ANNOTATION))
        .is_some_and(|mode| mode == "audit")
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "invalid object reference {reference:?}: expected namespace/NAME, pod/NAMESPACE/NAME, \
         networkpolicy/NAMESPACE/NAME or clusternetworkpolicy/NAME"
    )]
    BadReference { reference: String },
    #[error(
        "{reference:?}: unknown kind {kind:?} (expected namespace, pod, networkpolicy or \
         clusternetworkpolicy)"
    )]
    UnknownKind { reference: String, kind: String },
    #[error("{target} does not exist")]
    NotFound { target: ObjectRef },
    #[error("label {spec:?}: expected an object and changes, such as \"pod/x/a key=value other-\"")]
    NoLabelChanges { spec: String },
    #[error("label {spec:?}: {change:?} is neither KEY=VALUE nor KEY-")]
    BadLabelChange { spec: String, change: String },
    #[error("label {spec:?}: invalid label key {key:?}")]
    BadLabelKey { spec: String, key: String },
    #[error("label {spec:?}: invalid label value {value:?} for {key}")]
    BadLabelValue {
        spec: String,
        key: String,
        value: String,
    },
    #[error("{target}: has no label {key:?} to remove")]
    LabelNotFound { target: ObjectRef, key: String },
    #[error("{target}: label {key} is set by the API server and cannot change")]
    ImmutableLabel { target: ObjectRef, key: String },
    #[error("pod {pod}: invalid IP address {ip:?} in {field}")]
    InvalidPodIp {
        pod: ObjectKey,
        field: &'static str,
        ip: String,
    },
}

impl Cluster {
    /// `kubectl apply`: creates the object or replaces the one with the same kind, namespace
    /// and name. A namespace always carries its name label, as the API server sets it; a Pod or
    /// NetworkPolicy in a namespace that does not exist yet brings that namespace with it.
    /// Objects come from [`crate::k8s::manifest`], which has already defaulted their namespace and
    /// required a name.
    pub fn apply(&mut self, object: Object) {
        match object {
            Object::Namespace(mut namespace) => {
                let name = namespace.metadata.name.clone().unwrap_or_default();
                let labels = namespace.metadata.labels.get_or_insert_default();
                labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
                self.namespaces.insert(name, Arc::new(namespace));
            }
            Object::Pod(mut pod) => {
                let key = self.key_for(&mut pod.metadata);
                self.pods.insert(key, Arc::new(PodInfo::from(pod)));
            }
            Object::NetworkPolicy(mut policy) => {
                let key = self.key_for(&mut policy.metadata);
                self.policies.insert(key, Arc::new(policy));
            }
            Object::ClusterNetworkPolicy(mut policy) => {
                policy.metadata.namespace = None;
                let name = policy.metadata.name.clone().unwrap_or_default();
                self.cluster_policies.insert(name, Arc::new(policy));
            }
            Object::Node(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                self.nodes.insert(name, Arc::new(node));
            }
            Object::Ignored { kind, name } => {
                tracing::debug!(
                    kind,
                    name,
                    "ignoring an object of a kind the dataplane does not use"
                );
            }
        }
    }

    /// Deletes `namespace/y` (with its pods and policies, never a ClusterNetworkPolicy),
    /// `pod/x/a`, `networkpolicy/x/p` or `clusternetworkpolicy/p`.
    pub fn delete(&mut self, reference: &str) -> Result<(), ClusterError> {
        self.delete_object(&reference.parse()?)
    }

    pub fn delete_object(&mut self, target: &ObjectRef) -> Result<(), ClusterError> {
        let found = match target {
            ObjectRef::Namespace(name) => {
                self.pods.retain(|key, _| *key.namespace != **name);
                self.policies.retain(|key, _| *key.namespace != **name);
                self.namespaces.remove(name).is_some()
            }
            ObjectRef::Pod(key) => self.pods.remove(key).is_some(),
            ObjectRef::NetworkPolicy(key) => self.policies.remove(key).is_some(),
            ObjectRef::ClusterNetworkPolicy(name) => self.cluster_policies.remove(name).is_some(),
        };
        if found {
            Ok(())
        } else {
            Err(ClusterError::NotFound {
                target: target.clone(),
            })
        }
    }

    /// `kubectl label --overwrite`: `namespace/y ns2=updated`, `pod/x/b pod2=updated`,
    /// `pod/x/b pod2-`. Nothing changes unless every edit applies.
    pub fn label(&mut self, spec: &str) -> Result<(), ClusterError> {
        self.apply_labels(&spec.parse()?)
    }

    pub fn apply_labels(&mut self, change: &LabelChange) -> Result<(), ClusterError> {
        let target = &change.target;
        let not_found = || ClusterError::NotFound {
            target: target.clone(),
        };
        let mut labels = match target {
            ObjectRef::Pod(key) => {
                let pod = self.pods.get(key).ok_or_else(not_found)?;
                (*pod.labels).clone()
            }
            _ => (self.metadata_mut(target).ok_or_else(not_found)?.labels)
                .clone()
                .unwrap_or_default(),
        };
        for edit in &change.edits {
            match edit {
                LabelEdit::Set { key, value } => {
                    labels.insert(key.clone(), value.clone());
                }
                // kubectl only warns here; a case that removes a label it never set has a typo.
                LabelEdit::Remove { key } => {
                    if labels.remove(key).is_none() {
                        let key = key.clone();
                        return Err(ClusterError::LabelNotFound {
                            target: target.clone(),
                            key,
                        });
                    }
                }
            }
        }
        if let ObjectRef::Namespace(name) = target
            && labels.get(NAMESPACE_NAME_LABEL) != Some(name)
        {
            return Err(ClusterError::ImmutableLabel {
                target: target.clone(),
                key: NAMESPACE_NAME_LABEL.to_owned(),
            });
        }
        match target {
            ObjectRef::Pod(key) => {
                let pod = self.pods.get_mut(key).ok_or_else(not_found)?;
                Arc::make_mut(pod).labels = intern_labels(Some(labels));
            }
            _ => self.metadata_mut(target).ok_or_else(not_found)?.labels = Some(labels),
        }
        Ok(())
    }

    /// The metadata of a namespace or a policy (a pod's labels are not in its metadata).
    fn metadata_mut(&mut self, target: &ObjectRef) -> Option<&mut ObjectMeta> {
        match target {
            ObjectRef::Namespace(name) => self
                .namespaces
                .get_mut(name)
                .map(|ns| &mut Arc::make_mut(ns).metadata),
            ObjectRef::Pod(_) => None,
            ObjectRef::NetworkPolicy(key) => self
                .policies
                .get_mut(key)
                .map(|p| &mut Arc::make_mut(p).metadata),
            ObjectRef::ClusterNetworkPolicy(name) => self
                .cluster_policies
                .get_mut(name)
                .map(|p| &mut Arc::make_mut(p).metadata),
        }
    }

    /// The labels of namespace `name`, or `None` if there is no such namespace.
    pub fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        let namespace = self.namespaces.get(name)?;
        Some(namespace.metadata.labels.as_ref().unwrap_or(&NO_LABELS))
    }

    /// The key of a namespaced object, creating its namespace if needed.
    fn key_for(&mut self, metadata: &mut ObjectMeta) -> ObjectKey {
        let namespace = metadata
            .namespace
            .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
        if !self.namespaces.contains_key(namespace.as_str()) {
            tracing::debug!(namespace, "creating an implicit namespace");
            self.apply(Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            }));
        }
        ObjectKey::new(namespace.clone(), metadata.name.clone().unwrap_or_default())
    }
}
