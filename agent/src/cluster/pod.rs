//! What a Pod says about itself, with the defaults for what a manifest leaves out: labels, key,
//! addresses, node, container ports and hostNetwork.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::core::v1::Pod;

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
