//! What a Pod says about itself, with the defaults for what a manifest leaves out: labels, key,
//! addresses, node, container ports and hostNetwork.
//!
//! The cluster holds every pod as a [`PodInfo`]: those fields and nothing else. k8s-openapi's
//! `Pod` is 2,176 bytes before any content and each `Container` 2,120 (probes, resources and
//! security context inline); at 50,000 pods those two structs alone were 215 MiB of an agent's
//! 347 MiB heap (heaptrack, `palisade-lab load` at its defaults, 2026-12-07).
//!
//! Nor does it keep an `ObjectMeta` (340 bytes, nearly all of them empty `Option`s): a
//! [`PodMeta`] holds the four fields read, and the watch cache finds pods through
//! [`Lookup`], which asks for no more.
//!
//! A pod's labels are interned ([`Labels`]): the pods of one ReplicaSet, StatefulSet or Job
//! carry equal labels, and the agent holds one copy of each distinct set, however many pods
//! carry it.

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    Resource as _,
    api::core::v1::{Container, ContainerPort, Pod, PodIP, PodSpec},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::runtime::reflector::Lookup;

use crate::k8s::keys::{protocol_name, protocol_number};

use super::{ClusterError, DEFAULT_NAMESPACE, DEFAULT_NODE, ObjectKey};

/// A pod's labels, interned: equal sets are one allocation, freed with the last pod holding
/// it. A two-label map is a B-tree leaf of about 540 bytes and four strings; held per pod, the
/// 50,000 pods of `palisade-lab load` spent about 35 MiB on them.
pub type Labels = internment::ArcIntern<BTreeMap<String, String>>;

/// The interned form of `labels` (`None`: none).
pub fn intern_labels(labels: Option<BTreeMap<String, String>>) -> Labels {
    Labels::new(labels.unwrap_or_default())
}

/// A pod as the dataplane reads it. Made from a [`Pod`] (`From`), or decoded straight off the
/// wire by the agent's watch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    /// Name, namespace, resourceVersion and deletionTimestamp (the rest of the metadata is
    /// not kept: managedFields above all, and not the uid, which nothing reads).
    pub metadata: PodMeta,
    /// `metadata.labels`, interned.
    pub labels: Labels,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// Every declared container port, in the order declared: (name or "", protocol number,
    /// port). Ports outside 1..=65535 and unknown protocols are left out, with a warning, when
    /// the pod is made ([`crate::k8s::manifest::validate_pod`] rejects them in a manifest).
    pub ports: Vec<(String, u8, u16)>,
    /// `status.podIP`.
    pub pod_ip: Option<String>,
    /// `status.podIPs`.
    pub pod_ips: Vec<String>,
}

/// What a [`PodInfo`] keeps of a pod's metadata, under the names `ObjectMeta` gives them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub deletion_timestamp: Option<Time>,
}

impl PodInfo {
    /// Keeps what [`PodInfo`] holds of `metadata` (the one place that says what that is): the
    /// [`PodMeta`], and the labels interned.
    pub fn trim_metadata(metadata: ObjectMeta) -> (PodMeta, Labels) {
        let trimmed = PodMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            resource_version: metadata.resource_version,
            deletion_timestamp: metadata.deletion_timestamp,
        };
        (trimmed, intern_labels(metadata.labels))
    }

    /// The metadata as the API would show it: [`Self::metadata`] with the labels back in.
    pub fn api_metadata(&self) -> ObjectMeta {
        let meta = &self.metadata;
        ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            resource_version: meta.resource_version.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            labels: (!self.labels.is_empty()).then(|| (*self.labels).clone()),
            ..ObjectMeta::default()
        }
    }

    /// Validates and converts declared container ports (see [`Self::ports`]); `metadata` names
    /// the pod in warnings.
    pub fn valid_ports<'a>(
        metadata: &PodMeta,
        ports: impl IntoIterator<Item = &'a ContainerPort>,
    ) -> Vec<(String, u8, u16)> {
        let pod = || {
            ObjectKey::new(
                metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
                metadata.name.as_deref().unwrap_or_default(),
            )
        };
        ports
            .into_iter()
            .filter_map(|port| {
                let Ok(number) = u16::try_from(port.container_port) else {
                    let (pod, port) = (pod(), port.container_port);
                    tracing::warn!(%pod, port, "skipping an invalid container port");
                    return None;
                };
                if number == 0 {
                    tracing::warn!(pod = %pod(), "skipping container port 0");
                    return None;
                }
                let Some(protocol) = protocol_number(port.protocol.as_deref()) else {
                    let (pod, protocol) = (pod(), port.protocol.clone());
                    tracing::warn!(%pod, ?protocol, "skipping a container port of unknown protocol");
                    return None;
                };
                let name = port.name.clone().unwrap_or_default();
                Some((name, protocol, number))
            })
            .collect()
    }

    /// The pod as an API object, for writing it to an API server: one container (`main`, an
    /// image that never runs) declares every port; the status is left out (a kubelet writes it).
    pub fn to_api_pod(&self) -> Pod {
        let ports: Vec<ContainerPort> = self
            .ports
            .iter()
            .map(|(name, protocol, port)| ContainerPort {
                name: (!name.is_empty()).then(|| name.clone()),
                protocol: protocol_name(*protocol).map(str::to_owned),
                container_port: i32::from(*port),
                ..ContainerPort::default()
            })
            .collect();
        Pod {
            metadata: self.api_metadata(),
            spec: Some(PodSpec {
                node_name: self.node_name.clone(),
                host_network: self.host_network.then_some(true),
                containers: vec![Container {
                    name: "main".to_owned(),
                    image: Some("registry.invalid/palisade-test:none".to_owned()),
                    ports: (!ports.is_empty()).then_some(ports),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// Sets `status.podIP` and `status.podIPs` to `addrs`.
    pub fn set_addrs(&mut self, addrs: &[IpAddr]) {
        self.pod_ip = addrs.first().map(ToString::to_string);
        self.pod_ips = addrs.iter().map(ToString::to_string).collect();
    }
}

impl From<Pod> for PodInfo {
    fn from(pod: Pod) -> Self {
        let Pod {
            metadata,
            spec,
            status,
        } = pod;
        let spec = spec.unwrap_or_default();
        let (metadata, labels) = Self::trim_metadata(metadata);
        let ports = Self::valid_ports(
            &metadata,
            spec.containers
                .iter()
                .flat_map(|container| container.ports.iter().flatten()),
        );
        let status = status.unwrap_or_default();
        Self {
            metadata,
            labels,
            node_name: spec.node_name,
            host_network: spec.host_network.unwrap_or(false),
            ports,
            pod_ip: status.pod_ip,
            pod_ips: status
                .pod_ips
                .into_iter()
                .flatten()
                .map(|PodIP { ip }| ip)
                .collect(),
        }
    }
}

/// So the agent's watch caches hold [`PodInfo`]s: the API's kind, group and version of Pods,
/// and the names and version the cache keys and orders them by.
impl Lookup for PodInfo {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Pod::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Pod::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Pod::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Pod::URL_PATH_SEGMENT)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        self.metadata.name.as_deref().map(Cow::Borrowed)
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.metadata.namespace.as_deref().map(Cow::Borrowed)
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        self.metadata.resource_version.as_deref().map(Cow::Borrowed)
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

pub fn pod_labels(pod: &PodInfo) -> &BTreeMap<String, String> {
    &pod.labels
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &PodInfo) -> ObjectKey {
    let namespace = pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE);
    ObjectKey::new(namespace, pod.metadata.name.as_deref().unwrap_or_default())
}

/// The pod's addresses from `status.podIPs`, or else `status.podIP`; empty when the manifest
/// gives none (the lab then assigns one).
pub fn pod_ips(pod: &PodInfo) -> Result<Vec<IpAddr>, ClusterError> {
    let (field, ips) = status_ips(pod);
    ips.into_iter()
        .map(|ip| {
            ip.parse().map_err(|_| ClusterError::InvalidPodIp {
                pod: pod_key(pod),
                field,
                ip: ip.to_owned(),
            })
        })
        .collect()
}

/// [`pod_ips`] for readers that must go on past a bad address (the compiler, the evaluator):
/// an unparsable one is skipped ([`crate::k8s::manifest::validate_pod`] rejects it before it gets
/// here).
pub fn pod_addrs(pod: &PodInfo) -> Vec<IpAddr> {
    let (_, ips) = status_ips(pod);
    ips.into_iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// Which status field holds the addresses, and what it says.
fn status_ips(pod: &PodInfo) -> (&'static str, Vec<&str>) {
    if pod.pod_ips.is_empty() {
        (
            "status.podIP",
            pod.pod_ip.iter().map(String::as_str).collect(),
        )
    } else {
        (
            "status.podIPs",
            pod.pod_ips.iter().map(String::as_str).collect(),
        )
    }
}

/// `spec.nodeName`, or [`DEFAULT_NODE`] (the lab's single node) when unset.
pub fn pod_node(pod: &PodInfo) -> &str {
    pod.node_name.as_deref().unwrap_or(DEFAULT_NODE)
}

/// Every declared container port as (name or "", protocol number, port); the protocol defaults
/// to TCP.
pub fn container_ports(pod: &PodInfo) -> &[(String, u8, u16)] {
    &pod.ports
}

pub fn is_host_network(pod: &PodInfo) -> bool {
    pod.host_network
}
