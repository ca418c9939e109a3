//! What the tests against a real API server share: the root check, and a one-node lab whose
//! pods exist (namespaces, interfaces, a TCP server on port 80) and whose objects are
//! in the API server, with a `palisade agent` process enforcing them. Included with `#[path]`
//! by each test crate, which uses what it needs.
#![allow(dead_code)]

use palisade::{
    cluster::{Cluster, ObjectKey},
    dataplane::Established,
    lab::{
        addresses::AddressBook,
        kubelet::{ApiControl, Faults},
        pins::PinRoot,
        serve::{Proto, ServerHandle, serve},
        topology::Topology,
    },
    manifest::parse_str,
};

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "needs root: creates network namespaces and loads eBPF programs"
    );
}

/// One node, `node-1`. Fields drop in order: servers, pods' namespaces, agent and API server,
/// then the pins.
pub struct ApiLab {
    pub servers: Vec<ServerHandle>,
    pub topology: Topology,
    pub api: ApiControl,
    pub pins: PinRoot,
    pub cluster: Cluster,
}

impl ApiLab {
    /// The objects of `yaml` in a fresh API server, an agent (with `agent_args`) on node-1,
    /// and every pod's namespace and interface, each serving TCP 80. No pod
    /// status is written yet: the caller reports the pods it wants known
    /// (`api.push_statuses`).
    pub async fn start(yaml: &str, agent_args: &[&str]) -> Self {
        let binary = env!("CARGO_BIN_EXE_palisade").into();
        let mut api = ApiControl::start(binary, Established::Keep, Faults::default())
            .await
            .expect("API server");
        api.set_agent_args(agent_args);
        let mut topology = Topology::new().expect("topology");
        let mut pins = PinRoot::new();
        let node = topology.add_node("node-1", 1).expect("node");
        api.start_agent(&node, &pins.node(&node)).expect("agent");
        let mut cluster = Cluster::default();
        for object in parse_str(yaml, "cluster").expect("manifest") {
            cluster.apply(object);
        }
        api.push_objects(&cluster).await.expect("objects");
        let mut book = AddressBook::default();
        let keys: Vec<ObjectKey> = cluster.pods.keys().cloned().collect();
        let mut servers = Vec::new();
        for key in &keys {
            let pod = cluster.pods.get_mut(key).unwrap();
            let addrs = book.addresses(key, pod);
            let handle = topology
                .add_pod(&node, &key.to_string(), &addrs)
                .expect("pod");
            servers.push(serve(&handle, &[(Proto::Tcp, 80)]).expect("server"));
        }
        Self {
            servers,
            topology,
            api,
            pins,
            cluster,
        }
    }
}
