//! What an agent says about itself on `/status`, and the digest that lets a caller (the lab, an
//! operator) tell whether the agent has written exactly the objects it sees itself.

use std::{
    collections::BTreeMap,
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
