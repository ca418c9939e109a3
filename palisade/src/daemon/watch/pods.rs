//! Pods as the agent reads them off the wire: its key, version and labels, its node,
//! hostNetwork, container ports and addresses, and nothing else.
//!
//! The cache holds every pod of the cluster, and the rest of a pod (managedFields above all,
//! then the containers' images, resources and probes, volumes, tolerations, conditions,
//! annotations) is most of its size and of the time spent decoding a list of them. Decoding
//! into these types skips it without building it, and the result is a [`PodInfo`], never a
//! k8s-openapi `Pod` (whose struct alone is 2,176 bytes, and 2,120 more per container).

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ContainerPort, Pod, PodIP},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::Resource;
use serde::Deserialize;

use crate::k8s::cluster::PodInfo;

/// A [`PodInfo`] decoded straight from the API's JSON (what [`Wire`] reads), with the
/// metadata the watch itself reads (name, namespace and resourceVersion) until the cache
/// takes the pod ([`SlimPod::into_pod`]).
#[derive(Clone, Debug)]
pub struct SlimPod {
    metadata: ObjectMeta,
    pod: PodInfo,
}

impl SlimPod {
    pub fn into_pod(self) -> PodInfo {
        self.pod
    }
}

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Wire::deserialize(deserializer).map(Wire::into_slim)
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
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
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
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Deserialize)]
struct WireStatus {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIP>>,
}

impl Wire {
    fn into_slim(self) -> SlimPod {
        let Self {
            metadata,
            spec,
            status,
        } = self;
        let watched = ObjectMeta {
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            resource_version: metadata.resource_version.clone(),
            ..ObjectMeta::default()
        };
        // What `PodInfo::trim_metadata` keeps.
        let (metadata, labels) = PodInfo::trim_metadata(ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            resource_version: metadata.resource_version,
            labels: metadata.labels,
            deletion_timestamp: metadata.deletion_timestamp,
            ..ObjectMeta::default()
        });
        let (node_name, host_network, ports) = match spec {
            Some(spec) => {
                let ports = PodInfo::valid_ports(
                    &metadata,
                    spec.containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten()),
                );
                (spec.node_name, spec.host_network.unwrap_or(false), ports)
            }
            None => (None, false, Vec::new()),
        };
        let (pod_ip, pod_ips) = status.map_or((None, Vec::new()), |status| {
            let ips = status.pod_ips.into_iter().flatten().map(|PodIP { ip }| ip);
            (status.pod_ip, ips.collect())
        });
        let pod = PodInfo {
            metadata,
            labels,
            node_name,
            host_network,
            ports,
            pod_ip,
            pod_ips,
        };
        SlimPod {
            metadata: watched,
            pod,
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
        let slim: SlimPod = serde_json::from_value(json).expect("decodes");
        assert_eq!(slim.metadata.resource_version.as_deref(), Some("42"));
        let pod = slim.into_pod();
        assert_eq!(pod.metadata.name.as_deref(), Some("a"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(pod.labels.get("app"), Some(&"web".to_owned()));
        assert_eq!(pod_node(&pod), "node-1");
        assert!(!is_host_network(&pod));
        assert_eq!(
            container_ports(&pod),
            vec![("http".to_owned(), palisade_common::PROTO_TCP, 8080)]
        );
        assert_eq!(pod_addrs(&pod).len(), 2);
    }
}
