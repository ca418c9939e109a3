//! The cluster the sync loop hands to the node worker, kept up to date from the watch caches
//! one changed object at a time.
//!
//! The objects are the caches' own (`Arc`s, never copied). What a sync would otherwise redo
//! for every object of the cluster (a map of 50,000 pods keyed afresh, the digest of every
//! object's version, the walk for the node's own pods) is updated for the changed objects only.
//!
//! The worker keeps the [`Cluster`] of its last sync (for naming flows and for `palisade
//! explain`) while the next one is prepared, so there are two views: the one handed over last,
//! and a spare that the worker let go of at the sync after. A sync brings the spare up to date
//! (the objects changed at the sync before and at this one) and hands it over; the other becomes
//! the spare. Only when the spare is still in use (a flow being named with it) or gone (after
//! a full rebuild) is the current view copied, keys and pointers only.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::k8s::cluster::PodInfo;
use kube::{ResourceExt as _, runtime::reflector::ObjectRef};

use super::{Caches, key_of};
use crate::{
    daemon::status::Digest,
    k8s::cluster::{Cluster, ObjectKey, is_host_network, pod_node},
    policy::ClusterChange,
};

/// One consistent view of the caches.
pub struct View {
    pub cluster: Arc<Cluster>,
    /// hostNetwork pods: in the digest, but neither enforced nor peers (their address is the
    /// node's), so not in `cluster`.
    host_network: BTreeMap<ObjectKey, Arc<PodInfo>>,
    /// The pods of `cluster` on this node.
    pub local: BTreeSet<ObjectKey>,
    /// Of every object, hostNetwork pods included: a caller comparing digests sees the same set.
    pub digest: Digest,
}

impl View {
    /// Every object of the caches.
    fn build(caches: &Caches, node: &str) -> Self {
        let mut view = Self {
            cluster: Arc::default(),
            host_network: BTreeMap::new(),
            local: BTreeSet::new(),
            digest: Digest::default(),
        };
        let cluster = Arc::make_mut(&mut view.cluster);
        for ns in caches.namespaces.state() {
            view.digest.add_object(&*ns);
            cluster.namespaces.insert(ns.name_any(), ns);
        }
        for pod in caches.pods.state() {
            view.digest.add_object(&*pod);
            let key = key_of(&*pod);
            if is_host_network(&pod) {
                view.host_network.insert(key, pod);
            } else {
                if pod_node(&pod) == node {
                    view.local.insert(key.clone());
                }
                cluster.pods.insert(key, pod);
            }
        }
        for policy in caches.policies.state() {
            view.digest.add_object(&*policy);
            cluster.policies.insert(key_of(&*policy), policy);
        }
        for policy in caches.cluster_policies.state() {
            view.digest.add_object(&*policy);
            cluster.cluster_policies.insert(policy.name_any(), policy);
        }
        for node in caches.nodes.state() {
            view.digest.add_object(&*node);
            cluster.nodes.insert(node.name_any(), node);
        }
        view
    }

    /// A copy that shares the objects.
    fn copy(&self) -> Self {
        Self {
            cluster: Arc::new(Cluster::clone(&self.cluster)),
            host_network: self.host_network.clone(),
            local: self.local.clone(),
            digest: self.digest,
        }
    }

    /// Brings the entry of `change`'s object up to what the caches hold now. The cluster is
    /// copied first if something else still shares it (the caller makes sure nothing does).
    fn apply(&mut self, caches: &Caches, node: &str, change: &ClusterChange) {
        let cluster = Arc::make_mut(&mut self.cluster);
        match change {
            ClusterChange::Namespace(name) => {
                if let Some(old) = cluster.namespaces.remove(name) {
                    self.digest.remove_object(&*old);
                }
                if let Some(new) = caches.namespaces.get(&ObjectRef::new(name)) {
                    self.digest.add_object(&*new);
                    cluster.namespaces.insert(name.clone(), new);
                }
            }
            ClusterChange::Pod(key) => {
                let old = cluster
                    .pods
                    .remove(key)
                    .or_else(|| self.host_network.remove(key));
                if let Some(old) = old {
                    self.digest.remove_object(&*old);
                }
                self.local.remove(key);
                let at = ObjectRef::new(&key.name).within(&key.namespace);
                if let Some(new) = caches.pods.get(&at) {
                    self.digest.add_object(&*new);
                    if is_host_network(&new) {
                        self.host_network.insert(key.clone(), new);
                    } else {
                        if pod_node(&new) == node {
                            self.local.insert(key.clone());
                        }
                        cluster.pods.insert(key.clone(), new);
                    }
                }
            }
            ClusterChange::Policy(key) => {
                if let Some(old) = cluster.policies.remove(key) {
                    self.digest.remove_object(&*old);
                }
                let at = ObjectRef::new(&key.name).within(&key.namespace);
                if let Some(new) = caches.policies.get(&at) {
                    self.digest.add_object(&*new);
                    cluster.policies.insert(key.clone(), new);
                }
            }
            ClusterChange::ClusterPolicy(name) => {
                if let Some(old) = cluster.cluster_policies.remove(name) {
                    self.digest.remove_object(&*old);
                }
                if let Some(new) = caches.cluster_policies.get(&ObjectRef::new(name)) {
                    self.digest.add_object(&*new);
                    cluster.cluster_policies.insert(name.clone(), new);
                }
            }
            ClusterChange::Node(name) => {
                if let Some(old) = cluster.nodes.remove(name) {
                    self.digest.remove_object(&*old);
                }
                if let Some(new) = caches.nodes.get(&ObjectRef::new(name)) {
                    self.digest.add_object(&*new);
                    cluster.nodes.insert(name.clone(), new);
                }
            }
        }
    }
}

/// The view handed over last and the spare (see the module's comment).
pub struct Views {
    node: String,
    current: Option<View>,
    spare: Option<View>,
    /// Objects changed since the spare was last brought up to date.
    spare_behind: BTreeSet<ClusterChange>,
}

impl Views {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            current: None,
            spare: None,
            spare_behind: BTreeSet::new(),
        }
    }

    /// The view of the caches now: `changes` applied (`None`: built afresh from every object,
    /// as after a relist or for a full resync).
    pub fn update(&mut self, caches: &Caches, changes: Option<&[ClusterChange]>) -> &View {
        let node = self.node.as_str();
        let (Some(changes), Some(current)) = (changes, self.current.take()) else {
            self.spare = None;
            self.spare_behind.clear();
            return self.current.insert(View::build(caches, node));
        };
        let spare = self
            .spare
            .take()
            .filter(|spare| Arc::strong_count(&spare.cluster) == 1);
        let mut next = match spare {
            Some(spare) => spare,
            None => {
                self.spare_behind.clear();
                current.copy()
            }
        };
        for change in self.spare_behind.iter().chain(changes) {
            next.apply(caches, node, change);
        }
        self.spare_behind = changes.iter().cloned().collect();
        self.spare = Some(current);
        self.current.insert(next)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::{
        api::{
            core::v1::{Namespace, Node},
            networking::v1::NetworkPolicy,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    use kube::runtime::{reflector, watcher::Event};

    use super::{View, Views};
    use crate::{
        daemon::watch::Caches,
        k8s::{
            cluster::{ObjectKey, PodInfo, PodMeta},
            cnp::ClusterNetworkPolicy,
        },
        policy::ClusterChange,
    };

    fn meta(namespace: Option<&str>, name: &str, version: u32) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            resource_version: Some(version.to_string()),
            ..ObjectMeta::default()
        }
    }

    fn pod_meta(namespace: &str, name: &str, version: u32) -> PodMeta {
        let ObjectMeta {
            name,
            namespace,
            resource_version,
            ..
        } = meta(Some(namespace), name, version);
        PodMeta {
            name,
            namespace,
            resource_version,
            deletion_timestamp: None,
        }
    }

    fn same(a: &View, b: &View) {
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.local, b.local);
        assert!(a.host_network.keys().eq(b.host_network.keys()));
        let (x, y) = (&a.cluster, &b.cluster);
        assert!(x.namespaces.keys().eq(y.namespaces.keys()));
        assert!(x.policies.keys().eq(y.policies.keys()));
        assert!(x.cluster_policies.keys().eq(y.cluster_policies.keys()));
        assert!(x.nodes.keys().eq(y.nodes.keys()));
        assert_eq!(x.pods.len(), y.pods.len());
        for ((k1, p1), (k2, p2)) in x.pods.iter().zip(&y.pods) {
            assert_eq!(k1, k2);
            assert!(Arc::ptr_eq(p1, p2), "{k1}: not the cache's object");
        }
    }

    /// Pods created, moved between nodes, switched to hostNetwork and deleted, namespaces and
    /// policies created and deleted, with the worker holding each view it is handed until
    /// the next: after every sync, the view kept up to date equals one built afresh.
    #[test]
    fn a_view_kept_up_to_date_equals_one_built_afresh() {
        let (pods, mut pod_writer) = reflector::store::<PodInfo>();
        let (namespaces, mut ns_writer) = reflector::store::<Namespace>();
        let (policies, mut policy_writer) = reflector::store::<NetworkPolicy>();
        let (nodes, mut node_writer) = reflector::store::<Node>();
        let (cluster_policies, _) = reflector::store::<ClusterNetworkPolicy>();
        let caches = Caches {
            pods,
            namespaces,
            policies,
            cluster_policies,
            nodes,
            cluster_policies_settled: tokio::sync::watch::channel(true).1,
        };
        let mut views = Views::new("node-1");
        let mut held = Arc::clone(&views.update(&caches, None).cluster);
        let mut seed: u32 = 7;
        let mut next = |below: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) % below
        };
        for version in 1..400 {
            let mut changes = Vec::new();
            for _ in 0..=next(3) {
                let (ns, name) = (format!("ns-{}", next(3)), format!("p-{}", next(6)));
                match next(7) {
                    6 => {
                        let node = Node {
                            metadata: meta(None, &format!("node-{}", next(3)), version),
                            ..Node::default()
                        };
                        let name = node.metadata.name.clone().unwrap_or_default();
                        if next(2) == 0 {
                            node_writer.apply_watcher_event(&Event::Apply(node));
                        } else {
                            node_writer.apply_watcher_event(&Event::Delete(node));
                        }
                        changes.push(ClusterChange::Node(name));
                    }
                    0 => {
                        ns_writer.apply_watcher_event(&Event::Apply(Namespace {
                            metadata: meta(None, &ns, version),
                            ..Namespace::default()
                        }));
                        changes.push(ClusterChange::Namespace(ns));
                    }
                    1 => {
                        let policy = NetworkPolicy {
                            metadata: meta(Some(&ns), &name, version),
                            ..NetworkPolicy::default()
                        };
                        if next(2) == 0 {
                            policy_writer.apply_watcher_event(&Event::Apply(policy));
                        } else {
                            policy_writer.apply_watcher_event(&Event::Delete(policy));
                        }
                        changes.push(ClusterChange::Policy(ObjectKey::new(ns, name)));
                    }
                    2 => {
                        pod_writer.apply_watcher_event(&Event::Delete(PodInfo {
                            metadata: pod_meta(&ns, &name, version),
                            ..PodInfo::default()
                        }));
                        changes.push(ClusterChange::Pod(ObjectKey::new(ns, name)));
                    }
                    _ => {
                        pod_writer.apply_watcher_event(&Event::Apply(PodInfo {
                            metadata: pod_meta(&ns, &name, version),
                            node_name: Some(format!("node-{}", next(2) + 1)),
                            host_network: next(4) == 0,
                            ..PodInfo::default()
                        }));
                        changes.push(ClusterChange::Pod(ObjectKey::new(ns, name)));
                    }
                }
            }
            let full = next(50) == 0;
            let view = views.update(&caches, (!full).then_some(changes.as_slice()));
            same(view, &View::build(&caches, "node-1"));
            assert!(
                !Arc::ptr_eq(&view.cluster, &held),
                "the view the worker holds was handed over again"
            );
            held = Arc::clone(&view.cluster);
        }
    }
}
