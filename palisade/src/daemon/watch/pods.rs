//! Pods as the agent reads them off the wire: its key, version and labels, its node,
//! hostNetwork, container ports and addresses, and nothing else.
//!
//! The cache holds every pod of the cluster, and the rest of a pod (managedFields above all,
//! then the containers' images, resources and probes, volumes, tolerations, conditions,
//! annotations) is most of its size and of the time spent decoding a list of them. Decoding
//! into these types skips it without building it.
//!
//! What stays is still large: k8s-openapi's `Pod` is 2,176 bytes before any content, and each
//! `Container` 2,120 (its probes, resources and security context are inline), so only the
//! containers that declare ports are kept, those being all the agent reads of them.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Container, ContainerPort, Pod, PodIP, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::Resource;
use serde::Deserialize;

/// A [`Pod`] holding only what [`Wire`] decodes.
#[derive(Clone, Debug)]
pub struct SlimPod(pub Pod);

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Wire::deserialize(deserializer).map(|wire| Self(wire.into_pod()))
    }
}

impl Resource for SlimPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// The fields read (serde skips the others without allocating).
#[derive(Deserialize)]
struct Wire {
    metadata: WireMeta,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    deletion_timestamp: Option<Time>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    node_name: Option<String>,
    host_network: Option<bool>,
    #[serde(default)]
    containers: Vec<WireContainer>,
}

#[derive(Deserialize)]
struct WireContainer {
    #[serde(default)]
    name: String,
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIP>>,
}

impl Wire {
    fn into_pod(self) -> Pod {
        let Self {
            metadata,
            spec,
            status,
        } = self;
        Pod {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                uid: metadata.uid,
                resource_version: metadata.resource_version,
                labels: metadata.labels,
                deletion_timestamp: metadata.deletion_timestamp,
                ..ObjectMeta::default()
            },
            spec: spec.map(|spec| PodSpec {
                node_name: spec.node_name,
                host_network: spec.host_network,
                containers: spec
                    .containers
                    .into_iter()
                    .filter(|c| c.ports.as_ref().is_some_and(|p| !p.is_empty()))
                    .map(|c| Container {
                        name: c.name,
                        ports: c.ports,
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: status.map(|status| PodStatus {
                phase: status.phase,
                pod_ip: status.pod_ip,
                pod_ips: status.pod_ips,
                ..PodStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SlimPod;
    use crate::k8s::cluster::{container_ports, is_host_network, pod_addrs, pod_node};

    #[test]
    fn a_slim_pod_keeps_what_the_agent_reads_and_drops_the_rest() {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "a", "namespace": "x", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"big": "value"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {
                        "name": "main", "image": "registry.invalid/x",
                        "ports": [{"name": "http", "containerPort": 8080}]
                    },
                    {"name": "sidecar", "image": "registry.invalid/y"}
                ],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.1",
                "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        let SlimPod(pod) = serde_json::from_value(json).expect("decodes");
        assert_eq!(pod.metadata.name.as_deref(), Some("a"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            pod.metadata.labels.as_ref().and_then(|l| l.get("app")),
            Some(&"web".to_owned())
        );
        assert!(pod.metadata.annotations.is_none());
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(pod_node(&pod), "node-1");
        assert!(!is_host_network(&pod));
        assert_eq!(
            container_ports(&pod),
            vec![("http".to_owned(), palisade_common::PROTO_TCP, 8080)]
        );
        assert_eq!(pod_addrs(&pod).len(), 2);
        let spec = pod.spec.expect("spec");
        assert!(spec.tolerations.is_none());
        assert_eq!(
            spec.containers.len(),
            1,
            "the container without ports is dropped"
        );
        assert!(spec.containers[0].image.is_none());
        assert!(pod.status.expect("status").conditions.is_none());
    }
}
