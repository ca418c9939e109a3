//! The CRD these types generate against the one users install (upstream's standard channel,
//! bundle v0.2.0, in `shared/conformance/cnp/crd/`), and reading manifests into the types.
//!
//! Compared: group, names, scope, the version and its printer columns and subresources, and the
//! whole `spec` and `status` schemas (types, properties, required fields, enums, minimum and
//! maximum, lengths, item counts, property counts, list and map types, CEL rules), all but the
//! descriptions. Differences that kube's derive makes at the root and that we cannot avoid:
//! - the root schema lists only `spec` as required (upstream: `metadata` and `spec`), has a
//!   `title`, and leaves out `apiVersion`, `kind` and `metadata` (the API server validates
//!   those itself);
//! - `status` is `nullable` (an `Option` at the root);
//! - `names.listKind` is left for the API server to default (to the same
//!   `ClusterNetworkPolicyList`), and the bundle annotations are not set.
//!
//! `nodes` and `domainNames` (experimental channel) are left out of the schema, as the standard
//! channel has them; the types still read them (see the module docs).

use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn upstream_crd() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../../shared/conformance/cnp/crd/policy.networking.k8s.io_clusternetworkpolicies.yaml",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the shared conformance folder)", path.display()));
    serde_yaml_ng::from_str(&text).expect("upstream CRD is YAML")
}

fn ours() -> Value {
    serde_json::to_value(super::crd()).expect("CRD serializes")
}

fn without_descriptions(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| *k != "description")
                .map(|(k, v)| (k.clone(), without_descriptions(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_descriptions).collect()),
        other => other.clone(),
    }
}

/// Every path where the two differ, so that a failure says where.
fn differences(upstream: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    match (upstream, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let at = format!("{path}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(x, y, &at, out),
                    (Some(x), None) => out.push(format!("{at}: only upstream has {x}")),
                    (None, Some(y)) => out.push(format!("{at}: only ours has {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{path}[{i}]"), out);
            }
        }
        // The CRD type keeps `minimum`/`maximum` as floats: 0 and 0.0 are the same bound.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a != b => out.push(format!("{path}: upstream {a}, ours {b}")),
        _ => {}
    }
}

fn assert_same(upstream: &Value, ours: &Value, what: &str) {
    let mut found = Vec::new();
    differences(
        &without_descriptions(upstream),
        &without_descriptions(ours),
        what,
        &mut found,
    );
    assert!(found.is_empty(), "{what} differs:\n{}", found.join("\n"));
}

#[test]
fn the_crd_has_upstreams_group_names_scope_and_version() {
    let (up, ours) = (upstream_crd(), ours());
    assert_eq!(up["metadata"]["name"], ours["metadata"]["name"]);
    assert_eq!(
        up["metadata"]["annotations"],
        ours["metadata"]["annotations"]
    );
    for field in ["group", "scope"] {
        assert_eq!(up["spec"][field], ours["spec"][field], "spec.{field}");
    }
    for field in ["kind", "plural", "singular", "shortNames"] {
        assert_eq!(
            up["spec"]["names"][field], ours["spec"]["names"][field],
            "spec.names.{field}"
        );
    }
    let (up_version, our_version) = (&up["spec"]["versions"][0], &ours["spec"]["versions"][0]);
    assert_eq!(ours["spec"]["versions"].as_array().map(Vec::len), Some(1));
    for field in [
        "name",
        "served",
        "storage",
        "subresources",
        "additionalPrinterColumns",
    ] {
        assert_eq!(up_version[field], our_version[field], "versions[0].{field}");
    }
}

#[test]
fn the_spec_schema_is_upstreams() {
    let schema = |crd: &Value| crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let (up, ours) = (schema(&upstream_crd()), schema(&ours()));
    assert_same(
        &up["properties"]["spec"],
        &ours["properties"]["spec"],
        "spec",
    );
}

#[test]
fn the_status_schema_is_upstreams_but_nullable() {
    let schema = |crd: &Value| crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let (up, ours) = (schema(&upstream_crd()), schema(&ours()));
    let mut status = ours["properties"]["status"].clone();
    assert_eq!(status["nullable"], Value::Bool(true));
    status.as_object_mut().map(|s| s.remove("nullable"));
    assert_same(&up["properties"]["status"], &status, "status");
}

#[test]
fn a_manifest_reads_into_the_types() {
    let policy: ClusterNetworkPolicy = serde_yaml_ng::from_str(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: p}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {a: b}}}
  egress:
    - name: r
      action: Pass
      to: [{networks: [10.0.0.0/8]}, {nodes: {}}]
      protocols: [{tcp: {destinationPort: {range: {start: 1, end: 2}}}}, {destinationNamedPort: web}]
"#,
    )
    .expect("reads");
    assert_eq!(policy.spec.tier, Some(Tier::Admin));
    assert_eq!(policy.spec.priority, Some(5));
    let rule = &policy.spec.egress[0];
    assert_eq!(rule.action, Action::Pass);
    assert_eq!(
        rule.to[0].networks.as_deref(),
        Some(&["10.0.0.0/8".to_owned()][..])
    );
    assert!(rule.to[1].nodes.is_some());
    let protocols = rule.protocols.as_deref().unwrap_or_default();
    assert_eq!(
        protocols[0]
            .tcp
            .as_ref()
            .and_then(|t| t.destination_port.as_ref()),
        Some(&Port {
            number: None,
            range: Some(PortRange { start: 1, end: 2 })
        })
    );
    assert_eq!(protocols[1].destination_named_port.as_deref(), Some("web"));
}

#[test]
fn an_unknown_tier_or_action_still_reads_so_that_validation_can_name_it() {
    let policy: ClusterNetworkPolicy = serde_yaml_ng::from_str(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: p}
spec:
  tier: Platform
  priority: 5
  subject: {namespaces: {}}
  ingress: [{action: Allow, from: [{namespaces: {}}]}]
"#,
    )
    .expect("reads");
    assert_eq!(policy.spec.tier, Some(Tier::Unknown));
    assert_eq!(policy.spec.ingress[0].action, Action::Unknown);
}
