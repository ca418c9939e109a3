//! The agent's flow records: read from the node worker's ring buffer, counted per policy,
//! logged (one line per flow per interval, see [`aggregate`]), and streamed to `palisade
//! flows` clients over the local socket (which also answers `palisade explain` from the live
//! maps). Metrics and the stream see every record; only the log is aggregated.

mod aggregate;

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{sync::broadcast, task::JoinHandle};

use self::aggregate::{Aggregator, Summary};
use super::{Config, FlowLog, metrics::Metrics};
use crate::{
    flows::{
        FlowRecord, FlowVerdict,
        reader::FlowReader,
        socket::{Explainer, Server},
    },
    node::NodeWorker,
};

/// Records a slow `palisade flows` client may fall behind by before it is told it missed some.
const STREAM_BUFFER: usize = 4096;

/// Flows the log tracks at once (a few hundred bytes each); records of new flows beyond them
/// are counted and reported at the end of the interval, not logged one by one.
const MAX_LOGGED_FLOWS: usize = 4096;

/// The reader and socket tasks; stopped (and the socket file removed) when dropped.
pub struct FlowTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FlowTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub fn start(config: &Config, worker: &NodeWorker, metrics: &Arc<Metrics>) -> Result<FlowTasks> {
    let ring = worker.take_events()?;
    let mut reader = FlowReader::new(ring, worker.attribution())
        .context("registering the flow event ring buffer")?;
    let (sender, _) = broadcast::channel::<Arc<FlowRecord>>(STREAM_BUFFER);
    let server = Server::bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "serving flows and explain");

    let stream = sender.clone();
    let metrics = Arc::clone(metrics);
    let mut log = FlowLogger::new(config.flow_log, config.flow_log_interval());
    let read = tokio::spawn(async move {
        let mut intervals = log.interval.map(|period| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            tokio::select! {
                batch = reader.next_batch() => match batch {
                    Ok(records) => {
                        for record in records {
                            publish(record, &metrics, &mut log, &stream);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading flow events");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                () = interval_end(&mut intervals) => log.end_interval(),
            }
        }
    });

    let handle = worker.explainer()?;
    let explainer: Explainer = Arc::new(move |request| {
        let handle = handle.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || handle.explain(request))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    });
    let serve = tokio::spawn(server.serve(sender, explainer));
    Ok(FlowTasks {
        tasks: vec![read, serve],
    })
}

/// The end of the next interval; never, without aggregation (every record is logged).
async fn interval_end(intervals: &mut Option<tokio::time::Interval>) {
    match intervals {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn publish(
    record: FlowRecord,
    metrics: &Metrics,
    log: &mut FlowLogger,
    stream: &broadcast::Sender<Arc<FlowRecord>>,
) {
    let policies = record.policies();
    let names = if policies.is_empty() {
        vec!["none"]
    } else {
        policies
    };
    for policy in names {
        metrics
            .flows
            .get_or_create(&vec![
                ("verdict", record.verdict.to_string()),
                ("direction", record.direction.clone()),
                ("policy", policy.to_owned()),
            ])
            .inc();
    }
    log.record(&record);
    // No subscriber is fine: nobody is following.
    let _ = stream.send(Arc::new(record));
}

/// Which records become log lines, and how they are aggregated.
struct FlowLogger {
    which: FlowLog,
    /// `None`: every record is a line of its own.
    interval: Option<Duration>,
    aggregator: Aggregator,
}

impl FlowLogger {
    fn new(which: FlowLog, interval: Option<Duration>) -> Self {
        Self {
            which,
            interval,
            aggregator: Aggregator::new(MAX_LOGGED_FLOWS),
        }
    }

    fn record(&mut self, record: &FlowRecord) {
        let wanted = match self.which {
            FlowLog::None => false,
            FlowLog::Denied => record.verdict != FlowVerdict::Allowed,
            FlowLog::All => true,
        };
        if wanted && (self.interval.is_none() || self.aggregator.record(record)) {
            log_record(record);
        }
    }

    fn end_interval(&mut self) {
        for summary in self.aggregator.end_interval() {
            log_summary(&summary);
        }
    }
}

fn log_record(record: &FlowRecord) {
    tracing::info!(
        target: "palisade::flow",
        verdict = %record.verdict,
        direction = %record.direction,
        pod = record.pod.as_deref().unwrap_or(""),
        src = %record.src.ip,
        src_pod = record.src.pod.as_deref().unwrap_or(""),
        sport = record.src.port,
        dst = %record.dst.ip,
        dst_pod = record.dst.pod.as_deref().unwrap_or(""),
        dport = record.dst.port,
        protocol = %record.protocol,
        reason = %record.reason,
        allowed_by = %record.allowed_by.join(","),
        isolated_by = %record.isolated_by.join(","),
        suppressed = record.suppressed,
        "{record}"
    );
}

/// A flow's records since its last line, from any source port: the same fields as a record's
/// line but `sport`, and `count`, `first_seen`, `last_seen`.
fn log_summary(summary: &Summary) {
    match summary {
        Summary::Flow {
            record,
            count,
            first_seen,
            last_seen,
            suppressed,
        } => tracing::info!(
            target: "palisade::flow",
            verdict = %record.verdict,
            direction = %record.direction,
            pod = record.pod.as_deref().unwrap_or(""),
            src = %record.src.ip,
            src_pod = record.src.pod.as_deref().unwrap_or(""),
            dst = %record.dst.ip,
            dst_pod = record.dst.pod.as_deref().unwrap_or(""),
            dport = record.dst.port,
            protocol = %record.protocol,
            reason = %record.reason,
            allowed_by = %record.allowed_by.join(","),
            isolated_by = %record.isolated_by.join(","),
            suppressed,
            count,
            first_seen = %first_seen,
            last_seen = %last_seen,
            "{record} [{count} record{} until {last_seen}]",
            if *count == 1 { "" } else { "s" }
        ),
        Summary::Overflow { records, max_flows } => tracing::warn!(
            target: "palisade::flow",
            not_logged = records,
            max_flows,
            "{records} flow records of new flows not logged in this interval: {max_flows} flows \
             were tracked already (every record is still counted in palisade_flows_total and \
             streamed to `palisade flows`)"
        ),
    }
}
