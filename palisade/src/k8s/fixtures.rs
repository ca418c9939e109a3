//! Objects for tests, written as sentences: `pod("x", "server").label("app", "server")
//! .ip("10.0.0.10")`, collected into a [`Cluster`] by [`cluster`]. Policies stay YAML in the
//! tests (the API's own words are the clearest statement of what is under test); namespaces
//! and pods are the scenery, and read better built.
//!
//! Compiled for this crate's tests and, with the `fixtures` feature, for the integration tests
//! and the benchmark; never in the shipped binary.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{
    cluster::Cluster,
    keys::NAMESPACE_NAME_LABEL,
    manifest::{Object, parse_str},
};

/// A namespace labelled with its own name, as the API server does since v1.21.
pub fn namespace(name: &str) -> NamespaceBuilder {
    NamespaceBuilder(Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                name.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    })
}

pub struct NamespaceBuilder(Namespace);

impl NamespaceBuilder {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        labels(&mut self.0.metadata).insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn build(self) -> Namespace {
        self.0
    }
}

/// A pod with one container and no address yet.
pub fn pod(namespace: &str, name: &str) -> PodBuilder {
    PodBuilder(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                image: Some("none".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

pub struct PodBuilder(Pod);

impl PodBuilder {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        labels(&mut self.0.metadata).insert(key.to_owned(), value.to_owned());
        self
    }

    /// One more address in `status.podIPs` (the first is also `status.podIP`), as the kubelet
    /// reports it.
    pub fn ip(mut self, ip: &str) -> Self {
        let status = self.0.status.get_or_insert_with(PodStatus::default);
        status.pod_ip.get_or_insert_with(|| ip.to_owned());
        status
            .pod_ips
            .get_or_insert_with(Vec::new)
            .push(PodIP { ip: ip.to_owned() });
        self
    }

    /// `spec.nodeName`.
    pub fn on(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.to_owned());
        self
    }

    /// A named container port (`protocol`: TCP, UDP or SCTP).
    pub fn named_port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        let container = &mut self.spec().containers[0];
        container
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                name: Some(name.to_owned()),
                container_port: port,
                protocol: Some(protocol.to_owned()),
                ..ContainerPort::default()
            });
        self
    }

    pub fn build(self) -> Pod {
        self.0
    }

    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_with(PodSpec::default)
    }
}

impl From<NamespaceBuilder> for Object {
    fn from(b: NamespaceBuilder) -> Self {
        Object::Namespace(b.0)
    }
}

impl From<PodBuilder> for Object {
    fn from(b: PodBuilder) -> Self {
        Object::Pod(b.0)
    }
}

/// A cluster of `objects`, applied in order as `kubectl apply` would.
pub fn cluster(objects: impl IntoIterator<Item = Object>) -> Cluster {
    let mut cluster = Cluster::default();
    for object in objects {
        cluster.apply(object);
    }
    cluster
}

/// The usual scenery: namespace `namespace` and one pod per `(name, address)`, each labelled
/// `app: <name>`.
pub fn apps(namespace_name: &str, pods: &[(&str, &str)]) -> Cluster {
    cluster(
        std::iter::once(namespace(namespace_name).into()).chain(
            pods.iter()
                .map(|(name, ip)| pod(namespace_name, name).label("app", name).ip(ip).into()),
        ),
    )
}

/// [`apps`] with two addresses a pod: `(name, IPv4, IPv6)`.
pub fn dual_stack_apps(namespace_name: &str, pods: &[(&str, &str, &str)]) -> Cluster {
    cluster(
        std::iter::once(namespace(namespace_name).into()).chain(pods.iter().map(
            |(name, v4, v6)| {
                pod(namespace_name, name)
                    .label("app", name)
                    .ip(v4)
                    .ip(v6)
                    .into()
            },
        )),
    )
}

/// Namespace `namespace` and one pod per name on `node`, labelled `pod: <name>`, without an
/// address yet (the lab's kubelet reports one once it has made the pod's interface).
pub fn pods_on(node: &str, namespace_name: &str, names: &[&str]) -> Cluster {
    cluster(
        std::iter::once(namespace(namespace_name).into()).chain(
            names
                .iter()
                .map(|name| pod(namespace_name, name).label("pod", name).on(node).into()),
        ),
    )
}

/// Applies the objects of a YAML manifest (policies, most often) to `cluster`; panics with the
/// parser's message on bad YAML, which in a test is the test's own mistake.
pub fn apply_yaml(cluster: &mut Cluster, yaml: &str) {
    let objects = parse_str(yaml, "test manifest")
        .unwrap_or_else(|e| panic!("the test's manifest does not parse: {e}"));
    for object in objects {
        cluster.apply(object);
    }
}

fn labels(meta: &mut ObjectMeta) -> &mut BTreeMap<String, String> {
    meta.labels.get_or_insert_with(BTreeMap::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::cluster::{ObjectKey, pod_addrs, pod_labels};

    #[test]
    fn a_built_pod_reads_as_the_same_pod_written_in_yaml() {
        let built = cluster([
            namespace("x").into(),
            pod("x", "a").label("app", "a").ip("10.0.0.1").into(),
        ]);
        let mut written = Cluster::default();
        apply_yaml(
            &mut written,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Pod\n\
             metadata: {name: a, namespace: x, labels: {app: a}}\n\
             spec: {containers: [{name: c, image: none}]}\nstatus: {podIPs: [{ip: 10.0.0.1}]}\n",
        );
        let key = ObjectKey::new("x", "a");
        let (b, w) = (&built.pods[&key], &written.pods[&key]);
        assert_eq!(pod_labels(b), pod_labels(w));
        assert_eq!(pod_addrs(b), pod_addrs(w));
        assert_eq!(
            built.namespace_labels("x"),
            written.namespace_labels("x"),
            "namespaces carry their name label either way"
        );
    }
}
