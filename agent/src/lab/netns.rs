//! Named network namespaces, made in-process the way `ip netns add` makes them: a thread unshares
//! its network namespace and bind-mounts it onto `/run/netns/<name>`, which keeps the namespace
//! alive after the thread is gone and lets `ip netns exec` find it.
//!
//! Work inside a namespace always runs on a fresh thread that `setns`es first and exits after, so
//! no pooled (tokio) thread is ever left in a foreign namespace. Sockets keep the namespace they
//! were created in, which is how servers and probes are made: create inside, use from anywhere.
//!
//! Every lab run names its namespaces `pal<PID>-...` ([`run_prefix`]), so the leftovers of a run
//! that crashed can be told apart from those of a live one ([`clean_stale`]).

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
    sys::signal,
    unistd::Pid,
};

/// Where named network namespaces live, shared with iproute2.
pub const NETNS_DIR: &str = "/run/netns";

/// The start of every lab namespace name; the run's PID and a `-` follow.
const NAME_PREFIX: &str = "pal";

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

/// Removes every `/run/netns/pal<PID>-*` whose process is gone (left by a crashed run).
pub fn clean_stale() -> Result<usize> {
    clean(|pid| !pid_alive(pid))
}

/// Removes every lab namespace (`/run/netns/pal<PID>-*`), live runs included.
pub fn clean_all() -> Result<usize> {
    clean(|_| true)
}

/// Tries every matching namespace, then reports the first failure, so one stuck mount does not
/// keep the others around.
fn clean(select: impl Fn(i32) -> bool) -> Result<usize> {
    // Pins first: a killed run's links keep programs on interfaces that are about to go.
    let pins = super::pins::lab_root();
    for entry in fs::read_dir(&pins)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name();
        if let Some(pid) = name.to_str().and_then(run_pid)
            && select(pid)
        {
            match crate::dataplane::pin::remove_tree(&entry.path()) {
                Ok(()) => tracing::info!(dir = %entry.path().display(), "removed stale lab pins"),
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove lab pins");
                }
            }
        }
    }
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(LabError::Io {
                what: format!("list {NETNS_DIR}"),
                source,
            });
        }
    };
    let (mut removed, mut first_error) = (0, None);
    for entry in entries {
        let entry = entry.map_err(|source| LabError::Io {
            what: format!("list {NETNS_DIR}"),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = run_pid(name) else {
            continue;
        };
        if !select(pid) {
            continue;
        }
        match remove_path(name, &entry.path()) {
            Ok(()) => {
                tracing::info!(netns = name, pid, "removed lab network namespace");
                removed += 1;
            }
            Err(error) => {
                tracing::warn!(netns = name, error = ?error, "could not remove lab network namespace");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(removed),
    }
}

/// The PID in a lab namespace name `pal<PID>-...`, or `None` for any other name.
fn run_pid(name: &str) -> Option<i32> {
    let (pid, _) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // 0 and overflowing values are no process's PID (and kill(0, 0) would mean our group).
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Signal 0 checks existence; EPERM still means "exists, owned by someone else".
fn pid_alive(pid: i32) -> bool {
    !matches!(signal::kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
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

fn remove_path(name: &str, path: &Path) -> Result<()> {
    // EINVAL: not a mount point (creation failed half-way); the file still has to go.
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(source) => {
            return Err(LabError::Netns {
                name: name.to_owned(),
                op: "unmount",
                source,
            });
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

/// Panics unless the tests can create namespaces: a skipped test would read as a passed one.
#[cfg(test)]
pub(crate) fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "needs root (CAP_NET_ADMIN) to create network namespaces"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(suffix: &str) -> String {
        format!("{}{suffix}", run_prefix())
    }

    #[test]
    fn lab_names_carry_the_pid_of_their_run() {
        assert_eq!(run_pid("pal123-node-1"), Some(123));
        assert_eq!(run_pid("pal42-p3"), Some(42));
        assert_eq!(run_pid("palette"), None);
        assert_eq!(run_pid("pal-x"), None);
        assert_eq!(run_pid("pal0-x"), None);
        assert_eq!(run_pid("pal12a-x"), None);
        assert_eq!(run_pid("cni-1234"), None);
        assert!(run_prefix().starts_with("pal") && run_prefix().ends_with('-'));
    }

    #[test]
    fn names_that_are_not_plain_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(path_for(bad), Err(LabError::InvalidName { .. })));
        }
    }

    #[test]
    fn only_network_sysctls_can_be_written() -> Result<()> {
        require_root();
        let ns = NetNs::create(&name("sysctl-guard"))?;
        for key in ["kernel/hostname", "net/../kernel/hostname"] {
            assert!(matches!(
                ns.sysctl(key, "x"),
                Err(LabError::NotNamespaced { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn a_namespace_is_created_entered_configured_and_removed() -> Result<()> {
        require_root();
        let ns = NetNs::create(&name("life"))?;
        assert!(ns.path().exists());
        assert!(matches!(NetNs::create(ns.name()), Err(LabError::Io { .. })));

        let host_ns = fs::read_link("/proc/thread-self/ns/net").map_err(|source| LabError::Io {
            what: "read our netns".into(),
            source,
        })?;
        let inside = ns.run(|| fs::read_link("/proc/thread-self/ns/net"))?;
        let inside = inside.map_err(|source| LabError::Io {
            what: "read netns inside".into(),
            source,
        })?;
        assert_ne!(inside, host_ns, "run() must execute inside the namespace");

        let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward");
        ns.sysctl("net/ipv4/ip_forward", "1")?;
        let ns_forward = ns.run(|| fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))?;
        assert_eq!(ns_forward.ok().as_deref(), Some("1\n"));
        assert_eq!(
            fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
            host_forward.ok(),
            "the host's sysctl must not change"
        );

        let opened = NetNs::open(ns.name())?;
        drop(opened);
        assert!(ns.path().exists(), "dropping an opened namespace keeps it");

        let path = ns.path().to_owned();
        ns.remove()?;
        ns.remove()?;
        assert!(!path.exists());
        Ok(())
    }

    #[tokio::test]
    async fn run_async_enters_the_namespace_without_blocking_the_runtime() -> Result<()> {
        require_root();
        let ns = NetNs::create(&name("async"))?;
        let runs = (0..16).map(|_| ns.run_async(|| fs::read_link("/proc/thread-self/ns/net")));
        let links: Vec<_> = futures::future::join_all(runs)
            .await
            .into_iter()
            .map(|r| r.map(|l| l.ok()))
            .collect::<Result<_>>()?;
        let expected = ns.run(|| fs::read_link("/proc/thread-self/ns/net").ok())?;
        assert!(expected.is_some());
        assert!(links.iter().all(|l| *l == expected));
        Ok(())
    }

    #[test]
    fn clean_stale_removes_namespaces_of_dead_runs_only() -> Result<()> {
        require_root();
        let dead_pid = (900_000..999_999)
            .rev()
            .find(|&pid| !pid_alive(pid))
            .expect("some PID below pid_max is free");
        let stale = NetNs::create(&format!("{NAME_PREFIX}{dead_pid}-stale"))?;
        let stale_path = stale.path().to_owned();
        // Simulate a crash: the namespace outlives the run that made it.
        std::mem::forget(stale);
        let live = NetNs::create(&name("live"))?;

        clean_stale()?;
        // Other tests of this process may clean concurrently: check the effect, not the count.
        assert!(!stale_path.exists(), "stale namespace still present");
        assert!(live.path().exists(), "a live run's namespace was removed");
        Ok(())
    }
}
