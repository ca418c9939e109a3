//! Where the lab's agents pin their maps and links: `/sys/fs/bpf/palisade-lab/<node namespace>`,
//! so a run's pins carry its `pal<PID>-` prefix, are removed when the run ends, and are found
//! by [`crate::cleanup::clean_stale`] when a run was killed.
//!
//! A root of its own, beside the DaemonSet agent's (`/sys/fs/bpf/palisade/v<ABI>`,
//! [`palisade::dataplane::pin::DEFAULT_ROOT`]): on a machine running both, a lab clean-up never
//! sees the agent's pins, and the agent's upgrade clean-up and `palisade uninstall` never see
//! the lab's.

use std::path::{Path, PathBuf};

use crate::netns::NetNs;
use palisade::dataplane::pin::{BPFFS, remove_tree};

/// The lab's directory under bpffs.
pub fn lab_root() -> PathBuf {
    Path::new(BPFFS).join(LAB_ROOT_NAME)
}

/// The name of [`lab_root`] under bpffs.
const LAB_ROOT_NAME: &str = "palisade-lab";

/// The pin directories of one run's nodes, removed (maps unpinned, leftover links released)
/// when dropped: declare it after the agents, so they release their links first.
#[derive(Debug, Default)]
pub struct PinRoot {
    dirs: Vec<PathBuf>,
}

impl PinRoot {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pin directory of the node whose namespace is `netns`.
    pub fn node(&mut self, netns: &NetNs) -> PathBuf {
        let dir = lab_root().join(netns.name());
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir.clone());
        }
        dir
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        for dir in &self.dirs {
            if let Err(e) = remove_tree(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove lab pins");
            }
        }
    }
}
