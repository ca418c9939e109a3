//! Flow records: the programs' [`FlowEvent`]s, named. Each record is one verdict at one pod's
//! hook on a new flow (or a dropped packet): who talked to whom, which pod's policy judged it
//! and in which direction, and the NetworkPolicy rules that admitted it or the policies that
//! isolate the pod when it was denied (or would have been, in audit mode).
//!
//! - [`reader`]: reads the ring buffer and turns events into records ([`Attribution`]).
//! - [`socket`]: the agent's local socket; `palisade flows` follows the records through it and
//!   `palisade explain` asks the live maps.

pub mod reader;
pub mod socket;

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use palisade_common::{
    AllowReason, DIR_INGRESS, DropReason, FLOW_ALLOWED, FLOW_AUDIT, FLOW_TRANSLATED, FlowEvent,
    NO_CLASS,
};
use serde::{Deserialize, Serialize};

use crate::{
    k8s::cluster::{Cluster, ObjectKey, is_host_network, pod_addrs},
    policy::{
        compile::{Class, EndpointState},
        evaluate::{DirectionVerdict, Endpoint, Evaluator, display::protocol_name},
        model::PolicyError,
    },
};

/// What a flow record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    Allowed,
    Denied,
    /// Policy would have dropped it; it passed because the pod is in audit mode.
    Audit,
}

impl fmt::Display for FlowVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Audit => "audit",
        })
    }
}

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEnd {
    pub ip: IpAddr,
    pub port: u16,
    /// `namespace/name` of the pod at that address, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// One verdict on one new flow (or one dropped packet), named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub node: String,
    pub verdict: FlowVerdict,
    /// Whose policy judged it: `ingress` (the destination pod's) or `egress` (the source's).
    pub direction: String,
    /// `namespace/name` of the pod whose policy judged it (`None` when its interface belongs
    /// to no pod the agent knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Allowed: `not-isolated`, `policy` or `from-host`. Denied and audit: the drop reason
    /// (`policy-ingress`, `policy-egress`, `spoofed-source`, `no-endpoint`, ...).
    pub reason: String,
    pub protocol: String,
    pub src: FlowEnd,
    pub dst: FlowEnd,
    /// Rules that admitted it, as `namespace/policy ingress[i]` (or `egress[i]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_by: Vec<String>,
    /// Denied and audit: the policies that isolate the judging pod in that direction, or, when
    /// a ClusterNetworkPolicy denied, its deciding rule (`clusternetworkpolicy/NAME
    /// ingress[i]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolated_by: Vec<String>,
    /// Judged after kube-proxy's translation (a Service flow; `dst` is the backend).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translated: bool,
    /// Events of the same source the kernel did not send before this one (over its budget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl FlowRecord {
    /// The policies a record names (for metrics): `namespace/name`, each once.
    pub fn policies(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .allowed_by
            .iter()
            .chain(self.isolated_by.iter())
            .map(|r| r.split_once(' ').map_or(r.as_str(), |(p, _)| p))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `10:02:03.123 DENIED  ingress x/a 10.244.1.2:45678 -> x/b 10.244.1.3:80 TCP: isolated by
/// x/deny-all`.
impl fmt::Display for FlowRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |e: &FlowEnd| {
            let addr = match e.ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            };
            let at = if e.port == 0 {
                addr
            } else {
                format!("{addr}:{}", e.port)
            };
            match &e.pod {
                Some(pod) => format!("{pod} ({at})"),
                None => at,
            }
        };
        let verdict = self.verdict.to_string().to_uppercase();
        write!(
            f,
            "{} {} {verdict:<7} {:<7} {} -> {} {}",
            self.time,
            self.node,
            self.direction,
            end(&self.src),
            end(&self.dst),
            self.protocol
        )?;
        let judged = self.pod.as_deref().unwrap_or("unknown pod");
        if !self.allowed_by.is_empty() {
            write!(f, ": allowed by {}", self.allowed_by.join(", "))?;
        } else if self.reason.starts_with("cluster-policy-") && !self.isolated_by.is_empty() {
            write!(f, ": denied at {judged} by {}", self.isolated_by.join(", "))?;
        } else if !self.isolated_by.is_empty() {
            write!(
                f,
                ": {judged} isolated by {} and no rule admits it",
                self.isolated_by.join(", ")
            )?;
        } else {
            match self.reason.as_str() {
                "not-isolated" => write!(f, ": {} of {judged} not isolated", self.direction)?,
                "from-host" => write!(f, ": from {judged}'s own node (always allowed)")?,
                reason => write!(f, ": {reason} at {judged}")?,
            }
        }
        if self.translated {
            write!(f, " (Service flow, after translation)")?;
        }
        if self.suppressed > 0 {
            write!(f, " [{} earlier events suppressed]", self.suppressed)?;
        }
        Ok(())
    }
}

/// What a flow record is matched against (`palisade flows` options); empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Either end in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Either end is this pod (`name` or `namespace/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<FlowVerdict>,
    /// Either end's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl FlowFilter {
    pub fn matches(&self, record: &FlowRecord) -> bool {
        let pods = || {
            [&record.src, &record.dst]
                .into_iter()
                .filter_map(|e| e.pod.as_deref())
                .chain(record.pod.as_deref())
        };
        let namespace_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| pods().any(|p| p.split_once('/').is_some_and(|(n, _)| n == ns)));
        let pod_ok = self.pod.as_deref().is_none_or(|want| {
            pods().any(|p| {
                if want.contains('/') {
                    p == want
                } else {
                    p.split_once('/').is_some_and(|(_, name)| name == want)
                }
            })
        });
        let verdict_ok = self.verdict.is_none_or(|v| v == record.verdict);
        let port_ok = self
            .port
            .is_none_or(|p| record.src.port == p || record.dst.port == p);
        namespace_ok && pod_ok && verdict_ok && port_ok
    }
}

/// A local pod as the attribution sees it.
#[derive(Clone, Debug)]
pub struct LocalPod {
    pub key: ObjectKey,
    /// Classes by direction: a class bit names its rules (the compiled endpoint's, shared).
    pub classes: Arc<[Vec<Class>; 2]>,
    /// Policies selecting the pod, by direction.
    pub isolating: [Vec<ObjectKey>; 2],
    /// Rules the pod's entries could not hold, by direction (they allow nothing here).
    pub degraded: [Vec<PolicyError>; 2],
}

/// What the agent knew at its last sync: enough to name every address and class an event
/// carries. Published by the node worker after each sync.
#[derive(Debug, Default)]
pub struct Attribution {
    pub node: String,
    pub node_addrs: Vec<IpAddr>,
    /// Shared with the node worker that compiled it, never copied.
    pub cluster: std::sync::Arc<Cluster>,
    /// Local pods by the ifindex of their host-side interface.
    pub local: HashMap<u32, LocalPod>,
    /// Pods by address, built when a record first needs it: a sync publishes a new
    /// attribution, and indexing every pod of the cluster there would make each sync walk them
    /// all, flows or not.
    pods: OnceLock<HashMap<IpAddr, ObjectKey>>,
}

impl Attribution {
    pub fn new(
        node: &str,
        node_addrs: &[IpAddr],
        cluster: std::sync::Arc<Cluster>,
        endpoints: &std::collections::BTreeMap<ObjectKey, EndpointState>,
        ifindex: &std::collections::BTreeMap<ObjectKey, u32>,
    ) -> Self {
        let local = endpoints
            .iter()
            .filter_map(|(key, ep)| {
                let index = *ifindex.get(key)?;
                Some((
                    index,
                    LocalPod {
                        key: key.clone(),
                        classes: ep.classes.clone(),
                        isolating: ep.isolating.clone(),
                        degraded: ep.degraded.clone(),
                    },
                ))
            })
            .collect();
        Self {
            node: node.to_owned(),
            node_addrs: node_addrs.to_vec(),
            cluster,
            local,
            pods: OnceLock::new(),
        }
    }

    /// The pod at `ip`, if it is one.
    pub fn pod_at(&self, ip: IpAddr) -> Option<&ObjectKey> {
        self.pods
            .get_or_init(|| {
                self.cluster
                    .pods
                    .iter()
                    .filter(|(_, pod)| !is_host_network(pod))
                    .flat_map(|(key, pod)| pod_addrs(pod).into_iter().map(|a| (a, key.clone())))
                    .collect()
            })
            .get(&ip)
    }

    /// Names one event. `monotonic_now` is CLOCK_MONOTONIC now, to date the kernel's stamp.
    pub fn record(&self, event: &FlowEvent, monotonic_now: Duration) -> FlowRecord {
        let (src, dst) = (event.saddr.to_ip(), event.daddr.to_ip());
        let direction = if event.direction == DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        };
        let verdict = match event.verdict {
            FLOW_ALLOWED => FlowVerdict::Allowed,
            FLOW_AUDIT => FlowVerdict::Audit,
            // FLOW_DENIED, and unknown verdicts: a record never claims more access.
            _ => FlowVerdict::Denied,
        };
        let reason = if verdict == FlowVerdict::Allowed {
            AllowReason::from_u8(event.reason).map_or("unknown", AllowReason::name)
        } else {
            DropReason::from_u8(event.reason).map_or("unknown", DropReason::name)
        };
        let local = self.local.get(&event.ifindex);
        let d = usize::from(event.direction.min(1));
        let mut allowed_by = Vec::new();
        let mut isolated_by = Vec::new();
        if let Some(local) = local {
            match verdict {
                FlowVerdict::Allowed if event.class != NO_CLASS => {
                    allowed_by = self.rules_of_class(local, d, event, src, dst);
                }
                FlowVerdict::Allowed => {}
                _ if matches!(reason, "policy-ingress" | "policy-egress") => {
                    isolated_by = local.isolating[d].iter().map(ToString::to_string).collect();
                }
                _ if event.class != NO_CLASS => {
                    isolated_by = local.classes[d]
                        .get(usize::from(event.class))
                        .map_or_else(Vec::new, Class::describe_rules);
                }
                _ => {}
            }
        }
        let end = |ip: IpAddr, port: u16| FlowEnd {
            ip,
            port,
            pod: self.pod_at(ip).map(ToString::to_string),
        };
        FlowRecord {
            time: wall_time(event.time_ns, monotonic_now),
            node: self.node.clone(),
            verdict,
            direction: direction.to_owned(),
            pod: local.map(|l| l.key.to_string()),
            reason: reason.to_owned(),
            protocol: protocol_name(event.protocol),
            src: end(src, event.sport),
            dst: end(dst, event.dport),
            allowed_by,
            isolated_by,
            translated: event.flags & FLOW_TRANSLATED != 0,
            suppressed: event.suppressed,
        }
    }

    /// The rules of the deciding class that admit this flow. A class groups rules (of one port
    /// set, or of one peer list); when it holds more than one, the reference evaluator picks
    /// those that admit the flow.
    fn rules_of_class(
        &self,
        local: &LocalPod,
        d: usize,
        event: &FlowEvent,
        src: IpAddr,
        dst: IpAddr,
    ) -> Vec<String> {
        let Some(class) = local.classes[d].get(usize::from(event.class)) else {
            return vec![format!("class {} (no longer compiled)", event.class)];
        };
        let all = || class.describe_rules();
        if class.rules.len() <= 1 {
            return all();
        }
        let nodes = [crate::policy::NodeView {
            name: &self.node,
            addrs: &self.node_addrs,
        }];
        let evaluator = Evaluator::new(&self.cluster, &nodes);
        let at = |ip: IpAddr| Endpoint::at(&self.cluster, ip);
        let verdict = evaluator.evaluate(at(src), at(dst), event.protocol, event.dport);
        let side = if d == usize::from(DIR_INGRESS) {
            &verdict.ingress
        } else {
            &verdict.egress
        };
        let DirectionVerdict::AllowedBy(admitting) = side else {
            return all();
        };
        let chosen: Vec<String> = class
            .rules
            .iter()
            .filter(|r| {
                admitting
                    .iter()
                    .any(|a| a.policy == r.policy && a.index == r.index)
            })
            .map(|r| class.describe(r))
            .collect();
        if chosen.is_empty() { all() } else { chosen }
    }
}

/// The wall-clock time of a programs' clock stamp (`bpf_ktime_get_coarse_ns()`), given CLOCK_MONOTONIC now.
fn wall_time(stamp_ns: u64, monotonic_now: Duration) -> String {
    let age = monotonic_now.saturating_sub(Duration::from_nanos(stamp_ns));
    let at = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    jiff::Timestamp::try_from(at)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// CLOCK_MONOTONIC, the clock of the programs' `bpf_ktime_get_coarse_ns()` (to within a tick).
pub fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
