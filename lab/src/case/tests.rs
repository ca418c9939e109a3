//! Loading cases: the format's example, each error with its field, folders of cases, and every
//! shared upstream case replayed on a snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::table::Endpoint;
use palisade::{
    k8s::cluster::Cluster,
    k8s::manifest::{self, Object},
};

/// A case folder under the system temp dir, removed when dropped.
struct TempCase(PathBuf);

impl TempCase {
    fn new(case_yaml: &str, files: &[&str]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("palisade-case-{}-{n}", std::process::id()));
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
        let text =
            format!("name: n\ncluster: []\nexternals: [{{name: e, ip: '{ip}'}}]\nsteps: [{{}}]\n");
        let error = TempCase::new(&text, &[]).error();
        assert!(
            error.starts_with(&format!(
                "externals[0].ip: {ip} is outside the TEST-NET blocks"
            )),
            "{error}"
        );
    }
    for ip in ["198.51.100.7", "203.0.113.200", "2001:db8::5"] {
        let text =
            format!("name: n\ncluster: []\nexternals: [{{name: e, ip: '{ip}'}}]\nsteps: [{{}}]\n");
        assert!(TempCase::new(&text, &[]).load().is_ok(), "{ip}");
    }
}

#[test]
fn externals_need_unique_valid_names_and_addresses() {
    let case =
        |externals: &str| format!("name: n\ncluster: []\nexternals: {externals}\nsteps: [{{}}]\n");
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
        error.starts_with("steps[0].probes[0].expect: via: service cannot be used with world/e"),
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
        load_cases(std::slice::from_ref(&empty)),
        Err(CaseError::NotACase { .. })
    ));
    // A shell glob over a folder of cases also names its README and other folders: among
    // several paths those are skipped, as long as some case is found.
    let readme = parent.0.join("README.md");
    assert!(std::fs::write(&readme, "cases").is_ok());
    let glob = [parent.0.join("01-a"), readme.clone(), empty.clone()];
    let cases = load_cases(&glob).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(cases.len(), 1);
    assert!(matches!(
        load_cases(&[readme, empty]),
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
    replay_shared_cases(&upstream(), 32);
}

/// The same for the ClusterNetworkPolicy cases: their `ClusterNetworkPolicy` manifests read
/// and pass upstream's CRD checks (CEL rules included), and `delete: [clusternetworkpolicy/..]`
/// steps name policies that exist.
#[test]
fn every_shared_cnp_case_loads_with_valid_manifests_and_consistent_tables() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/cnp"
    ));
    replay_shared_cases(&dir, 16);
}

fn replay_shared_cases(dir: &std::path::Path, at_least: usize) {
    let cases = load_cases(&[dir.to_owned()]).unwrap_or_else(|error| panic!("{error}"));
    assert!(cases.len() >= at_least, "only {} cases", cases.len());
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
