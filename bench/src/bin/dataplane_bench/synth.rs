//! The synthetic cluster every part of the benchmark uses, described once ([`PolicySpec`]) and
//! rendered three ways: Kubernetes objects for Palisade's compiler ([`cluster`]), iptables +
//! ipset rules and nftables rules (`filters.rs`). Selectors are resolved here, from the same
//! description, so the three see exactly the same policies.
//!
//! - Peers: `peers` pods in 100 namespaces (`ns-<n>`, label `team: team-<n % 10>`), labels
//!   `app: app-<p % 40>`, `tier: t<p % 3>`, on other nodes, at `10.244.<1 + p / 250>.<1 + p % 250>`.
//! - The floor pair (`FLOOR_SERVER`, `FLOOR_CLIENT`) on a second lab node no agent runs on.
//! - Local pods in namespace `bench` on node `bench`: `server` (`app: web, role: server`),
//!   `client` (`app: client`), and `extra` more (`app: web, role: api`).
//! - N policies, all in `bench` and all selecting the server (the worst case for evaluators that
//!   walk a pod's policies in order): targets `{}`, `app: web`, `role In [server, api]` and
//!   `role: server`; one ingress rule each, from a pod selector across namespaces, a namespace
//!   selector or a namespace + tier selector, plus ipBlocks, on a TCP port, a TCP range or a UDP
//!   port (20 of each, so the server has 61 port sets, under Palisade's 64 classes).
//! - 1,000 CIDRs (`172.16.0.0/24` .. `172.19.231.0/24`) in 100 groups of 10, each group in the
//!   rule of one policy (or spread over all of them when N < 100): 1,000 at every N.
//! - The last policy alone allows the client: the probed flows (netperf's control port, its TCP
//!   and UDP data ports) are allowed by the last rule.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use palisade::k8s::{
    cluster::{Cluster, ObjectKey},
    cnp::ClusterNetworkPolicy,
};
use serde_json::{Value, json};

pub const NODE: &str = "bench";
pub const NAMESPACE: &str = "bench";
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 250, 2);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 250, 3);
/// The floor's node, where no agent runs, and its pair of pods (outside every range above:
/// peers end at `10.244.201.x` with 50,000 of them, local pods are `10.244.250.x`). The cluster
/// Palisade compiles knows nothing of them.
pub const FLOOR_NODE: &str = "floor";
pub const FLOOR_SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 251, 2);
pub const FLOOR_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 251, 3);
/// netserver's control connection.
pub const CONTROL_PORT: u16 = 12865;
/// netperf's data connections, fixed so that a rule can allow them.
pub const TCP_DATA_PORT: u16 = 5001;
pub const UDP_DATA_PORT: u16 = 5002;

const PEER_NAMESPACES: usize = 100;
const TEAMS: usize = 10;
const APPS: usize = 40;
const TIERS: usize = 3;
const CIDR_GROUPS: usize = 100;
const CIDRS_PER_GROUP: usize = 10;

/// Who a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// `app: app-<app>` pods in the namespaces of `team`.
    Pods { team: usize, app: usize },
    /// Every pod in the namespaces of `team`.
    Namespaces { team: usize },
    /// `tier: t<tier>` pods in the namespaces of `team`.
    Tier { team: usize, tier: usize },
    /// The ten CIDRs of one group.
    Cidrs { group: usize },
    /// `app: client` in the policy's namespace: only the last policy.
    Client,
}

/// Which local pods a policy selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    All,
    App,
    RoleIn,
    Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One port or range of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

/// One NetworkPolicy with one ingress rule.
#[derive(Clone, Debug)]
pub struct PolicySpec {
    pub index: usize,
    pub target: Target,
    pub peers: Vec<Peer>,
    pub ports: Vec<PortRange>,
}

/// The size of a synthetic cluster.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub peers: usize,
    /// Local pods besides the server and the client.
    pub extra: usize,
}

pub fn policies(n: usize) -> Vec<PolicySpec> {
    let groups = n.clamp(1, CIDR_GROUPS);
    (0..n)
        .map(|i| {
            let mut peers = vec![match i % 3 {
                0 => Peer::Pods {
                    team: (i / 3) % TEAMS,
                    app: i % APPS,
                },
                1 => Peer::Namespaces { team: i % TEAMS },
                _ => Peer::Tier {
                    team: i % TEAMS,
                    tier: (i / 3) % TIERS,
                },
            }];
            peers.extend(
                (0..CIDR_GROUPS)
                    .filter(|g| g % groups == i % groups)
                    .map(|group| Peer::Cidrs { group }),
            );
            let v = u16::try_from(i % 20).unwrap_or(0);
            let port = match (i / 4) % 3 {
                0 => PortRange::one(Proto::Tcp, 8000 + v),
                1 => PortRange {
                    proto: Proto::Tcp,
                    first: 9000 + 10 * v,
                    last: 9009 + 10 * v,
                },
                _ => PortRange::one(Proto::Udp, 5300 + v),
            };
            let mut spec = PolicySpec {
                index: i,
                target: [Target::All, Target::App, Target::RoleIn, Target::Role][i % 4],
                peers,
                ports: vec![port],
            };
            if i + 1 == n {
                spec.target = Target::Role;
                spec.peers.insert(0, Peer::Client);
                spec.ports = vec![
                    PortRange::one(Proto::Tcp, CONTROL_PORT),
                    PortRange::one(Proto::Tcp, TCP_DATA_PORT),
                    PortRange::one(Proto::Udp, UDP_DATA_PORT),
                ];
            }
            spec
        })
        .collect()
}

impl PortRange {
    fn one(proto: Proto, port: u16) -> Self {
        Self {
            proto,
            first: port,
            last: port,
        }
    }
}

pub fn peer_ip(p: usize) -> Ipv4Addr {
    let third = u8::try_from(1 + p / 250).unwrap_or(u8::MAX);
    let fourth = u8::try_from(1 + p % 250).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 244, third, fourth)
}

pub fn extra_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 250, u8::try_from(10 + k).unwrap_or(u8::MAX))
}

fn peer_ns(p: usize) -> usize {
    p % PEER_NAMESPACES
}

/// The pod addresses a selector peer matches (what kube-router puts in its ipset).
pub fn members(peer: Peer, scale: &Scale) -> Vec<Ipv4Addr> {
    let matches = |p: usize| match peer {
        Peer::Pods { team, app } => peer_ns(p) % TEAMS == team && p % APPS == app,
        Peer::Namespaces { team } => peer_ns(p) % TEAMS == team,
        Peer::Tier { team, tier } => peer_ns(p) % TEAMS == team && p % TIERS == tier,
        Peer::Cidrs { .. } | Peer::Client => false,
    };
    match peer {
        Peer::Client => vec![CLIENT],
        // Not pod addresses: see [`cidrs`].
        Peer::Cidrs { .. } => Vec::new(),
        _ => (0..scale.peers)
            .filter(|&p| matches(p))
            .map(peer_ip)
            .collect(),
    }
}

/// The CIDRs of one group, as (network, prefix length).
pub fn cidrs(group: usize) -> impl Iterator<Item = (Ipv4Addr, u8)> {
    (0..CIDRS_PER_GROUP).map(move |k| {
        let j = group * CIDRS_PER_GROUP + k;
        let second = u8::try_from(16 + j / 256).unwrap_or(u8::MAX);
        let third = u8::try_from(j % 256).unwrap_or(0);
        (Ipv4Addr::new(172, second, third, 0), 24)
    })
}

/// The local pods a target selects.
pub fn targets(target: Target, scale: &Scale) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    if matches!(target, Target::All) {
        out.push(CLIENT);
    }
    out.push(SERVER);
    if !matches!(target, Target::Role) {
        out.extend((0..scale.extra).map(extra_ip));
    }
    out
}

/// Distinct selector peers and targets used by `policies`, for one set each.
pub fn used(policies: &[PolicySpec]) -> (BTreeSet<Peer>, BTreeSet<Target>) {
    let peers = policies
        .iter()
        .flat_map(|p| p.peers.iter().copied())
        .collect();
    let targets = policies.iter().map(|p| p.target).collect();
    (peers, targets)
}

/// `n` ClusterNetworkPolicies, as an administrator's deny lists look: a tenth Baseline, the
/// rest Admin, priorities spread over 0..1000. One in ten applies to namespace `bench` (the
/// server and the client): an ingress Deny from a namespace of its own on TCP 9999 (Admin) or
/// 9998 (Baseline); consecutive Denies on one port set share a class, so they cost the server
/// two class bits beside its 61. The others apply to namespaces that do not exist here, as
/// policies of other tenants do. Whatever their number, a packet at the server makes the same
/// three lookups.
pub fn cluster_policies(n: usize) -> anyhow::Result<Vec<ClusterNetworkPolicy>> {
    (0..n)
        .map(|i| {
            let baseline = i >= n - n / 10;
            let subject = if i % 10 == 0 {
                NAMESPACE.to_owned()
            } else {
                format!("tenant-{i}")
            };
            let port = if baseline { 9998 } else { 9999 };
            let policy = serde_json::from_value(json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy",
                "metadata": {"name": format!("cnp-{i:05}")},
                "spec": {
                    "tier": if baseline { "Baseline" } else { "Admin" },
                    "priority": i % 1000,
                    "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": subject}}},
                    "ingress": [{
                        "name": "blocked",
                        "action": "Deny",
                        "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": format!("blocked-{i}")}}}],
                        "protocols": [{"tcp": {"destinationPort": {"number": port}}}],
                    }],
                },
            }))?;
            Ok(policy)
        })
        .collect()
}

/// The cluster as Kubernetes objects, for Palisade's compiler.
pub fn cluster(scale: &Scale, specs: &[PolicySpec]) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::default();
    let mut namespace = |name: String, team: String| -> anyhow::Result<()> {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"team": team, "kubernetes.io/metadata.name": name}}
        }))?;
        cluster.namespaces.insert(name, std::sync::Arc::new(ns));
        Ok(())
    };
    namespace(NAMESPACE.into(), NAMESPACE.into())?;
    for n in 0..PEER_NAMESPACES {
        namespace(format!("ns-{n}"), format!("team-{}", n % TEAMS))?;
    }
    let mut add_pod = |ns: &str, name: String, labels: Value, node: &str, ip: Ipv4Addr| {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"podIPs": [{"ip": ip.to_string()}]},
        }))?;
        cluster
            .pods
            .insert(ObjectKey::new(ns, name), std::sync::Arc::new(pod.into()));
        anyhow::Ok(())
    };
    add_pod(
        NAMESPACE,
        "server".into(),
        json!({"app": "web", "role": "server"}),
        NODE,
        SERVER,
    )?;
    add_pod(
        NAMESPACE,
        "client".into(),
        json!({"app": "client"}),
        NODE,
        CLIENT,
    )?;
    for k in 0..scale.extra {
        add_pod(
            NAMESPACE,
            format!("web-{k}"),
            json!({"app": "web", "role": "api"}),
            NODE,
            extra_ip(k),
        )?;
    }
    for p in 0..scale.peers {
        let ns = format!("ns-{}", peer_ns(p));
        let labels = json!({"app": format!("app-{}", p % APPS), "tier": format!("t{}", p % TIERS)});
        add_pod(
            &ns,
            format!("pod-{p}"),
            labels,
            &format!("node-{}", 1 + p % 100),
            peer_ip(p),
        )?;
    }
    for spec in specs {
        let policy: NetworkPolicy = serde_json::from_value(policy_json(spec))?;
        cluster.policies.insert(
            ObjectKey::new(NAMESPACE, format!("p-{}", spec.index)),
            std::sync::Arc::new(policy),
        );
    }
    Ok(cluster)
}

fn policy_json(spec: &PolicySpec) -> Value {
    let target = match spec.target {
        Target::All => json!({}),
        Target::App => json!({"matchLabels": {"app": "web"}}),
        Target::RoleIn => {
            json!({"matchExpressions": [{"key": "role", "operator": "In", "values": ["server", "api"]}]})
        }
        Target::Role => json!({"matchLabels": {"role": "server"}}),
    };
    let team = |t: usize| json!({"matchLabels": {"team": format!("team-{t}")}});
    let from: Vec<Value> = spec
        .peers
        .iter()
        .flat_map(|peer| -> Vec<Value> {
            match *peer {
                Peer::Pods { team: t, app } => vec![json!({
                    "namespaceSelector": team(t),
                    "podSelector": {"matchLabels": {"app": format!("app-{app}")}},
                })],
                Peer::Namespaces { team: t } => vec![json!({"namespaceSelector": team(t)})],
                Peer::Tier { team: t, tier } => vec![json!({
                    "namespaceSelector": team(t),
                    "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": [format!("t{tier}")]}]},
                })],
                Peer::Cidrs { group } => cidrs(group)
                    .map(|(net, len)| json!({"ipBlock": {"cidr": format!("{net}/{len}")}}))
                    .collect(),
                Peer::Client => vec![json!({"podSelector": {"matchLabels": {"app": "client"}}})],
            }
        })
        .collect();
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|p| {
            let protocol = match p.proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
            };
            if p.first == p.last {
                json!({"protocol": protocol, "port": p.first})
            } else {
                json!({"protocol": protocol, "port": p.first, "endPort": p.last})
            }
        })
        .collect();
    json!({
        "metadata": {"name": format!("p-{}", spec.index), "namespace": NAMESPACE},
        "spec": {
            "podSelector": target,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": from, "ports": ports}],
        },
    })
}

/// The node's addresses, as the compiler wants them.
pub fn node_addrs() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::new(10, 244, 0, 1))]
}
