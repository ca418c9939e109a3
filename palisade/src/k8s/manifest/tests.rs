//! Reading manifests (documents, lists, error positions) and the API server's checks.

use super::*;

fn parse(text: &str) -> Vec<Object> {
    match parse_str(text, "test.yaml") {
        Ok(objects) => objects,
        Err(error) => panic!("{error}"),
    }
}

fn parse_error(text: &str) -> String {
    match parse_str(text, "test.yaml") {
        Ok(objects) => panic!("expected an error, got {objects:?}"),
        Err(error) => error.to_string(),
    }
}

const POD_AND_POLICY: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: a
  labels: {pod: a}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
---
";

#[test]
fn documents_are_read_in_order_and_a_trailing_separator_is_harmless() {
    let objects = parse(POD_AND_POLICY);
    assert_eq!(objects.len(), 2);
    assert!(matches!(&objects[0], Object::Pod(pod) if pod.metadata.name.as_deref() == Some("a")));
    assert!(matches!(&objects[1], Object::NetworkPolicy(_)));
}

#[test]
fn pods_and_policies_without_a_namespace_land_in_default() {
    let objects = parse(POD_AND_POLICY);
    let Object::Pod(pod) = &objects[0] else {
        panic!("not a pod: {objects:?}")
    };
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    let Object::NetworkPolicy(policy) = &objects[1] else {
        panic!("{objects:?}")
    };
    assert_eq!(policy.metadata.namespace.as_deref(), Some("x"));
}

#[test]
fn unquoted_y_namespace_stays_a_string() {
    // YAML 1.1 (and kubectl) would read a bare `y` as `true`; serde_yaml_ng reads YAML 1.2,
    // where it is the string "y". The shared cases quote it anyway.
    let objects = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: y}\n");
    let Object::Pod(pod) = &objects[0] else {
        panic!("{objects:?}")
    };
    assert_eq!(pod.metadata.namespace.as_deref(), Some("y"));
    let objects = parse("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: y\n");
    let Object::Namespace(namespace) = &objects[0] else {
        panic!("{objects:?}")
    };
    assert_eq!(namespace.metadata.name.as_deref(), Some("y"));
}

#[test]
fn a_list_yields_its_items() {
    let objects = parse(
        "apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n\
             - {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}}\n",
    );
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0].kind(), "Namespace");
    assert_eq!(objects[1].kind(), "Pod");
}

#[test]
fn services_and_other_kinds_are_ignored_by_name() {
    let objects = parse("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n");
    assert_eq!(
        objects,
        [Object::Ignored {
            kind: "Service".into(),
            name: "x/s".into()
        }]
    );
}

#[test]
fn malformed_field_error_names_file_document_object_and_field() {
    let error = parse_error(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  containers:\n\
             \x20 - name: c\n    ports:\n    - containerPort: eighty\n",
    );
    assert!(
        error.starts_with("test.yaml: document 2: Pod x/a: "),
        "{error}"
    );
    assert!(
        error.contains("spec.containers[0].ports[0].containerPort"),
        "{error}"
    );
    assert!(error.contains("at line 12"), "{error}");
}

#[test]
fn malformed_list_item_names_the_item_and_field_without_a_misleading_line() {
    let error = parse_error(
        "apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: 3}}\n",
    );
    assert!(
        error.starts_with("test.yaml: document 1 items[0]: Pod a: "),
        "{error}"
    );
    assert!(error.contains("spec.containers: invalid type"), "{error}");
    assert!(!error.contains(" at line "), "{error}");
}

#[test]
fn syntax_error_names_the_document_and_stops() {
    let error = parse_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\na: [\n");
    assert!(
        error.starts_with("test.yaml: document 2: invalid YAML"),
        "{error}"
    );
}

#[test]
fn old_network_policy_api_version_is_an_error_not_ignored() {
    let error = parse_error(
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n",
    );
    assert!(
        error.contains("NetworkPolicy x/p: apiVersion \"extensions/v1beta1\""),
        "{error}"
    );
}

#[test]
fn object_without_a_name_or_kind_is_an_error() {
    let error = parse_error("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n");
    assert_eq!(error, "test.yaml: document 1: Pod has no metadata.name");
    let error = parse_error("apiVersion: v1\nmetadata: {name: a}\n");
    assert!(error.contains("not a Kubernetes object"), "{error}");
}

#[test]
fn missing_file_error_names_the_path() {
    let Err(error) = load_file("/nonexistent/palisade/x.yaml") else {
        panic!("read it")
    };
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/palisade/x.yaml: cannot read")
    );
}

fn policy(spec: &str) -> NetworkPolicy {
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: allow-b, namespace: x}}\nspec:\n{spec}"
    );
    match parse(&text).pop() {
        Some(Object::NetworkPolicy(policy)) => policy,
        other => panic!("not a policy: {other:?}"),
    }
}

/// The messages of every problem `validate_policy` finds in `spec`.
fn policy_problems(spec: &str) -> Vec<String> {
    match validate_policy(&policy(spec)) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_valid_policy_passes() {
    let spec = "  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}
    ports: [{port: 80, endPort: 90}, {port: serve-81-tcp, protocol: UDP}, {protocol: SCTP}]
  egress:
  - to: [{ipBlock: {cidr: 'fd00::/64', except: ['fd00::1/128']}}]
";
    assert_eq!(policy_problems(spec), Vec::<String>::new());
}

#[test]
fn invalid_cidr_names_policy_and_field() {
    let spec = "  ingress:\n  - from:\n    - podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/33}\n";
    assert_eq!(
        policy_problems(spec),
        [
            "NetworkPolicy x/allow-b: spec.ingress[0].from[1].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\""
        ]
    );
    let spec = "  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.1}\n";
    assert_eq!(policy_problems(spec).len(), 1, "an address is not a CIDR");
}

#[test]
fn except_must_be_a_strict_subset_of_the_same_family() {
    let spec = "  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n        \
                    except: [10.0.0.0/16, 10.1.0.0/24, 'fd00::/64', 10.0.0.0/8, 10.0.5.0/24, bad]\n";
    let problems = policy_problems(spec);
    let field = "NetworkPolicy x/allow-b: spec.egress[0].to[0].ipBlock.except";
    assert_eq!(
        problems,
        [
            format!("{field}[0]: 10.0.0.0/16 is not a strict subset of cidr 10.0.0.0/16"),
            format!("{field}[1]: 10.1.0.0/24 is not a strict subset of cidr 10.0.0.0/16"),
            format!("{field}[2]: fd00::/64 is not in the address family of cidr 10.0.0.0/16"),
            format!("{field}[3]: 10.0.0.0/8 is not a strict subset of cidr 10.0.0.0/16"),
            format!("{field}[5]: invalid CIDR \"bad\""),
        ]
    );
}

#[test]
fn end_port_needs_a_numeric_port_at_or_below_it() {
    let spec = "  ingress:\n  - ports:\n    - {endPort: 90}\n    - {port: http, endPort: 90}\n    \
                    - {port: 90, endPort: 80}\n    - {port: 80, endPort: 80}\n";
    let field = "NetworkPolicy x/allow-b: spec.ingress[0].ports";
    assert_eq!(
        policy_problems(spec),
        [
            format!("{field}[0].endPort: endPort needs a port"),
            format!("{field}[1].endPort: endPort cannot be used with the named port \"http\""),
            format!("{field}[2].endPort: endPort 80 is below port 90"),
        ]
    );
}

#[test]
fn port_numbers_names_and_protocols_are_checked() {
    let spec = "  egress:\n  - ports:\n    - {port: 0}\n    - {port: 65536}\n    \
                    - {port: 80, endPort: 70000}\n    - {port: '80'}\n    - {port: 53, protocol: ICMP}\n    \
                    - {port: 53, protocol: udp}\n";
    let problems = policy_problems(spec);
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert!(problems[0].ends_with("ports[0].port: port 0 is outside 1..=65535"));
    assert!(problems[1].ends_with("ports[1].port: port 65536 is outside 1..=65535"));
    assert!(problems[2].ends_with("ports[2].endPort: port 70000 is outside 1..=65535"));
    assert!(
        problems[3].contains("ports[3].port: invalid port name \"80\""),
        "a quoted number is a name"
    );
    assert!(
        problems[4].ends_with(
            "ports[4].protocol: unsupported protocol \"ICMP\" (expected TCP, UDP or SCTP)"
        )
    );
    assert!(
        problems[5].contains("ports[5].protocol"),
        "protocols are case-sensitive"
    );
}

#[test]
fn selector_operators_and_their_values_are_checked() {
    let spec = "  podSelector:\n    matchExpressions:\n    - {key: a, operator: In}\n    \
                    - {key: a, operator: NotIn, values: []}\n    - {key: a, operator: Exists, values: [x]}\n    \
                    - {key: a, operator: DoesNotExist}\n    - {key: a, operator: Equals, values: [x]}\n";
    let field = "NetworkPolicy x/allow-b: spec.podSelector.matchExpressions";
    assert_eq!(
        policy_problems(spec),
        [
            format!("{field}[0].values: operator In needs at least one value"),
            format!("{field}[1].values: operator NotIn needs at least one value"),
            format!("{field}[2].values: operator Exists takes no values"),
            format!(
                "{field}[4].operator: unknown operator \"Equals\" (expected In, NotIn, Exists or DoesNotExist)"
            ),
        ]
    );
}

#[test]
fn peer_selectors_are_checked_too() {
    let spec = "  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In}]}\n";
    let problems = policy_problems(spec);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .contains("spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values")
    );
}

#[test]
fn ip_block_with_a_selector_and_an_empty_peer_are_invalid() {
    let spec = "  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n    - {}\n";
    let field = "NetworkPolicy x/allow-b: spec.ingress[0].from";
    let problems = policy_problems(spec);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(
        problems[0],
        format!(
            "{field}[0]: ipBlock cannot be combined with podSelector or namespaceSelector in one peer"
        )
    );
    assert!(
        problems[1].starts_with(&format!("{field}[1]: empty peer")),
        "{}",
        problems[1]
    );
}

#[test]
fn unknown_policy_types_and_label_keys_are_invalid() {
    let spec =
        "  podSelector: {matchLabels: {'bad key': x, ok: '-bad'}}\n  policyTypes: [ingress]\n";
    let problems = policy_problems(spec);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("spec.policyTypes[0]: unknown policy type \"ingress\""))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("spec.podSelector.matchLabels: invalid label key \"bad key\""))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("spec.podSelector.matchLabels.ok: invalid label value \"-bad\""))
    );
}

#[test]
fn label_keys_and_values_follow_the_api_rules() {
    assert!(valid_label_key("kubernetes.io/metadata.name"));
    assert!(valid_label_key("app.kubernetes.io/name"));
    assert!(valid_label_key("Pod_Name-2"));
    assert!(!valid_label_key(""));
    assert!(!valid_label_key("/name"));
    assert!(!valid_label_key("Upper.io/name"));
    assert!(!valid_label_key(&"k".repeat(64)));
    assert!(valid_label_value(""));
    assert!(valid_label_value("y"));
    assert!(!valid_label_value("a b"));
    assert!(!valid_label_value("trailing-"));
}

#[test]
fn pods_with_bad_ports_or_addresses_are_invalid() {
    let objects = parse(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  containers:\n  \
             - name: c\n    ports:\n    - {containerPort: 0}\n    - {containerPort: 80, protocol: ICMP, name: Serve}\n\
             status:\n  podIP: 10.0.0.300\n  podIPs: [{ip: 'fd00::1'}, {ip: nope}]\n",
    );
    let Err(errors) = validate(&objects[0]) else {
        panic!("accepted")
    };
    let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert_eq!(
        problems[0],
        "Pod x/a: spec.containers[0].ports[0].containerPort: port 0 is outside 1..=65535"
    );
    assert!(problems[1].starts_with("Pod x/a: spec.containers[0].ports[1].protocol: unsupported"));
    assert!(
        problems[2]
            .starts_with("Pod x/a: spec.containers[0].ports[1].name: invalid port name \"Serve\"")
    );
    assert_eq!(
        problems[3],
        "Pod x/a: status.podIP: invalid IP address \"10.0.0.300\""
    );
    assert_eq!(
        problems[4],
        "Pod x/a: status.podIPs[1].ip: invalid IP address \"nope\""
    );
}
