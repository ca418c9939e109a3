//! Reading a ClusterNetworkPolicy: its rank, its rules as written, and how an invalid one
//! fails closed.

use super::*;

fn read(yaml: &str) -> ClusterPolicy {
    let policy: ClusterNetworkPolicy = serde_yaml_ng::from_str(yaml).expect("reads");
    ClusterPolicy::from_api(&policy)
}

fn with_spec(name: &str, spec: &str) -> ClusterPolicy {
    read(&format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: {name}}}\nspec: {spec}\n"
    ))
}

#[test]
fn a_valid_policy_keeps_its_rules_in_written_order() {
    let p = with_spec(
        "p",
        "{tier: Baseline, priority: 3, subject: {namespaces: {}}, ingress: [\
         {name: one, action: Pass, from: [{namespaces: {}}]}, \
         {action: Deny, from: [{pods: {podSelector: {}}}], protocols: [{tcp: {destinationPort: {number: 80}}}, {destinationNamedPort: web}]}]}",
    );
    assert!(p.errors.is_empty());
    assert_eq!(p.rank(), (Tier::Baseline, 3, "p"));
    assert_eq!(p.ingress.len(), 2);
    assert_eq!(
        (p.ingress[0].index, p.ingress[0].action),
        (Some(0), Action::Pass)
    );
    assert_eq!(
        p.ingress[1].ports,
        vec![
            TierPort::Numeric(PortRange {
                protocol: palisade_common::PROTO_TCP,
                first: 80,
                last: 80
            }),
            TierPort::Named("web".into())
        ]
    );
    assert!(p.egress.is_empty());
}

#[test]
fn policies_rank_by_tier_then_priority_then_name() {
    let a = with_spec("b", "{tier: Admin, priority: 9, subject: {namespaces: {}}}");
    let b = with_spec("a", "{tier: Admin, priority: 9, subject: {namespaces: {}}}");
    let c = with_spec(
        "a",
        "{tier: Baseline, priority: 0, subject: {namespaces: {}}}",
    );
    let d = with_spec("z", "{tier: Admin, priority: 1, subject: {namespaces: {}}}");
    let mut all = [&a, &b, &c, &d];
    all.sort_by(|x, y| x.rank().cmp(&y.rank()));
    let names: Vec<(Tier, &str)> = all.iter().map(|p| (p.tier, p.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (Tier::Admin, "z"),
            (Tier::Admin, "a"),
            (Tier::Admin, "b"),
            (Tier::Baseline, "a")
        ]
    );
    let policies = [a.clone(), b.clone(), c.clone(), d.clone()];
    assert_eq!(same_rank_conflicts(&policies), vec![("b", "a")]);
}

#[test]
fn an_error_in_one_direction_denies_all_in_that_direction_only() {
    let p = with_spec(
        "p",
        "{tier: Admin, priority: 1, subject: {namespaces: {}}, \
         ingress: [{action: Accept, from: [{namespaces: {}}], protocols: [{udp: {destinationPort: {number: 0}}}]}], \
         egress: [{action: Accept, to: [{networks: [10.0.0.0/8]}]}]}",
    );
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.ingress, vec![TierRule::deny_all()]);
    assert_eq!(p.egress[0].action, Action::Accept);
}

#[test]
fn an_error_outside_the_rules_denies_all_where_there_are_rules() {
    let p = with_spec(
        "p",
        "{tier: Admin, priority: 5000, subject: {namespaces: {}}, \
         egress: [{action: Accept, to: [{networks: [10.0.0.0/8]}]}]}",
    );
    assert_eq!(p.priority, 0, "an invalid priority is tried first");
    assert_eq!(p.egress, vec![TierRule::deny_all()]);
    assert!(p.ingress.is_empty(), "no ingress rules: ingress untouched");
}

#[test]
fn an_unknown_tier_is_read_as_admin() {
    let p = with_spec(
        "p",
        "{tier: Platform, priority: 1, subject: {namespaces: {}}, ingress: [{action: Accept, from: [{namespaces: {}}]}]}",
    );
    assert_eq!(p.tier, Tier::Admin);
    assert_eq!(p.ingress, vec![TierRule::deny_all()]);
}

#[test]
fn an_invalid_subject_is_widened_to_every_pod_it_could_name() {
    let p = with_spec(
        "p",
        "{tier: Admin, priority: 1, subject: {namespaces: {matchLabels: {ok: yes, bad: \"-no\"}, \
         matchExpressions: [{key: a, operator: Exists}, {key: b, operator: In}]}}}",
    );
    assert!(!p.errors.is_empty());
    let widened = &p.subjects[0];
    let selector = widened.namespaces.as_ref().expect("a namespace selector");
    assert_eq!(
        selector
            .match_labels
            .as_ref()
            .map(|l| l.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["ok".to_owned()])
    );
    assert_eq!(selector.match_expressions.as_ref().map(Vec::len), Some(1));
    let both = with_spec(
        "p",
        "{tier: Admin, priority: 1, subject: {namespaces: {}, pods: {podSelector: {}}}}",
    );
    assert_eq!(both.subjects.len(), 2, "both: their union");
    let neither = with_spec("p", "{tier: Admin, priority: 1, subject: {}}");
    assert_eq!(neither.subjects, vec![PodSet::EVERY_POD]);
}

#[test]
fn a_peer_with_no_field_fails_closed_as_upstream_says() {
    let p = with_spec(
        "p",
        "{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [\
         {name: first, action: Accept, from: [{namespaces: {}}]}, \
         {name: unknown-accept, action: Accept, from: [{futurePeer: {}}]}, \
         {name: unknown-pass, action: Pass, from: [{futurePeer: {}}]}, \
         {name: last, action: Accept, from: [{pods: {podSelector: {}}}]}]}",
    );
    assert_eq!(p.errors.len(), 2, "{:#?}", p.errors);
    let read: Vec<(Option<usize>, Action, &[TierPeer])> = p
        .ingress
        .iter()
        .map(|r| (r.index, r.action, r.peers.as_slice()))
        .collect();
    assert_eq!(
        read,
        [
            (Some(0), Action::Accept, &p.ingress[0].peers[..]),
            (Some(2), Action::Deny, &[TierPeer::Any][..]),
            (Some(3), Action::Accept, &p.ingress[2].peers[..]),
        ],
        "the Accept matches nothing, the Pass denies all, in place"
    );
    assert!(p.ingress[1].ports.is_empty());
}
