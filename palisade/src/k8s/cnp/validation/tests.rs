//! One test per rule of upstream's CRD (and its CEL rules): a valid policy with one field made
//! wrong, and the field and problem the error names.

use super::*;

/// A valid Admin policy; `spec` is YAML merged over its spec.
fn policy(spec: &str) -> ClusterNetworkPolicy {
    let mut base: serde_json::Value = serde_yaml_ng::from_str(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cnp-1}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: a}}}
"#,
    )
    .expect("base YAML");
    let overlay: serde_json::Value = serde_yaml_ng::from_str(spec).expect("overlay YAML");
    if let (Some(spec), Some(overlay)) = (base["spec"].as_object_mut(), overlay.as_object()) {
        for (key, value) in overlay {
            if value.is_null() {
                spec.remove(key);
            } else {
                spec.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(base).expect("reads as a ClusterNetworkPolicy")
}

/// The single error `spec` produces, as (field, problem).
fn only_error(spec: &str) -> (String, CnpProblem) {
    let errors = validate(&policy(spec));
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let error = errors.into_iter().next().expect("one error");
    assert_eq!(error.policy, "cnp-1");
    (error.field, error.problem)
}

#[test]
fn a_valid_policy_has_no_errors() {
    let spec = r#"
ingress:
  - {name: a, action: Accept, from: [{namespaces: {}}, {pods: {podSelector: {}}}],
     protocols: [{tcp: {destinationPort: {number: 80}}}, {destinationNamedPort: web}]}
egress:
  - {action: Deny, to: [{networks: [10.0.0.0/8, "fd00::/8"]}, {nodes: {}}],
     protocols: [{udp: {destinationPort: {range: {start: 1, end: 2}}}}]}
  - {action: Pass, to: [{pods: {namespaceSelector: {}, podSelector: {matchExpressions: [{key: a, operator: Exists}]}}}]}
"#;
    assert_eq!(validate(&policy(spec)), vec![]);
}

#[test]
fn the_error_names_the_object_and_the_field() {
    let errors = validate(&policy("priority: 1001"));
    assert_eq!(
        errors[0].to_string(),
        "clusternetworkpolicy cnp-1: spec.priority: priority 1001 is outside 0..=1000"
    );
}

#[test]
fn tier_priority_and_subject_are_required() {
    assert_eq!(
        only_error("tier: null"),
        ("spec.tier".into(), CnpProblem::Required)
    );
    assert_eq!(
        only_error("priority: null"),
        ("spec.priority".into(), CnpProblem::Required)
    );
    assert_eq!(
        only_error("subject: null"),
        ("spec.subject".into(), CnpProblem::Required)
    );
}

#[test]
fn tier_is_admin_or_baseline() {
    assert_eq!(
        only_error("tier: admin"),
        ("spec.tier".into(), CnpProblem::UnknownTier)
    );
    assert!(validate(&policy("tier: Baseline")).is_empty());
}

#[test]
fn priority_is_between_0_and_1000() {
    assert!(validate(&policy("priority: 0")).is_empty());
    assert!(validate(&policy("priority: 1000")).is_empty());
    assert_eq!(
        only_error("priority: -1").1,
        CnpProblem::PriorityOutOfRange { priority: -1 }
    );
}

#[test]
fn subject_sets_exactly_one_of_namespaces_and_pods() {
    let both = "subject: {namespaces: {}, pods: {podSelector: {}}}";
    assert_eq!(
        only_error(both),
        (
            "spec.subject".into(),
            CnpProblem::NotExactlyOne {
                fields: "namespaces, pods",
                found: 2
            }
        )
    );
    assert_eq!(
        only_error("subject: {}").1,
        CnpProblem::NotExactlyOne {
            fields: "namespaces, pods",
            found: 0
        }
    );
}

#[test]
fn pods_require_a_pod_selector() {
    assert_eq!(
        only_error("subject: {pods: {namespaceSelector: {}}}"),
        ("spec.subject.pods.podSelector".into(), CnpProblem::Required)
    );
}

#[test]
fn selectors_are_checked_as_the_api_server_reads_them() {
    let (field, problem) = only_error(
        "subject: {namespaces: {matchExpressions: [{key: a, operator: in, values: [b]}]}}",
    );
    assert_eq!(
        field,
        "spec.subject.namespaces.matchExpressions[0].operator"
    );
    assert!(matches!(
        problem,
        CnpProblem::Selector(FieldProblem::UnknownOperator { .. })
    ));
    let (field, _) =
        only_error("subject: {namespaces: {matchExpressions: [{key: a, operator: In}]}}");
    assert_eq!(field, "spec.subject.namespaces.matchExpressions[0].values");
}

#[test]
fn a_rule_needs_a_known_action() {
    assert_eq!(
        only_error("ingress: [{action: Allow, from: [{namespaces: {}}]}]"),
        ("spec.ingress[0].action".into(), CnpProblem::UnknownAction)
    );
}

#[test]
fn a_rule_name_has_at_most_100_characters() {
    let name = "n".repeat(101);
    let (field, problem) = only_error(&format!(
        "egress: [{{name: {name}, action: Deny, to: [{{namespaces: {{}}}}]}}]"
    ));
    assert_eq!(field, "spec.egress[0].name");
    assert_eq!(problem, CnpProblem::TooLong { len: 101, max: 100 });
}

#[test]
fn rules_peers_and_protocols_have_between_1_and_25_items() {
    assert_eq!(
        only_error("ingress: [{action: Deny, from: []}]"),
        ("spec.ingress[0].from".into(), CnpProblem::TooFewItems)
    );
    assert_eq!(
        only_error("egress: [{action: Deny, to: [{namespaces: {}}], protocols: []}]"),
        ("spec.egress[0].protocols".into(), CnpProblem::TooFewItems)
    );
    let rules = vec!["{action: Deny, from: [{namespaces: {}}]}"; 26].join(", ");
    assert_eq!(
        only_error(&format!("ingress: [{rules}]")),
        ("spec.ingress".into(), CnpProblem::TooManyItems { len: 26 })
    );
}

#[test]
fn a_peer_sets_exactly_one_field() {
    assert_eq!(
        only_error("ingress: [{action: Deny, from: [{}]}]").1,
        CnpProblem::NotExactlyOne {
            fields: "namespaces, pods",
            found: 0
        }
    );
    assert_eq!(
        only_error("egress: [{action: Deny, to: [{namespaces: {}, networks: [10.0.0.0/8]}]}]").0,
        "spec.egress[0].to[0]"
    );
}

#[test]
fn networks_are_cidrs_each_once() {
    assert_eq!(
        only_error("egress: [{action: Deny, to: [{networks: [10.0.0.0/33]}]}]"),
        (
            "spec.egress[0].to[0].networks[0]".into(),
            CnpProblem::InvalidCidr {
                cidr: "10.0.0.0/33".into()
            }
        )
    );
    assert_eq!(
        only_error("egress: [{action: Deny, to: [{networks: [10.0.0.1]}]}]").0,
        "spec.egress[0].to[0].networks[0]"
    );
    assert_eq!(
        only_error("egress: [{action: Deny, to: [{networks: [10.0.0.0/8, 10.0.0.0/8]}]}]"),
        (
            "spec.egress[0].to[0].networks[1]".into(),
            CnpProblem::Duplicate {
                value: "10.0.0.0/8".into()
            }
        )
    );
}

#[test]
fn domain_names_are_refused_naming_the_object_and_field() {
    let errors = validate(&policy(
        "egress: [{action: Accept, to: [{domainNames: [example.com]}]}]",
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "spec.egress[0].to[0].domainNames");
    assert_eq!(errors[0].problem, CnpProblem::DomainNamesUnsupported);
    assert!(
        errors[0].to_string().starts_with(
            "clusternetworkpolicy cnp-1: spec.egress[0].to[0].domainNames: domainNames"
        )
    );
}

#[test]
fn a_protocol_sets_exactly_one_field() {
    let two = "ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 1}}, destinationNamedPort: web}]}]";
    assert_eq!(only_error(two).0, "spec.ingress[0].protocols[0]");
}

#[test]
fn a_protocol_port_is_a_number_or_a_range() {
    let empty = "ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {}}]}]";
    assert_eq!(only_error(empty).0, "spec.ingress[0].protocols[0].tcp");
    let neither = "ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{udp: {destinationPort: {}}}]}]";
    assert_eq!(
        only_error(neither),
        (
            "spec.ingress[0].protocols[0].udp.destinationPort".into(),
            CnpProblem::NotExactlyOne {
                fields: "number, range",
                found: 0
            }
        )
    );
}

#[test]
fn port_numbers_are_between_1_and_65535() {
    let zero = "ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{sctp: {destinationPort: {number: 0}}}]}]";
    assert_eq!(
        only_error(zero),
        (
            "spec.ingress[0].protocols[0].sctp.destinationPort.number".into(),
            CnpProblem::PortOutOfRange { port: 0 }
        )
    );
}

#[test]
fn a_range_starts_below_its_end() {
    let equal = "egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 80}}}}]}]";
    assert_eq!(
        only_error(equal),
        (
            "spec.egress[0].protocols[0].tcp.destinationPort.range".into(),
            CnpProblem::RangeNotAscending { start: 80, end: 80 }
        )
    );
}

#[test]
fn a_named_port_never_goes_with_networks_or_nodes() {
    let rule =
        "egress: [{action: Accept, to: [{nodes: {}}], protocols: [{destinationNamedPort: web}]}]";
    assert_eq!(
        only_error(rule),
        (
            "spec.egress[0]".into(),
            CnpProblem::NamedPortWithAddressPeer
        )
    );
}

#[test]
fn a_cidr_is_read_with_host_bits_cleared_and_ipv4_mapped_blocks_as_ipv4() {
    assert_eq!(parse_cidr("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
    assert_eq!(parse_cidr("::ffff:10.0.0.0/104"), "10.0.0.0/8".parse().ok());
    assert_eq!(parse_cidr("fd00::1/8"), "fd00::/8".parse().ok());
    assert_eq!(parse_cidr("10.0.0.0"), None);
}
