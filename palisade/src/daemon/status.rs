//! What an agent says about itself on `/status`, and the digest that lets a caller (the lab, an
//! operator) tell whether the agent has written exactly the objects it sees itself.

use std::{
    borrow::Cow,
    collections::{BTreeMap, VecDeque},
    time::{SystemTime, UNIX_EPOCH},
};

use kube::runtime::reflector::Lookup;
use serde::{Deserialize, Serialize};

/// The agent's state, served as JSON on `/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub node: String,
    /// True once the first full sync after every watch listed is in the maps.
    pub ready: bool,
    /// [`Digest`] of the objects the last completed sync was computed from.
    pub synced_digest: Option<String>,
    /// When that sync's map writes finished (Unix time, nanoseconds).
    pub synced_at_unix_nanos: Option<u128>,
    /// Syncs completed since start.
    pub syncs: u64,
    /// Local pods enforced (endpoints written).
    pub endpoints: usize,
    /// Local pods with an address but no interface found yet (retried).
    pub pods_without_interface: Vec<String>,
    /// Pod interfaces whose pod is not known (dropping everything under `--fail-mode closed`).
    pub pending_interfaces: Vec<String>,
    /// Policy problems and failed map writes of the last sync.
    pub errors: Vec<String>,
    /// Entries and capacity per map.
    pub maps: BTreeMap<String, (usize, usize)>,
    /// The last [`RECENT_SYNCS`] syncs, oldest first: when each finished and which API
    /// changes it included, so that a caller can tell when a write of its own reached the maps.
    pub recent_syncs: VecDeque<SyncRecord>,
    /// Full resyncs run when nothing had changed since the sync before (a periodic resync,
    /// SIGHUP): each compiles everything afresh and compares it with what the changes applied
    /// in place left in the maps.
    pub checks: u64,
    /// Map entries such checks found different and corrected (0 unless in-place application
    /// has a bug).
    pub check_corrections: u64,
    /// How this agent's start went, phase by phase.
    pub startup: Startup,
}

/// The agent's start, phase by phase (`None` until the phase is over): where a slow start goes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Startup {
    /// Programs loaded (or taken over from the pins) and attached.
    pub programs: Option<Phase>,
    /// Every watch's first list in its cache.
    pub listed: Option<Phase>,
    /// The first sync's view of the cluster built from the caches.
    pub viewed: Option<Phase>,
    /// The first sync's maps written: ready.
    pub ready: Option<Phase>,
}

/// When a start-up phase ended, in seconds since the agent began, and the CPU time (user and
/// system, every thread) the agent had used by then: a phase long in time but short in CPU
/// waited for someone else (the API server).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    pub at_s: f64,
    pub cpu_s: f64,
}

/// How many syncs `/status` remembers.
pub const RECENT_SYNCS: usize = 256;

/// One sync, as `/status` reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncRecord {
    /// Syncs completed since start, this one included.
    pub sync: u64,
    /// When its map writes finished (Unix time, nanoseconds).
    pub at_unix_nanos: u128,
    /// Per watch (`pods`, `namespaces`, `networkpolicies`), the resourceVersion of the last
    /// change it included; the Kubernetes API treats versions as opaque, so only a caller that
    /// knows its server orders them (one etcd: they are its revisions) may compare them.
    pub versions: BTreeMap<String, String>,
    /// Changes applied in place, and whether everything was compiled afresh.
    pub in_place: usize,
    pub full: bool,
    /// Map entries written and deleted.
    pub writes: usize,
    pub deletes: usize,
}

pub fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A digest of a set of objects by kind, namespace, name and resourceVersion: equal digests
/// mean the same versions of the same objects. Each entry is hashed on its own (FNV-1a, then
/// mixed) and the hashes are summed, so the order does not matter, any process computes the
/// same value, and an agent keeps it up to date as objects change ([`Digest::remove`]) instead
/// of hashing every object of the cluster again at each sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    sum: u64,
    count: u64,
}

impl Digest {
    pub fn add(&mut self, kind: &str, namespace: Option<&str>, name: &str, version: &str) {
        self.sum = self
            .sum
            .wrapping_add(entry_hash(kind, namespace, name, version));
        self.count += 1;
    }

    /// Takes back an entry [`Self::add`] added.
    pub fn remove(&mut self, kind: &str, namespace: Option<&str>, name: &str, version: &str) {
        self.sum = self
            .sum
            .wrapping_sub(entry_hash(kind, namespace, name, version));
        self.count = self.count.saturating_sub(1);
    }

    /// Adds an object under its kind, namespace, name and resourceVersion.
    pub fn add_object<K: Lookup<DynamicType = ()>>(&mut self, object: &K) {
        let (namespace, name, version) = identity(object);
        self.add(&K::kind(&()), namespace.as_deref(), &name, &version);
    }

    /// Takes back an object [`Self::add_object`] added (the same version of it).
    pub fn remove_object<K: Lookup<DynamicType = ()>>(&mut self, object: &K) {
        let (namespace, name, version) = identity(object);
        self.remove(&K::kind(&()), namespace.as_deref(), &name, &version);
    }

    pub fn finish(&self) -> String {
        format!("{:016x}-{}", self.sum, self.count)
    }
}

fn identity<K: Lookup>(object: &K) -> (Option<Cow<'_, str>>, Cow<'_, str>, Cow<'_, str>) {
    (
        Lookup::namespace(object),
        Lookup::name(object).unwrap_or_default(),
        Lookup::resource_version(object).unwrap_or_default(),
    )
}

/// FNV-1a over `kind/namespace/name@version`, then a 64-bit finalizer (splitmix64's): a sum
/// of raw FNV values would let near-identical entries cancel out.
fn entry_hash(kind: &str, namespace: Option<&str>, name: &str, version: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        kind.as_bytes(),
        b"/",
        namespace.unwrap_or("").as_bytes(),
        b"/",
        name.as_bytes(),
        b"@",
        version.as_bytes(),
    ];
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::Digest;

    #[test]
    fn digest_ignores_order_and_sees_versions() {
        let mut a = Digest::default();
        a.add("Pod", Some("x"), "a", "10");
        a.add("Namespace", None, "x", "3");
        let mut b = Digest::default();
        b.add("Namespace", None, "x", "3");
        b.add("Pod", Some("x"), "a", "10");
        let mut c = Digest::default();
        c.add("Namespace", None, "x", "3");
        c.add("Pod", Some("x"), "a", "11");
        let (a, b, c) = (a.finish(), b.finish(), c.finish());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.ends_with("-2"));
    }

    #[test]
    fn digest_removing_an_entry_undoes_adding_it() {
        let mut a = Digest::default();
        a.add("Namespace", None, "x", "3");
        let before = a.finish();
        a.add("Pod", Some("x"), "a", "10");
        a.remove("Pod", Some("x"), "a", "10");
        assert_eq!(a.finish(), before);
        a.remove("Namespace", None, "x", "3");
        assert_eq!(a, Digest::default());
    }
}
