//! The agent's Prometheus metrics (prometheus-client), served on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    pub registry: Registry,
    /// From a watch event's arrival to the end of the map writes that implement it.
    pub implementation_delay: Histogram,
    pub sync_duration: Histogram,
    pub syncs: Family<Labels, Counter>,
    /// Object changes by how the compiler applied them (in_place, full).
    pub changes_applied: Family<Labels, Counter>,
    pub check_corrections: Counter,
    pub map_entries: Family<Labels, Gauge>,
    pub map_capacity: Family<Labels, Gauge>,
    pub map_pressure: Family<Labels, Gauge<f64, AtomicU64>>,
    pub drops: Family<Labels, Counter>,
    /// Per resource: list requests started (first lists, relists and their retries).
    pub watch_list_attempts: Family<Labels, Counter>,
    /// Per resource: relists after a complete list, once each however many attempts it took.
    pub watch_restarts: Family<Labels, Counter>,
    /// Per resource and error kind (`list`, `watch_start`, ...): each followed by a backoff.
    pub watch_errors: Family<Labels, Counter>,
    pub endpoints: Gauge,
    pub pending_interfaces: Gauge,
    pub pods_without_interface: Gauge,
    pub policy_errors: Gauge,
    pub flows: Family<Labels, Counter>,
    pub flow_events: Family<Labels, Counter>,
}

/// 0.5 ms to about 65 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let implementation_delay = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "policy_implementation_delay",
            "Time from a watch event (Pod, Namespace or NetworkPolicy) reaching the agent to the \
             end of the map writes that implement it",
            Unit::Seconds,
            implementation_delay.clone(),
        );
        let sync_duration = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "sync_duration",
            "Time one sync takes: interface discovery, compile and map writes",
            Unit::Seconds,
            sync_duration.clone(),
        );
        let syncs = Family::<Labels, Counter>::default();
        registry.register(
            "syncs",
            "Syncs by result (ok, error) and, for errors, what failed (namespace, map, attach, ...)",
            syncs.clone(),
        );
        let changes_applied = Family::<Labels, Counter>::default();
        registry.register(
            "changes_applied",
            "Object changes (Pod, Namespace, NetworkPolicy) by how the compiler applied them: \
             in_place, or by a full compile (a relist, a periodic resync, or a change the \
             in-place path does not handle exactly)",
            changes_applied.clone(),
        );
        let check_corrections = Counter::default();
        registry.register(
            "check_corrections",
            "Map entries a full resync found different from what in-place application had \
             left, when nothing had changed since the sync before (0 unless the incremental \
             compiler has a bug; each is corrected by that resync)",
            check_corrections.clone(),
        );
        let map_entries = Family::<Labels, Gauge>::default();
        registry.register(
            "map_entries",
            "Entries the agent keeps in each eBPF map",
            map_entries.clone(),
        );
        let map_capacity = Family::<Labels, Gauge>::default();
        registry.register(
            "map_capacity",
            "Capacity (max_entries) of each eBPF map",
            map_capacity.clone(),
        );
        let map_pressure = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "map_pressure",
            "Entries over capacity of each eBPF map (a write fails at 1)",
            map_pressure.clone(),
        );
        let drops = Family::<Labels, Counter>::default();
        registry.register(
            "drops",
            "Packets dropped by the programs, by reason (counted in the kernel; survives agent \
             restarts)",
            drops.clone(),
        );
        let watch_list_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "watch_list_attempts",
            "List requests each watch started: its first list, relists, and the retries of \
             failed lists (each after a backoff)",
            watch_list_attempts.clone(),
        );
        let watch_restarts = Family::<Labels, Counter>::default();
        registry.register(
            "watch_restarts",
            "Times a watch had to list again after a complete list (an expired resource \
             version, an API server restart), counted once however many attempts the relist \
             took",
            watch_restarts.clone(),
        );
        let watch_errors = Family::<Labels, Counter>::default();
        registry.register(
            "watch_errors",
            "Watch errors by resource and kind: list (a list request failed), watch_start, \
             watch_event (an error the API server sent on the watch), watch_stream (the \
             connection broke), no_resource_version; each followed by a backoff (0.8 s \
             doubling to 30 s, jittered; reset by data from the API server)",
            watch_errors.clone(),
        );
        let endpoints = Gauge::default();
        registry.register("endpoints", "Local pods enforced", endpoints.clone());
        let pending_interfaces = Gauge::default();
        registry.register(
            "pending_interfaces",
            "Pod interfaces whose pod is not known yet",
            pending_interfaces.clone(),
        );
        let pods_without_interface = Gauge::default();
        registry.register(
            "pods_without_interface",
            "Local pods with an address whose interface was not found (retried)",
            pods_without_interface.clone(),
        );
        let policy_errors = Gauge::default();
        registry.register(
            "policy_errors",
            "Policy problems found by the last sync (rules that could not be implemented)",
            policy_errors.clone(),
        );
        let flows = Family::<Labels, Counter>::default();
        registry.register(
            "flows",
            "Flow records by verdict (allowed, denied, audit), direction and policy: the policy \
             whose rule admitted the flow, or each policy isolating the pod when it was denied \
             (`none` when no policy applies)",
            flows.clone(),
        );
        let flow_events = Family::<Labels, Counter>::default();
        registry.register(
            "flow_events",
            "Flow events in the kernel by outcome: sent, suppressed (over the source's budget) \
             or lost (ring buffer full)",
            flow_events.clone(),
        );
        Self {
            registry,
            flows,
            flow_events,
            implementation_delay,
            sync_duration,
            syncs,
            changes_applied,
            check_corrections,
            map_entries,
            map_capacity,
            map_pressure,
            drops,
            watch_list_attempts,
            watch_restarts,
            watch_errors,
            endpoints,
            pending_interfaces,
            pods_without_interface,
            policy_errors,
        }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}
