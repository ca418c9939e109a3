//! The agent's flow records: read from the node worker's ring buffer, counted per policy,
//! logged, and streamed to `palisade flows` clients over the local socket (which also answers
//! `palisade explain` from the live maps).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::{sync::broadcast, task::JoinHandle};

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
    let log = config.flow_log;
    let read = tokio::spawn(async move {
        loop {
            match reader.next_batch().await {
                Ok(records) => {
                    for record in records {
                        publish(record, &metrics, log, &stream);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading flow events");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
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

fn publish(
    record: FlowRecord,
    metrics: &Metrics,
    log: FlowLog,
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
    let logged = match log {
        FlowLog::None => false,
        FlowLog::Denied => record.verdict != FlowVerdict::Allowed,
        FlowLog::All => true,
    };
    if logged {
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
    // No subscriber is fine: nobody is following.
    let _ = stream.send(Arc::new(record));
}
