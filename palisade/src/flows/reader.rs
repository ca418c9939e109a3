//! Reads flow events from the programs' ring buffer and names them.

use std::{
    io,
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use palisade_common::FlowEvent;
use tokio::io::unix::AsyncFd;

use super::{Attribution, FlowRecord, monotonic_now};

/// The attribution a node worker publishes after each sync, shared with the reader.
pub type SharedAttribution = Arc<RwLock<Arc<Attribution>>>;

/// How long the reader waits for a wake-up before looking at the ring anyway: a record
/// committed between a drain and the readiness reset would otherwise wait for the next one.
const POLL_FALLBACK: Duration = Duration::from_millis(250);

pub struct FlowReader {
    ring: AsyncFd<RingBuf<MapData>>,
    attribution: SharedAttribution,
}

impl FlowReader {
    /// Must be called inside a tokio runtime (the ring's fd is registered with it).
    pub fn new(ring: RingBuf<MapData>, attribution: SharedAttribution) -> io::Result<Self> {
        Ok(Self {
            // SAFETY: the ring buffer owns its map's fd, which stays open and the same for as
            // long as the `RingBuf` lives, and the `AsyncFd` owns the `RingBuf`.
            ring: unsafe { AsyncFd::register(ring) }.map_err(io::Error::from)?,
            attribution,
        })
    }

    /// The records of every event in the ring, waiting until there is at least one.
    pub async fn next_batch(&mut self) -> io::Result<Vec<FlowRecord>> {
        loop {
            let records = match tokio::time::timeout(POLL_FALLBACK, self.ring.readable_mut()).await
            {
                Ok(guard) => {
                    let mut guard = guard?;
                    let records = drain(guard.get_inner_mut(), &self.attribution);
                    guard.clear_ready();
                    records
                }
                Err(_) => drain(self.ring.get_mut(), &self.attribution),
            };
            if !records.is_empty() {
                return Ok(records);
            }
        }
    }
}

/// What the worker published last.
pub fn current(attribution: &SharedAttribution) -> Arc<Attribution> {
    attribution
        .read()
        .map(|a| Arc::clone(&a))
        .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
}

/// The records of every event in `ring` now (none if it is empty).
pub fn drain(ring: &mut RingBuf<MapData>, attribution: &SharedAttribution) -> Vec<FlowRecord> {
    let attribution = current(attribution);
    let now = monotonic_now();
    let mut records = Vec::new();
    while let Some(item) = ring.next() {
        let size = std::mem::size_of::<FlowEvent>();
        if item.len() < size {
            tracing::warn!(len = item.len(), "short flow event skipped");
            continue;
        }
        let event: FlowEvent = bytemuck::pod_read_unaligned(&item[..size]);
        records.push(attribution.record(&event, now));
    }
    records
}
