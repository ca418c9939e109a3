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

/// Which flow records become log lines (every record is counted and streamed regardless).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowLog {
    /// None.
    None,
    /// Denied and audit records: what policy stops, or would stop.
    #[default]
    Denied,
    /// Every record, allowed connections included.
    All,
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
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` are served, without
    /// authentication. Loopback by default: the agent runs on the host network, and on any
    /// other address every pod could read the node's policy state and flow counters. The
    /// kubelet's probes reach loopback (`httpGet.host: 127.0.0.1`); to let Prometheus scrape,
    /// give an address it can reach and restrict who else can (a NetworkPolicy does not
    /// cover host-network ports), e.g. the node's internal address or `0.0.0.0:9965`.
    #[arg(long, env = "PALISADE_METRICS_ADDR", default_value = "127.0.0.1:9965")]
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
    /// Flow events from the programs: every denied packet and every new allowed connection
    /// (`palisade flows`, flow logs, per-policy counters). `false` turns them off in the
    /// kernel.
    #[arg(long, env = "PALISADE_FLOW_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub flow_events: bool,
    /// Flow events each source address may cause per second; the kernel counts the rest and
    /// reports the count in the source's next event.
    #[arg(long, env = "PALISADE_FLOW_EVENTS_PER_SECOND", default_value_t = 100)]
    pub flow_events_per_second: u32,
    /// Which flow records are logged.
    #[arg(long, env = "PALISADE_FLOW_LOG", value_enum, default_value_t = FlowLog::Denied)]
    pub flow_log: FlowLog,
    /// Flow log aggregation: the first record of a flow (source address, destination address
    /// and port, protocol, verdict, reason, policies) is logged at once, the rest are counted
    /// and summed up in one line per flow at the end of each interval of this many seconds.
    /// 0 logs every record (each dropped packet of a denied flow). Metrics and `palisade
    /// flows` see every record either way.
    #[arg(long, env = "PALISADE_FLOW_LOG_INTERVAL_SECONDS", default_value_t = 10)]
    pub flow_log_interval_seconds: u64,
    /// Audit mode for every pod of the node: policy is evaluated and would-be drops are
    /// reported (verdict `audit`), but traffic passes. One namespace at a time: annotate it
    /// `palisade.io/policy-mode=audit`.
    #[arg(long, env = "PALISADE_AUDIT")]
    pub audit: bool,
    /// Strict uplinks: a packet from another node or the outside whose source is a cluster
    /// pod's address passes only when this node's route back to that address leaves through
    /// the interface it arrived on. Off, the fabric is trusted not to deliver spoofed remote pod
    /// addresses (see SECURITY.md); local pods' and the node's own addresses are refused from
    /// uplinks either way.
    #[arg(long, env = "PALISADE_STRICT_UPLINK", default_value_t = false, action = clap::ArgAction::Set)]
    pub strict_uplink: bool,
    /// The packet mark bit that binds an egress-isolated pod's Service packet to its record
    /// until kube-proxy's translation is judged (hex or decimal, exactly one bit). It must be
    /// a bit no other component on the node sets (see SECURITY.md).
    #[arg(long, env = "PALISADE_SERVICE_MARK", default_value = "0x1000", value_parser = parse_mark)]
    pub service_mark: u32,
    /// Seconds a TCP connection opened by a SYN stays tracked before its reply is seen.
    #[arg(long, env = "PALISADE_CT_TCP_SYN_SECONDS", default_value_t = 60)]
    pub ct_tcp_syn_seconds: u64,
    /// Seconds an idle established TCP connection stays tracked.
    #[arg(
        long,
        env = "PALISADE_CT_TCP_ESTABLISHED_SECONDS",
        default_value_t = 21_600
    )]
    pub ct_tcp_established_seconds: u64,
    /// Seconds a TCP connection stays tracked after a FIN or RST.
    #[arg(long, env = "PALISADE_CT_TCP_CLOSING_SECONDS", default_value_t = 10)]
    pub ct_tcp_closing_seconds: u64,
    /// Seconds an idle UDP (or SCTP, or other) flow stays tracked.
    #[arg(long, env = "PALISADE_CT_OTHER_SECONDS", default_value_t = 60)]
    pub ct_other_seconds: u64,
    /// Seconds an idle ICMP flow (echo) stays tracked.
    #[arg(long, env = "PALISADE_CT_ICMP_SECONDS", default_value_t = 30)]
    pub ct_icmp_seconds: u64,
    /// The local socket `palisade flows` and `palisade explain` talk to.
    #[arg(long, env = "PALISADE_SOCKET", default_value = crate::flows::socket::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

impl Config {
    pub fn flow_settings(&self) -> crate::dataplane::FlowSettings {
        crate::dataplane::FlowSettings {
            events: self.flow_events,
            events_per_second: self.flow_events_per_second,
            audit_all: self.audit,
            strict_uplink: self.strict_uplink,
        }
    }

    pub fn conntrack_settings(&self) -> crate::dataplane::ConntrackSettings {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        crate::dataplane::ConntrackSettings {
            tcp_syn: secs(self.ct_tcp_syn_seconds),
            tcp_established: secs(self.ct_tcp_established_seconds),
            tcp_closing: secs(self.ct_tcp_closing_seconds),
            other: secs(self.ct_other_seconds),
            icmp: secs(self.ct_icmp_seconds),
        }
    }

    /// `None`: every flow record is logged on its own.
    pub fn flow_log_interval(&self) -> Option<Duration> {
        (self.flow_log_interval_seconds > 0)
            .then(|| Duration::from_secs(self.flow_log_interval_seconds))
    }

    pub fn min_sync_interval(&self) -> Duration {
        Duration::from_millis(self.min_sync_interval_ms)
    }

    pub fn resync_period(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }
}

/// `--service-mark`: one bit, written in hex (`0x1000`) or decimal.
fn parse_mark(text: &str) -> Result<u32, String> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?} is not a 32-bit mark: {e}"))?;
    if value.count_ones() != 1 {
        return Err(format!("{text:?} is not exactly one bit"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Config, parse_mark};

    #[derive(clap::Parser)]
    struct Agent {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn the_http_endpoints_listen_on_loopback_unless_told_otherwise() {
        let defaults = Agent::try_parse_from(["agent", "--node-name", "n"]).unwrap();
        assert_eq!(defaults.config.metrics_addr.to_string(), "127.0.0.1:9965");
        let exposed = Agent::try_parse_from([
            "agent",
            "--node-name",
            "n",
            "--metrics-addr",
            "0.0.0.0:9965",
        ])
        .unwrap();
        assert_eq!(exposed.config.metrics_addr.to_string(), "0.0.0.0:9965");
    }

    #[test]
    fn flow_log_interval_zero_logs_every_record() {
        let parse = |args: &[&str]| {
            let mut all = vec!["agent", "--node-name", "n"];
            all.extend_from_slice(args);
            Agent::try_parse_from(all)
                .unwrap()
                .config
                .flow_log_interval()
        };
        assert_eq!(parse(&[]), Some(std::time::Duration::from_secs(10)));
        assert_eq!(parse(&["--flow-log-interval-seconds", "0"]), None);
    }

    #[test]
    fn a_service_mark_is_one_bit_in_hex_or_decimal() {
        assert_eq!(parse_mark("0x1000"), Ok(0x1000));
        assert_eq!(parse_mark("4096"), Ok(0x1000));
        assert!(parse_mark("0x3000").unwrap_err().contains("one bit"));
        assert!(parse_mark("0").unwrap_err().contains("one bit"));
        assert!(
            parse_mark("0xzz")
                .unwrap_err()
                .contains("not a 32-bit mark")
        );
    }
}
