//! What a lab run leaves behind and who removes it: every run names its namespaces and pin
//! directories `pal<PID>-...`, so the leftovers of a run whose process is gone can be told apart
//! from those of a live run. Pins are looked for only under the lab's own root
//! ([`lab_root`]), and only `pal<PID>-` directories there: never an agent's `v<ABI>`.

use std::{fs, io::ErrorKind, path::Path};

use nix::{errno::Errno, sys::signal, unistd::Pid};

use crate::{
    netns::{LabError, NAME_PREFIX, NETNS_DIR, Result, remove_path},
    pins::lab_root,
};

/// Removes every `/run/netns/pal<PID>-*` whose process is gone (left by a crashed run).
pub fn clean_stale() -> Result<usize> {
    clean(|pid| !pid_alive(pid))
}

/// Tries every matching namespace, then reports the first failure, so one stuck mount does not
/// keep the others around.
fn clean(select: impl Fn(i32) -> bool) -> Result<usize> {
    // Pins first: a killed run's links keep programs on interfaces that are about to go.
    clean_pins(&lab_root(), &select);
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

/// Removes the pin directories `pal<PID>-...` under `root` whose PID `select` picks; nothing
/// else there. Returns how many went.
fn clean_pins(root: &Path, select: impl Fn(i32) -> bool) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(run_pid) else {
            continue;
        };
        if !select(pid) {
            continue;
        }
        match palisade::dataplane::pin::remove_tree(&entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed stale lab pins");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove lab pins");
            }
        }
    }
    removed
}

/// The PID in a lab namespace name `pal<PID>-...`, or `None` for any other name.
pub(crate) fn run_pid(name: &str) -> Option<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_prefix;

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
    fn the_lab_pins_apart_from_the_agent() {
        let agent = Path::new(palisade::dataplane::pin::DEFAULT_ROOT);
        assert!(!lab_root().starts_with(agent) && !agent.starts_with(lab_root()));
    }

    /// A PID no process can have (above `pid_max`'s ceiling, 2^22).
    const DEAD: i32 = i32::MAX;

    #[test]
    fn clean_removes_dead_runs_pins_only() {
        let root = std::env::temp_dir().join(format!("palisade-lab-clean-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let live = root.join(format!("{}node-1", run_prefix()));
        let dead = root.join(format!("pal{DEAD}-node-1"));
        // What the agent pins under its own root, were it ever pointed here, and a stranger.
        let agent = root.join(format!("v{}", palisade_common::ABI_VERSION));
        let other = root.join("cilium");
        for dir in [&live, &dead, &agent, &other] {
            fs::create_dir_all(dir.join("maps")).expect("scratch pins");
            fs::write(dir.join("maps/PAL_ENDPOINTS"), b"").expect("scratch pin");
        }

        let removed = clean_pins(&root, |pid| !pid_alive(pid));

        let left = [live.exists(), dead.exists(), agent.exists(), other.exists()];
        let _ = fs::remove_dir_all(&root);
        assert_eq!(removed, 1);
        assert_eq!(
            left,
            [true, false, true, true],
            "only the dead run's pins go (live, dead, agent, other)"
        );
    }
}
