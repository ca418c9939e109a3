//! Conformance cases (shared/conformance/FORMAT.md): a folder of plain manifests and a
//! `case.yaml` saying what to apply, in which order, and which truth tables must then hold.
//! Everything that can be checked without a cluster is checked here, so that a typo fails at
//! load time with the file and field, not halfway through a run.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;

use super::table::{Endpoint, Table, TableError, WORLD};
use crate::cluster::{ClusterError, LabelChange, ObjectRef};

/// The file that makes a folder a case.
pub const CASE_FILE: &str = "case.yaml";

/// The address blocks reserved for documentation (RFC 5737, RFC 3849). External hosts must use
/// them, so that no probe can ever reach a real host, whatever the lab's routing does.
const TEST_NETS: &str = "192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32";

fn is_test_net(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            matches!(
                ip.octets(),
                [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
            )
        }
        IpAddr::V6(ip) => ip.segments()[..2] == [0x2001, 0x0db8],
    }
}

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

/// `TCP/80`.
fn parse_proto_port(text: &str) -> Result<(CaseProto, u16), CaseProblem> {
    let (protocol, port) = text
        .split_once('/')
        .ok_or_else(|| CaseProblem::BadProtoPort {
            text: text.to_owned(),
        })?;
    let protocol = protocol.parse()?;
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok((protocol, port)),
        _ => Err(CaseProblem::BadPort {
            port: port.to_owned(),
        }),
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
    /// [`ObjectRef`].
    pub delete: Vec<String>,
    /// `pod/x/b pod2=updated`, `pod/x/b pod2-`; each parses as a [`LabelChange`].
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

/// Reads every case named: a folder holding a `case.yaml` is one case; a folder without one
/// holds cases, each subfolder that has a `case.yaml`, in name order. Case names must be
/// unique among cases of the same folder.
pub fn load_cases(dirs: &[PathBuf]) -> Result<Vec<Case>, CaseError> {
    let mut cases = Vec::new();
    for dir in dirs {
        if dir.join(CASE_FILE).is_file() {
            cases.push(load_case(dir)?);
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

/// Checks parts of one `case.yaml`, naming it in errors.
struct Checker<'a> {
    dir: &'a Path,
    file: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, field: String, problem: CaseProblem) -> CaseError {
        CaseError::Invalid {
            file: self.file.to_owned(),
            field,
            problem,
        }
    }

    fn files(&self, names: &[String], field: &str) -> Result<Vec<PathBuf>, CaseError> {
        let mut paths = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let path = self.dir.join(name);
            if !path.is_file() {
                return Err(
                    self.invalid(format!("{field}[{i}]"), CaseProblem::MissingFile { path })
                );
            }
            paths.push(path);
        }
        Ok(paths)
    }

    fn externals(&self, raw: Vec<RawExternal>) -> Result<Vec<External>, CaseError> {
        let mut externals: Vec<External> = Vec::with_capacity(raw.len());
        for (i, external) in raw.into_iter().enumerate() {
            let at = format!("externals[{i}]");
            let name = external.name;
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_name {
                return Err(
                    self.invalid(format!("{at}.name"), CaseProblem::BadExternalName { name })
                );
            }
            if externals.iter().any(|other| other.name == name) {
                return Err(self.invalid(
                    format!("{at}.name"),
                    CaseProblem::DuplicateExternal { name },
                ));
            }
            if !is_test_net(external.ip) {
                let problem = CaseProblem::NotTestNet { ip: external.ip };
                return Err(self.invalid(format!("{at}.ip"), problem));
            }
            if let Some(other) = externals.iter().find(|other| other.ip == external.ip) {
                let other = other.name.clone();
                return Err(self.invalid(
                    format!("{at}.ip"),
                    CaseProblem::DuplicateExternalIp { name, other },
                ));
            }
            let ports = external
                .ports
                .iter()
                .enumerate()
                .map(|(j, port)| {
                    parse_proto_port(port)
                        .map_err(|problem| self.invalid(format!("{at}.ports[{j}]"), problem))
                })
                .collect::<Result<_, _>>()?;
            externals.push(External {
                name,
                ip: external.ip,
                ports,
            });
        }
        Ok(externals)
    }

    fn step(&self, raw: RawStep, at: &str, externals: &[External]) -> Result<Step, CaseError> {
        let apply = self.files(&raw.apply, &format!("{at}.apply"))?;
        for (j, reference) in raw.delete.iter().enumerate() {
            if let Err(error) = reference.parse::<ObjectRef>() {
                let problem = CaseProblem::Object(Box::new(error));
                return Err(self.invalid(format!("{at}.delete[{j}]"), problem));
            }
        }
        for (j, spec) in raw.label.iter().enumerate() {
            if let Err(error) = spec.parse::<LabelChange>() {
                let problem = CaseProblem::Object(Box::new(error));
                return Err(self.invalid(format!("{at}.label[{j}]"), problem));
            }
        }
        let mut probes = Vec::with_capacity(raw.probes.len());
        for (j, probe) in raw.probes.into_iter().enumerate() {
            let at = format!("{at}.probes[{j}]");
            let connect = parse_proto_port(&probe.connect)
                .map_err(|problem| self.invalid(format!("{at}.connect"), problem))?;
            let expect: Table = probe
                .expect
                .parse()
                .map_err(|error: TableError| self.invalid(format!("{at}.expect"), error.into()))?;
            self.endpoints(&expect, probe.via, externals)
                .map_err(|problem| self.invalid(format!("{at}.expect"), problem))?;
            probes.push(Probe {
                connect,
                via: probe.via,
                expect,
            });
        }
        Ok(Step {
            apply,
            delete: raw.delete,
            label: raw.label,
            probes,
        })
    }

    /// Externals in a table must be declared, and cannot be reached through a Service.
    fn endpoints(
        &self,
        table: &Table,
        via: Via,
        externals: &[External],
    ) -> Result<(), CaseProblem> {
        for name in table.rows.iter().chain(&table.columns) {
            let Endpoint::External(name) = name.parse()? else {
                continue;
            };
            if !externals.iter().any(|external| external.name == name) {
                return Err(CaseProblem::UnknownExternal { name });
            }
            if via == Via::Service {
                return Err(CaseProblem::ServiceWithExternal { name });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        cluster::Cluster,
        manifest::{self, Object},
    };

    /// A case folder under the system temp dir, removed when dropped.
    struct TempCase(PathBuf);

    impl TempCase {
        fn new(case_yaml: &str, files: &[&str]) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("palisade-case-{}-{n}", std::process::id()));
            let write = |path: PathBuf, text: &str| {
                if let Err(error) = std::fs::write(&path, text) {
                    panic!("{}: {error}", path.display());
                }
            };
            if let Err(error) = std::fs::create_dir_all(&dir) {
                panic!("{}: {error}", dir.display());
            }
            write(dir.join(CASE_FILE), case_yaml);
            for file in files {
                write(
                    dir.join(file),
                    "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
                );
            }
            Self(dir)
        }

        fn load(&self) -> Result<Case, CaseError> {
            load_case(&self.0)
        }

        fn error(&self) -> String {
            match self.load() {
                Ok(case) => panic!("expected an error, loaded {case:?}"),
                Err(error) => {
                    let text = error.to_string();
                    let prefix = format!("{}: ", self.0.join(CASE_FILE).display());
                    text.strip_prefix(&prefix)
                        .map_or(text.clone(), str::to_owned)
                }
            }
        }
    }

    impl Drop for TempCase {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const EXAMPLE: &str = "\
name: default-deny-ingress
description: >
  A policy selecting every pod of x with no ingress rules isolates them.
source: upstream e2e \"should support a 'default-deny-ingress' policy\"
cluster: [cluster.yaml]
externals:
  - name: ext1
    ip: 192.0.2.10
    ports: [TCP/80]
steps:
  - apply: [policy.yaml]
    delete: [networkpolicy/x/allow-b]
    label: [\"namespace/y ns2=updated\", \"pod/x/b pod2-\"]
    probes:
      - connect: TCP/80
        via: service
        expect: |
          -    x/a  x/b  y/a
          x/a  .    X    .
          x/b  .    .    .
          y/a  X    X    .
  - probes:
      - connect: UDP/53
        expect: |
          -    world/ext1
          x/a  .
";

    fn with_step(step: &str) -> String {
        format!("name: n\ncluster: []\nsteps:\n{step}")
    }

    #[test]
    fn the_format_example_loads() {
        let temp = TempCase::new(EXAMPLE, &["cluster.yaml", "policy.yaml"]);
        let case = temp.load().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(case.name, "default-deny-ingress");
        assert_eq!(
            case.description,
            "A policy selecting every pod of x with no ingress rules isolates them."
        );
        assert!(case.source.starts_with("upstream e2e"));
        assert_eq!(case.cluster, [temp.0.join("cluster.yaml")]);
        assert_eq!(
            case.externals,
            [External {
                name: "ext1".into(),
                ip: IpAddr::from([192, 0, 2, 10]),
                ports: vec![(CaseProto::Tcp, 80)]
            }]
        );
        let [first, second] = case.steps.as_slice() else {
            panic!("{:?}", case.steps)
        };
        assert_eq!(first.apply, [temp.0.join("policy.yaml")]);
        assert_eq!(first.delete, ["networkpolicy/x/allow-b"]);
        assert_eq!(first.label.len(), 2);
        assert_eq!(first.probes[0].connect, (CaseProto::Tcp, 80));
        assert_eq!(first.probes[0].via, Via::Service);
        assert_eq!(first.probes[0].expect.expected("y/a", "x/b"), Some(false));
        assert_eq!(second.probes[0].via, Via::PodIp, "pod-ip is the default");
        assert_eq!(second.probes[0].connect, (CaseProto::Udp, 53));
        assert!(second.apply.is_empty() && second.delete.is_empty() && second.label.is_empty());
    }

    #[test]
    fn unknown_protocol_names_the_step_and_probe() {
        let step = "  - probes: []\n  - probes: []\n  - probes:\n    \
                    - {connect: ICMP/0, expect: \"- x/a\\nx/b .\"}\n";
        let temp = TempCase::new(&with_step(step), &[]);
        assert_eq!(
            temp.error(),
            "steps[2].probes[0].connect: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)"
        );
    }

    #[test]
    fn bad_ports_and_connect_text_are_errors() {
        let probe = |connect: &str| {
            with_step(&format!(
                "  - probes:\n    - {{connect: {connect}, expect: \"- x/a\\nx/b .\"}}\n"
            ))
        };
        let temp = TempCase::new(&probe("TCP/0"), &[]);
        assert_eq!(
            temp.error(),
            "steps[0].probes[0].connect: port \"0\" is not a number in 1..=65535"
        );
        let temp = TempCase::new(&probe("TCP/65536"), &[]);
        assert!(temp.error().contains("port \"65536\""));
        let temp = TempCase::new(&probe("80"), &[]);
        assert!(
            temp.error()
                .contains("expected PROTOCOL/PORT such as TCP/80, got \"80\"")
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_field() {
        let temp = TempCase::new(
            &with_step("  - probes:\n    - {connect: TCP/80, expected: x}\n"),
            &[],
        );
        let error = temp.error();
        assert!(
            error.starts_with("steps[0].probes[0]: unknown field `expected`"),
            "{error}"
        );
        let temp = TempCase::new("name: n\ncluster: []\nsteps: []\ncleanup: true\n", &[]);
        assert!(
            temp.error().contains("unknown field `cleanup`"),
            "{}",
            temp.error()
        );
    }

    #[test]
    fn required_keys_and_steps_must_be_present() {
        let temp = TempCase::new("name: n\nsteps: []\n", &[]);
        assert!(
            temp.error().contains("missing field `cluster`"),
            "{}",
            temp.error()
        );
        let temp = TempCase::new("name: n\ncluster: []\nsteps: []\n", &[]);
        assert_eq!(temp.error(), "steps: a case needs at least one step");
        let temp = TempCase::new("name: ' '\ncluster: []\nsteps: [{}]\n", &[]);
        assert_eq!(temp.error(), "name: must not be empty");
    }

    #[test]
    fn a_missing_manifest_is_an_error_naming_the_field() {
        let temp = TempCase::new(
            "name: n\ncluster: [cluster.yaml]\nsteps: [{apply: [a.yaml, b.yaml]}]\n",
            &["cluster.yaml", "a.yaml"],
        );
        let error = temp.error();
        assert!(error.starts_with("steps[0].apply[1]: "), "{error}");
        assert!(error.ends_with("b.yaml does not exist"), "{error}");
        let temp = TempCase::new("name: n\ncluster: [nope.yaml]\nsteps: [{}]\n", &[]);
        assert!(temp.error().starts_with("cluster[0]: "));
    }

    #[test]
    fn an_external_outside_test_net_is_refused() {
        for ip in ["10.0.0.1", "8.8.8.8", "2001:4860::8888", "192.0.3.1"] {
            let text = format!(
                "name: n\ncluster: []\nexternals: [{{name: e, ip: '{ip}'}}]\nsteps: [{{}}]\n"
            );
            let error = TempCase::new(&text, &[]).error();
            assert!(
                error.starts_with(&format!(
                    "externals[0].ip: {ip} is outside the TEST-NET blocks"
                )),
                "{error}"
            );
        }
        for ip in ["198.51.100.7", "203.0.113.200", "2001:db8::5"] {
            let text = format!(
                "name: n\ncluster: []\nexternals: [{{name: e, ip: '{ip}'}}]\nsteps: [{{}}]\n"
            );
            assert!(TempCase::new(&text, &[]).load().is_ok(), "{ip}");
        }
    }

    #[test]
    fn externals_need_unique_valid_names_and_addresses() {
        let case = |externals: &str| {
            format!("name: n\ncluster: []\nexternals: {externals}\nsteps: [{{}}]\n")
        };
        let temp = TempCase::new(
            &case("[{name: e, ip: 192.0.2.1}, {name: e, ip: 192.0.2.2}]"),
            &[],
        );
        assert_eq!(
            temp.error(),
            "externals[1].name: external e is declared twice"
        );
        let temp = TempCase::new(
            &case("[{name: e, ip: 192.0.2.1}, {name: f, ip: 192.0.2.1}]"),
            &[],
        );
        assert_eq!(
            temp.error(),
            "externals[1].ip: external f has the same address as e"
        );
        let temp = TempCase::new(&case("[{name: 'a/b', ip: 192.0.2.1}]"), &[]);
        assert!(temp.error().starts_with("externals[0].name: "));
        let temp = TempCase::new(&case("[{name: e, ip: 192.0.2.1, ports: [ICMP/1]}]"), &[]);
        assert!(
            temp.error()
                .starts_with("externals[0].ports[0]: unknown protocol")
        );
    }

    #[test]
    fn tables_may_only_name_declared_externals_and_never_via_service() {
        let temp = TempCase::new(
            &with_step("  - probes:\n    - {connect: TCP/80, expect: \"- world/ext9\\nx/a .\"}\n"),
            &[],
        );
        assert_eq!(
            temp.error(),
            "steps[0].probes[0].expect: world/ext9 is not one of the case's externals"
        );
        let text = "name: n\ncluster: []\nexternals: [{name: e, ip: 192.0.2.1}]\nsteps:\n  - probes:\n    \
                    - {connect: TCP/80, via: service, expect: \"- world/e\\nx/a .\"}\n";
        let error = TempCase::new(text, &[]).error();
        assert!(
            error
                .starts_with("steps[0].probes[0].expect: via: service cannot be used with world/e"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_table_is_an_error_naming_the_probe() {
        let temp = TempCase::new(
            &with_step("  - probes:\n    - {connect: TCP/80, expect: \"- x/a x/b\\nx/a .\"}\n"),
            &[],
        );
        assert_eq!(
            temp.error(),
            "steps[0].probes[0].expect: row x/a has 1 cells but the header has 2 columns"
        );
    }

    #[test]
    fn bad_delete_and_label_lines_fail_at_load_time() {
        let temp = TempCase::new(&with_step("  - delete: [service/x/a]\n"), &[]);
        assert!(
            temp.error()
                .starts_with("steps[0].delete[0]: \"service/x/a\": unknown kind"),
            "{}",
            temp.error()
        );
        let temp = TempCase::new(&with_step("  - label: [pod/x/a]\n"), &[]);
        assert!(
            temp.error().starts_with("steps[0].label[0]: "),
            "{}",
            temp.error()
        );
    }

    #[test]
    fn a_folder_of_cases_loads_each_in_name_order_and_names_must_differ() {
        let parent = TempCase::new("not: a case\n", &[]);
        let _ = std::fs::remove_file(parent.0.join(CASE_FILE));
        for (folder, name) in [("02-b", "second"), ("01-a", "first")] {
            let dir = parent.0.join(folder);
            assert!(std::fs::create_dir(&dir).is_ok());
            let text = format!("name: {name}\ncluster: []\nsteps: [{{}}]\n");
            assert!(std::fs::write(dir.join(CASE_FILE), text).is_ok());
        }
        let cases =
            load_cases(std::slice::from_ref(&parent.0)).unwrap_or_else(|error| panic!("{error}"));
        let names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        let twice = [parent.0.join("01-a"), parent.0.join("01-a")];
        assert!(matches!(
            load_cases(&twice),
            Err(CaseError::DuplicateName { .. })
        ));
        let empty = parent.0.join("01-a").join("nothing");
        assert!(std::fs::create_dir(&empty).is_ok());
        assert!(matches!(
            load_cases(&[empty]),
            Err(CaseError::NotACase { .. })
        ));
    }

    fn upstream() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/upstream"
        ))
    }

    /// Every shared upstream case loads; every manifest parses and passes the API server's
    /// checks; and replaying the steps on a [`Cluster`] leaves every pod a table names in place.
    #[test]
    fn every_shared_upstream_case_loads_with_valid_manifests_and_consistent_tables() {
        let cases = load_cases(&[upstream()]).unwrap_or_else(|error| panic!("{error}"));
        assert!(cases.len() >= 32, "only {} cases", cases.len());
        let load = |path: &PathBuf| {
            let objects = manifest::load_file(path).unwrap_or_else(|error| panic!("{error}"));
            for object in &objects {
                if let Err(errors) = manifest::validate(object) {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    panic!("{}: {errors:#?}", path.display());
                }
                assert!(
                    !matches!(object, Object::Ignored { .. }),
                    "{}: {object:?}",
                    path.display()
                );
            }
            objects
        };
        for case in &cases {
            let mut cluster = Cluster::default();
            for object in case.cluster.iter().flat_map(load) {
                cluster.apply(object);
            }
            for (i, step) in case.steps.iter().enumerate() {
                let context = format!("{} step {i}", case.name);
                for reference in &step.delete {
                    cluster
                        .delete(reference)
                        .unwrap_or_else(|error| panic!("{context}: {error}"));
                }
                for object in step.apply.iter().flat_map(load) {
                    cluster.apply(object);
                }
                for spec in &step.label {
                    cluster
                        .label(spec)
                        .unwrap_or_else(|error| panic!("{context}: {error}"));
                }
                for probe in &step.probes {
                    for name in probe.expect.rows.iter().chain(&probe.expect.columns) {
                        let Ok(Endpoint::Pod(key)) = name.parse() else {
                            continue;
                        };
                        assert!(cluster.pods.contains_key(&key), "{context}: no pod {key}");
                    }
                }
            }
        }
    }
}
