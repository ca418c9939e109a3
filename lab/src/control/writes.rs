//! The lab's writes to the API server: the case's objects as `kubectl apply` and `kubectl
//! delete` would make them, and each pod's status as a kubelet reports it.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::apiserver::objects::{delete_now, set_pod_running};
use palisade::k8s::{
    cluster::{Cluster, DEFAULT_NODE, ObjectKey, pod_addrs},
    cnp::ClusterNetworkPolicy,
};

use super::ApiControl;

/// An object as the lab creates it: what a user would write (no server-set metadata, no
/// status).
fn fresh(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..ObjectMeta::default()
    }
}

/// A merge patch setting `new` labels and annotations and removing those only `old` has.
fn metadata_patch(old: &ObjectMeta, new: &ObjectMeta) -> Option<serde_json::Value> {
    let diff = |old: &Option<BTreeMap<String, String>>, new: &Option<BTreeMap<String, String>>| {
        let (old, new) = (
            old.clone().unwrap_or_default(),
            new.clone().unwrap_or_default(),
        );
        if old == new {
            return None;
        }
        let mut map = serde_json::Map::new();
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            map.insert(key.clone(), serde_json::Value::Null);
        }
        for (k, v) in &new {
            map.insert(k.clone(), json!(v));
        }
        Some(serde_json::Value::Object(map))
    };
    let mut metadata = serde_json::Map::new();
    if let Some(labels) = diff(&old.labels, &new.labels) {
        metadata.insert("labels".into(), labels);
    }
    if let Some(annotations) = diff(&old.annotations, &new.annotations) {
        metadata.insert("annotations".into(), annotations);
    }
    (!metadata.is_empty()).then(|| json!({ "metadata": metadata }))
}

impl ApiControl {
    /// Writes what changed in `desired` since the last call: namespaces, policies, pods
    /// (created without status, relabelled, deleted at once as a kubelet confirms a kill).
    pub async fn push_objects(&mut self, desired: &Cluster) -> Result<()> {
        self.last_write = None;
        self.steady = self.agents.keys().cloned().collect();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let post = PostParams::default();
        let patch = PatchParams::default();
        for (name, ns) in &desired.namespaces {
            match self.applied.namespaces.get(name) {
                None => {
                    self.wrote();
                    let object = Namespace {
                        metadata: fresh(&ns.metadata),
                        ..Namespace::default()
                    };
                    match namespaces.create(&post, &object).await {
                        Ok(_) => {}
                        // `default` and the system namespaces exist from the start.
                        Err(kube::Error::Api(status)) if status.code == 409 => {
                            let current = namespaces.get(name).await?;
                            if let Some(p) = metadata_patch(&current.metadata, &ns.metadata) {
                                namespaces
                                    .patch(name, &patch, &Patch::Merge(p))
                                    .await
                                    .with_context(|| format!("labelling namespace {name}"))?;
                            }
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("creating namespace {name}"));
                        }
                    }
                }
                Some(old) => {
                    if let Some(p) = metadata_patch(&old.metadata, &ns.metadata) {
                        self.wrote();
                        namespaces
                            .patch(name, &patch, &Patch::Merge(p))
                            .await
                            .with_context(|| format!("labelling namespace {name}"))?;
                    }
                }
            }
        }
        for (key, policy) in &desired.policies {
            let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &key.namespace);
            let mut object = NetworkPolicy {
                metadata: fresh(&policy.metadata),
                spec: policy.spec.clone(),
            };
            match self.applied.policies.get(key) {
                None => {
                    self.wrote();
                    api.create(&post, &object)
                        .await
                        .with_context(|| format!("creating networkpolicy {key}"))?;
                }
                Some(old)
                    if old.spec != policy.spec || old.metadata.labels != policy.metadata.labels =>
                {
                    let current = api.get(&key.name).await?;
                    object.metadata.resource_version = current.resource_version();
                    self.wrote();
                    api.replace(&key.name, &post, &object)
                        .await
                        .with_context(|| format!("replacing networkpolicy {key}"))?;
                }
                Some(_) => {}
            }
        }
        let gone: Vec<ObjectKey> = self
            .applied
            .policies
            .keys()
            .filter(|k| !desired.policies.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &key.namespace);
            self.wrote();
            api.delete(&key.name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting networkpolicy {key}"))?;
        }
        self.push_cluster_scoped(desired).await?;
        let gone: Vec<ObjectKey> = self
            .applied
            .pods
            .keys()
            .filter(|k| !desired.pods.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
            self.wrote();
            api.delete(&key.name, &delete_now())
                .await
                .with_context(|| format!("deleting pod {key}"))?;
            self.reported.remove(&key);
        }
        for (key, pod) in &desired.pods {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
            match self.applied.pods.get(key) {
                None => {
                    let mut object = pod.to_api_pod();
                    object.metadata = fresh(&pod.api_metadata());
                    if let Some(spec) = object.spec.as_mut() {
                        spec.node_name
                            .get_or_insert_with(|| DEFAULT_NODE.to_owned());
                    }
                    self.wrote();
                    api.create(&post, &object)
                        .await
                        .with_context(|| format!("creating pod {key}"))?;
                }
                Some(old) => {
                    if let Some(p) = metadata_patch(&old.api_metadata(), &pod.api_metadata()) {
                        self.wrote();
                        api.patch(&key.name, &patch, &Patch::Merge(p))
                            .await
                            .with_context(|| format!("labelling pod {key}"))?;
                    }
                }
            }
        }
        let gone: Vec<String> = self
            .applied
            .namespaces
            .keys()
            .filter(|k| !desired.namespaces.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            self.wrote();
            namespaces
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting namespace {name}"))?;
        }
        self.applied = desired.clone();
        Ok(())
    }

    /// ClusterNetworkPolicies and Nodes (labels and addresses, as a kubelet would register
    /// them): created, replaced when changed, deleted.
    async fn push_cluster_scoped(&mut self, desired: &Cluster) -> Result<()> {
        let post = PostParams::default();
        let api: Api<ClusterNetworkPolicy> = Api::all(self.client.clone());
        for (name, policy) in &desired.cluster_policies {
            let mut object = ClusterNetworkPolicy {
                metadata: fresh(&policy.metadata),
                spec: policy.spec.clone(),
                status: None,
            };
            match self.applied.cluster_policies.get(name) {
                None => {
                    self.wrote();
                    api.create(&post, &object)
                        .await
                        .with_context(|| format!("creating clusternetworkpolicy {name}"))?;
                }
                Some(old) if old.spec != policy.spec => {
                    object.metadata.resource_version = api.get(name).await?.resource_version();
                    self.wrote();
                    api.replace(name, &post, &object)
                        .await
                        .with_context(|| format!("replacing clusternetworkpolicy {name}"))?;
                }
                Some(_) => {}
            }
        }
        let gone: Vec<String> = (self.applied.cluster_policies.keys())
            .filter(|k| !desired.cluster_policies.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            self.wrote();
            api.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting clusternetworkpolicy {name}"))?;
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        for (name, node) in &desired.nodes {
            let changed = self.applied.nodes.get(name).is_none_or(|old| {
                old.metadata.labels != node.metadata.labels || old.status != node.status
            });
            if !changed {
                continue;
            }
            let object = Node {
                metadata: fresh(&node.metadata),
                spec: node.spec.clone(),
                status: None,
            };
            self.wrote();
            let mut current = match nodes.get_opt(name).await? {
                None => nodes.create(&post, &object).await,
                Some(current) => {
                    let object = Node {
                        metadata: ObjectMeta {
                            resource_version: current.resource_version(),
                            ..object.metadata
                        },
                        ..object
                    };
                    nodes.replace(name, &post, &object).await
                }
            }
            .with_context(|| format!("writing node {name}"))?;
            current.status = node.status.clone();
            nodes
                .replace_status(name, &post, &current)
                .await
                .with_context(|| format!("writing the status of node {name}"))?;
        }
        let gone: Vec<String> = (self.applied.nodes.keys())
            .filter(|k| !desired.nodes.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            self.wrote();
            nodes
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting node {name}"))?;
        }
        Ok(())
    }

    /// Reports the addresses and phase of pods whose interface exists (`placed`), as a kubelet
    /// does once the pod's sandbox is up.
    pub async fn push_statuses(
        &mut self,
        desired: &Cluster,
        placed: impl Fn(&ObjectKey) -> bool,
    ) -> Result<()> {
        for (key, pod) in &desired.pods {
            let addrs = pod_addrs(pod);
            if addrs.is_empty() || !placed(key) || self.reported.get(key) == Some(&addrs) {
                continue;
            }
            self.wrote();
            set_pod_running(&self.client, &key.namespace, &key.name, &addrs)
                .await
                .with_context(|| format!("writing the status of pod {key}"))?;
            self.reported.insert(key.clone(), addrs);
        }
        Ok(())
    }
}
