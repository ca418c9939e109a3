//! Where the lab's agents pin their maps and links: `/sys/fs/bpf/palisade/<node namespace>`,
//! so a run's pins carry its `pal<PID>-` prefix, are removed when the run ends, and are found
//! by [`crate::cleanup::clean_stale`] when a run was killed.

use std::path::{Path, PathBuf};

use crate::netns::NetNs;
use palisade::dataplane::pin::{BPFFS, remove_tree};

/// The lab's directory under bpffs.
pub fn lab_root() -> PathBuf {
    Path::new(BPFFS).join("palisade")
}

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
