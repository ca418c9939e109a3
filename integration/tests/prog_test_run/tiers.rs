//! ClusterNetworkPolicy in the programs: the Admin tier before NetworkPolicy (Deny and Accept
//! final, Pass on), the Baseline tier for pods NetworkPolicy leaves alone, the drop counted as
//! the tier's, and audit mode.

use palisade_common::{DropReason, EP_AUDIT, PROG_FROM_POD, PROG_TO_POD, Stat};

use super::{CLIENT, LOOPBACK_IFINDEX, Node, OTHER, PASS, SERVER, syn4};
use palisade::k8s::cluster::ObjectKey;

/// Admin: at the server, client -> TCP 80 denied (the NetworkPolicy allows it), `other`
/// accepted on anything (the NetworkPolicy does not allow it), egress to 10.0.0.0/24 passed on.
/// Baseline: every pod's egress to 0.0.0.0/0 denied (decides only where no NetworkPolicy
/// isolates egress: not at the server).
const TIERS: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: server}}}}
  ingress:
    - action: Deny
      from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}}]
      protocols: [{tcp: {destinationPort: {number: 80}}}]
    - action: Accept
      from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: other}}}}]
  egress:
    - action: Pass
      to: [{networks: [10.0.0.0/24]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: floor}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  egress:
    - action: Deny
      to: [{networks: [0.0.0.0/0]}]
"#;

#[test]
fn the_admin_tier_decides_before_network_policy_and_pass_hands_on() {
    let node = Node::with_yaml(TIERS, &[("server", LOOPBACK_IFINDEX)]);
    // Denied by the Admin tier although the NetworkPolicy allows it.
    node.drops(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 41000, 80),
        DropReason::TierIngress,
    );
    // Accepted by the Admin tier although no NetworkPolicy rule allows it.
    node.passes(
        PROG_TO_POD,
        &syn4(OTHER, SERVER, 41000, 81),
        Stat::NewFlowAllowed,
    );
    // No tier rule: the NetworkPolicy decides.
    node.drops(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 41001, 81),
        DropReason::PolicyIngress,
    );
    // Egress passed on by the Admin tier; the NetworkPolicy isolating the server's egress
    // decides (and the Baseline Deny of 0.0.0.0/0 is never reached).
    node.passes(
        PROG_FROM_POD,
        &syn4(SERVER, CLIENT, 41000, 8080),
        Stat::NewFlowAllowed,
    );
    node.drops(
        PROG_FROM_POD,
        &syn4(SERVER, OTHER, 41000, 8080),
        DropReason::PolicyEgress,
    );
    // The reply of the Admin-accepted flow passes as tracked.
    node.passes(
        PROG_FROM_POD,
        &super::ack4(SERVER, OTHER, 81, 41000),
        Stat::CtHit,
    );
}

#[test]
fn the_baseline_tier_decides_where_no_network_policy_isolates_and_audit_covers_it() {
    let mut node = Node::with_yaml(TIERS, &[("client", LOOPBACK_IFINDEX)]);
    // The client is isolated by no NetworkPolicy: the Baseline Deny of 0.0.0.0/0 decides.
    node.drops(
        PROG_FROM_POD,
        &syn4(CLIENT, SERVER, 42000, 80),
        DropReason::TierEgress,
    );
    // Its ingress has no tier rule and no NetworkPolicy: allowed.
    node.passes(
        PROG_TO_POD,
        &syn4(OTHER, CLIENT, 42000, 80),
        Stat::NewFlowAllowed,
    );
    // In audit mode the tier's Deny passes, counted as audited.
    let client = ObjectKey::new("x", "client");
    node.state.endpoints.get_mut(&client).unwrap().flags |= EP_AUDIT;
    node.sync(&[("client", LOOPBACK_IFINDEX)]);
    let before = node.dataplane.counters().unwrap();
    let (outcome, _) = node
        .dataplane
        .test_run_marked(
            PROG_FROM_POD,
            &syn4(CLIENT, SERVER, 42001, 80),
            LOOPBACK_IFINDEX,
            0,
        )
        .unwrap();
    assert_eq!(outcome.action, PASS);
    let after = node.dataplane.counters().unwrap();
    let tier_drops = DropReason::TierEgress.stat_index() as usize;
    assert_eq!(
        after[Stat::AuditPassed as usize],
        before[Stat::AuditPassed as usize] + 1
    );
    assert_eq!(after[tier_drops], before[tier_drops]);
}
