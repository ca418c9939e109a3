//! `manifests/` parses as the Kubernetes objects it claims to be, and says what the agent
//! needs and no more: read-only access to exactly the resources it watches, the node name from
//! the downward API, bpffs shared with the host, health and readiness probes.

use std::{collections::BTreeSet, fs, path::Path};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::Deserialize;

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every YAML document of a file under `manifests/`.
fn documents(file: &str) -> Vec<serde_yaml_ng::Value> {
    let text = fs::read_to_string(manifests().join(file)).expect(file);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect(file))
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    documents(file)
        .into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|d| serde_yaml_ng::from_value(d).unwrap_or_else(|e| panic!("{file}: {kind}: {e}")))
        .collect()
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization = &documents("kustomization.yaml")[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    let present: BTreeSet<String> = fs::read_dir(manifests())
        .expect("manifests/")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
    assert_eq!(of_kind::<Namespace>("namespace.yaml", "Namespace").len(), 1);
}

#[test]
fn the_agent_may_only_read_pods_namespaces_and_networkpolicies() {
    let roles: Vec<ClusterRole> = of_kind("rbac.yaml", "ClusterRole");
    assert_eq!(roles.len(), 1);
    let mut granted = BTreeSet::new();
    for rule in roles[0].rules.iter().flatten() {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["get", "list", "watch"], "read-only: {rule:?}");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    let wanted: BTreeSet<String> = ["/pods", "/namespaces", "networking.k8s.io/networkpolicies"]
        .map(str::to_owned)
        .into();
    assert_eq!(granted, wanted);

    let accounts: Vec<ServiceAccount> = of_kind("rbac.yaml", "ServiceAccount");
    let bindings: Vec<ClusterRoleBinding> = of_kind("rbac.yaml", "ClusterRoleBinding");
    let subject = &bindings[0].subjects.as_ref().expect("subjects")[0];
    assert_eq!(Some(&subject.name), accounts[0].metadata.name.as_ref());
    assert_eq!(subject.namespace, accounts[0].metadata.namespace);
    assert_eq!(
        Some(&bindings[0].role_ref.name),
        roles[0].metadata.name.as_ref()
    );
}

#[test]
fn the_daemonset_runs_on_the_host_network_with_bpffs_and_probes() {
    let sets: Vec<DaemonSet> = of_kind("daemonset.yaml", "DaemonSet");
    let spec = sets[0].spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("palisade-agent"));
    let agent = &pod.containers[0];
    let node_name = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PALISADE_NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(node_name, Some("spec.nodeName"));
    let probe_path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(agent.liveness_probe.as_ref()).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(agent.readiness_probe.as_ref()).as_deref(),
        Some("/readyz")
    );
    assert!(
        agent
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some()
    );
    // The mount at `path` and the host path of its volume.
    let host_mount = |path: &str| {
        let mount = agent
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path} mounted"));
        let host = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone());
        (mount, host)
    };
    let (mount, host) = host_mount("/sys/fs/bpf");
    assert_eq!(mount.mount_propagation.as_deref(), Some("Bidirectional"));
    assert_eq!(host.as_deref(), Some("/sys/fs/bpf"));
    // Kubernetes allows Bidirectional propagation only in privileged containers.
    let privileged = agent.security_context.as_ref().and_then(|s| s.privileged);
    assert_eq!(privileged, Some(true));
    // The agent's socket is where `palisade flows` looks by default, on the host as well.
    let socket_dir = Path::new(palisade::flows::socket::DEFAULT_SOCKET)
        .parent()
        .and_then(|p| p.to_str())
        .expect("socket directory");
    let (_, host) = host_mount(socket_dir);
    assert_eq!(host.as_deref(), Some(socket_dir));
}
