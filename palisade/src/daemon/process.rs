//! What every Palisade binary does around its work: logs to stderr (text or JSON), a tokio
//! runtime, SIGINT/SIGTERM as a future, and the exit code. Shared by `palisade` and
//! `palisade-lab`.

use std::{future::Future, process::ExitCode};

use super::LogFormat;

/// The log filter of the tools: kube-client logs every failed request, such as the lab's polls
/// of an API server that is still starting; the tools' own errors come back as results.
pub const TOOL_LOG_FILTER: &str = "warn,kube_client::client::builder=off";

/// Installs the global log subscriber: `filter` in tracing's EnvFilter syntax (`warn` if it
/// does not parse), to stderr.
pub fn init_logs(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// Runs `work` on a multi-threaded runtime and turns its answer into the exit code: success
/// for `Ok(true)`, failure for `Ok(false)` (a negative answer, already printed) and for an
/// error, printed as `NAME: error: ...` with its causes.
pub fn run_main<F>(name: &str, work: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<bool>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Registers SIGINT and SIGTERM handlers now and resolves when either arrives, naming it.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}
