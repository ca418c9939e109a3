//! `palisade uninstall`: takes Palisade's dataplane off a node.
//!
//! An agent that stops leaves its programs attached and its maps pinned, on purpose ([`super::pin`]):
//! pods stay enforced across restarts and upgrades. Once the DaemonSet is deleted, that state
//! would go on enforcing the last policy written, and new pods would get no programs at all.
//! This removes it, for every ABI version found under the pin root:
//!
//! 1. every link pinned under `<root>/v<N>/links/<ifname>/` is detached with `BPF_LINK_DETACH`
//!    (so its program leaves the interface even if some process still holds the link) and
//!    unpinned;
//! 2. every map under `<root>/v<N>/maps/` is unpinned (the kernel frees it with its last
//!    program);
//! 3. `<root>/v<N>` is removed, then `<root>` if nothing else is in it.
//!
//! Only `v<N>` directories are touched: anything else under the root (another tool's pins) is
//! left and reported. A second run finds nothing and succeeds. Whether an agent still runs is
//! the caller's question (`palisade uninstall` asks the agent's socket first): a live agent
//! would pin again what it attaches next.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use super::pin::{on_bpffs, version_dirs};

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error(
        "{} is not on bpffs, so it holds no pins: nothing removed (the agent's pin root is on \
         bpffs, by default {}; in a container, mount the host's /sys/fs/bpf)",
        root.display(),
        super::pin::DEFAULT_ROOT
    )]
    NotBpffs { root: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("detaching the link pinned at {}: {source}", path.display())]
    Detach {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One pinned link, released.
#[derive(Debug)]
pub struct LinkRemoved {
    pub ifname: String,
    /// The pin's name: `<program>@<stamp>`.
    pub pin: String,
    /// The kernel's ids of the link and its program, when the pin was a link.
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    /// `BPF_LINK_DETACH` took the program off its interface (false: the pin was no live link,
    /// or the kernel cannot detach links of its kind, and unpinning released it).
    pub detached: bool,
}

/// What one ABI version had pinned.
#[derive(Debug)]
pub struct VersionRemoved {
    pub abi: u32,
    pub dir: PathBuf,
    pub links: Vec<LinkRemoved>,
    pub maps: Vec<String>,
}

/// What [`uninstall`] removed, left alone, and could not remove.
#[derive(Debug)]
pub struct Uninstalled {
    pub root: PathBuf,
    pub versions: Vec<VersionRemoved>,
    /// Entries under the root that are not an agent's (`v<N>`), left in place.
    pub left: Vec<PathBuf>,
    pub root_removed: bool,
    /// What failed; everything else was still removed.
    pub failures: Vec<UninstallError>,
}

impl Uninstalled {
    pub fn links(&self) -> usize {
        self.versions.iter().map(|v| v.links.len()).sum()
    }

    pub fn maps(&self) -> usize {
        self.versions.iter().map(|v| v.maps.len()).sum()
    }
}

/// Removes every agent's pinned state under `root`: see the module's documentation. An absent
/// root is nothing to do; a root that is not on bpffs is refused (it cannot hold pins, and
/// removing files under an arbitrary directory is not what this is for).
pub fn uninstall(root: &Path) -> Result<Uninstalled, UninstallError> {
    let mut done = Uninstalled {
        root: root.to_path_buf(),
        versions: Vec::new(),
        left: Vec::new(),
        root_removed: false,
        failures: Vec::new(),
    };
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(done),
        Err(source) => {
            return Err(UninstallError::Io {
                what: "reading",
                path: root.to_path_buf(),
                source,
            });
        }
        Ok(_) if !on_bpffs(root) => {
            return Err(UninstallError::NotBpffs {
                root: root.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    for (abi, dir) in version_dirs(root) {
        let version = remove_version(abi, dir, &mut done.failures);
        done.versions.push(version);
    }
    match fs::remove_dir(root) {
        Ok(()) => done.root_removed = true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            done.left = entries(root).into_iter().map(|e| e.path()).collect();
            done.left.sort();
        }
    }
    Ok(done)
}

fn entries(dir: &Path) -> Vec<fs::DirEntry> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .collect()
}

fn name(entry: &fs::DirEntry) -> String {
    entry.file_name().to_string_lossy().into_owned()
}

/// Links first (programs off their interfaces), then maps, then the directory.
fn remove_version(abi: u32, dir: PathBuf, failures: &mut Vec<UninstallError>) -> VersionRemoved {
    let mut links = Vec::new();
    for interface in entries(&dir.join("links")) {
        let ifname = name(&interface);
        for pin in entries(&interface.path()) {
            if let Some(link) = release_link(&ifname, &pin, failures) {
                links.push(link);
            }
        }
    }
    links.sort_by(|a, b| (&a.ifname, &a.pin).cmp(&(&b.ifname, &b.pin)));
    let mut maps = Vec::new();
    for map in entries(&dir.join("maps")) {
        match fs::remove_file(map.path()) {
            Ok(()) => maps.push(name(&map)),
            Err(source) => failures.push(UninstallError::Io {
                what: "unpinning the map",
                path: map.path(),
                source,
            }),
        }
    }
    maps.sort();
    // Whatever else a version holds is its own too; its pins go with the tree.
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => failures.push(UninstallError::Io {
            what: "removing",
            path: dir.clone(),
            source,
        }),
    }
    VersionRemoved {
        abi,
        dir,
        links,
        maps,
    }
}

/// Detaches and unpins the link pinned at `pin`; a pin that is no link is just removed.
fn release_link(
    ifname: &str,
    pin: &fs::DirEntry,
    failures: &mut Vec<UninstallError>,
) -> Option<LinkRemoved> {
    let path = pin.path();
    let mut link = LinkRemoved {
        ifname: ifname.to_owned(),
        pin: name(pin),
        link_id: None,
        program_id: None,
        detached: false,
    };
    if let Ok(fd) = sys::obj_get(&path) {
        // Read before detaching: the link's ids are what the report names.
        let info = sys::link_info(&fd).ok();
        match sys::link_detach(&fd) {
            Ok(()) => {
                link.detached = true;
                link.link_id = info.as_ref().map(|i| i.id);
                link.program_id = info.as_ref().map(|i| i.prog_id);
            }
            // EINVAL: not a link at all (then its info was not a link's either); EOPNOTSUPP:
            // a link kind the kernel cannot detach, released by unpinning below.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {}
            Err(source) => failures.push(UninstallError::Detach {
                path: path.clone(),
                source,
            }),
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => Some(link),
        Err(source) => {
            failures.push(UninstallError::Io {
                what: "unpinning the link",
                path,
                source,
            });
            None
        }
    }
}

impl fmt::Display for Uninstalled {
    /// One line per interface and per ABI version, then a summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for version in &self.versions {
            let mut current: Option<&str> = None;
            for link in &version.links {
                if current == Some(link.ifname.as_str()) {
                    write!(f, ",")?;
                } else {
                    if current.is_some() {
                        writeln!(f)?;
                    }
                    write!(f, "v{} {}:", version.abi, link.ifname)?;
                    current = Some(&link.ifname);
                }
                let program = link.pin.split('@').next().unwrap_or(&link.pin);
                match (link.detached, link.link_id, link.program_id) {
                    (true, Some(l), Some(p)) => {
                        write!(f, " detached {program} (link {l}, program {p})")?;
                    }
                    (true, ..) => write!(f, " detached {program}")?,
                    (false, ..) => write!(f, " unpinned {program}")?,
                }
            }
            if current.is_some() {
                writeln!(f)?;
            }
            writeln!(
                f,
                "v{}: unpinned {} maps, removed {}",
                version.abi,
                version.maps.len(),
                version.dir.display()
            )?;
        }
        for path in &self.left {
            writeln!(f, "left alone (not an agent's): {}", path.display())?;
        }
        if self.versions.is_empty() {
            write!(f, "nothing to uninstall under {}", self.root.display())?;
        } else {
            let interfaces: std::collections::BTreeSet<&str> = self
                .versions
                .iter()
                .flat_map(|v| v.links.iter().map(|l| l.ifname.as_str()))
                .collect();
            let abis: Vec<String> = self
                .versions
                .iter()
                .map(|v| format!("v{}", v.abi))
                .collect();
            write!(
                f,
                "uninstalled {} links on {} interfaces and {} maps (ABI {}) from {}",
                self.links(),
                interfaces.len(),
                self.maps(),
                abis.join(", "),
                self.root.display()
            )?;
        }
        if self.root_removed {
            write!(f, "; removed {}", self.root.display())?;
        }
        for failure in &self.failures {
            write!(f, "\nfailed: {failure}")?;
        }
        Ok(())
    }
}

/// The three `bpf(2)` commands aya does not offer on a pinned link: open it, read its ids,
/// detach it.
mod sys {
    use std::{
        ffi::CString,
        io, mem,
        os::{
            fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
            unix::ffi::OsStrExt as _,
        },
        path::Path,
    };

    // `enum bpf_cmd` of linux/bpf.h.
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_DETACH: libc::c_long = 34;

    /// `union bpf_attr` for `BPF_OBJ_GET`.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }

    /// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    /// `union bpf_attr` for `BPF_LINK_DETACH`.
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }

    /// The head of `struct bpf_link_info`; the rest (the per-kind union) is room the kernel
    /// may write into and nothing here reads.
    #[repr(C)]
    #[derive(Default)]
    pub struct LinkInfo {
        _kind: u32,
        pub id: u32,
        pub prog_id: u32,
        _pad: u32,
        _union: [u64; 8],
    }

    /// # Safety
    ///
    /// `attr` must be the `#[repr(C)]` head of `union bpf_attr` for `cmd`, and any pointer in
    /// it valid for what `cmd` does with it.
    unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: the caller's promise; the size is that of `attr` (the kernel zero-fills the
        // rest of the union).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(attr).cast::<libc::c_void>(),
                mem::size_of::<T>(),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    fn fd_u32(fd: &OwnedFd) -> u32 {
        // A descriptor the kernel handed out is never negative.
        u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
    }

    /// The object pinned at `path`.
    pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut attr = ObjGet {
            pathname: path.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: `pathname` points to a NUL-terminated string alive until the call returns.
        let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr)? };
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(BPF_OBJ_GET): no fd"))?;
        // SAFETY: a descriptor the kernel just opened for this process, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The link's ids (meaningful only if `fd` is a link).
    pub fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
        let mut info = LinkInfo::default();
        let mut attr = GetInfo {
            bpf_fd: fd_u32(fd),
            info_len: mem::size_of::<LinkInfo>() as u32,
            info: std::ptr::from_mut(&mut info) as u64,
        };
        // SAFETY: `info` is writable for `info_len` bytes and outlives the call; the kernel
        // fills no pointer of it (its per-kind union is zeroed, so it follows none either).
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
        Ok(info)
    }

    /// Takes the link's program off its hook now, whoever else holds the link.
    pub fn link_detach(fd: &OwnedFd) -> io::Result<()> {
        let mut attr = LinkDetach {
            link_fd: fd_u32(fd),
        };
        // SAFETY: no pointers.
        unsafe { bpf(BPF_LINK_DETACH, &mut attr)? };
        Ok(())
    }
}
