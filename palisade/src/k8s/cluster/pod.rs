//! What a Pod says about itself, with the defaults for what a manifest leaves out: labels, key,
//! addresses, node, container ports and hostNetwork.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::core::v1::Pod;

use crate::k8s::keys::protocol_number;

use super::{ClusterError, DEFAULT_NAMESPACE, DEFAULT_NODE, NO_LABELS, ObjectKey};

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
pub fn pod_addrs(pod: &Pod) -> Vec<IpAddr> {
    let (_, ips) = status_ips(pod);
    ips.into_iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// Which status field holds the addresses, and what it says.
fn status_ips(pod: &Pod) -> (&'static str, Vec<&str>) {
    let Some(status) = &pod.status else {
        return ("status.podIPs", Vec::new());
    };
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => {
            ("status.podIPs", ips.iter().map(|p| p.ip.as_str()).collect())
        }
        _ => (
            "status.podIP",
            status.pod_ip.iter().map(String::as_str).collect(),
        ),
    }
}

/// `spec.nodeName`, or [`DEFAULT_NODE`] (the lab's single node) when unset.
pub fn pod_node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .unwrap_or(DEFAULT_NODE)
}

/// Every declared container port as (name or "", protocol number, port); the protocol defaults
/// to TCP. Ports outside 1..=65535 and unknown protocols are skipped with a warning
/// ([`crate::k8s::manifest::validate_pod`] rejects them before they get here).
pub fn container_ports(pod: &Pod) -> Vec<(String, u8, u16)> {
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
            let Some(protocol) = protocol_number(port.protocol.as_deref()) else {
                let (pod, protocol) = (pod_key(pod), port.protocol.clone());
                tracing::warn!(%pod, ?protocol, "skipping a container port of unknown protocol");
                return None;
            };
            let name = port.name.clone().unwrap_or_default();
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
