//! `/metrics`, `/healthz`, `/readyz` and `/status` over HTTP (axum).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router, extract::State, http::StatusCode, http::header, response::IntoResponse,
    routing::get,
};

use super::{
    metrics::Metrics,
    status::{Phase, Startup, Status},
};

/// What the handlers read, written by the sync loop.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub status: Mutex<Status>,
    /// Unix seconds of the sync loop's last sign of life.
    pub heartbeat: AtomicU64,
    /// Longest silence of the sync loop `/healthz` accepts.
    pub liveness_timeout: Duration,
}

impl Shared {
    pub fn beat(&self) {
        self.heartbeat.store(now_secs(), Ordering::Relaxed);
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records the end of a start-up phase (`phase` of [`Startup`]), once: a later pass through
    /// the same point leaves it as it was.
    pub fn startup(
        &self,
        began: Instant,
        name: &'static str,
        phase: fn(&mut Startup) -> &mut Option<Phase>,
    ) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let slot = phase(&mut status.startup);
        if slot.is_none() {
            let (at_s, cpu_s) = (began.elapsed().as_secs_f64(), cpu_seconds());
            *slot = Some(Phase { at_s, cpu_s });
            tracing::info!(
                phase = name,
                seconds = at_s,
                cpu_seconds = cpu_s,
                "start-up phase over"
            );
        }
    }
}

/// User and system CPU time of the whole process so far, in seconds (0 if unknown).
fn cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 * 1e-6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Binds `addr` and serves until the process ends. Binding fails loudly (a port in use).
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Alive while the sync loop is: a loop stuck longer than the timeout gets the pod restarted.
async fn healthz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let silent = now_secs().saturating_sub(shared.heartbeat.load(Ordering::Relaxed));
    if silent <= shared.liveness_timeout.as_secs() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the sync loop has been silent for {silent} s\n"),
        )
    }
}

/// Ready once the first full sync is in the maps.
async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.status().ready {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first full sync\n",
        )
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Status> {
    Json(shared.status())
}
