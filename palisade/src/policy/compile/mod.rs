//! From a cluster snapshot to the exact entries the eBPF maps hold (see `palisade_common` for the
//! layouts and the lookup precedence).
//!
//! How this scales:
//! - Peers are *identities*: one per distinct (namespace, pod labels, container ports). Selectors
//!   are evaluated once per identity, not per pod, and a pod whose identity already exists costs
//!   exactly one map write on every node (its address), whatever the number of policies.
//! - Rules of an endpoint and direction are grouped into *classes* (rules with the same peers
//!   share one, as do rules with the same ports; see `endpoint.rs`); peers carry class bits and
//!   ports carry class bits, so entries grow as peers + ports, never peers x ports.
//! - An `endPort` range is at most 30 LPM prefixes.
//! - Class bits never depend on which identities exist (egress named ports aside, see
//!   `endpoint.rs`), so a pod change is applied in place ([`Compiler::apply_pod_change`]): a
//!   pod of an existing identity writes or deletes only its addresses; a new identity (or one
//!   whose last pod left) adds or removes its peer entries at each local endpoint, found by
//!   evaluating that endpoint's rules against that one identity. Nothing there is O(pods) or
//!   O(identities) but computing a local pod's own endpoint (or one whose egress named ports
//!   select the new or departed identity).
//! - Policy and namespace changes are applied in place too ([`Compiler::apply_change`], see
//!   `incremental.rs`): a policy recomputes only the local endpoints it selects before or
//!   after (computed whole, then their NetworkPolicy classes placed in the bits they held:
//!   `slots.rs`, so a class that survives keeps its bit and its entries), and a new
//!   or departed ipBlock prefix adds or removes one CIDR entry per endpoint; a namespace
//!   relabel re-evaluates its own identities at each endpoint. Local pods of one kind (same
//!   namespace, labels, ports and policies: replicas) are computed once and *share* their
//!   entries (`Arc`s in [`EndpointState`]): they are placed once (`slots.rs`), edited once per
//!   allocation (`PeerEdits`), given back their old allocation when a recompute changed
//!   nothing (`Kept`), and the dataplane, which holds the same allocations as its record of
//!   what it wrote, compares and diffs them once per pair of allocations. A policy that selects
//!   50 replicas thus costs one endpoint's work and 50 endpoints' map writes, not 50 of each.
//! - Selectors visit only the identities of the namespaces they can match ([`Live`]).
//! - Every in-place change records what it touched in a [`Journal`], so the dataplane
//!   compares and writes only those entries, not the node's whole state.

mod endpoint;
mod incremental;
mod slots;
mod tiers;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use crate::k8s::cluster::{Labels, PodInfo};
use ipnet::IpNet;
use palisade_common::{
    Addr, ClassMask, EndpointInfo, IDENTITY_CIDR_FLAG, IDENTITY_FIRST_POD, IDENTITY_HOST,
    V4_MAPPED_PREFIX_BITS,
};

pub use self::incremental::{ClusterChange, Update};
use self::{
    endpoint::Context,
    incremental::Snapshot,
    slots::{ClassSlots, Placements},
};
use super::{
    model::{Peer, Policy, PolicyError, Port, Rule},
    ports::{PortPrefix, PortSet},
    selector::matches,
    tiers::ClusterPolicy,
};
use crate::k8s::{
    cluster::{
        Cluster, ObjectKey, container_ports, is_host_network, pod_addrs, pod_labels, pod_node,
    },
    cnp::{Action, Tier},
};

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
    let (a, b) = (
        u128::from_be_bytes(a.bytes()),
        u128::from_be_bytes(b.bytes()),
    );
    bits == 0 || (a ^ b) >> (128 - bits) == 0
}

/// The IPv4 space as a prefix of the mapped space. Always in the CIDR trie, so that an IPv4
/// address never falls through to an IPv6 prefix such as `::/0` that happens to contain
/// `::ffff:0:0/96`.
pub const V4_ROOT: Prefix = Prefix {
    len: V4_MAPPED_PREFIX_BITS,
    addr: Addr::from_v4([0, 0, 0, 0]),
};

/// Which rule a class bit stands for (for explanations and flow attribution).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    pub policy: ObjectKey,
    pub direction: u8,
    pub index: usize,
}

impl RuleRef {
    /// The rule as a user names it: `NAMESPACE/NAME ingress[i]` for a NetworkPolicy,
    /// `clusternetworkpolicy/NAME ingress[i]` for a ClusterNetworkPolicy.
    pub fn describe(&self) -> String {
        let direction = if self.direction == palisade_common::DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        };
        match (self.policy.namespace.is_empty(), self.index) {
            (false, i) => format!("{} {direction}[{i}]", self.policy),
            (true, FAIL_CLOSED_RULE) => format!(
                "clusternetworkpolicy/{} {direction} (invalid: denies all)",
                self.policy.name
            ),
            (true, i) => format!("clusternetworkpolicy/{} {direction}[{i}]", self.policy.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub ports: PortSet,
    pub rules: Vec<RuleRef>,
    /// NetworkPolicy rules, or ClusterNetworkPolicy rules of one tier and action.
    pub kind: ClassKind,
}

impl Class {
    /// `rule` of this class as a user names it, with the tier and action of a
    /// ClusterNetworkPolicy rule: `clusternetworkpolicy/NAME ingress[0] (Admin Deny)`.
    pub fn describe(&self, rule: &RuleRef) -> String {
        match self.kind {
            ClassKind::Policy => rule.describe(),
            ClassKind::Tier(tier, action) => {
                format!("{} ({tier:?} {action:?})", rule.describe())
            }
        }
    }

    /// Every rule of the class, named as [`Class::describe`] names them.
    pub fn describe_rules(&self) -> Vec<String> {
        self.rules.iter().map(|r| self.describe(r)).collect()
    }
}

/// What a class's rules are, and so what its bit decides (`palisade_common::precedence`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClassKind {
    /// NetworkPolicy rules (allow only); their policies are namespaced.
    #[default]
    Policy,
    /// ClusterNetworkPolicy rules of one tier with one action; their [`RuleRef::policy`] has
    /// an empty namespace (the object is cluster-scoped) and [`RuleRef::index`]
    /// [`FAIL_CLOSED_RULE`] for the Deny an invalid policy becomes.
    Tier(Tier, Action),
}

/// [`RuleRef::index`] of the Deny an invalid ClusterNetworkPolicy fails closed to.
pub const FAIL_CLOSED_RULE: usize = usize::MAX;

/// The tier classes of an endpoint, as [`EndpointInfo`] carries them (see its fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierMasks {
    pub admin: [ClassMask; 2],
    pub baseline: [ClassMask; 2],
    pub deny: [ClassMask; 2],
    pub pass: [ClassMask; 2],
}

impl TierMasks {
    /// The masks of `classes` (one direction's, in bit order) for direction index `d`.
    fn add(&mut self, d: usize, classes: &[Class]) {
        for (i, class) in classes.iter().enumerate() {
            let bit: ClassMask = 1 << i;
            let ClassKind::Tier(tier, action) = class.kind else {
                continue;
            };
            match tier {
                Tier::Baseline => self.baseline[d] |= bit,
                _ => self.admin[d] |= bit,
            }
            match action {
                Action::Accept => {}
                Action::Pass => self.pass[d] |= bit,
                _ => self.deny[d] |= bit,
            }
        }
    }
}

impl EndpointState {
    /// The endpoint's [`EndpointInfo`] under endpoint id `id`.
    pub fn info(&self, id: u32) -> EndpointInfo {
        info(id, self.flags, self.any_peer, self.any_port, &self.tiers)
    }

    /// The peer entries, to change: copied first if another endpoint (or the dataplane's
    /// record of what it wrote) shares them.
    pub fn peers_mut(&mut self) -> &mut PeerEntries {
        Arc::make_mut(&mut self.peers)
    }

    /// The port entries, to change (copied first if shared).
    pub fn ports_mut(&mut self) -> &mut PortEntries {
        Arc::make_mut(&mut self.ports)
    }

    /// The classes, to change (copied first if shared).
    pub fn classes_mut(&mut self) -> &mut [Vec<Class>; 2] {
        Arc::make_mut(&mut self.classes)
    }
}

/// Edits of endpoints' peer entries within one pass over the endpoints, made once per shared
/// allocation: endpoints that shared their entries before (replicas, or an endpoint and what
/// the dataplane wrote) share them after, so the copy is made, compared and written once. An
/// edit that changes nothing copies nothing; entries nobody else holds are edited in place.
#[derive(Default)]
struct PeerEdits(HashMap<(usize, Vec<PeerEdit>), [Arc<PeerEntries>; 2]>);

/// One peer entry's new value, or `None` to remove it.
type PeerEdit = ((u8, u32), Option<ClassMask>);

impl PeerEdits {
    /// Applies `edits` to `ep`'s peer entries; whether any entry changed.
    fn apply(&mut self, ep: &mut EndpointState, edits: impl IntoIterator<Item = PeerEdit>) -> bool {
        let edits: Vec<PeerEdit> = (edits.into_iter())
            .filter(|(k, v)| ep.peers.get(k).copied() != *v)
            .collect();
        if edits.is_empty() {
            return false;
        }
        let edit = |peers: &mut PeerEntries, edits: &[PeerEdit]| {
            for (k, v) in edits {
                match v {
                    Some(mask) => peers.insert(*k, *mask),
                    None => peers.remove(k),
                };
            }
        };
        if Arc::strong_count(&ep.peers) == 1 {
            edit(ep.peers_mut(), &edits);
            return true;
        }
        let key = (Arc::as_ptr(&ep.peers) as usize, edits);
        if let Some([_, after]) = self.0.get(&key) {
            ep.peers = after.clone();
            return true;
        }
        // `before` is held with the result, so its address names it while `self` lives.
        let before = ep.peers.clone();
        edit(ep.peers_mut(), &key.1);
        self.0.insert(key, [before, ep.peers.clone()]);
        true
    }
}

/// Recomputed endpoints given back the allocations they had where the contents did not change,
/// so that the comparison with the old state, here and in the dataplane, is one of pointers
/// for every later endpoint (replicas recomputed alike share one allocation). Each pair is
/// compared once; both are held, so an address names one allocation while this lives.
#[derive(Default)]
struct Kept {
    peers: KeptMemo<PeerEntries>,
    ports: KeptMemo<PortEntries>,
    classes: KeptMemo<[Vec<Class>; 2]>,
}

type KeptMemo<T> = HashMap<[usize; 2], (Arc<T>, Arc<T>, bool)>;

impl Kept {
    /// `new`, recomputed, takes `old`'s allocations for the parts equal to `old`'s.
    fn keep(&mut self, new: &mut EndpointState, old: &EndpointState) {
        keep(&mut self.peers, &mut new.peers, &old.peers);
        keep(&mut self.ports, &mut new.ports, &old.ports);
        keep(&mut self.classes, &mut new.classes, &old.classes);
    }
}

fn keep<T: PartialEq>(memo: &mut KeptMemo<T>, new: &mut Arc<T>, old: &Arc<T>) {
    if Arc::ptr_eq(new, old) {
        return;
    }
    let key = [Arc::as_ptr(new) as usize, Arc::as_ptr(old) as usize];
    let equal = match memo.get(&key) {
        Some((_, _, equal)) => *equal,
        None => {
            let equal = **new == **old;
            memo.insert(key, (new.clone(), old.clone(), equal));
            equal
        }
    };
    if equal {
        *new = old.clone();
    }
}

/// An endpoint's peer entries: (direction, peer identity or CIDR class) -> classes.
pub type PeerEntries = BTreeMap<(u8, u32), ClassMask>;

/// An endpoint's port entries: (direction, protocol, port prefix) -> classes.
pub type PortEntries = BTreeMap<(u8, u8, PortPrefix), ClassMask>;

/// An [`EndpointInfo`] from its parts.
pub fn info(
    id: u32,
    flags: u32,
    any_peer: [ClassMask; 2],
    any_port: [ClassMask; 2],
    tiers: &TierMasks,
) -> EndpointInfo {
    EndpointInfo {
        id,
        flags,
        any_peer,
        any_port,
        admin: tiers.admin,
        baseline: tiers.baseline,
        deny: tiers.deny,
        pass: tiers.pass,
    }
}

/// Everything one local pod needs in the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointState {
    pub addrs: Vec<IpAddr>,
    pub flags: u32,
    pub any_peer: [ClassMask; 2],
    pub any_port: [ClassMask; 2],
    /// Which classes are ClusterNetworkPolicy rules, of which tier and action.
    pub tiers: TierMasks,
    /// (direction, peer identity or CIDR class) -> classes. Shared, as are `ports` and
    /// `classes`, by endpoints with equal rules (replicas) and by what the dataplane wrote: a
    /// change is made to a copy (`Arc::make_mut`), and two endpoints whose entries are one
    /// allocation are known equal without a comparison.
    pub peers: Arc<PeerEntries>,
    /// (direction, protocol, port prefix) -> classes.
    pub ports: Arc<PortEntries>,
    pub classes: Arc<[Vec<Class>; 2]>,
    /// The policies that isolate the pod, by direction (what a denied flow is blamed on).
    pub isolating: [Vec<ObjectKey>; 2],
    /// Why the entries admit less than the policies say, by direction, if they do: rules that
    /// got no class (see `endpoint.rs`) and so allow nothing here. Also in
    /// [`NodeState::errors`].
    pub degraded: [Vec<PolicyError>; 2],
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

/// The ClusterNetworkPolicies of `cluster`, read and in the order they are tried; what reading
/// them reported goes to `errors` (each names the object and field, and the policy fails
/// closed as `policy/tiers.rs` says).
fn read_tiers(cluster: &Cluster, errors: &mut Vec<PolicyError>) -> Vec<ClusterPolicy> {
    let mut tiers: Vec<ClusterPolicy> = cluster
        .cluster_policies
        .values()
        .map(|p| ClusterPolicy::from_api(p))
        .collect();
    tiers.sort_by(|a, b| a.rank().cmp(&b.rank()));
    for policy in &tiers {
        errors.extend(policy.errors.iter().map(|e| PolicyError {
            policy: tiers::policy_key(&e.policy),
            field: e.field.clone(),
            message: format!("{} (the policy fails closed for its subjects)", e.problem),
        }));
    }
    tiers
}

/// What makes two pods the same peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IdentityKey {
    /// Shared with the pods' keys.
    namespace: Arc<str>,
    /// Interned: a clone is a reference count.
    labels: Labels,
    /// (name, protocol, port) of named container ports, sorted: egress named ports resolve
    /// against them.
    named_ports: Vec<(String, u8, u16)>,
}

/// Keeps identities and CIDR classes stable across compilations, so an update rewrites only
/// what changed. Ids are never reused within a process: a stale entry can then never be read
/// as another peer's.
///
/// It also remembers what [`Compiler::apply_pod_change`] needs to update the last state in
/// place: every peer pod's identity and addresses, how many pods each identity has, and the
/// parsed policies (see `incremental.rs`).
#[derive(Clone, Debug, Default)]
pub struct Compiler {
    identities: HashMap<IdentityKey, u32>,
    cidrs: HashMap<Prefix, u32>,
    next_identity: u32,
    next_cidr: u32,
    /// The live identities by id and by namespace (what the peer loops walk).
    live: Live,
    /// Pods per live identity: the identity goes when the count reaches zero.
    members: HashMap<u32, usize>,
    /// Every pod that is a peer (not hostNetwork, with an address), as last compiled.
    peers: HashMap<ObjectKey, PeerPod>,
    last: Option<Snapshot>,
    /// What changed in the states this compiler made since [`Compiler::take_journal`].
    journal: Journal,
    /// Pairs of ClusterNetworkPolicies of one tier and priority already warned about.
    warned_ranks: BTreeSet<(String, String)>,
    /// Which bit each endpoint's NetworkPolicy classes hold (see `slots.rs`).
    slots: ClassSlots,
}

/// Which entries of the state may have changed since the last [`Compiler::take_journal`]: a
/// superset of what differs (the property tests check it), so that the dataplane compares
/// only those with what it wrote, not every entry of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// Anything may have (a full compile): compare everything.
    pub all: bool,
    /// Pod (and node) addresses in [`NodeState::identities`].
    pub identities: BTreeSet<Addr>,
    /// Any entry of [`NodeState::cidrs`] (a few hundred at most: compared whole).
    pub cidrs: bool,
    /// Endpoints added, removed or changed in any field.
    pub endpoints: BTreeSet<ObjectKey>,
}

impl Journal {
    fn endpoint(&mut self, key: &ObjectKey) {
        if !self.all && !self.endpoints.contains(key) {
            self.endpoints.insert(key.clone());
        }
    }

    fn identity(&mut self, addr: Addr) {
        if !self.all {
            self.identities.insert(addr);
        }
    }
}

/// The live identities, by id (in id order, which is the order class bits of egress named
/// ports are handed out in) and by namespace, so that a selector visits only the identities
/// of the namespaces it can match.
#[derive(Clone, Debug, Default)]
struct Live {
    by_id: BTreeMap<u32, IdentityKey>,
    by_namespace: HashMap<Arc<str>, BTreeSet<u32>>,
}

impl Live {
    fn insert(&mut self, id: u32, ident: IdentityKey) {
        match self.by_namespace.get_mut(&ident.namespace) {
            Some(ids) => {
                ids.insert(id);
            }
            None => {
                self.by_namespace
                    .insert(ident.namespace.clone(), BTreeSet::from([id]));
            }
        }
        self.by_id.insert(id, ident);
    }

    fn remove(&mut self, id: u32) -> Option<IdentityKey> {
        let ident = self.by_id.remove(&id)?;
        if let Some(ids) = self.by_namespace.get_mut(&ident.namespace) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_namespace.remove(&ident.namespace);
            }
        }
        Some(ident)
    }

    fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    fn get(&self, id: u32) -> Option<&IdentityKey> {
        self.by_id.get(&id)
    }

    fn iter(&self) -> impl Iterator<Item = (&u32, &IdentityKey)> {
        self.by_id.iter()
    }

    /// The ids of namespace `namespace`, in id order.
    fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = u32> + '_ {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .copied()
    }

    /// The namespaces that have identities, each with its ids (in no particular order).
    fn namespaces(&self) -> impl Iterator<Item = (&Arc<str>, &BTreeSet<u32>)> {
        self.by_namespace.iter()
    }
}

/// A pod as a peer: its identity and the addresses that map to it.
#[derive(Clone, Debug)]
struct PeerPod {
    id: u32,
    addrs: Vec<Addr>,
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

    /// Forgets which bits endpoints' classes held: the next compile numbers them densely, in
    /// the order their policies are read, as a fresh process would.
    #[cfg(test)]
    pub(crate) fn forget_class_slots(&mut self) {
        self.slots = ClassSlots::default();
    }

    /// What changed since the last call (see [`Journal`]); a compiler that has made no state
    /// yet says everything did.
    pub fn take_journal(&mut self) -> Journal {
        let all = self.last.is_none();
        let mut journal = std::mem::take(&mut self.journal);
        journal.all |= all;
        journal
    }

    pub fn compile(&mut self, cluster: &Cluster, node: &NodeView<'_>) -> NodeState {
        self.journal = Journal {
            all: true,
            ..Journal::default()
        };
        let mut state = NodeState::default();
        let mut policies = BTreeMap::new();
        let mut policy_errors = BTreeMap::new();
        for (key, policy) in &cluster.policies {
            let (policy, errors) = Policy::from_api(policy);
            state.errors.extend(errors.iter().cloned());
            if !errors.is_empty() {
                policy_errors.insert(key.clone(), errors);
            }
            policies.insert(key.clone(), policy);
        }
        let tiers = read_tiers(cluster, &mut state.errors);
        self.warn_same_ranks(&tiers);

        // Identities of every pod that can be a peer. An address two pods claim (or a pod and
        // the node) goes to the later one; `contested` keeps it for the incremental path.
        let mut live = Live::default();
        self.members.clear();
        self.peers.clear();
        let mut contested = HashSet::new();
        for (key, pod) in &cluster.pods {
            let Some((ident, addrs)) = as_peer(key, pod) else {
                continue;
            };
            let id = self.identity_id(&ident);
            for a in &addrs {
                if state.identities.insert(*a, id).is_some() {
                    contested.insert(*a);
                }
            }
            *self.members.entry(id).or_default() += 1;
            if !live.contains(id) {
                live.insert(id, ident);
            }
            self.peers.insert(key.clone(), PeerPod { id, addrs });
        }
        self.identities.retain(|_, id| live.contains(*id));
        for a in node.addrs {
            if state
                .identities
                .insert(Addr::from(*a), IDENTITY_HOST)
                .is_some()
            {
                contested.insert(Addr::from(*a));
            }
        }

        // CIDR classes: every cidr and except of every ipBlock, plus the IPv4 root.
        let mut prefix_uses = BTreeMap::<Prefix, usize>::new();
        for policy in policies.values() {
            for p in block_prefixes(policy) {
                *prefix_uses.entry(p).or_default() += 1;
            }
        }
        let mut prefixes: BTreeSet<Prefix> = prefix_uses.keys().copied().collect();
        prefixes.insert(V4_ROOT);
        prefixes.extend(tiers::tier_prefixes(&tiers, cluster));
        // Egress named ports towards pod addresses inside an ipBlock resolve per destination pod:
        // each such address gets a host prefix of its own, which the longest match then finds.
        let host_blocks = host_blocks(policies.values());
        let tier_host_blocks = tiers::tier_host_blocks(&tiers);
        for block in host_blocks.iter().chain(&tier_host_blocks) {
            let hosts = state
                .identities
                .iter()
                .filter(|(_, id)| **id != IDENTITY_HOST)
                .map(|(a, _)| Prefix::host(*a));
            prefixes.extend(hosts.filter(|h| block.holds(h)));
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
        let mut selecting = HashMap::new();
        let mut overflowed = HashSet::new();
        let mut memo = EndpointMemo::default();
        let mut placed = Placements::default();
        for (key, pod) in &cluster.pods {
            if as_peer(key, pod).is_none() || pod_node(pod) != node.name {
                continue;
            }
            let chosen = selecting_policies(&policies, key, pod);
            let chosen_refs: Vec<&Policy> = chosen.iter().map(|k| &policies[k]).collect();
            let tiered = tiers::selecting(&tiers, cluster, key, pod);
            let mut endpoint = memo.endpoint(&ctx, key, pod, (&chosen, &chosen_refs), &tiered);
            self.slots.place(key, &mut endpoint, &mut placed);
            if endpoint.degraded.iter().any(|e| !e.is_empty()) {
                overflowed.insert(key.clone());
            }
            state
                .errors
                .extend(endpoint.degraded.iter().flatten().cloned());
            state.endpoints.insert(key.clone(), endpoint);
            selecting.insert(key.clone(), chosen);
        }
        self.slots.retain(|k| state.endpoints.contains_key(k));
        self.live = live;
        self.last = Some(Snapshot {
            node: node.name.to_owned(),
            node_addrs: node.addrs.to_vec(),
            policies,
            policy_errors,
            prefix_uses,
            selecting,
            contested,
            host_blocks,
            overflowed,
            nodes: tiers::uses_nodes(&tiers).then(|| {
                (cluster.nodes.iter())
                    .map(|(name, n)| (name.clone(), incremental::node_facts(n)))
                    .collect()
            }),
            tiers,
        });
        state
    }

    /// Warns, once per pair, about ClusterNetworkPolicies of one tier and priority: the API
    /// leaves their order to the implementation, which tries them by name.
    fn warn_same_ranks(&mut self, tiers: &[ClusterPolicy]) {
        let pairs = super::tiers::same_rank_conflicts(tiers);
        let now: BTreeSet<(String, String)> = pairs
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        for (first, second) in now.difference(&self.warned_ranks) {
            tracing::warn!(
                first,
                second,
                "clusternetworkpolicies {first} and {second} have the same tier and priority: \
                 {first} is tried first (by name); give them distinct priorities"
            );
        }
        self.warned_ranks = now;
    }

    /// The id of an identity, allocated when it is new.
    fn identity_id(&mut self, ident: &IdentityKey) -> u32 {
        if let Some(id) = self.identities.get(ident) {
            return *id;
        }
        let id = self.next_identity;
        self.next_identity += 1;
        self.identities.insert(ident.clone(), id);
        id
    }
}

/// Endpoints computed once per kind of pod: two local pods of the same namespace, labels and
/// container ports, selected by the same policies, have the same entries but for their
/// addresses (replicas of one workload, the common case), so the second is a copy.
#[derive(Default)]
struct EndpointMemo {
    done: HashMap<EndpointKind, EndpointState>,
}

/// What an endpoint's entries depend on besides its addresses: namespace and labels (as an
/// identity without named ports), every container port, and the selecting policies and
/// ClusterNetworkPolicies (by name).
type EndpointKind = (
    IdentityKey,
    Vec<(String, u8, u16)>,
    Vec<ObjectKey>,
    Vec<String>,
);

impl EndpointMemo {
    fn endpoint(
        &mut self,
        ctx: &Context<'_>,
        key: &ObjectKey,
        pod: &PodInfo,
        (chosen, policies): (&[ObjectKey], &[&Policy]),
        tiers: &[&ClusterPolicy],
    ) -> EndpointState {
        let ident = IdentityKey {
            namespace: key.namespace.clone(),
            labels: pod.labels.clone(),
            named_ports: Vec::new(),
        };
        let tier_names = tiers.iter().map(|p| p.name.clone()).collect();
        let memo_key = (
            ident,
            container_ports(pod).to_vec(),
            chosen.to_vec(),
            tier_names,
        );
        if let Some(done) = self.done.get(&memo_key) {
            return EndpointState {
                addrs: pod_addrs(pod),
                ..done.clone()
            };
        }
        let endpoint = ctx.endpoint(key, pod, pod_addrs(pod), policies, tiers);
        // A degraded endpoint's errors name the pod: never shared.
        if endpoint.degraded.iter().all(Vec::is_empty) {
            self.done.insert(memo_key, endpoint.clone());
        }
        endpoint
    }
}

/// The policies that select a pod, in key order: those of its namespace (a contiguous range of
/// keys) whose pod selector matches.
fn selecting_policies(
    policies: &BTreeMap<ObjectKey, Policy>,
    key: &ObjectKey,
    pod: &PodInfo,
) -> Vec<ObjectKey> {
    let labels = pod_labels(pod);
    let from = ObjectKey::new(key.namespace.clone(), String::new());
    policies
        .range(from..)
        .take_while(|(k, _)| k.namespace == key.namespace)
        .filter(|(_, p)| selects_pod(p, key, labels))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Whether `policy` selects pod `key` with `labels`.
fn selects_pod(policy: &Policy, key: &ObjectKey, labels: &BTreeMap<String, String>) -> bool {
    policy.key.namespace == key.namespace && matches(&policy.pod_selector, labels)
}

/// The prefixes a policy's ipBlocks name (each cidr and except), each once.
fn block_prefixes(policy: &Policy) -> BTreeSet<Prefix> {
    let mut prefixes = BTreeSet::new();
    for rule in policy.ingress.iter().chain(policy.egress.iter()).flatten() {
        for peer in rule.peers.iter().flatten() {
            if let Peer::Block { cidr, except } = peer {
                prefixes.insert(Prefix::from_net(cidr));
                prefixes.extend(except.iter().map(Prefix::from_net));
            }
        }
    }
    prefixes
}

/// The ipBlocks of egress rules with named ports: a pod address inside one gets a host prefix.
fn host_blocks<'p>(policies: impl IntoIterator<Item = &'p Policy>) -> Vec<Block> {
    let named = |rule: &&Rule| rule.ports.iter().any(|p| matches!(p, Port::Named { .. }));
    let rules = policies.into_iter().flat_map(|p| p.egress.iter().flatten());
    let peers = rules
        .filter(named)
        .flat_map(|rule| rule.peers.iter().flatten());
    peers
        .filter_map(|peer| match peer {
            Peer::Block { cidr, except } => Some(Block::new(cidr, except)),
            Peer::Pods { .. } => None,
        })
        .collect()
}

/// An ipBlock peer: `cidr` minus every `except`.
#[derive(Clone, Debug)]
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

fn same_family(a: &Prefix, b: &Prefix) -> bool {
    let v4 = |p: &Prefix| p.len >= V4_MAPPED_PREFIX_BITS && V4_ROOT.contains_addr(&p.addr);
    v4(a) == v4(b)
}

/// A pod's identity and addresses, or `None` when it is no peer (hostNetwork pods share the
/// node's addresses; a pod without an address cannot be reached yet).
fn as_peer(key: &ObjectKey, pod: &PodInfo) -> Option<(IdentityKey, Vec<Addr>)> {
    let addrs = pod_addrs(pod);
    if is_host_network(pod) || addrs.is_empty() {
        return None;
    }
    let mut named_ports: Vec<_> = container_ports(pod)
        .iter()
        .filter(|(n, _, _)| !n.is_empty())
        .cloned()
        .collect();
    named_ports.sort();
    let ident = IdentityKey {
        namespace: key.namespace.clone(),
        labels: pod.labels.clone(),
        named_ports,
    };
    Some((ident, addrs.iter().copied().map(Addr::from).collect()))
}
