//! Conformance cases (shared/conformance/FORMAT.md): a folder of plain manifests and a
//! `case.yaml` saying what to apply, in which order, and which truth tables must then hold.
//! Everything that can be checked without a cluster is checked here, so that a typo fails at
//! load time with the file and field, not halfway through a run.
//!
//! Here: the case as the lab uses it, `case.yaml` as written, and [`load_case`] /
//! [`load_cases`]; the checks each part goes through (files, externals, steps, tables) are in
//! `check.rs`.

mod check;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;

use self::check::{Checker, TEST_NETS};
use super::table::{Table, TableError, WORLD};
use palisade::k8s::cluster::ClusterError;

/// The file that makes a folder a case.
pub const CASE_FILE: &str = "case.yaml";

/// A transport protocol a probe or an external port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaseProto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for CaseProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

impl FromStr for CaseProto {
    type Err = CaseProblem;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "TCP" => Ok(Self::Tcp),
            "UDP" => Ok(Self::Udp),
            "SCTP" => Ok(Self::Sctp),
            _ => Err(CaseProblem::UnknownProtocol {
                protocol: text.to_owned(),
            }),
        }
    }
}

/// Which address of the destination a probe connects to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The destination pod's own address.
    #[default]
    PodIp,
    /// The ClusterIP of the destination's Service, translated before policy sees it.
    Service,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    /// Empty when the case gives none.
    pub description: String,
    /// Empty when the case gives none.
    pub source: String,
    pub dir: PathBuf,
    /// Manifests applied before the first step, as paths that exist.
    pub cluster: Vec<PathBuf>,
    pub externals: Vec<External>,
    pub steps: Vec<Step>,
}

impl Case {
    pub fn external(&self, name: &str) -> Option<&External> {
        self.externals.iter().find(|external| external.name == name)
    }
}

/// A host outside the cluster, shown in tables as `world/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    pub name: String,
    /// Always inside a TEST-NET block.
    pub ip: IpAddr,
    pub ports: Vec<(CaseProto, u16)>,
}

/// One step, carried out in this order: delete, apply, label, then the probes.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Manifests, as paths that exist.
    pub apply: Vec<PathBuf>,
    /// `networkpolicy/x/allow-b`, `pod/x/a`, `namespace/y`; each parses as an
    /// [`ObjectRef`](palisade::k8s::cluster::ObjectRef).
    pub delete: Vec<String>,
    /// `pod/x/b pod2=updated`, `pod/x/b pod2-`; each parses as a
    /// [`LabelChange`](palisade::k8s::cluster::LabelChange).
    pub label: Vec<String>,
    pub probes: Vec<Probe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub connect: (CaseProto, u16),
    pub via: Via,
    pub expect: Table,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: not a case (no {CASE_FILE}) and holds no case folders")]
    NotACase { dir: PathBuf },
    /// Unknown keys and wrongly typed values; the message names the field and line.
    #[error("{file}: {source}")]
    Yaml {
        file: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{file}: {field}: {problem}")]
    Invalid {
        file: PathBuf,
        field: String,
        problem: CaseProblem,
    },
    #[error("case name {name:?} is used by both {first} and {second}")]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CaseProblem {
    #[error("must not be empty")]
    Empty,
    #[error("a case needs at least one step")]
    NoSteps,
    #[error("expected PROTOCOL/PORT such as TCP/80, got {text:?}")]
    BadProtoPort { text: String },
    #[error("unknown protocol {protocol:?} (expected TCP, UDP or SCTP)")]
    UnknownProtocol { protocol: String },
    #[error("port {port:?} is not a number in 1..=65535")]
    BadPort { port: String },
    #[error("{path} does not exist")]
    MissingFile { path: PathBuf },
    #[error(
        "{ip} is outside the TEST-NET blocks ({TEST_NETS}); an external must never be a real host"
    )]
    NotTestNet { ip: IpAddr },
    #[error("external name {name:?} must be lowercase letters, digits, '-' and '.'")]
    BadExternalName { name: String },
    #[error("external {name} is declared twice")]
    DuplicateExternal { name: String },
    #[error("external {name} has the same address as {other}")]
    DuplicateExternalIp { name: String, other: String },
    #[error(transparent)]
    Table(#[from] TableError),
    /// Boxed: a [`ClusterError`] is large, and every load result carries this type.
    #[error(transparent)]
    Object(Box<ClusterError>),
    #[error("{WORLD}/{name} is not one of the case's externals")]
    UnknownExternal { name: String },
    #[error("via: service cannot be used with {WORLD}/{name}: externals have no Service")]
    ServiceWithExternal { name: String },
}

/// `case.yaml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    source: String,
    cluster: Vec<String>,
    #[serde(default)]
    externals: Vec<RawExternal>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    name: String,
    ip: IpAddr,
    #[serde(default)]
    ports: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    apply: Vec<String>,
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    label: Vec<String>,
    #[serde(default)]
    probes: Vec<RawProbe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    connect: String,
    #[serde(default)]
    via: Via,
    expect: String,
}

/// Reads and checks the case in `dir`.
pub fn load_case(dir: impl AsRef<Path>) -> Result<Case, CaseError> {
    let dir = dir.as_ref();
    let file = dir.join(CASE_FILE);
    let text = std::fs::read_to_string(&file).map_err(|source| CaseError::Read {
        path: file.clone(),
        source,
    })?;
    let raw: RawCase = serde_yaml_ng::from_str(&text).map_err(|source| CaseError::Yaml {
        file: file.clone(),
        source,
    })?;
    let checker = Checker { dir, file: &file };
    let name = raw.name.trim().to_owned();
    if name.is_empty() {
        return Err(checker.invalid("name".to_owned(), CaseProblem::Empty));
    }
    let cluster = checker.files(&raw.cluster, "cluster")?;
    let externals = checker.externals(raw.externals)?;
    if raw.steps.is_empty() {
        return Err(checker.invalid("steps".to_owned(), CaseProblem::NoSteps));
    }
    let steps = raw
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| checker.step(step, &format!("steps[{i}]"), &externals))
        .collect::<Result<_, _>>()?;
    Ok(Case {
        name,
        description: raw.description.trim().to_owned(),
        source: raw.source.trim().to_owned(),
        dir: dir.to_owned(),
        cluster,
        externals,
        steps,
    })
}

/// Whether some subfolder of `dir` holds a `case.yaml`.
fn holds_cases(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.path().join(CASE_FILE).is_file())
    })
}

/// Reads every case named: a folder holding a `case.yaml` is one case; a folder without one
/// holds cases, each subfolder that has a `case.yaml`, in name order. Case names must be
/// unique among cases of the same folder.
///
/// Among several paths (a shell glob such as `cnp/*`, which also names a README and a folder
/// of CRDs), a file or a folder that holds no case is skipped with a warning; a single one, or
/// paths that hold no case at all, are an error.
pub fn load_cases(dirs: &[PathBuf]) -> Result<Vec<Case>, CaseError> {
    let mut cases = Vec::new();
    let mut skipped = None;
    for dir in dirs {
        if dir.join(CASE_FILE).is_file() {
            cases.push(load_case(dir)?);
            continue;
        }
        if dirs.len() > 1 && (!dir.is_dir() || !holds_cases(dir)) {
            tracing::warn!(path = %dir.display(), "not a case folder and holds none: skipped");
            skipped.get_or_insert_with(|| dir.clone());
            continue;
        }
        let read = |source| CaseError::Read {
            path: dir.clone(),
            source,
        };
        let mut inner = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read)? {
            let path = entry.map_err(read)?.path();
            if path.join(CASE_FILE).is_file() {
                inner.push(path);
            }
        }
        if inner.is_empty() {
            return Err(CaseError::NotACase { dir: dir.clone() });
        }
        inner.sort();
        for dir in inner {
            cases.push(load_case(dir)?);
        }
    }
    if let (true, Some(dir)) = (cases.is_empty(), skipped) {
        return Err(CaseError::NotACase { dir });
    }
    let mut seen: BTreeMap<(Option<&Path>, &str), &Path> = BTreeMap::new();
    for case in &cases {
        if let Some(first) = seen.insert((case.dir.parent(), &case.name), &case.dir) {
            return Err(CaseError::DuplicateName {
                name: case.name.clone(),
                first: first.to_owned(),
                second: case.dir.clone(),
            });
        }
    }
    Ok(cases)
}
