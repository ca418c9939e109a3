//! Naming events: class bits to rules, isolated pods to their policies, addresses to pods; the
//! filters of `palisade flows`; the readable line.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use palisade_common::{
    Addr, AllowReason, DIR_EGRESS, DIR_INGRESS, DropReason, FLOW_ALLOWED, FLOW_AUDIT, FLOW_DENIED,
    FlowEvent, NO_CLASS, PROTO_TCP,
};

use super::{Attribution, FlowFilter, FlowVerdict};
use crate::{
    k8s::cluster::{ObjectKey, POLICY_MODE_ANNOTATION, namespace_audited},
    k8s::fixtures::{apply_yaml, cluster, namespace, pod},
    policy::{Compiler, NodeView},
};

/// y/b takes port 80 from 192.0.2.0/24 and from namespace x, and 443 from any namespace.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{ipBlock: {cidr: 192.0.2.0/24}}]
    ports: [{port: 80}]
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}]
    ports: [{port: 80}]
  - from: [{namespaceSelector: {}}]
    ports: [{port: 443}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: y}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#;

fn attribution() -> Attribution {
    let mut cluster = cluster([
        namespace("x")
            .annotation(POLICY_MODE_ANNOTATION, "audit")
            .into(),
        namespace("y").into(),
        pod("x", "a")
            .label("pod", "a")
            .on("node-1")
            .ip("10.244.1.1")
            .into(),
        pod("y", "b")
            .label("pod", "b")
            .on("node-1")
            .ip("10.244.1.2")
            .into(),
    ]);
    apply_yaml(&mut cluster, POLICIES);
    let state = Compiler::new().compile(
        &cluster,
        &NodeView {
            name: "node-1",
            addrs: &[],
        },
    );
    let ifindex = BTreeMap::from([
        (ObjectKey::new("x", "a"), 11),
        (ObjectKey::new("y", "b"), 12),
    ]);
    Attribution::new("node-1", &[], cluster.into(), &state.endpoints, &ifindex)
}

fn event(src: [u8; 4], dst: [u8; 4], ifindex: u32, direction: u8) -> FlowEvent {
    FlowEvent {
        saddr: Addr::from_v4(src),
        daddr: Addr::from_v4(dst),
        sport: 40_000,
        dport: 80,
        ifindex,
        protocol: PROTO_TCP,
        direction,
        ..bytemuck::Zeroable::zeroed()
    }
}

#[test]
fn an_allowed_event_names_the_rule_of_its_class_even_when_the_class_holds_several() {
    let names = attribution();
    let mut e = event([10, 244, 1, 1], [10, 244, 1, 2], 12, DIR_INGRESS);
    e.verdict = FLOW_ALLOWED;
    e.reason = AllowReason::Policy as u8;
    // Rules 0 and 1 share the port set {80}: one class; the evaluator picks rule 1 for x/a.
    let local = &names.local[&12];
    let class = local.classes[usize::from(DIR_INGRESS)]
        .iter()
        .position(|c| c.rules.len() == 2)
        .expect("rules 0 and 1 share a class");
    e.class = u8::try_from(class).unwrap();
    let record = names.record(&e, Duration::ZERO);
    assert_eq!(record.verdict, FlowVerdict::Allowed);
    assert_eq!(record.allowed_by, ["y/web ingress[1]"]);
    assert_eq!(record.src.pod.as_deref(), Some("x/a"));
    assert_eq!(record.dst.pod.as_deref(), Some("y/b"));
    assert_eq!(record.pod.as_deref(), Some("y/b"));
    assert_eq!(record.policies(), ["y/web"]);
    let line = record.to_string();
    assert!(
        line.contains("ALLOWED ingress x/a (10.244.1.1:40000) -> y/b (10.244.1.2:80) TCP: allowed by y/web ingress[1]"),
        "{line}"
    );
}

/// An Admin tier Deny of everything from namespace x at y/b, on top of [`POLICIES`].
const ADMIN_DENY: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 3
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}
  ingress:
  - {name: no-x, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: x}}}]}
"#;

#[test]
fn a_cluster_network_policy_deny_names_its_policy_rule_tier_and_action() {
    let mut c = cluster([
        namespace("x").into(),
        namespace("y").into(),
        pod("x", "a")
            .label("pod", "a")
            .on("node-1")
            .ip("10.244.1.1")
            .into(),
        pod("y", "b")
            .label("pod", "b")
            .on("node-1")
            .ip("10.244.1.2")
            .into(),
    ]);
    apply_yaml(&mut c, POLICIES);
    apply_yaml(&mut c, ADMIN_DENY);
    let state = Compiler::new().compile(
        &c,
        &NodeView {
            name: "node-1",
            addrs: &[],
        },
    );
    let ep = &state.endpoints[&ObjectKey::new("y", "b")];
    // The Admin rule is the lowest class, and the only tier class.
    assert_eq!(ep.tiers.admin[usize::from(DIR_INGRESS)], 1);
    assert_eq!(ep.tiers.deny[usize::from(DIR_INGRESS)], 1);
    let ifindex = BTreeMap::from([(ObjectKey::new("y", "b"), 12)]);
    let names = Attribution::new("node-1", &[], c.into(), &state.endpoints, &ifindex);
    let mut e = event([10, 244, 1, 1], [10, 244, 1, 2], 12, DIR_INGRESS);
    e.verdict = FLOW_DENIED;
    e.reason = DropReason::TierIngress as u8;
    e.class = 0;
    let record = names.record(&e, Duration::ZERO);
    assert_eq!(record.reason, "cluster-policy-ingress");
    assert_eq!(
        record.isolated_by,
        ["clusternetworkpolicy/guard ingress[0] (Admin Deny)"]
    );
    assert_eq!(record.policies(), ["clusternetworkpolicy/guard"]);
    let line = record.to_string();
    assert!(
        line.contains("denied at y/b by clusternetworkpolicy/guard ingress[0] (Admin Deny)"),
        "{line}"
    );
}

#[test]
fn a_denied_event_names_every_policy_isolating_the_pod() {
    let names = attribution();
    let mut e = event([198, 51, 100, 7], [10, 244, 1, 2], 12, DIR_INGRESS);
    e.verdict = FLOW_DENIED;
    e.reason = DropReason::PolicyIngress as u8;
    e.class = NO_CLASS;
    let record = names.record(&e, Duration::ZERO);
    assert_eq!(record.verdict, FlowVerdict::Denied);
    assert_eq!(record.reason, "policy-ingress");
    assert_eq!(record.isolated_by, ["y/deny", "y/web"]);
    assert_eq!(record.src.pod, None);
    assert!(record.allowed_by.is_empty());
    let line = record.to_string();
    assert!(
        line.contains("y/b isolated by y/deny, y/web and no rule admits it"),
        "{line}"
    );
}

#[test]
fn a_drop_that_is_not_policy_blames_no_policy_and_an_unknown_verdict_reads_as_denied() {
    let names = attribution();
    let mut e = event([10, 244, 1, 2], [10, 244, 1, 1], 12, DIR_EGRESS);
    e.verdict = 7;
    e.reason = DropReason::SpoofedSource as u8;
    let record = names.record(&e, Duration::ZERO);
    assert_eq!(record.verdict, FlowVerdict::Denied);
    assert_eq!(record.reason, "spoofed-source");
    assert!(record.isolated_by.is_empty() && record.allowed_by.is_empty());
    // An interface the agent has no pod for.
    let mut e = event([10, 244, 9, 9], [10, 244, 1, 1], 99, DIR_EGRESS);
    e.verdict = FLOW_DENIED;
    e.reason = DropReason::NoEndpoint as u8;
    let record = names.record(&e, Duration::ZERO);
    assert_eq!(record.pod, None);
    assert!(record.to_string().contains("no-endpoint at unknown pod"));
}

#[test]
fn audit_comes_from_the_namespace_annotation_and_is_reported_as_audit() {
    let names = attribution();
    assert!(namespace_audited(&names.cluster, "x"));
    assert!(!namespace_audited(&names.cluster, "y"));
    let mut e = event([10, 244, 1, 1], [192, 0, 2, 1], 11, DIR_EGRESS);
    e.verdict = FLOW_AUDIT;
    e.reason = DropReason::PolicyEgress as u8;
    let record = names.record(&e, Duration::ZERO);
    assert_eq!(record.verdict, FlowVerdict::Audit);
    // x/a has no egress policy: nothing to blame, but the verdict stays audit.
    assert!(record.isolated_by.is_empty());
}

#[test]
fn filters_match_either_end_and_combine() {
    let names = attribution();
    let mut e = event([10, 244, 1, 1], [10, 244, 1, 2], 12, DIR_INGRESS);
    e.verdict = FLOW_DENIED;
    e.reason = DropReason::PolicyIngress as u8;
    let record = names.record(&e, Duration::ZERO);
    let filter = |namespace: Option<&str>, pod: Option<&str>, verdict, port| FlowFilter {
        namespace: namespace.map(Into::into),
        pod: pod.map(Into::into),
        verdict,
        port,
    };
    assert!(FlowFilter::default().matches(&record));
    assert!(filter(Some("x"), None, None, None).matches(&record));
    assert!(filter(Some("y"), None, None, None).matches(&record));
    assert!(!filter(Some("z"), None, None, None).matches(&record));
    assert!(filter(None, Some("a"), None, None).matches(&record));
    assert!(filter(None, Some("y/b"), None, None).matches(&record));
    assert!(!filter(None, Some("y/a"), None, None).matches(&record));
    assert!(filter(None, None, Some(FlowVerdict::Denied), Some(80)).matches(&record));
    assert!(!filter(None, None, Some(FlowVerdict::Allowed), None).matches(&record));
    assert!(!filter(Some("x"), None, None, Some(81)).matches(&record));
    let ip: IpAddr = "10.244.1.1".parse().unwrap();
    assert_eq!(record.src.ip, ip);
}

#[test]
fn records_survive_a_json_round_trip_as_palisade_flows_reads_them() {
    let names = attribution();
    let mut e = event([10, 244, 1, 1], [10, 244, 1, 2], 12, DIR_INGRESS);
    e.verdict = FLOW_DENIED;
    e.reason = DropReason::PolicyIngress as u8;
    e.suppressed = 3;
    let record = names.record(&e, Duration::ZERO);
    let json = serde_json::to_string(&record).unwrap();
    assert!(json.contains("\"verdict\":\"denied\""), "{json}");
    assert_eq!(
        serde_json::from_str::<super::FlowRecord>(&json).unwrap(),
        record
    );
    assert!(
        record
            .to_string()
            .ends_with("[3 earlier events suppressed]")
    );
}
