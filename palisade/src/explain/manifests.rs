//! `palisade explain -f MANIFESTS... FROM TO PROTO/PORT`: why a connection is allowed or denied,
//! by the reference evaluator, and whether the map state the agent would write agrees.

use std::path::PathBuf;

use anyhow::Result;
use palisade_common::{DIR_EGRESS, DIR_INGRESS};

use super::{Question, Side, Words};
use crate::{
    k8s::addresses::AddressBook,
    k8s::cluster::{Cluster, DEFAULT_NODE, pod_node},
    k8s::manifest,
    policy::{Compiler, NodeView, evaluate::Evaluator, lookup, tiers::same_rank_conflicts},
};

/// What `palisade explain` prints, line by line, and whether it exits 0.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub lines: Vec<String>,
    /// The maps the agent would write judge every side as the policies do, and hold every
    /// rule of those sides (see [`super::conclude`]).
    pub exact: bool,
}

/// Why the connection `from` -> `to` (`flow`) is allowed or denied under the manifests `files`.
pub fn explain(files: &[PathBuf], from: &str, to: &str, flow: &str) -> Result<Explanation> {
    let mut cluster = Cluster::default();
    for file in files {
        for object in manifest::load_file(file)? {
            cluster.apply(object);
        }
    }
    // Pods without an address get one, as the lab would give them.
    let mut book = AddressBook::default();
    for (key, pod) in cluster.pods.iter_mut() {
        book.addresses(key, std::sync::Arc::make_mut(pod));
    }
    let Question {
        from_key,
        to_key,
        src,
        dst,
        protocol,
        port,
    } = Question::resolve(&cluster, from, to, flow, "the manifests define")?;
    let nodes: [NodeView<'_>; 0] = [];
    let evaluator = Evaluator::new(&cluster, &nodes);
    let mut lines: Vec<String> = evaluator
        .errors()
        .iter()
        .map(|e| format!("warning: {e} (its pods stay isolated)"))
        .collect();
    for policy in evaluator.cluster_policies() {
        for e in &policy.errors {
            lines.push(format!(
                "warning: {e} (fails closed: a Deny of everything for its subjects)"
            ));
        }
    }
    for (first, second) in same_rank_conflicts(evaluator.cluster_policies()) {
        lines.push(format!(
            "warning: clusternetworkpolicies {first} and {second} have the same tier and \
             priority: {first} is tried first (by name); give them distinct priorities"
        ));
    }
    let verdict = evaluator.evaluate(src, dst, protocol, port);
    let verdict_line = lines.len();
    lines.push(verdict.to_string());

    // The same question asked of the compiled maps, on the nodes of both pods.
    let mut states = Vec::new();
    for (key, direction, peer) in [
        (&from_key, DIR_EGRESS, dst.addr()),
        (&to_key, DIR_INGRESS, src.addr()),
    ] {
        let Some(key) = key else { continue };
        if from_key == to_key {
            break;
        }
        let node = cluster
            .pods
            .get(key)
            .map(|pod| pod_node(pod))
            .unwrap_or(DEFAULT_NODE)
            .to_string();
        let state = Compiler::new().compile(
            &cluster,
            &NodeView {
                name: &node,
                addrs: &[],
            },
        );
        let policy_allows = if direction == DIR_EGRESS {
            verdict.egress.allows()
        } else {
            verdict.ingress.allows()
        };
        // An unknown endpoint is dropped (fail closed).
        let maps_allow = lookup::admits(&state, key, direction, peer, protocol, port) == Some(true);
        states.push((key, direction, state, maps_allow, policy_allows));
    }
    let sides: Vec<Side<'_>> = states
        .iter()
        .map(|(key, direction, state, maps_allow, policy_allows)| Side {
            pod: key,
            direction: if *direction == DIR_INGRESS {
                "ingress"
            } else {
                "egress"
            },
            maps_allow: *maps_allow,
            policy_allows: *policy_allows,
            degraded: state
                .endpoints
                .get(*key)
                .map_or(&[][..], |ep| &ep.degraded[usize::from(*direction)]),
        })
        .collect();
    let exact = super::conclude(
        &mut lines,
        verdict_line,
        &sides,
        &Words {
            maps: "dataplane maps (as compiled for the pods' nodes)",
            agree: "agree",
            bug: "DISAGREE: please report this",
        },
    );
    Ok(Explanation { lines, exact })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick_start(file: &str) -> Vec<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quick-start");
        vec![
            dir.join("cluster.yaml"),
            dir.join("default-deny.yaml"),
            dir.join(file),
        ]
    }

    #[test]
    fn explains_the_quick_start_allow_with_the_rule_and_agrees_with_the_maps() {
        let explanation = explain(
            &quick_start("access-nginx.yaml"),
            "default/trusted-client",
            "default/nginx",
            "TCP/80",
        )
        .expect("explain");
        assert!(explanation.exact, "{:?}", explanation.lines);
        let text = explanation.lines.join("\n");
        assert!(text.starts_with("allowed"), "{text}");
        assert!(
            text.contains("default/access-nginx rule ingress[0]"),
            "{text}"
        );
        assert!(text.ends_with("agree"), "{text}");
    }

    #[test]
    fn explains_the_quick_start_deny_with_the_isolating_policies() {
        let explanation = explain(
            &quick_start("access-nginx.yaml"),
            "default/client",
            "default/nginx",
            "TCP/80",
        )
        .expect("explain");
        assert!(explanation.exact, "{:?}", explanation.lines);
        let text = explanation.lines.join("\n");
        assert!(text.starts_with("denied"), "{text}");
        assert!(
            text.contains("default/default-deny") && text.contains("default/access-nginx"),
            "{text}"
        );
        assert!(text.ends_with("agree"), "{text}");
    }

    /// The quick-start cluster and a policy for nginx with 70 rules, each from a peer list of
    /// its own (clients with `access: "true"` or one /24) to a port of its own (9000 + i): more
    /// classes than the pod can hold.
    fn too_many_classes() -> Vec<PathBuf> {
        let mut yaml = String::from(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: many, namespace: default}\nspec:\n  podSelector: {matchLabels: {run: nginx}}\n  ingress:\n",
        );
        for i in 0..70 {
            yaml.push_str(&format!(
                "  - from: [{{podSelector: {{matchLabels: {{access: \"true\"}}}}}}, {{ipBlock: {{cidr: 10.250.{i}.0/24}}}}]\n    ports: [{{port: {}}}]\n",
                9000 + i
            ));
        }
        let file = std::env::temp_dir().join(format!(
            "palisade-explain-too-many-classes-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&file, yaml).expect("write the policy");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quick-start");
        vec![
            dir.join("cluster.yaml"),
            dir.join("default-deny.yaml"),
            file,
        ]
    }

    #[test]
    fn a_cluster_network_policy_is_judged_and_the_maps_agree() {
        let file =
            std::env::temp_dir().join(format!("palisade-explain-cnp-{}.yaml", std::process::id()));
        let policy = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                      metadata: {name: guard}\nspec: {tier: Admin, priority: 1, subject: \
                      {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}\n";
        std::fs::write(&file, policy).expect("write the policy");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quick-start");
        let files = [dir.join("cluster.yaml"), file];
        let explanation =
            explain(&files, "default/client", "default/nginx", "TCP/80").expect("explain");
        let text = explanation.lines.join("\n");
        assert!(explanation.exact, "{text}");
        assert!(
            text.contains("denied by clusternetworkpolicy guard"),
            "{text}"
        );
        assert!(!text.contains("same tier and priority"), "{text}");
    }

    #[test]
    fn two_cluster_network_policies_of_one_tier_and_priority_are_warned_about() {
        let file = std::env::temp_dir().join(format!(
            "palisade-explain-cnp-tie-{}.yaml",
            std::process::id()
        ));
        let policy = |name: &str, action: &str| {
            format!(
                "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                 metadata: {{name: {name}}}\nspec: {{tier: Admin, priority: 7, subject: \
                 {{namespaces: {{}}}}, ingress: [{{action: {action}, from: [{{namespaces: {{}}}}]}}]}}\n"
            )
        };
        let text = format!(
            "{}---\n{}",
            policy("b-accept", "Accept"),
            policy("a-deny", "Deny")
        );
        std::fs::write(&file, text).expect("write the policies");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quick-start");
        let files = [dir.join("cluster.yaml"), file];
        let explanation =
            explain(&files, "default/client", "default/nginx", "TCP/80").expect("explain");
        let text = explanation.lines.join("\n");
        assert!(
            text.contains("clusternetworkpolicies a-deny and b-accept have the same tier and priority: a-deny is tried first"),
            "{text}"
        );
        assert!(
            text.contains("denied by clusternetworkpolicy a-deny"),
            "{text}"
        );
    }

    #[test]
    fn a_flow_past_the_class_limit_is_denied_with_the_rule_named_and_a_non_zero_exit() {
        let files = too_many_classes();
        let explanation = explain(
            &files,
            "default/trusted-client",
            "default/nginx",
            "TCP/9069",
        )
        .expect("explain");
        let text = explanation.lines.join("\n");
        assert!(!explanation.exact, "{text}");
        assert!(text.starts_with("denied by the dataplane"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("allowed")), "{text}");
        assert!(
            text.contains("error: networkpolicy default/many: spec.ingress[69]: pod default/nginx: more than 64"),
            "{text}"
        );
        assert!(text.contains("drop what the policies allow"), "{text}");
        assert!(!text.contains("please report"), "{text}");
    }

    #[test]
    fn a_flow_within_the_class_limit_of_a_degraded_pod_is_allowed_but_exits_non_zero() {
        let files = too_many_classes();
        let explanation = explain(
            &files,
            "default/trusted-client",
            "default/nginx",
            "TCP/9000",
        )
        .expect("explain");
        let text = explanation.lines.join("\n");
        assert!(!explanation.exact, "{text}");
        assert!(text.starts_with("allowed"), "{text}");
        assert!(
            text.contains("spec.ingress[64]: pod default/nginx"),
            "{text}"
        );
        assert!(
            text.contains("agree on this flow, but ingress of default/nginx"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_pod_is_a_clear_error() {
        let err = explain(
            &quick_start("access-nginx.yaml"),
            "default/nobody",
            "default/nginx",
            "TCP/80",
        )
        .expect_err("unknown pod");
        assert!(
            err.to_string().contains("unknown pod default/nobody"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_flow_is_a_clear_error() {
        let err = explain(
            &quick_start("access-nginx.yaml"),
            "default/client",
            "default/nginx",
            "ICMP/80",
        )
        .expect_err("bad flow");
        assert!(err.to_string().contains("unknown protocol"), "{err}");
    }
}
