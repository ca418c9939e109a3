//! What the integration tests share: the root check, the binaries under test, crafted frames
//! ([`frames`]), and a one-node
//! lab whose pods exist (namespaces, interfaces, a TCP server on port 80) and whose objects are
//! in a real API server, with a `palisade agent` process enforcing them.
//!
//! The binaries are those of the same build: `cargo xtask test` builds `palisade` and
//! `palisade-lab` before it runs these tests (cargo builds only a test's own package's
//! binaries for it).

pub mod frames;
pub mod wire;

use std::path::PathBuf;

use palisade::k8s::addresses::AddressBook;
use palisade::{
    dataplane::Established,
    k8s::cluster::{Cluster, ObjectKey},
};
use palisade_lab::{
    control::{ApiControl, Faults},
    pins::PinRoot,
    serve::{Proto, ServerHandle, serve},
    topology::Topology,
};

/// The `palisade` binary under test: `$PALISADE_BIN`, or the one in this test's target
/// directory.
pub fn palisade_bin() -> PathBuf {
    built_binary("PALISADE_BIN", "palisade", "palisade")
}

/// The `palisade-lab` binary under test: `$PALISADE_LAB_BIN`, or the one in this test's target
/// directory.
pub fn lab_bin() -> PathBuf {
    built_binary("PALISADE_LAB_BIN", "palisade-lab", "palisade-lab")
}

fn built_binary(var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    // Tests run from `target/<profile>/deps/`; binaries live one level up.
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("a target directory above the test");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p {package} --bin {name}`; `cargo xtask \
         test` does), or set {var}",
        path.display()
    );
    path
}

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
    /// The objects of `cluster` in a fresh API server, an agent (with `agent_args`) on node-1,
    /// and every pod's namespace and interface, each serving TCP 80. No pod
    /// status is written yet: the caller reports the pods it wants known
    /// (`api.push_statuses`).
    pub async fn start(mut cluster: Cluster, agent_args: &[&str]) -> Self {
        let binary = palisade_bin();
        let mut api = ApiControl::start(binary, Established::Keep, Faults::default())
            .await
            .expect("API server");
        api.set_agent_args(agent_args);
        let mut topology = Topology::new().expect("topology");
        let mut pins = PinRoot::new();
        let node = topology.add_node("node-1", 1).expect("node");
        api.start_agent(&node, &pins.node(&node.netns))
            .expect("agent");
        api.push_objects(&cluster).await.expect("objects");
        let mut book = AddressBook::default();
        let keys: Vec<ObjectKey> = cluster.pods.keys().cloned().collect();
        let mut servers = Vec::new();
        for key in &keys {
            let pod = cluster.pods.get_mut(key).unwrap();
            let addrs = book.addresses(key, std::sync::Arc::make_mut(pod));
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
