//! Reflectors on Pods, Namespaces, NetworkPolicies, ClusterNetworkPolicies and Nodes: one
//! cache each, kept by kube-rs
//! watchers that list, watch, and list again after an expired resource version or a broken
//! connection, each error followed by a backoff ([`retry`]). Every change is reported on one
//! channel, for the sync loop to coalesce.

mod pods;
mod retry;
mod view;

use std::{sync::Arc, time::Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node},
        networking::v1::NetworkPolicy,
    },
    serde::de::DeserializeOwned,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{
        reflector::{self, Lookup, Store},
        watcher,
    },
};
use tokio::sync::mpsc;

pub use self::view::Views;
use self::{pods::SlimPod, retry::Retry};
use super::metrics::Metrics;
use crate::{
    k8s::{
        cluster::{ObjectKey, PodInfo},
        cnp::ClusterNetworkPolicy,
    },
    policy::ClusterChange,
};

/// A change seen by a watch: when it arrived, for the implementation delay, and what changed.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: Instant,
    /// False for changes the API server did not make (network events, timers).
    pub api: bool,
    /// The object the API server changed; `None` for a relist (anything may have changed)
    /// and for changes that are not the API server's.
    pub object: Option<ClusterChange>,
    /// The watch it came from (`pods`, `namespaces`, `networkpolicies`) and the object's
    /// resourceVersion after the change: a sync that includes the change has seen the
    /// resource up to this version (reported on `/status`).
    pub version: Option<(&'static str, String)>,
}

/// The caches.
#[derive(Clone)]
pub struct Caches {
    pods: Store<PodInfo>,
    namespaces: Store<Namespace>,
    policies: Store<NetworkPolicy>,
    cluster_policies: Store<ClusterNetworkPolicy>,
    nodes: Store<Node>,
    /// True once the ClusterNetworkPolicies are known: their first list completed, or the API
    /// server said it does not serve them (404: the CRD is not installed; there are none). The
    /// watch then keeps retrying and picks them up once the CRD appears. Any other error keeps
    /// the agent waiting, as for the other kinds: it never enforces without the tiers.
    cluster_policies_settled: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Starts the watches; changes go to `changes`.
    pub async fn start(
        client: &Client,
        changes: mpsc::UnboundedSender<Change>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let (settled, cluster_policies_settled) = tokio::sync::watch::channel(false);
        Self {
            cluster_policies: spawn(
                Api::all(client.clone()),
                "clusternetworkpolicies",
                |p: &ClusterNetworkPolicy| ClusterChange::ClusterPolicy(p.name_any()),
                without_managed_fields,
                Some(settled),
                changes.clone(),
                metrics,
            ),
            nodes: spawn(
                Api::all(client.clone()),
                "nodes",
                |n: &Node| ClusterChange::Node(n.name_any()),
                trim_node,
                None,
                changes.clone(),
                metrics,
            ),
            cluster_policies_settled,
            pods: spawn(
                Api::<SlimPod>::all(client.clone()),
                "pods",
                |pod: &PodInfo| ClusterChange::Pod(key_of(pod)),
                SlimPod::into_pod,
                None,
                changes.clone(),
                metrics,
            ),
            namespaces: spawn(
                Api::all(client.clone()),
                "namespaces",
                |ns: &Namespace| ClusterChange::Namespace(ns.name_any()),
                without_managed_fields,
                None,
                changes.clone(),
                metrics,
            ),
            policies: spawn(
                Api::all(client.clone()),
                "networkpolicies",
                |policy: &NetworkPolicy| ClusterChange::Policy(key_of(policy)),
                without_managed_fields,
                None,
                changes,
                metrics,
            ),
        }
    }

    /// Resolves once every cache holds a complete first list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pods.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        let mut settled = self.cluster_policies_settled.clone();
        if settled.wait_for(|known| *known).await.is_err() {
            // The watch ended, and its store's writer with it: that store says so.
            self.cluster_policies.wait_until_ready().await?;
        }
        self.policies.wait_until_ready().await
    }
}

/// The key of a namespaced object, as [`Views`] file it.
fn key_of<K: Lookup>(object: &K) -> ObjectKey {
    ObjectKey::new(
        Lookup::namespace(object).as_deref().unwrap_or_default(),
        Lookup::name(object).as_deref().unwrap_or_default(),
    )
}

/// Nobody reads them, and they are most of an object's size.
fn without_managed_fields<K: Resource>(mut object: K) -> K {
    object.managed_fields_mut().clear();
    object
}

/// What a Node is kept for: its labels and addresses (`nodes` peers). Its images, conditions
/// and the rest are most of its size and change with every heartbeat.
fn trim_node(mut node: Node) -> Node {
    node.managed_fields_mut().clear();
    if let Some(status) = node.status.as_mut() {
        *status = k8s_openapi::api::core::v1::NodeStatus {
            addresses: status.addresses.take(),
            ..Default::default()
        };
    }
    node.spec = None;
    node.metadata.annotations = None;
    node
}

/// Watches `W`s, keeps them as `K`s (what `keep` makes of them) in the returned cache, and
/// reports each change.
fn spawn<W, K>(
    api: Api<W>,
    resource: &'static str,
    changed: fn(&K) -> ClusterChange,
    keep: fn(W) -> K,
    settled: Option<tokio::sync::watch::Sender<bool>>,
    changes: mpsc::UnboundedSender<Change>,
    metrics: &Arc<Metrics>,
) -> Store<K>
where
    W: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let mut retry = Retry::new(resource, Arc::clone(metrics));
    // No `default_backoff()`: it resets on the `Init` that starts every list attempt (see
    // `retry`). The watcher retries when polled again, so waiting before the next poll is
    // the backoff.
    // Lists are served from the API server's watch cache (resourceVersion "0"), as client-go's
    // informers do: a quorum read of every pod of the cluster, 500 at a time, was most of an
    // agent's start-up at 50,000 pods. A list that old only means more events to come.
    // The cache holds what `keep` makes (a `Lookup`, which need not be a whole `Resource`).
    let kept =
        watcher(api, watcher::Config::default().any_semantic()).map_ok(move |event| match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(keep(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(keep(o)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(keep(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        });
    let stream = reflector::reflector(writer, kept);
    let started = Instant::now();
    let mut listed = false;
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if !listed && matches!(item, Ok(watcher::Event::InitDone)) {
                listed = true;
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(resource, seconds, "first list cached");
            }
            if let Some(settled) = &settled {
                match &item {
                    Ok(watcher::Event::InitDone) => {
                        settled.send_replace(true);
                    }
                    // The first 404 says so; later ones (the watch retries) say nothing new.
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                        if status.code == 404 && !settled.send_replace(true) =>
                    {
                        tracing::warn!(
                            resource,
                            "not served (its CRD is not installed): none are enforced until it is"
                        );
                    }
                    _ => {}
                }
            }
            if let Some(delay) = retry.observe(&item) {
                tokio::time::sleep(delay).await;
                continue;
            }
            let (object, version) = match &item {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => (
                    Some(changed(o)),
                    Lookup::resource_version(o).map(|v| (resource, v.into_owned())),
                ),
                // A (re)list's objects are applied to the cache at InitDone, all at once.
                Ok(watcher::Event::InitDone) => (None, None),
                _ => continue,
            };
            let change = Change {
                at: Instant::now(),
                api: true,
                object,
                version,
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    });
    reader
}
