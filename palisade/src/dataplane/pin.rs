//! The dataplane's state in bpffs, so that it outlives the agent.
//!
//! ```text
//! <root>/v<ABI_VERSION>/maps/<MAP NAME>                  every map, reused by the next agent
//! <root>/v<ABI_VERSION>/links/<ifname>/<program>@<n>     every TCX link
//! ```
//!
//! An agent that dies leaves its programs attached (the pinned links hold them) and its maps
//! in place (the pinned maps), so pods stay enforced by the last state written. The next agent
//! loads its programs against the same maps (aya's `map_pin_path` reuses a pinned map), reads
//! what is written back ([`super::sync`]'s adoption), attaches its own programs next to the old
//! ones, pins them, and only then releases the old links: there is always at least one program
//! on every interface, and the old and new ones read the same maps, so they agree.
//!
//! The ABI version is part of the path: a layout change never reuses maps written under
//! another layout. Across such a change (an upgrade), the old agent's programs are released
//! the same way, program by program, once the new one runs on the interface: an old program
//! left attached would go on judging by maps nobody updates ([`PinDir::pin_link`]); and an
//! old version whose last link is gone has its maps unpinned
//! ([`PinDir::release_other_versions`]).
//!
//! Only `v<N>` directories under the root are the agent's: whatever else is there (another
//! tool's pins, a lab run's on an old layout) is never released or removed, here or by
//! `palisade uninstall` ([`super::uninstall`]).

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::programs::links::{FdLink, PinnedLink};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::statfs,
};
use palisade_common::ABI_VERSION;

use super::DataplaneError;

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// The agent's pin root (`palisade agent --pin-root`, `palisade uninstall --pin-root`). The lab
/// pins elsewhere (`palisade_lab::pins::lab_root`), so neither ever removes the other's pins.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/palisade";
/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

/// Whether `path` is on bpffs (where pins live; a plain directory never holds any).
pub fn on_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// The ABI version of an agent's pin directory `v<N>`, or `None` for any other name.
pub fn abi_version_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `root/v<N>` of every ABI version pinned under `root`, in version order.
pub fn version_dirs(root: &Path) -> Vec<(u32, PathBuf)> {
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let version = abi_version_of(e.file_name().to_str()?)?;
            Some((version, e.path()))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Mounts bpffs on [`BPFFS`] unless it is there already.
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    if on_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    let io = |what: String, source: io::Error| DataplaneError::Pin { what, source };
    fs::create_dir_all(BPFFS).map_err(|e| io(format!("create {BPFFS}"), e))?;
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| io(format!("mount bpffs on {BPFFS}"), e.into()))?;
    tracing::info!(path = BPFFS, "mounted bpffs");
    Ok(())
}

/// The pin directory of one dataplane instance under `root`.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
    dir: PathBuf,
}

impl PinDir {
    /// `root/v<ABI>`, created if missing. `root` must be on bpffs.
    pub fn new(root: &Path) -> Result<Self, DataplaneError> {
        let dir = root.join(format!("v{ABI_VERSION}"));
        for sub in ["maps", "links"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| DataplaneError::Pin {
                what: format!("create {}", path.display()),
                source,
            })?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// `root/v<N>` of every other ABI version found; nothing else under the root.
    fn other_versions(&self) -> Vec<PathBuf> {
        version_dirs(&self.root)
            .into_iter()
            .map(|(_, path)| path)
            .filter(|path| *path != self.dir)
            .collect()
    }

    /// After an upgrade: releases the links other ABI versions pinned on interfaces this agent
    /// has attached all its programs to (`attached`), or that are gone, and unpins each such
    /// version's maps once none of its links is left. An interface this agent has not attached
    /// yet keeps the old programs: the old state is more than none.
    pub fn release_other_versions(&self, attached: impl Fn(&str) -> bool) {
        for version in self.other_versions() {
            let links = version.join("links");
            for entry in fs::read_dir(&links)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
            {
                let ifname = entry.file_name().to_string_lossy().into_owned();
                let gone = nix::net::if_::if_nametoindex(ifname.as_str()).is_err();
                if attached(&ifname) || gone {
                    release_dir(&entry.path());
                }
            }
            let left = fs::read_dir(&links)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .count();
            if left == 0 {
                tracing::info!(dir = %version.display(), "released the pinned state of another ABI version");
                if let Err(e) = remove_tree(&version) {
                    tracing::warn!(dir = %version.display(), error = %e, "could not remove old pins");
                }
            }
        }
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Pins a new link for `program` on `ifname`, then releases every older link of that
    /// program on that interface (the new one already runs, so there is no gap).
    pub fn pin_link(
        &self,
        ifname: &str,
        program: &str,
        link: FdLink,
    ) -> Result<PinnedLink, DataplaneError> {
        let dir = self.dir.join("links").join(ifname);
        fs::create_dir_all(&dir).map_err(|source| DataplaneError::Pin {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // No dots: bpffs refuses them in names.
        let path = dir.join(format!("{program}@{stamp}"));
        let pinned = link.pin(&path).map_err(|e| DataplaneError::Pin {
            what: format!("pin link {}", path.display()),
            source: io::Error::other(e),
        })?;
        for old in self.links(ifname, program) {
            if old != path {
                release(&old);
            }
        }
        // The same program of an older (or newer) agent's ABI on this interface: it judges by
        // maps this agent never writes.
        for version in self.other_versions() {
            for old in links_in(&version.join("links").join(ifname), program) {
                release(&old);
            }
        }
        Ok(pinned)
    }

    /// Pinned links of `program` on `ifname`.
    fn links(&self, ifname: &str, program: &str) -> Vec<PathBuf> {
        links_in(&self.dir.join("links").join(ifname), program)
    }

    /// Interfaces with pinned links (the previous agent's attachments).
    pub fn linked_interfaces(&self) -> Vec<String> {
        fs::read_dir(self.dir.join("links"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect()
    }

    /// Releases every link pinned for `ifname` (the programs detach when the last reference
    /// goes) and removes its directory.
    pub fn release_interface(&self, ifname: &str) {
        release_dir(&self.dir.join("links").join(ifname));
    }
}

/// Pinned links of `program` in the interface directory `dir`.
fn links_in(dir: &Path, program: &str) -> Vec<PathBuf> {
    let prefix = format!("{program}@");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Releases every link in the interface directory `dir` and removes it.
fn release_dir(dir: &Path) {
    for entry in fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        release(&entry.path());
    }
    let _ = fs::remove_dir(dir);
}

/// Unpins one link and drops it: its program leaves the interface.
fn release(path: &Path) {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            if let Err(e) = link.unpin() {
                tracing::warn!(path = %path.display(), error = %e, "could not unpin link");
            }
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "stale link pin");
            let _ = fs::remove_file(path);
        }
    }
}

/// Removes a whole pin tree (the lab's, when a run ends or a crashed run is cleaned): links
/// are released, maps unpinned (freed once no program uses them).
pub fn remove_tree(root: &Path) -> io::Result<()> {
    match fs::remove_dir_all(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("palisade-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("scratch directory");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().expect("a parent")).expect("parent");
        fs::write(path, b"").expect("file");
    }

    #[test]
    fn only_v_and_digits_name_an_abi_version() {
        assert_eq!(abi_version_of("v6"), Some(6));
        assert_eq!(abi_version_of("v12"), Some(12));
        for other in [
            "v",
            "v6a",
            "vlan",
            "6",
            "pal123-node-1",
            "V6",
            "v-1",
            "v99999999999",
        ] {
            assert_eq!(abi_version_of(other), None, "{other}");
        }
    }

    #[test]
    fn an_upgrade_releases_old_abi_versions_and_nothing_else_under_the_root() {
        let scratch = Scratch::new("pin-upgrade");
        let root = &scratch.0;
        let old = root.join("v1");
        touch(&old.join("maps/PAL_ENDPOINTS"));
        fs::create_dir_all(old.join("links")).expect("links");
        // A lab run's pins on the old layout (`<root>/<netns>/v<ABI>`), a file and a directory
        // whose names only look like versions: none of them is an agent's.
        let lab = root.join("pal4242-node-1");
        touch(&lab.join(format!("v{ABI_VERSION}/maps/PAL_ENDPOINTS")));
        touch(&root.join("v2"));
        touch(&root.join("vlan/maps/x"));

        let pins = PinDir::new(root).expect("pin dir");
        pins.release_other_versions(|_| true);

        assert!(!old.exists(), "the old version's maps are unpinned");
        assert!(
            lab.join(format!("v{ABI_VERSION}/maps/PAL_ENDPOINTS"))
                .exists()
        );
        assert!(root.join("v2").is_file());
        assert!(root.join("vlan/maps/x").exists());
        assert!(root.join(format!("v{ABI_VERSION}/maps")).is_dir());
    }
}
