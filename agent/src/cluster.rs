//! The Kubernetes objects the agent (or the lab) knows: a snapshot of Namespaces, Pods and
//! NetworkPolicies, keyed by namespace and name.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::manifest::Object;

/// The label every namespace carries with its own name (set by the API server since v1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
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

/// A consistent view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub policies: BTreeMap<ObjectKey, NetworkPolicy>,
}

/// Where `kubectl apply` puts an object whose manifest names no namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The node of a pod whose manifest gives no `spec.nodeName`.
pub const DEFAULT_NODE: &str = "node-1";

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "invalid object reference {reference:?}: expected namespace/NAME, pod/NAMESPACE/NAME or \
         networkpolicy/NAMESPACE/NAME"
    )]
    BadReference { reference: String },
    #[error("{reference:?}: unknown kind {kind:?} (expected namespace, pod or networkpolicy)")]
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

/// An object named the way `delete` and `label` steps name them: `namespace/y`, `pod/x/a`,
/// `networkpolicy/x/allow-b` (kubectl's plurals and short names are accepted too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectRef {
    Namespace(String),
    Pod(ObjectKey),
    NetworkPolicy(ObjectKey),
}

impl std::str::FromStr for ObjectRef {
    type Err = ClusterError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        let bad = || ClusterError::BadReference {
            reference: reference.to_owned(),
        };
        let mut parts = reference.split('/');
        let kind = parts.next().ok_or_else(bad)?;
        let names: Vec<&str> = parts.collect();
        if names.iter().any(|name| name.is_empty()) {
            return Err(bad());
        }
        match (kind.to_ascii_lowercase().as_str(), names.as_slice()) {
            ("namespace" | "namespaces" | "ns", [name]) => Ok(Self::Namespace((*name).to_owned())),
            ("pod" | "pods" | "po", [namespace, name]) => {
                Ok(Self::Pod(ObjectKey::new(*namespace, *name)))
            }
            ("networkpolicy" | "networkpolicies" | "netpol", [namespace, name]) => {
                Ok(Self::NetworkPolicy(ObjectKey::new(*namespace, *name)))
            }
            (
                "namespace" | "namespaces" | "ns" | "pod" | "pods" | "po" | "networkpolicy"
                | "networkpolicies" | "netpol",
                _,
            ) => Err(bad()),
            _ => Err(ClusterError::UnknownKind {
                reference: reference.to_owned(),
                kind: kind.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Namespace(name) => write!(f, "namespace/{name}"),
            Self::Pod(key) => write!(f, "pod/{key}"),
            Self::NetworkPolicy(key) => write!(f, "networkpolicy/{key}"),
        }
    }
}

/// A parsed `label` step: `pod/x/b pod2=updated other-`, changes applied left to right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelChange {
    pub target: ObjectRef,
    pub edits: Vec<LabelEdit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelEdit {
    Set { key: String, value: String },
    Remove { key: String },
}

impl std::str::FromStr for LabelChange {
    type Err = ClusterError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut words = spec.split_whitespace();
        let no_changes = || ClusterError::NoLabelChanges {
            spec: spec.to_owned(),
        };
        let target: ObjectRef = words.next().ok_or_else(no_changes)?.parse()?;
        let edits = words
            .map(|word| parse_label_edit(spec, word))
            .collect::<Result<Vec<_>, _>>()?;
        if edits.is_empty() {
            return Err(no_changes());
        }
        Ok(Self { target, edits })
    }
}

fn parse_label_edit(spec: &str, word: &str) -> Result<LabelEdit, ClusterError> {
    let edit = match word.split_once('=') {
        Some((key, value)) => LabelEdit::Set {
            key: key.to_owned(),
            value: value.to_owned(),
        },
        None => match word.strip_suffix('-') {
            Some(key) => LabelEdit::Remove {
                key: key.to_owned(),
            },
            None => {
                return Err(ClusterError::BadLabelChange {
                    spec: spec.to_owned(),
                    change: word.to_owned(),
                });
            }
        },
    };
    let (LabelEdit::Set { key, .. } | LabelEdit::Remove { key }) = &edit;
    if !crate::manifest::valid_label_key(key) {
        return Err(ClusterError::BadLabelKey {
            spec: spec.to_owned(),
            key: key.clone(),
        });
    }
    if let LabelEdit::Set { key, value } = &edit
        && !crate::manifest::valid_label_value(value)
    {
        return Err(ClusterError::BadLabelValue {
            spec: spec.to_owned(),
            key: key.clone(),
            value: value.clone(),
        });
    }
    Ok(edit)
}

impl Cluster {
    /// `kubectl apply`: creates the object or replaces the one with the same kind, namespace
    /// and name. A namespace always carries its name label, as the API server sets it; a Pod or
    /// NetworkPolicy in a namespace that does not exist yet brings that namespace with it.
    /// Objects come from [`crate::manifest`], which has already defaulted their namespace and
    /// required a name.
    pub fn apply(&mut self, object: Object) {
        match object {
            Object::Namespace(mut namespace) => {
                let name = namespace.metadata.name.clone().unwrap_or_default();
                let labels = namespace.metadata.labels.get_or_insert_default();
                labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
                self.namespaces.insert(name, namespace);
            }
            Object::Pod(mut pod) => {
                let key = self.key_for(&mut pod.metadata);
                self.pods.insert(key, pod);
            }
            Object::NetworkPolicy(mut policy) => {
                let key = self.key_for(&mut policy.metadata);
                self.policies.insert(key, policy);
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

    /// Deletes `namespace/y` (with its pods and policies), `pod/x/a` or `networkpolicy/x/p`.
    pub fn delete(&mut self, reference: &str) -> Result<(), ClusterError> {
        self.delete_object(&reference.parse()?)
    }

    pub fn delete_object(&mut self, target: &ObjectRef) -> Result<(), ClusterError> {
        let found = match target {
            ObjectRef::Namespace(name) => {
                self.pods.retain(|key, _| key.namespace != *name);
                self.policies.retain(|key, _| key.namespace != *name);
                self.namespaces.remove(name).is_some()
            }
            ObjectRef::Pod(key) => self.pods.remove(key).is_some(),
            ObjectRef::NetworkPolicy(key) => self.policies.remove(key).is_some(),
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
        let metadata = match target {
            ObjectRef::Namespace(name) => self.namespaces.get_mut(name).map(|ns| &mut ns.metadata),
            ObjectRef::Pod(key) => self.pods.get_mut(key).map(|pod| &mut pod.metadata),
            ObjectRef::NetworkPolicy(key) => self.policies.get_mut(key).map(|p| &mut p.metadata),
        };
        let metadata = metadata.ok_or_else(|| ClusterError::NotFound {
            target: target.clone(),
        })?;
        let mut labels = metadata.labels.clone().unwrap_or_default();
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
        metadata.labels = Some(labels);
        Ok(())
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

pub fn pod_labels(pod: &Pod) -> &BTreeMap<String, String> {
    pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> ObjectKey {
    let namespace = pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE);
    ObjectKey::new(namespace, pod.metadata.name.as_deref().unwrap_or_default())
}

/// The pod's addresses from `status.podIPs`, or else `status.podIP`; empty when the manifest
/// gives none (the lab then assigns one).
pub fn pod_ips(pod: &Pod) -> Result<Vec<IpAddr>, ClusterError> {
    let Some(status) = &pod.status else {
        return Ok(Vec::new());
    };
    let parse = |field, ip: &String| {
        ip.parse().map_err(|_| ClusterError::InvalidPodIp {
            pod: pod_key(pod),
            field,
            ip: ip.clone(),
        })
    };
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(|p| parse("status.podIPs", &p.ip)).collect(),
        _ => status
            .pod_ip
            .iter()
            .map(|ip| parse("status.podIP", ip))
            .collect(),
    }
}

pub fn pod_node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .unwrap_or(DEFAULT_NODE)
}

/// Every declared container port as (name or "", protocol, port); the protocol defaults to
/// TCP. Ports outside 1..=65535 are skipped with a warning ([`crate::manifest::validate_pod`]
/// rejects them before they get here).
pub fn container_ports(pod: &Pod) -> Vec<(String, String, u16)> {
    let containers = pod.spec.iter().flat_map(|spec| &spec.containers);
    let ports = containers.flat_map(|container| container.ports.iter().flatten());
    ports
        .filter_map(|port| {
            let Ok(number) = u16::try_from(port.container_port) else {
                let (pod, port) = (pod_key(pod), port.container_port);
                tracing::warn!(%pod, port, "skipping an invalid container port");
                return None;
            };
            if number == 0 {
                tracing::warn!(pod = %pod_key(pod), "skipping container port 0");
                return None;
            }
            let name = port.name.clone().unwrap_or_default();
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            Some((name, protocol, number))
        })
        .collect()
}

pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: "y", labels: {ns: "y"}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: node-2
  containers:
  - name: c
    ports:
    - {name: serve-80-tcp, containerPort: 80}
    - {containerPort: 81, protocol: UDP}
status:
  podIPs: [{ip: 10.244.1.10}, {ip: "fd00::10"}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: "y"}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: "y"}
spec: {podSelector: {}}
"#;

    fn cluster_from(text: &str) -> Cluster {
        let mut cluster = Cluster::default();
        let objects = parse_str(text, "test.yaml").unwrap_or_else(|error| panic!("{error}"));
        for object in objects {
            cluster.apply(object);
        }
        cluster
    }

    fn pod<'c>(cluster: &'c Cluster, namespace: &str, name: &str) -> &'c Pod {
        cluster
            .pods
            .get(&ObjectKey::new(namespace, name))
            .unwrap_or_else(|| panic!("no pod"))
    }

    fn label_of<'c>(labels: Option<&'c BTreeMap<String, String>>, key: &str) -> Option<&'c str> {
        labels
            .and_then(|labels| labels.get(key))
            .map(String::as_str)
    }

    #[test]
    fn namespace_always_gets_its_name_label() {
        let cluster = cluster_from(CLUSTER);
        assert_eq!(
            label_of(cluster.namespace_labels("x"), NAMESPACE_NAME_LABEL),
            Some("x")
        );
        assert_eq!(label_of(cluster.namespace_labels("y"), "ns"), Some("y"));
        // Even over a manifest that tries to set it to something else.
        let cluster = cluster_from(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: z\n  labels:\n    \
             kubernetes.io/metadata.name: other\n",
        );
        assert_eq!(
            label_of(cluster.namespace_labels("z"), NAMESPACE_NAME_LABEL),
            Some("z")
        );
    }

    #[test]
    fn pod_in_a_missing_namespace_brings_an_implicit_namespace() {
        let cluster =
            cluster_from("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: q}\n");
        assert_eq!(
            label_of(cluster.namespace_labels("q"), NAMESPACE_NAME_LABEL),
            Some("q")
        );
        let cluster = cluster_from(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n",
        );
        assert!(cluster.namespaces.contains_key("default"));
        assert!(
            cluster
                .policies
                .contains_key(&ObjectKey::new("default", "p"))
        );
    }

    #[test]
    fn applying_again_replaces_by_kind_namespace_and_name() {
        let mut cluster = cluster_from(CLUSTER);
        let replacement =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: new}}\n";
        for object in parse_str(replacement, "r.yaml").unwrap_or_else(|error| panic!("{error}")) {
            cluster.apply(object);
        }
        assert_eq!(cluster.pods.len(), 3);
        assert_eq!(
            pod_labels(pod(&cluster, "x", "a"))
                .get("pod")
                .map(String::as_str),
            Some("new")
        );
        // Re-applying a namespace keeps what lives in it.
        for object in parse_str(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
            "n",
        )
        .unwrap_or_else(|error| panic!("{error}"))
        {
            cluster.apply(object);
        }
        assert_eq!(cluster.pods.len(), 3);
        assert_eq!(label_of(cluster.namespace_labels("x"), "ns"), None);
    }

    #[test]
    fn deleting_a_namespace_removes_its_pods_and_policies() {
        let mut cluster = cluster_from(CLUSTER);
        assert!(cluster.delete("namespace/x").is_ok());
        assert!(!cluster.namespaces.contains_key("x"));
        assert!(cluster.pods.keys().all(|key| key.namespace == "y"));
        assert!(cluster.policies.keys().all(|key| key.namespace == "y"));
        assert_eq!((cluster.pods.len(), cluster.policies.len()), (1, 1));
    }

    #[test]
    fn deleting_a_pod_or_policy_removes_only_it() {
        let mut cluster = cluster_from(CLUSTER);
        assert!(cluster.delete("pod/x/a").is_ok());
        assert!(cluster.delete("networkpolicy/y/deny").is_ok());
        assert_eq!((cluster.pods.len(), cluster.policies.len()), (2, 1));
        assert!(
            cluster.delete("netpol/x/deny").is_ok(),
            "kubectl's short name"
        );
    }

    #[test]
    fn deleting_what_does_not_exist_or_an_unknown_kind_is_a_clear_error() {
        let mut cluster = cluster_from(CLUSTER);
        let error = cluster.delete("pod/x/zz").map_err(|e| e.to_string());
        assert_eq!(error, Err("pod/x/zz does not exist".to_owned()));
        let error = cluster.delete("service/x/a").map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err(
                "\"service/x/a\": unknown kind \"service\" (expected namespace, pod or \
                 networkpolicy)"
                    .to_owned()
            )
        );
        assert!(matches!(
            cluster.delete("pod/a"),
            Err(ClusterError::BadReference { .. })
        ));
        assert!(matches!(
            cluster.delete("namespace/x/a"),
            Err(ClusterError::BadReference { .. })
        ));
        assert!(matches!(
            cluster.delete("pod//a"),
            Err(ClusterError::BadReference { .. })
        ));
    }

    #[test]
    fn label_sets_overwrites_and_removes() {
        let mut cluster = cluster_from(CLUSTER);
        assert!(cluster.label("namespace/y ns2=updated").is_ok());
        assert_eq!(
            label_of(cluster.namespace_labels("y"), "ns2"),
            Some("updated")
        );
        assert!(cluster.label("pod/x/b pod=changed extra=1").is_ok());
        assert_eq!(
            pod_labels(pod(&cluster, "x", "b"))
                .get("pod")
                .map(String::as_str),
            Some("changed")
        );
        assert!(cluster.label("pod/x/b pod-").is_ok());
        assert_eq!(pod_labels(pod(&cluster, "x", "b")).get("pod"), None);
        assert!(
            cluster.label("pod/y/a first=1").is_ok(),
            "a pod without labels gets some"
        );
    }

    #[test]
    fn label_is_all_or_nothing() {
        let mut cluster = cluster_from(CLUSTER);
        let error = cluster.label("pod/x/b new=1 missing-");
        assert!(
            matches!(error, Err(ClusterError::LabelNotFound { .. })),
            "{error:?}"
        );
        assert_eq!(pod_labels(pod(&cluster, "x", "b")).get("new"), None);
    }

    #[test]
    fn the_namespace_name_label_is_immutable() {
        let mut cluster = cluster_from(CLUSTER);
        let error = cluster.label("namespace/x kubernetes.io/metadata.name=other");
        assert!(
            matches!(error, Err(ClusterError::ImmutableLabel { .. })),
            "{error:?}"
        );
        let error = cluster.label("namespace/x kubernetes.io/metadata.name-");
        assert!(
            matches!(error, Err(ClusterError::ImmutableLabel { .. })),
            "{error:?}"
        );
        assert!(
            cluster
                .label("namespace/x kubernetes.io/metadata.name=x")
                .is_ok(),
            "no change"
        );
    }

    #[test]
    fn malformed_label_specs_are_errors() {
        let mut cluster = cluster_from(CLUSTER);
        assert!(matches!(
            cluster.label("pod/x/b"),
            Err(ClusterError::NoLabelChanges { .. })
        ));
        assert!(matches!(
            cluster.label("pod/x/b pod"),
            Err(ClusterError::BadLabelChange { .. })
        ));
        assert!(matches!(
            cluster.label("pod/x/b =v"),
            Err(ClusterError::BadLabelKey { .. })
        ));
        assert!(matches!(
            cluster.label("pod/x/b k=-v"),
            Err(ClusterError::BadLabelValue { .. })
        ));
        assert!(matches!(
            cluster.label("pod/x/zz k=v"),
            Err(ClusterError::NotFound { .. })
        ));
    }

    #[test]
    fn pod_helpers_read_addresses_node_and_ports() {
        let cluster = cluster_from(CLUSTER);
        let a = pod(&cluster, "x", "a");
        let ips: Vec<String> = pod_ips(a)
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["10.244.1.10", "fd00::10"]);
        assert_eq!(pod_node(a), "node-2");
        assert_eq!(
            container_ports(a),
            [
                ("serve-80-tcp".into(), "TCP".into(), 80),
                (String::new(), "UDP".into(), 81)
            ]
        );
        assert!(!is_host_network(a));
        let b = pod(&cluster, "x", "b");
        assert_eq!(
            pod_ips(b).unwrap_or_default(),
            [IpAddr::from([10, 244, 1, 11])]
        );
        assert_eq!(pod_node(b), DEFAULT_NODE);
        assert!(container_ports(b).is_empty());
        assert!(
            pod_ips(pod(&cluster, "y", "a"))
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[test]
    fn an_invalid_pod_ip_is_an_error_naming_the_pod() {
        let cluster = cluster_from(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n\
             status: {podIP: 10.0.0.300}\n",
        );
        let error = pod_ips(pod(&cluster, "x", "a")).map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err("pod x/a: invalid IP address \"10.0.0.300\" in status.podIP".to_owned())
        );
    }

    #[test]
    fn host_network_is_read_from_the_spec() {
        let cluster = cluster_from(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: h}\n\
             spec: {hostNetwork: true, containers: []}\n",
        );
        assert!(is_host_network(pod(&cluster, "default", "h")));
    }
}
