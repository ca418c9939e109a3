//! How one watch waits after an error, and what it counts.
//!
//! kube-rs's `default_backoff()` resets its backoff on every `Ok` item, and the watcher yields
//! `Ok(Event::Init)` before each list attempt: while the API server is unreachable, every
//! failed list was followed by a reset, and each watch listed again about once a second for as
//! long as the outage lasted (issue 18: ~47 lists per resource in 54 s). Here the backoff is
//! reset only by an item that carries data from the API server: a complete list (`InitDone`)
//! or a watch event (`Apply`, `Delete`). `Init` (an attempt starting) and `InitApply` (a page
//! of a list that may still fail) do not. The schedule is kube-rs's and client-go's (0.8 s
//! doubling to 30 s), with jitter (see [`Backoff`]).

use std::{sync::Arc, time::Duration};

use kube::runtime::watcher;

use super::super::{
    backoff::Backoff,
    metrics::{Metrics, label},
};

const INITIAL: Duration = Duration::from_millis(800);
const CAP: Duration = Duration::from_secs(30);

/// Where a watch is between lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before its first complete list.
    FirstList,
    /// Listed; watching (or re-watching from the last resource version).
    Listed,
    /// Listing again after a complete list, however many attempts it takes.
    Relisting,
}

/// One watch's retries: its backoff, its counters and its log lines.
pub struct Retry {
    resource: &'static str,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    phase: Phase,
    /// Errors since the last item that carried data.
    failures: u32,
}

impl Retry {
    pub fn new(resource: &'static str, metrics: Arc<Metrics>) -> Self {
        Self::with_backoff(resource, metrics, Backoff::jittered(INITIAL, CAP))
    }

    fn with_backoff(resource: &'static str, metrics: Arc<Metrics>, backoff: Backoff) -> Self {
        Self {
            resource,
            metrics,
            backoff,
            phase: Phase::FirstList,
            failures: 0,
        }
    }

    /// Takes note of one item of the watch stream; `Some(delay)` after an error: how long to
    /// wait before polling the stream again (which retries).
    pub fn observe<K>(
        &mut self,
        item: &Result<watcher::Event<K>, watcher::Error>,
    ) -> Option<Duration> {
        let resource = self.resource;
        let by_resource = label("resource", resource);
        match item {
            Ok(watcher::Event::Init) => {
                self.metrics
                    .watch_list_attempts
                    .get_or_create(&by_resource)
                    .inc();
                if self.phase == Phase::Listed {
                    self.phase = Phase::Relisting;
                    self.metrics
                        .watch_restarts
                        .get_or_create(&by_resource)
                        .inc();
                    tracing::info!(resource, "listing again");
                }
                None
            }
            Ok(watcher::Event::InitApply(_)) => None,
            Ok(watcher::Event::InitDone) => {
                if self.failures > 0 {
                    tracing::info!(
                        resource,
                        failed_attempts = self.failures,
                        "listed after failed attempts"
                    );
                }
                self.phase = Phase::Listed;
                self.data();
                None
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                self.data();
                None
            }
            Err(e) => {
                let mut labels = by_resource;
                labels.push(("error", error_label(e).to_owned()));
                self.metrics.watch_errors.get_or_create(&labels).inc();
                self.failures += 1;
                let delay = self.backoff.next();
                tracing::warn!(
                    resource,
                    error = %e,
                    failures = self.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "watch failed; retrying after a backoff"
                );
                Some(delay)
            }
        }
    }

    /// The API server answered with data: it is back, and the next error starts the schedule
    /// again.
    fn data(&mut self) {
        self.failures = 0;
        self.backoff.reset();
    }
}

/// The `error` label of `palisade_watch_errors_total`.
fn error_label(error: &watcher::Error) -> &'static str {
    match error {
        watcher::Error::InitialListFailed(_) => "list",
        watcher::Error::WatchStartFailed(_) => "watch_start",
        watcher::Error::WatchError(_) => "watch_event",
        watcher::Error::WatchFailed(_) => "watch_stream",
        watcher::Error::NoResourceVersion => "no_resource_version",
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use kube::runtime::watcher::{Error, Event};

    use super::{Backoff, Retry};
    use crate::daemon::metrics::{Metrics, label};

    const MS: Duration = Duration::from_millis(1);

    fn retry() -> (Retry, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let retry = Retry::with_backoff(
            "pods",
            Arc::clone(&metrics),
            Backoff::exact(800 * MS, 30_000 * MS),
        );
        (retry, metrics)
    }

    /// An event of the watch.
    fn seen(retry: &mut Retry, event: Event<()>) -> Option<Duration> {
        retry.observe(&Ok(event))
    }

    /// An error of the watch.
    fn failed(retry: &mut Retry) -> Option<Duration> {
        retry.observe(&Err::<Event<()>, _>(Error::NoResourceVersion))
    }

    /// A failed list as the watcher reports it: `Init`, then the error.
    fn failed_list(retry: &mut Retry) -> Option<Duration> {
        assert_eq!(seen(retry, Event::Init), None);
        failed(retry)
    }

    fn counter(metrics: &Metrics, which: &str) -> u64 {
        let pods = label("resource", "pods");
        match which {
            "attempts" => metrics.watch_list_attempts.get_or_create(&pods).get(),
            "restarts" => metrics.watch_restarts.get_or_create(&pods).get(),
            _ => {
                let mut labels = pods;
                labels.push(("error", which.to_owned()));
                metrics.watch_errors.get_or_create(&labels).get()
            }
        }
    }

    #[test]
    fn failed_first_lists_back_off_although_each_attempt_starts_with_init() {
        let (mut retry, metrics) = retry();
        let delays: Vec<u64> = (0..8)
            .map(|_| failed_list(&mut retry).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000]
        );
        assert_eq!(counter(&metrics, "attempts"), 8);
        assert_eq!(counter(&metrics, "no_resource_version"), 8);
        // No list ever completed: nothing was listed *again*.
        assert_eq!(counter(&metrics, "restarts"), 0);
    }

    #[test]
    fn a_complete_list_resets_the_backoff_a_page_does_not() {
        let (mut retry, _) = retry();
        failed_list(&mut retry);
        failed_list(&mut retry);
        // A page arrives, then the list fails on its next page.
        seen(&mut retry, Event::Init);
        seen(&mut retry, Event::InitApply(()));
        let after_page = failed(&mut retry);
        assert_eq!(after_page, Some(3200 * MS));
        seen(&mut retry, Event::Init);
        seen(&mut retry, Event::InitDone);
        let after_list = failed(&mut retry);
        assert_eq!(after_list, Some(800 * MS));
    }

    #[test]
    fn a_watch_event_resets_the_backoff() {
        let (mut retry, _) = retry();
        seen(&mut retry, Event::Init);
        seen(&mut retry, Event::InitDone);
        for _ in 0..4 {
            failed(&mut retry);
        }
        seen(&mut retry, Event::Apply(()));
        assert_eq!(failed(&mut retry), Some(800 * MS));
    }

    #[test]
    fn a_relist_is_counted_once_however_many_attempts_it_takes() {
        let (mut retry, metrics) = retry();
        seen(&mut retry, Event::Init);
        seen(&mut retry, Event::InitDone);
        assert_eq!(counter(&metrics, "restarts"), 0);
        // The watch breaks (410 Gone, say) and the API server is then down for 5 attempts.
        failed(&mut retry);
        for _ in 0..5 {
            failed_list(&mut retry);
        }
        seen(&mut retry, Event::Init);
        seen(&mut retry, Event::InitDone);
        assert_eq!(counter(&metrics, "restarts"), 1);
        assert_eq!(counter(&metrics, "attempts"), 7);
        assert_eq!(counter(&metrics, "no_resource_version"), 6);
    }
}
