//! What an agent says about itself on `/status`, and the digest that lets a caller (the lab, an
//! operator) tell whether the agent has written exactly the objects it sees itself.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{SystemTime, UNIX_EPOCH},
};

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
/// mean the same versions of the same objects. FNV-1a over the sorted entries, so any process
/// computes the same value.
#[derive(Default)]
pub struct Digest {
    entries: Vec<String>,
}

impl Digest {
    pub fn add(&mut self, kind: &str, namespace: Option<&str>, name: &str, version: &str) {
        self.entries.push(format!(
            "{kind}/{}/{name}@{version}",
            namespace.unwrap_or("")
        ));
    }

    /// Adds an object under its kind, namespace, name and resourceVersion.
    pub fn add_object<K: kube::Resource<DynamicType = ()>>(&mut self, object: &K) {
        let meta = object.meta();
        self.add(
            &K::kind(&()),
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
            meta.resource_version.as_deref().unwrap_or_default(),
        );
    }

    pub fn finish(mut self) -> String {
        self.entries.sort_unstable();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for entry in &self.entries {
            for byte in entry.bytes().chain([b'\n']) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{:016x}-{}", hash, self.entries.len())
    }
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
}
