//! Named network namespaces, made in-process the way `ip netns add` makes them: a thread unshares
//! its network namespace and bind-mounts it onto `/run/netns/<name>`, which keeps the namespace
//! alive after the thread is gone and lets `ip netns exec` find it.
//!
//! Work inside a namespace always runs on a fresh thread that `setns`es first and exits after, so
//! no pooled (tokio) thread is ever left in a foreign namespace. Sockets keep the namespace they
//! were created in, which is how servers and probes are made: create inside, use from anywhere.
//!
//! Every lab run names its namespaces `pal<PID>-...` ([`run_prefix`]), so the leftovers of a run
//! that crashed can be told apart from those of a live one (`cleanup::clean_stale`).

use std::{
    fs,
    io::{self, ErrorKind},
    net::SocketAddr,
    os::{
        fd::OwnedFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags},
    sched::CloneFlags,
};

/// Where named network namespaces live, shared with iproute2.
pub const NETNS_DIR: &str = "/run/netns";

/// The start of every lab namespace name; the run's PID and a `-` follow.
pub(crate) const NAME_PREFIX: &str = "pal";

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Everything that can go wrong while building or probing a lab cluster.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("network namespace {name}: {op} failed")]
    Netns {
        name: String,
        op: &'static str,
        source: nix::Error,
    },
    #[error("{what}")]
    Io { what: String, source: io::Error },
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("network namespace {ns}: cannot {op} {addr}")]
    Socket {
        ns: String,
        op: &'static str,
        addr: SocketAddr,
        source: nix::Error,
    },
    #[error("network namespace {name}: the worker thread panicked during {op}")]
    ThreadPanicked { name: String, op: &'static str },
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(
        "sysctl {key:?} is not per network namespace (only net/... is); refusing to touch the host"
    )]
    NotNamespaced { key: String },
    #[error("network namespace {ns}: no interface named {ifname}")]
    NoSuchLink { ns: String, ifname: String },
    #[error("node {name} already exists in this topology")]
    DuplicateNode { name: String },
    #[error(
        "node index {index} is not usable: it must be 1..=254 (the node gets 10.244.0.<index>)"
    )]
    InvalidNodeIndex { index: u8 },
    #[error("pod {key} already exists in this topology")]
    DuplicatePod { key: String },
    #[error("no pod {key} in this topology")]
    UnknownPod { key: String },
    #[error("{what} must be called from inside a tokio runtime")]
    NoRuntime {
        what: &'static str,
        source: tokio::runtime::TryCurrentError,
    },
    #[error("unknown protocol {input:?}: expected TCP, UDP or SCTP")]
    UnknownProto { input: String },
}

/// The name prefix of this process's namespaces: `pal<PID>-`.
pub fn run_prefix() -> String {
    format!("{NAME_PREFIX}{}-", std::process::id())
}

/// A named network namespace under [`NETNS_DIR`].
///
/// One made by [`NetNs::create`] is removed when dropped (or by [`NetNs::remove`], which owners
/// sharing it through an `Arc` can call while others still hold it); one found by [`NetNs::open`]
/// is left alone.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    owned: bool,
    removed: AtomicBool,
}

impl NetNs {
    /// Creates `/run/netns/<name>` holding a new, empty network namespace (only `lo`, down).
    pub fn create(name: &str) -> Result<Self> {
        let path = path_for(name)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(NETNS_DIR)
            .map_err(|source| LabError::Io {
                what: format!("create {NETNS_DIR}"),
                source,
            })?;
        // The mount point must exist and be new: an existing file is someone else's namespace.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|source| LabError::Io {
                what: format!("create network namespace file {}", path.display()),
                source,
            })?;
        // From here on, dropping `ns` unmounts and unlinks whatever was made.
        let ns = NetNs {
            name: name.to_owned(),
            path,
            owned: true,
            removed: AtomicBool::new(false),
        };
        let (thread_name, target) = (ns.name.clone(), ns.path.clone());
        on_thread(&ns.name, "create", move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Netns {
                name: thread_name.clone(),
                op: "unshare(CLONE_NEWNET)",
                source,
            })?;
            // thread-self, not self: only this thread switched namespace.
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| LabError::Netns {
                name: thread_name,
                op: "bind-mount /proc/thread-self/ns/net",
                source,
            })
        })??;
        Ok(ns)
    }

    /// Finds an existing namespace; dropping the result leaves it in place.
    pub fn open(name: &str) -> Result<Self> {
        let path = path_for(name)?;
        fs::metadata(&path).map_err(|source| LabError::Io {
            what: format!("open network namespace {}", path.display()),
            source,
        })?;
        Ok(NetNs {
            name: name.to_owned(),
            path,
            owned: false,
            removed: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the namespace file; the descriptor is what `setns` and `IFLA_NET_NS_FD` take.
    pub fn fd(&self) -> Result<OwnedFd> {
        fs::File::open(&self.path)
            .map(OwnedFd::from)
            .map_err(|source| LabError::Io {
                what: format!("open network namespace {}", self.path.display()),
                source,
            })
    }

    /// Runs `f` on a fresh thread inside this namespace and waits for it.
    ///
    /// Blocks the caller; from async code prefer [`NetNs::run_async`].
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let fd = self.fd()?;
        let name = self.name.clone();
        on_thread(&self.name, "run", move || {
            enter(&name, &fd)?;
            Ok(f())
        })?
    }

    /// Like [`NetNs::run`], but awaits the thread instead of blocking on it, so many can be in
    /// flight at once on one runtime.
    pub async fn run_async<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let fd = self.fd()?;
        let name = self.name.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn(&self.name, move || {
            // The receiver may be gone (the caller timed out); the result is then dropped here.
            let _ = tx.send(enter(&name, &fd).map(|()| f()));
        })?;
        rx.await.map_err(|_| LabError::ThreadPanicked {
            name: self.name.clone(),
            op: "run",
        })?
    }

    /// Writes one sysctl inside this namespace, e.g. `("net/ipv4/ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.sysctls(&[(key, value)])
    }

    /// Writes several sysctls inside this namespace, in order, from one thread.
    ///
    /// Only `net/...` keys are accepted: `/proc/sys/net` follows the opener's network namespace,
    /// every other sysctl would change the host.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|&(key, value)| {
                if !key.starts_with("net/") || key.split('/').any(|part| part == "..") {
                    return Err(LabError::NotNamespaced {
                        key: key.to_owned(),
                    });
                }
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect::<Result<_>>()?;
        let name = self.name.clone();
        self.run(move || {
            for (key, value) in settings {
                fs::write(Path::new("/proc/sys").join(&key), &value).map_err(|source| {
                    LabError::Io {
                        what: format!("network namespace {name}: set sysctl {key}={value}"),
                        source,
                    }
                })?;
            }
            Ok(())
        })?
    }

    /// Unmounts and unlinks the namespace file. Idempotent; the kernel frees the namespace once
    /// nothing (socket, process, open descriptor) refers to it any more.
    pub fn remove(&self) -> Result<()> {
        if self.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        remove_path(&self.name, &self.path)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned
            && let Err(error) = self.remove()
        {
            tracing::warn!(netns = %self.name, error = ?error, "could not remove network namespace");
        }
    }
}

fn path_for(name: &str) -> Result<PathBuf> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains('/') || name == "." || name == ".." {
        Some("must be a plain file name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LabError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(Path::new(NETNS_DIR).join(name)),
    }
}

pub(crate) fn remove_path(name: &str, path: &Path) -> Result<()> {
    // EINVAL: not a mount point (creation failed half-way); the file still has to go. A file
    // mounted more than once (two creations raced for one name) is unmounted until it is not.
    for _ in 0..8 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(source) => {
                return Err(LabError::Netns {
                    name: name.to_owned(),
                    op: "unmount",
                    source,
                });
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LabError::Io {
            what: format!("remove network namespace file {}", path.display()),
            source,
        }),
    }
}

/// Moves the calling thread into the namespace behind `fd`. Only ever called on threads made
/// for that purpose, which exit afterwards.
fn enter(name: &str, fd: &OwnedFd) -> Result<()> {
    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Netns {
        name: name.to_owned(),
        op: "setns",
        source,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    thread_for(name)
        .spawn(f)
        .map(drop)
        .map_err(|source| LabError::Io {
            what: format!("spawn a thread for network namespace {name}"),
            source,
        })
}

fn on_thread<T: Send + 'static>(
    name: &str,
    op: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let handle = thread_for(name).spawn(f).map_err(|source| LabError::Io {
        what: format!("spawn a thread for network namespace {name}"),
        source,
    })?;
    handle.join().map_err(|_| LabError::ThreadPanicked {
        name: name.to_owned(),
        op,
    })
}

/// Thread names are cut to 15 bytes; the tail of a lab name is its distinctive part.
fn thread_for(name: &str) -> thread::Builder {
    thread::Builder::new().name(format!("ns-{}", tail(name, 12)))
}

fn tail(s: &str, max: usize) -> &str {
    let start = s.len().saturating_sub(max);
    s.char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= start)
        .map_or("", |i| &s[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(path_for(bad), Err(LabError::InvalidName { .. })));
        }
    }
}
