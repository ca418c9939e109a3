//! From a cluster snapshot to the exact entries the eBPF maps hold (see `palisade_common` for the
//! layouts and the lookup precedence).
//!
//! How this scales:
//! - Peers are *identities*: one per distinct (namespace, pod labels, container ports). Selectors
//!   are evaluated once per identity, not per pod, and a pod whose identity already exists costs
//!   exactly one map write on every node (its address), whatever the number of policies.
//! - Rules of an endpoint and direction are grouped into port-set *classes*; peers carry class
//!   bits and ports carry class bits, so entries grow as peers + ports, never peers x ports.
//! - An `endPort` range is at most 30 LPM prefixes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::LabelSelector};
use palisade_common::{
    Addr, ClassMask, DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED,
    IDENTITY_CIDR_FLAG, IDENTITY_FIRST_POD, IDENTITY_HOST, MAX_CLASSES, V4_MAPPED_PREFIX_BITS,
};

use super::{
    model::{Peer, Policy, PolicyError, Port, Rule},
    ports::{PortPrefix, PortRange, PortSet, range_to_prefixes},
    selector::matches,
};
use crate::cluster::{Cluster, ObjectKey};

/// A prefix in the 128-bit (IPv4-mapped) space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub len: u32,
    pub addr: Addr,
}

impl Prefix {
    pub fn from_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) => Self {
                len: V4_MAPPED_PREFIX_BITS + u32::from(n.prefix_len()),
                addr: Addr::from_v4(n.network().octets()),
            },
            IpNet::V6(n) => Self {
                len: u32::from(n.prefix_len()),
                addr: Addr::from_v6(n.network().octets()),
            },
        }
    }

    /// A single address.
    pub const fn host(addr: Addr) -> Self {
        Self { len: 128, addr }
    }

    /// Whether every address of `other` lies in `self`.
    pub fn contains(&self, other: &Self) -> bool {
        other.len >= self.len && same_bits(&self.addr, &other.addr, self.len)
    }

    pub fn contains_addr(&self, addr: &Addr) -> bool {
        same_bits(&self.addr, addr, self.len)
    }
}

fn same_bits(a: &Addr, b: &Addr, bits: u32) -> bool {
    let (a, b) = (u128::from_be_bytes(a.bytes), u128::from_be_bytes(b.bytes));
    bits == 0 || (a ^ b) >> (128 - bits) == 0
}

pub fn addr_of(ip: &IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => Addr::from_v4(v4.octets()),
        IpAddr::V6(v6) => Addr::from_v6(v6.octets()),
    }
}

/// The IPv4 space as a prefix of the mapped space. Always in the CIDR trie, so that an IPv4
/// address never falls through to an IPv6 prefix such as `::/0` that happens to contain
/// `::ffff:0:0/96`.
pub const V4_ROOT: Prefix = Prefix {
    len: V4_MAPPED_PREFIX_BITS,
    addr: Addr::from_v4([0, 0, 0, 0]),
};

/// Which rule a class bit stands for (for explanations and flow attribution).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRef {
    pub policy: ObjectKey,
    pub direction: u8,
    pub index: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub ports: PortSet,
    pub rules: Vec<RuleRef>,
}

/// Everything one local pod needs in the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointState {
    pub addrs: Vec<IpAddr>,
    pub flags: u32,
    pub any_peer: [ClassMask; 2],
    pub any_port: [ClassMask; 2],
    /// (direction, peer identity or CIDR class) -> classes.
    pub peers: BTreeMap<(u8, u32), ClassMask>,
    /// (direction, protocol, port prefix) -> classes.
    pub ports: BTreeMap<(u8, u8, PortPrefix), ClassMask>,
    pub classes: [Vec<Class>; 2],
}

/// The desired content of every map on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Exact addresses of pods (their identity) and of the node ([`IDENTITY_HOST`]).
    pub identities: BTreeMap<Addr, u32>,
    pub cidrs: BTreeMap<Prefix, u32>,
    pub endpoints: BTreeMap<ObjectKey, EndpointState>,
    pub errors: Vec<PolicyError>,
}

/// What makes two pods the same peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IdentityKey {
    namespace: String,
    labels: BTreeMap<String, String>,
    /// (name, protocol, port) of named container ports, sorted: egress named ports resolve
    /// against them.
    named_ports: Vec<(String, u8, u16)>,
}

/// Keeps identities and CIDR classes stable across compilations, so an update rewrites only
/// what changed. Ids are never reused within a process: a stale entry can then never be read
/// as another peer's.
#[derive(Debug, Default)]
pub struct Compiler {
    identities: HashMap<IdentityKey, u32>,
    cidrs: HashMap<Prefix, u32>,
    next_identity: u32,
    next_cidr: u32,
}

/// The node whose pods are compiled.
pub struct NodeView<'a> {
    pub name: &'a str,
    pub addrs: &'a [IpAddr],
}

impl Compiler {
    pub fn new() -> Self {
        Self {
            next_identity: IDENTITY_FIRST_POD,
            ..Self::default()
        }
    }

    /// Never hands out an identity up to `identity` or a CIDR class up to `cidr` (a value with
    /// [`IDENTITY_CIDR_FLAG`]): a restarted agent reserves the ids the maps it adopts still
    /// hold, so that no rule written by the previous agent can match a different peer under a
    /// reused id while the new rules are switched in.
    pub fn reserve_ids(&mut self, identity: u32, cidr: u32) {
        self.next_identity = self.next_identity.max(identity.saturating_add(1));
        self.next_cidr = self.next_cidr.max(cidr & !IDENTITY_CIDR_FLAG);
    }

    pub fn compile(&mut self, cluster: &Cluster, node: &NodeView<'_>) -> NodeState {
        let mut state = NodeState::default();
        let mut policies = Vec::new();
        for policy in cluster.policies.values() {
            let (policy, errors) = Policy::from_api(policy);
            state.errors.extend(errors);
            policies.push(policy);
        }

        // Identities of every pod that can be a peer.
        let mut live = BTreeMap::<u32, IdentityKey>::new();
        let mut pod_identity = BTreeMap::<&ObjectKey, u32>::new();
        for (key, pod) in &cluster.pods {
            let addrs = pod_addrs(pod);
            if is_host_network(pod) || addrs.is_empty() {
                continue;
            }
            let ident = identity_key(key, pod);
            let id = *self.identities.entry(ident.clone()).or_insert_with(|| {
                self.next_identity += 1;
                self.next_identity - 1
            });
            live.insert(id, ident);
            pod_identity.insert(key, id);
            for a in &addrs {
                state.identities.insert(addr_of(a), id);
            }
        }
        self.identities.retain(|_, id| live.contains_key(id));
        for a in node.addrs {
            state.identities.insert(addr_of(a), IDENTITY_HOST);
        }

        // CIDR classes: every cidr and except of every ipBlock, plus the IPv4 root.
        let mut prefixes = BTreeSet::from([V4_ROOT]);
        for policy in &policies {
            for rule in policy.ingress.iter().chain(policy.egress.iter()).flatten() {
                for peer in rule.peers.iter().flatten() {
                    if let Peer::Block { cidr, except } = peer {
                        prefixes.insert(Prefix::from_net(cidr));
                        prefixes.extend(except.iter().map(Prefix::from_net));
                    }
                }
            }
        }
        // Egress named ports towards pod addresses inside an ipBlock resolve per destination pod:
        // each such address gets a host prefix of its own, which the longest match then finds.
        for policy in &policies {
            for rule in policy.egress.iter().flatten() {
                if !rule.ports.iter().any(|p| matches!(p, Port::Named { .. })) {
                    continue;
                }
                for peer in rule.peers.iter().flatten() {
                    if let Peer::Block { cidr, except } = peer {
                        let block = Block::new(cidr, except);
                        let hosts = state
                            .identities
                            .iter()
                            .filter(|(_, id)| **id != IDENTITY_HOST)
                            .map(|(a, _)| Prefix::host(*a));
                        prefixes.extend(hosts.filter(|h| block.holds(h)));
                    }
                }
            }
        }
        self.cidrs.retain(|p, _| prefixes.contains(p));
        for p in &prefixes {
            let id = *self.cidrs.entry(*p).or_insert_with(|| {
                self.next_cidr += 1;
                IDENTITY_CIDR_FLAG | self.next_cidr
            });
            state.cidrs.insert(*p, id);
        }

        let ctx = Context {
            cluster,
            identities: &live,
            cidrs: &state.cidrs,
            addrs: &state.identities,
        };
        for (key, pod) in &cluster.pods {
            let addrs = pod_addrs(pod);
            if is_host_network(pod) || addrs.is_empty() || pod_node(pod) != node.name {
                continue;
            }
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let selecting: Vec<&Policy> = policies
                .iter()
                .filter(|p| p.key.namespace == key.namespace && matches(&p.pod_selector, &labels))
                .collect();
            let (endpoint, errors) = ctx.endpoint(key, pod, addrs, &selecting);
            state.errors.extend(errors);
            state.endpoints.insert(key.clone(), endpoint);
        }
        state
    }
}

struct Context<'a> {
    cluster: &'a Cluster,
    identities: &'a BTreeMap<u32, IdentityKey>,
    cidrs: &'a BTreeMap<Prefix, u32>,
    /// Pod (and node) addresses and their identities.
    addrs: &'a BTreeMap<Addr, u32>,
}

/// An ipBlock peer: `cidr` minus every `except`.
struct Block {
    cidr: Prefix,
    except: Vec<Prefix>,
}

impl Block {
    fn new(cidr: &IpNet, except: &[IpNet]) -> Self {
        Self {
            cidr: Prefix::from_net(cidr),
            except: except.iter().map(Prefix::from_net).collect(),
        }
    }

    /// Whether every address of `p` is in the block (families never mix).
    fn holds(&self, p: &Prefix) -> bool {
        same_family(&self.cidr, p)
            && self.cidr.contains(p)
            && !self.except.iter().any(|e| e.contains(p))
    }
}

/// Classes of one endpoint and direction under construction.
#[derive(Default)]
struct ClassTable {
    index: BTreeMap<PortSet, usize>,
    classes: Vec<Class>,
}

impl ClassTable {
    /// The class bit for a port set, or `None` when the endpoint already has [`MAX_CLASSES`]
    /// classes (the rule then allows nothing: fail closed).
    fn bit(&mut self, ports: &PortSet, rule: &RuleRef) -> Option<ClassMask> {
        let i = match self.index.get(ports) {
            Some(i) => *i,
            None if self.classes.len() < MAX_CLASSES => {
                self.classes.push(Class {
                    ports: ports.clone(),
                    rules: Vec::new(),
                });
                self.index.insert(ports.clone(), self.classes.len() - 1);
                self.classes.len() - 1
            }
            None => return None,
        };
        let rules = &mut self.classes[i].rules;
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
        Some(1 << i)
    }
}

impl Context<'_> {
    fn endpoint(
        &self,
        key: &ObjectKey,
        pod: &Pod,
        addrs: Vec<IpAddr>,
        policies: &[&Policy],
    ) -> (EndpointState, Vec<PolicyError>) {
        let mut ep = EndpointState {
            addrs,
            ..Default::default()
        };
        let mut errors = Vec::new();
        let own_ports = container_ports(pod);
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let d = usize::from(direction);
            let mut table = ClassTable::default();
            let mut overflow = false;
            for policy in policies {
                let rules = if direction == DIR_INGRESS {
                    &policy.ingress
                } else {
                    &policy.egress
                };
                let Some(rules) = rules else { continue };
                ep.flags |= if direction == DIR_INGRESS {
                    EP_INGRESS_ISOLATED
                } else {
                    EP_EGRESS_ISOLATED
                };
                for rule in rules {
                    let rule_ref = RuleRef {
                        policy: policy.key.clone(),
                        direction,
                        index: rule.index,
                    };
                    overflow |=
                        !self.add_rule(&mut ep, &mut table, direction, rule, &rule_ref, &own_ports);
                }
            }
            if overflow {
                errors.push(PolicyError {
                    policy: key.clone(),
                    field: if direction == DIR_INGRESS { "ingress".into() } else { "egress".into() },
                    message: format!("pod has more than {MAX_CLASSES} distinct port sets; rules past that allow nothing"),
                });
            }
            // Port prefixes: every prefix of every class's ranges, carrying every class whose
            // ranges contain the whole prefix (the longest match then answers exactly).
            for class in &table.classes {
                let PortSet::Ranges(ranges) = &class.ports else {
                    continue;
                };
                for r in ranges {
                    for p in range_to_prefixes(r.first, r.last) {
                        ep.ports.entry((direction, r.protocol, p)).or_insert(0);
                    }
                }
            }
            for ((dir, protocol, prefix), mask) in ep.ports.iter_mut() {
                if *dir != direction {
                    continue;
                }
                for (i, class) in table.classes.iter().enumerate() {
                    if let PortSet::Ranges(ranges) = &class.ports
                        && ranges.iter().any(|r| {
                            r.protocol == *protocol
                                && r.first <= prefix.first()
                                && prefix.last() <= r.last
                        })
                    {
                        *mask |= 1 << i;
                    }
                }
            }
            for (i, class) in table.classes.iter().enumerate() {
                if class.ports == PortSet::All {
                    ep.any_port[d] |= 1 << i;
                }
            }
            ep.classes[d] = table.classes;
        }
        ep.peers.retain(|_, m| *m != 0);
        (ep, errors)
    }

    /// Adds one rule's bits; false when a class could not be allocated.
    fn add_rule(
        &self,
        ep: &mut EndpointState,
        table: &mut ClassTable,
        direction: u8,
        rule: &Rule,
        rule_ref: &RuleRef,
        own_ports: &[(String, u8, u16)],
    ) -> bool {
        let d = usize::from(direction);
        let numeric: Vec<PortRange> = rule
            .ports
            .iter()
            .filter_map(|p| {
                if let Port::Numeric(r) = p {
                    Some(*r)
                } else {
                    None
                }
            })
            .collect();
        let named: Vec<(u8, &str)> = rule
            .ports
            .iter()
            .filter_map(|p| {
                if let Port::Named { protocol, name } = p {
                    Some((*protocol, name.as_str()))
                } else {
                    None
                }
            })
            .collect();
        let resolve = |ports: &[(String, u8, u16)]| {
            let mut ranges = numeric.clone();
            for (protocol, name) in &named {
                ranges.extend(
                    ports
                        .iter()
                        .filter(|(n, p, _)| n == name && p == protocol)
                        .map(|(_, p, port)| PortRange {
                            protocol: *p,
                            first: *port,
                            last: *port,
                        }),
                );
            }
            PortSet::ranges(ranges)
        };
        let mut ok = true;
        let mut bit = |ports: &PortSet| -> Option<ClassMask> {
            if ports.is_empty() {
                return None;
            }
            let b = table.bit(ports, rule_ref);
            ok &= b.is_some();
            b
        };
        // Ingress named ports resolve against this pod; egress ones against each destination.
        let per_peer_ports = direction == DIR_EGRESS && !named.is_empty();
        let fixed = if rule.ports.is_empty() {
            PortSet::All
        } else if per_peer_ports {
            PortSet::ranges(numeric.clone())
        } else {
            resolve(own_ports)
        };
        match &rule.peers {
            None => {
                if let Some(b) = bit(&fixed) {
                    ep.any_peer[d] |= b;
                }
                if per_peer_ports {
                    for (id, ident) in self.identities {
                        if let Some(b) = bit(&resolve(&ident.named_ports)) {
                            *ep.peers.entry((direction, *id)).or_insert(0) |= b;
                        }
                    }
                }
            }
            Some(peers) => {
                for peer in peers {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            for (id, ident) in self.identities {
                                if !self.selects(
                                    rule_ref,
                                    namespaces.as_ref(),
                                    pods.as_ref(),
                                    ident,
                                ) {
                                    continue;
                                }
                                let ports = if per_peer_ports {
                                    resolve(&ident.named_ports)
                                } else {
                                    fixed.clone()
                                };
                                if let Some(b) = bit(&ports) {
                                    *ep.peers.entry((direction, *id)).or_insert(0) |= b;
                                }
                            }
                        }
                        Peer::Block { cidr, except } => {
                            let block = Block::new(cidr, except);
                            if let Some(b) = bit(&fixed) {
                                for (p, id) in self.cidrs {
                                    if block.holds(p) {
                                        *ep.peers.entry((direction, *id)).or_insert(0) |= b;
                                    }
                                }
                            }
                            if !per_peer_ports {
                                continue;
                            }
                            // Named ports: pod addresses in the block carry their own host
                            // prefix (see `compile`) and resolve against that pod.
                            for (addr, id) in self.addrs {
                                let host = Prefix::host(*addr);
                                let (Some(ident), Some(cidr_id)) =
                                    (self.identities.get(id), self.cidrs.get(&host))
                                else {
                                    continue;
                                };
                                if block.holds(&host)
                                    && let Some(b) = bit(&resolve(&ident.named_ports))
                                {
                                    *ep.peers.entry((direction, *cidr_id)).or_insert(0) |= b;
                                }
                            }
                        }
                    }
                }
            }
        }
        ok
    }

    fn selects(
        &self,
        rule: &RuleRef,
        namespaces: Option<&LabelSelector>,
        pods: Option<&LabelSelector>,
        ident: &IdentityKey,
    ) -> bool {
        let ns_ok = match namespaces {
            None => ident.namespace == rule.policy.namespace,
            Some(sel) => {
                let labels = self
                    .cluster
                    .namespaces
                    .get(&ident.namespace)
                    .and_then(|n| n.metadata.labels.clone())
                    .unwrap_or_default();
                matches(sel, &labels)
            }
        };
        ns_ok && pods.is_none_or(|sel| matches(sel, &ident.labels))
    }
}

fn same_family(a: &Prefix, b: &Prefix) -> bool {
    let v4 = |p: &Prefix| p.len >= V4_MAPPED_PREFIX_BITS && V4_ROOT.contains_addr(&p.addr);
    v4(a) == v4(b)
}

fn identity_key(key: &ObjectKey, pod: &Pod) -> IdentityKey {
    let mut named_ports: Vec<_> = container_ports(pod)
        .into_iter()
        .filter(|(n, _, _)| !n.is_empty())
        .collect();
    named_ports.sort();
    IdentityKey {
        namespace: key.namespace.clone(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        named_ports,
    }
}

/// Every address of a pod (`status.podIPs`, else `status.podIP`); unparsable ones are skipped.
pub fn pod_addrs(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if out.is_empty() {
        out.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    out
}

pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// `spec.nodeName`, `node-1` when unset (the lab's single-node default).
pub fn pod_node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("node-1")
}

/// (name, protocol, port) of each container port; protocol defaults to TCP.
pub fn container_ports(pod: &Pod) -> Vec<(String, u8, u16)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = super::ports::protocol_number(p.protocol.as_deref())?;
            let port = u16::try_from(p.container_port).ok()?;
            Some((p.name.clone().unwrap_or_default(), protocol, port))
        })
        .collect()
}
