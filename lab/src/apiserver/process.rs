//! The cluster's child processes: spawned so that they cannot outlive the test process, stopped
//! politely and then firmly, and the state directories of crashed runs swept away.

use std::{
    fs::{self, File},
    io::{self, Read as _, Seek as _, SeekFrom},
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::{
        prctl,
        signal::{Signal, killpg},
    },
    unistd::{Pid, getppid},
};

use super::ApiServerError;

/// Prefix of every state directory under /tmp: `palisade-kube-<pid>-<n>`.
pub(super) const STATE_PREFIX: &str = "palisade-kube-";

/// How long a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Spawns children from one long-lived thread of its own.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: a
/// child spawned from a tokio blocking thread or from one test's thread would be killed when
/// that thread is recycled, e.g. under a cluster shared by several tests. This thread lives as
/// long as the [`super::ApiServer`] (it ends after the children are stopped), or until the
/// process dies, which is exactly when the children must die too.
pub(super) struct Spawner {
    requests: Option<mpsc::Sender<(Command, mpsc::Sender<io::Result<Child>>)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Spawner {
    pub fn new() -> io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<(Command, mpsc::Sender<io::Result<Child>>)>();
        let thread = thread::Builder::new()
            .name("kube-spawner".to_owned())
            .spawn(move || {
                for (mut cmd, reply) in incoming {
                    // The caller may have given up waiting; the child is then dropped, and
                    // dies with this thread.
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        Ok(Spawner {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Starts `cmd` in a process group of its own, with SIGKILL as its parent-death signal,
    /// its output appended to `log`.
    pub fn spawn(
        &self,
        name: &'static str,
        mut cmd: Command,
        log: &Path,
    ) -> Result<Proc, ApiServerError> {
        let program = PathBuf::from(cmd.get_program());
        let spawn_err = |source| ApiServerError::Spawn {
            what: name,
            program: program.clone(),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ApiServerError::io(log, source))?;
        let err = out
            .try_clone()
            .map_err(|source| ApiServerError::io(log, source))?;
        let parent = nix::unistd::getpid();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid); it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // The parent died before the signal was armed: nobody would kill us later.
                if getppid() != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        let gone = || spawn_err(io::Error::other("the spawner thread has ended"));
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((cmd, reply))
            .map_err(|_| gone())?;
        let child = answer.recv().map_err(|_| gone())?.map_err(spawn_err)?;
        Ok(Proc {
            name,
            child,
            log: log.to_owned(),
        })
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One running child and its log.
pub(super) struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the process group, SIGKILL after [`GRACE`]; reaps the child.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL to the process group at once; reaps the child.
    pub fn kill(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `bytes` of the log, for error messages.
    pub fn log_tail(&self, bytes: u64) -> String {
        log_tail(&self.log, bytes)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(super) fn log_tail(path: &Path, bytes: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// `n` distinct loopback ports that were free a moment ago: all are bound at once (so they
/// differ) and released for the children to take. Another process could take one meanwhile;
/// the window is short and the kernel hands ephemeral ports out in a rotating order.
pub(super) fn free_ports<const N: usize>() -> Result<[u16; N], ApiServerError> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| ApiServerError::Ports { source })?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|source| ApiServerError::Ports { source })?
            .port();
    }
    Ok(ports)
}

/// Removes `/tmp/palisade-kube-<pid>-*` directories whose process is gone (a run that crashed
/// or was killed before its Drop). Their children died with it (parent-death signal).
pub(super) fn sweep_leftovers(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STATE_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
