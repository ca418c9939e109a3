//! The snapshot's `apply`, `delete` and `label`, and the pod helpers, on a small cluster.

use std::net::IpAddr;

use palisade_common::{PROTO_TCP, PROTO_UDP};

use super::*;
use crate::k8s::manifest::parse_str;

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

fn pod<'c>(cluster: &'c Cluster, namespace: &str, name: &str) -> &'c PodInfo {
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
    let cluster = cluster_from("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: q}\n");
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
    assert!(cluster.pods.keys().all(|key| &*key.namespace == "y"));
    assert!(cluster.policies.keys().all(|key| &*key.namespace == "y"));
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
            "\"service/x/a\": unknown kind \"service\" (expected namespace, pod, networkpolicy \
                 or clusternetworkpolicy)"
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
            ("serve-80-tcp".into(), PROTO_TCP, 80),
            (String::new(), PROTO_UDP, 81)
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

const CLUSTER_POLICY: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-y, namespace: ignored}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: "y"}}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {role: worker}}
status: {addresses: [{type: InternalIP, address: 10.244.0.1}]}
"#;

#[test]
fn a_cluster_network_policy_is_kept_by_name_without_a_namespace() {
    let cluster = cluster_from(&format!("{CLUSTER}---{CLUSTER_POLICY}"));
    let policy = cluster
        .cluster_policies
        .get("deny-y")
        .unwrap_or_else(|| panic!("no policy"));
    assert_eq!(policy.metadata.namespace, None);
    assert!(cluster.nodes.contains_key("node-1"));
}

#[test]
fn applying_a_cluster_network_policy_again_replaces_it_by_name() {
    let mut cluster = cluster_from(CLUSTER_POLICY);
    let changed = CLUSTER_POLICY.replace("priority: 1", "priority: 7");
    for object in parse_str(&changed, "again.yaml").unwrap_or_else(|e| panic!("{e}")) {
        cluster.apply(object);
    }
    assert_eq!(cluster.cluster_policies.len(), 1);
    assert_eq!(cluster.cluster_policies["deny-y"].spec.priority, Some(7));
}

#[test]
fn deleting_a_namespace_never_removes_a_cluster_network_policy() {
    let mut cluster = cluster_from(&format!("{CLUSTER}---{CLUSTER_POLICY}"));
    cluster
        .delete("namespace/y")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cluster.cluster_policies.contains_key("deny-y"));
    cluster
        .delete("clusternetworkpolicy/deny-y")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cluster.cluster_policies.is_empty());
    assert!(matches!(
        cluster.delete("cnp/deny-y"),
        Err(ClusterError::NotFound { .. })
    ));
}

#[test]
fn a_cluster_network_policy_reference_has_no_namespace() {
    assert_eq!(
        "clusternetworkpolicy/p".parse::<ObjectRef>().ok(),
        Some(ObjectRef::ClusterNetworkPolicy("p".into()))
    );
    assert!(matches!(
        "clusternetworkpolicy/x/p".parse::<ObjectRef>(),
        Err(ClusterError::BadReference { .. })
    ));
}

/// A pod keeps only what the dataplane reads; written back to an API server it says the same
/// (and reads back equal); an invalid port is left out rather than read as another.
#[test]
fn a_pod_info_keeps_what_is_read_and_goes_back_to_an_api_pod() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: x\n  labels: {app: web}\n  annotations: {note: big}\nspec:\n  nodeName: node-2\n  hostNetwork: true\n  containers:\n  - {name: one, image: i, ports: [{name: http, containerPort: 80}, {containerPort: 70000}]}\n  - {name: two, image: i, ports: [{containerPort: 53, protocol: UDP}, {containerPort: 9, protocol: ICMP}]}\nstatus: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: 'fd00::10'}]}\n";
    let cluster = cluster_from(text);
    let a = pod(&cluster, "x", "a");
    assert!(
        a.api_metadata().annotations.is_none(),
        "annotations are not kept"
    );
    assert_eq!(pod_labels(a).get("app").map(String::as_str), Some("web"));
    assert_eq!(pod_node(a), "node-2");
    assert!(is_host_network(a));
    assert_eq!(
        container_ports(a),
        [
            ("http".into(), PROTO_TCP, 80),
            (String::new(), PROTO_UDP, 53)
        ]
    );
    assert_eq!(pod_addrs(a).len(), 2);
    let mut api = a.to_api_pod();
    assert!(api.status.is_none(), "a kubelet writes the status");
    let again = PodInfo::from(api.clone());
    assert_eq!(container_ports(&again), container_ports(a));
    assert_eq!((pod_node(&again), again.host_network), ("node-2", true));
    api.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: a.pod_ip.clone(),
        pod_ips: Some(
            a.pod_ips
                .iter()
                .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.clone() })
                .collect(),
        ),
        ..Default::default()
    });
    assert_eq!(&PodInfo::from(api), a);
}

/// Pods with equal labels share one interned set; relabelling one gives it its own and leaves
/// the other's as it was; the labels go back into the metadata written to an API server.
#[test]
fn equal_label_sets_are_held_once_and_relabelling_one_pod_leaves_the_others() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web, tier: front}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, labels: {tier: front, app: web}}\n";
    let mut cluster = cluster_from(text);
    let (a, b) = (pod(&cluster, "x", "a"), pod(&cluster, "x", "b"));
    assert!(std::ptr::eq(pod_labels(a), pod_labels(b)), "one copy");
    assert_eq!(
        a.api_metadata().labels.as_ref(),
        Some(pod_labels(a)),
        "written back whole"
    );
    cluster.label("pod/x/a app=api").expect("relabels");
    let (a, b) = (pod(&cluster, "x", "a"), pod(&cluster, "x", "b"));
    assert_eq!(pod_labels(a).get("app").map(String::as_str), Some("api"));
    assert_eq!(pod_labels(b).get("app").map(String::as_str), Some("web"));
    assert!(!std::ptr::eq(pod_labels(a), pod_labels(b)));
    cluster.label("pod/x/a app=web").expect("relabels back");
    let (a, b) = (pod(&cluster, "x", "a"), pod(&cluster, "x", "b"));
    assert!(
        std::ptr::eq(pod_labels(a), pod_labels(b)),
        "equal again: one copy again"
    );
}
