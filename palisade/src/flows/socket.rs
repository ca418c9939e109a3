//! The agent's local socket (a Unix stream socket, root only): `palisade flows` follows the flow
//! records through it, `palisade explain` asks the live maps.
//!
//! One JSON request line from the client, then JSON lines back: a stream of [`Message::Flow`]
//! (and [`Message::Lagged`] when the client reads too slowly to keep up) until the client
//! goes, or one [`Message::Explain`] (or [`Message::Error`]) and the end.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};

use super::{FlowFilter, FlowRecord};

/// Where the DaemonSet's agent listens (a hostPath, so that `kubectl exec` into the agent pod,
/// or a root shell on the node, reaches it).
pub const DEFAULT_SOCKET: &str = "/run/palisade/palisade.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    Flows(FlowFilter),
    Explain(ExplainRequest),
}

/// `palisade explain FROM TO PROTO/PORT` against the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRequest {
    pub from: String,
    pub to: String,
    pub flow: String,
}

/// The live answer: the reference evaluator's verdict, and what the maps do, per local side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainAnswer {
    pub lines: Vec<String>,
    /// The reference evaluator's verdict.
    pub allowed: bool,
    /// Whether the live maps of this node judge every local side as the evaluator does.
    pub agrees: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Message {
    Flow(Box<FlowRecord>),
    /// This many records were skipped: the client read too slowly.
    Lagged(u64),
    Explain(ExplainAnswer),
    Error(String),
}

/// Answers explain requests (the node worker, through the agent).
pub type Explainer = Arc<
    dyn Fn(ExplainRequest) -> futures::future::BoxFuture<'static, Result<ExplainAnswer, String>>
        + Send
        + Sync,
>;

/// The listening socket; removes its file when dropped.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` (replacing a socket file a crashed agent left), readable by root only.
    pub fn bind(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing the stale {}", path.display()));
            }
            _ => {}
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Serves clients until the future is dropped.
    pub async fn serve(self, flows: broadcast::Sender<Arc<FlowRecord>>, explainer: Explainer) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let receiver = flows.subscribe();
                    let explainer = Arc::clone(&explainer);
                    tokio::spawn(async move {
                        if let Err(e) = client(stream, receiver, explainer).await {
                            tracing::debug!(error = %e, "flow socket client");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "flow socket accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn client(
    stream: UnixStream,
    mut flows: broadcast::Receiver<Arc<FlowRecord>>,
    explainer: Explainer,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            send(&mut write, &Message::Error(format!("bad request: {e}"))).await?;
            return Ok(());
        }
    };
    match request {
        Request::Explain(request) => {
            let answer = match explainer(request).await {
                Ok(answer) => Message::Explain(answer),
                Err(e) => Message::Error(e),
            };
            send(&mut write, &answer).await
        }
        Request::Flows(filter) => loop {
            match flows.recv().await {
                Ok(record) if filter.matches(&record) => {
                    send(&mut write, &Message::Flow(Box::new((*record).clone()))).await?;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    send(&mut write, &Message::Lagged(n)).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        },
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, message: &Message) -> Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    Ok(())
}

/// `palisade flows`: prints the agent's records that pass `filter` as they come, one readable
/// line each or as JSON lines, until `count` records (or forever).
pub async fn follow(
    path: &Path,
    filter: FlowFilter,
    json: bool,
    count: Option<usize>,
) -> Result<()> {
    use std::io::Write as _;
    let mut client = Client::connect(path, &Request::Flows(filter)).await?;
    let mut seen = 0;
    let mut out = std::io::stdout().lock();
    while count.is_none_or(|c| seen < c) {
        match client.next().await? {
            Some(Message::Flow(record)) => {
                seen += 1;
                if json {
                    writeln!(out, "{}", serde_json::to_string(&record)?)?;
                } else {
                    writeln!(out, "{record}")?;
                }
                out.flush()?;
            }
            Some(Message::Lagged(n)) => {
                eprintln!("palisade: {n} flows skipped (reading too slowly)")
            }
            Some(Message::Error(e)) => bail!("{e}"),
            Some(Message::Explain(_)) => bail!("unexpected explain answer"),
            None => bail!("the agent closed the connection"),
        }
    }
    Ok(())
}

/// A client of the agent's socket.
pub struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    pub async fn connect(path: &Path, request: &Request) -> Result<Self> {
        let stream = UnixStream::connect(path).await.with_context(|| {
            format!(
                "connecting to the agent at {} (is `palisade agent` running on this node, and are \
                 you root?)",
                path.display()
            )
        })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        write.write_all(&line).await?;
        Ok(Self {
            lines: BufReader::new(read).lines(),
            _write: write,
        })
    }

    /// The next message, `None` when the agent closed the connection.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        let Some(line) = self.lines.next_line().await? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_str(&line).with_context(|| {
            format!("unreadable message from the agent: {line:?}")
        })?))
    }

    /// One explain round trip.
    pub async fn explain(path: &Path, request: ExplainRequest) -> Result<ExplainAnswer> {
        let mut client = Self::connect(path, &Request::Explain(request)).await?;
        match client.next().await? {
            Some(Message::Explain(answer)) => Ok(answer),
            Some(Message::Error(e)) => bail!("{e}"),
            Some(other) => bail!("unexpected answer from the agent: {other:?}"),
            None => bail!("the agent closed the connection without an answer"),
        }
    }
}
