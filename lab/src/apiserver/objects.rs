//! Objects shaped for the v1.20 test server, which has no kubelet, no scheduler and does not
//! label namespaces by itself: fixture builders and the writes a kubelet would make.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    api::core::v1::{Container, Namespace, Pod, PodSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

/// The label servers >= 1.21 put on every namespace; v1.20 does not, so we do.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A namespace with `labels` and `kubernetes.io/metadata.name: <name>`, as a current server
/// would label it.
pub fn namespace(name: &str, extra_labels: &[(&str, &str)]) -> Namespace {
    let mut labels = labels(extra_labels);
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// A pod already bound to `node` (no scheduler here), with one container that never runs.
pub fn pod(namespace: &str, name: &str, node: &str, pod_labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(pod_labels)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some("registry.invalid/palisade-test:none".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// What a kubelet writes once the pod's sandbox has addresses: `phase: Running`, `podIP` (the
/// first of `ips`) and `podIPs`, through the `/status` subresource.
pub async fn set_pod_running(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    ips: &[IpAddr],
) -> kube::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod_ips: Vec<_> = ips
        .iter()
        .map(|ip| json!({ "ip": ip.to_string() }))
        .collect();
    let status = json!({
        "status": {
            "phase": "Running",
            "podIP": ips.first().map(ToString::to_string),
            "podIPs": pod_ips,
        }
    });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
}

/// Delete at once: with a nodeName and no kubelet to confirm, a graceful delete leaves the pod
/// Terminating forever (and its namespace with it).
pub fn delete_now() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    }
}
