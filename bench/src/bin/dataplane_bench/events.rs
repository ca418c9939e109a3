//! A reader of the flow events during the benchmark's "every event" runs, doing the agent's
//! work: draining the ring buffer and naming each event.

use std::time::Duration;

use anyhow::Result;

/// Reads and names the flow events of an agent as `palisade agent` does, on a thread of its
/// own, until dropped.
pub struct EventReader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl EventReader {
    pub fn start(agent: &palisade::node::NodeWorker) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let mut ring = agent.take_events()?;
        let attribution = agent.attribution();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut named = 0u64;
            loop {
                let done = stopping.load(Ordering::Relaxed);
                let records = palisade::flows::reader::drain(&mut ring, &attribution);
                named += records.len() as u64;
                std::hint::black_box(records);
                if done {
                    return named;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after a last drain; the number of records named.
    pub fn finish(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
