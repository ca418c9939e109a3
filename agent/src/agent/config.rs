//! `palisade agent`'s settings: flags, each with an environment variable and a default that
//! suits a DaemonSet (see `manifests/daemonset.yaml`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

use crate::dataplane::Established;

/// What happens to a pod's interface in the moments between its creation (by the CNI) and the
/// agent learning which pod it belongs to (the kubelet reporting the pod's address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// Programs go on every new pod interface at once and drop everything until the pod's own
    /// rules are written: a pod is never open for a moment, even one its policies isolate.
    #[default]
    Closed,
    /// New pod interfaces are left alone until their pod is known (as a pod without policy),
    /// which never delays a new pod's first packets but leaves an isolated pod open meanwhile.
    Open,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// This node's name, as pods name it in `spec.nodeName` (the DaemonSet passes it from the
    /// downward API). Pods of this node are enforced; every pod is a peer.
    #[arg(long, env = "PALISADE_NODE_NAME")]
    pub node_name: String,
    /// A kubeconfig file. Without one: `$KUBECONFIG`, then the in-cluster service account,
    /// then `~/.kube/config`.
    #[arg(long, env = "PALISADE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// What a policy change does to established connections.
    #[arg(long, env = "PALISADE_ESTABLISHED", value_enum, default_value_t = Established::Keep)]
    pub established: Established,
    /// New pod interfaces before their pod is known: closed (drop all) or open.
    #[arg(long, env = "PALISADE_FAIL_MODE", value_enum, default_value_t = FailMode::Closed)]
    pub fail_mode: FailMode,
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` are served.
    #[arg(long, env = "PALISADE_METRICS_ADDR", default_value = "0.0.0.0:9965")]
    pub metrics_addr: SocketAddr,
    /// bpffs directory for pinned maps and links (kept across agent restarts).
    #[arg(
        long,
        env = "PALISADE_PIN_ROOT",
        default_value = "/sys/fs/bpf/palisade"
    )]
    pub pin_root: PathBuf,
    /// The cluster's Service ranges (kube-apiserver's `--service-cluster-ip-range`): egress to
    /// them is judged after kube-proxy's translation. Comma separated.
    #[arg(
        long = "service-cidr",
        env = "PALISADE_SERVICE_CIDRS",
        value_delimiter = ',',
        default_value = "10.96.0.0/12"
    )]
    pub service_cidrs: Vec<IpNet>,
    /// Name prefixes of pod interfaces on the node (the CNI's host-side veths). Every other
    /// interface but `lo` is an uplink. Comma separated.
    #[arg(
        long = "pod-interface-prefix",
        env = "PALISADE_POD_INTERFACE_PREFIXES",
        value_delimiter = ',',
        default_value = "cali,lxc,veth,eni,azv,gke"
    )]
    pub pod_interface_prefixes: Vec<String>,
    /// Least time between two syncs: events arriving meanwhile are coalesced into the next.
    #[arg(long, env = "PALISADE_MIN_SYNC_INTERVAL_MS", default_value_t = 20)]
    pub min_sync_interval_ms: u64,
    /// A full sync at least this often, events or not (also retries pods whose interface
    /// was not found).
    #[arg(long, env = "PALISADE_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Enforce in this network namespace instead of the agent's own (the lab runs one agent per
    /// node namespace; the API server stays reachable from the agent's namespace).
    #[arg(long, env = "PALISADE_NETNS")]
    pub netns: Option<PathBuf>,
}

impl Config {
    pub fn min_sync_interval(&self) -> Duration {
        Duration::from_millis(self.min_sync_interval_ms)
    }

    pub fn resync_period(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }
}
