//! `palisade explain -f MANIFESTS... FROM TO PROTO/PORT`: why a connection is allowed or denied,
//! by the reference evaluator, and whether the map state the agent would write agrees.

use std::path::PathBuf;

use anyhow::Result;
use palisade_common::{DIR_EGRESS, DIR_INGRESS};

use super::Question;
use crate::{
    k8s::addresses::AddressBook,
    k8s::cluster::{Cluster, DEFAULT_NODE, pod_node},
    k8s::manifest,
    policy::{Compiler, NodeView, evaluate::Evaluator, lookup},
};

/// What `palisade explain` prints, line by line.
pub fn explain(files: &[PathBuf], from: &str, to: &str, flow: &str) -> Result<Vec<String>> {
    let mut cluster = Cluster::default();
    for file in files {
        for object in manifest::load_file(file)? {
            cluster.apply(object);
        }
    }
    // Pods without an address get one, as the lab would give them.
    let mut book = AddressBook::default();
    for (key, pod) in cluster.pods.iter_mut() {
        book.addresses(key, pod);
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
    let verdict = evaluator.evaluate(src, dst, protocol, port);
    lines.push(verdict.to_string());

    // The same question asked of the compiled maps, on the nodes of both pods.
    let mut agrees = true;
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
            .map(pod_node)
            .unwrap_or(DEFAULT_NODE)
            .to_string();
        let state = Compiler::new().compile(
            &cluster,
            &NodeView {
                name: &node,
                addrs: &[],
            },
        );
        let expected = if direction == DIR_EGRESS {
            verdict.egress.allows()
        } else {
            verdict.ingress.allows()
        };
        if lookup::admits(&state, key, direction, peer, protocol, port) != Some(expected) {
            agrees = false;
        }
    }
    lines.push(format!(
        "dataplane maps (as compiled for the pods' nodes): {}",
        if agrees {
            "agree"
        } else {
            "DISAGREE: please report this"
        }
    ));
    Ok(lines)
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
        let lines = explain(
            &quick_start("access-nginx.yaml"),
            "default/trusted-client",
            "default/nginx",
            "TCP/80",
        )
        .expect("explain");
        let text = lines.join("\n");
        assert!(text.starts_with("allowed"), "{text}");
        assert!(
            text.contains("default/access-nginx rule ingress[0]"),
            "{text}"
        );
        assert!(text.ends_with("agree"), "{text}");
    }

    #[test]
    fn explains_the_quick_start_deny_with_the_isolating_policies() {
        let lines = explain(
            &quick_start("access-nginx.yaml"),
            "default/client",
            "default/nginx",
            "TCP/80",
        )
        .expect("explain");
        let text = lines.join("\n");
        assert!(text.starts_with("denied"), "{text}");
        assert!(
            text.contains("default/default-deny") && text.contains("default/access-nginx"),
            "{text}"
        );
        assert!(text.ends_with("agree"), "{text}");
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
