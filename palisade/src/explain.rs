//! `palisade explain -f MANIFESTS... FROM TO PROTO/PORT`: why a connection is allowed or denied,
//! by the reference evaluator, and whether the map state the agent would write agrees.

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use palisade_common::{DIR_EGRESS, DIR_INGRESS, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::{
    k8s::addresses::AddressBook,
    k8s::cluster::{Cluster, DEFAULT_NODE, ObjectKey, pod_node},
    k8s::manifest,
    policy::{
        Compiler, NodeView,
        evaluate::{Endpoint, Evaluator},
        lookup,
    },
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
    let (protocol, port) = parse_flow(flow)?;
    let from_key = pod_key(&cluster, from)?;
    let to_key = pod_key(&cluster, to)?;
    let endpoint = |name: &str, key: &Option<ObjectKey>| -> Result<Endpoint<'_>> {
        match key {
            Some(k) => {
                let (k, _) = cluster.pods.get_key_value(k).context("pod vanished")?;
                Endpoint::pod(&cluster, k).with_context(|| format!("pod {name} has no address"))
            }
            None => Ok(Endpoint::Address(name.parse::<IpAddr>().with_context(
                || format!("{name:?} is neither namespace/pod nor an address"),
            )?)),
        }
    };
    let (src, dst) = (endpoint(from, &from_key)?, endpoint(to, &to_key)?);
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

fn pod_key(cluster: &Cluster, name: &str) -> Result<Option<ObjectKey>> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(None);
    }
    let Some((ns, pod)) = name.split_once('/') else {
        bail!("{name:?} is neither namespace/pod nor an address")
    };
    let key = ObjectKey::new(ns, pod);
    if !cluster.pods.contains_key(&key) {
        bail!("unknown pod {key}: the manifests define {}", known(cluster));
    }
    Ok(Some(key))
}

fn known(cluster: &Cluster) -> String {
    let names: Vec<String> = cluster.pods.keys().map(ToString::to_string).collect();
    if names.is_empty() {
        "no pods".into()
    } else {
        names.join(", ")
    }
}

/// `TCP/80`, `udp/53`, `SCTP/9000`.
pub(crate) fn parse_flow(flow: &str) -> Result<(u8, u16)> {
    let (proto, port) = flow
        .split_once('/')
        .with_context(|| format!("{flow:?}: expected PROTO/PORT, e.g. TCP/80"))?;
    let protocol = match proto.to_ascii_uppercase().as_str() {
        "TCP" => PROTO_TCP,
        "UDP" => PROTO_UDP,
        "SCTP" => PROTO_SCTP,
        other => bail!("{flow:?}: unknown protocol {other:?} (TCP, UDP or SCTP)"),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("{flow:?}: port must be 1-65535"))?;
    Ok((protocol, port))
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
