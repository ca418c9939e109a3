//! Why a connection is allowed or denied: asked of manifests ([`manifests`], `palisade explain
//! -f`: the reference evaluator and the maps the agent would compile) or of a running agent
//! ([`live`]: the evaluator on the agent's last snapshot and the kernel's maps as they are now).
//! Both read the question the same way ([`Question`]).

pub mod live;
pub mod manifests;

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use palisade_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

pub use self::manifests::{Explanation, explain};
use crate::{
    k8s::cluster::{Cluster, ObjectKey},
    policy::{evaluate::Endpoint, model::PolicyError},
};

/// One local side of the connection, the maps' verdict beside the reference evaluator's.
pub(crate) struct Side<'a> {
    pub pod: &'a ObjectKey,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    pub maps_allow: bool,
    pub policy_allows: bool,
    /// The rules of this side the maps could not hold (they allow nothing there).
    pub degraded: &'a [PolicyError],
}

impl Side<'_> {
    /// The maps drop what the policies allow, because of rules they could not hold.
    fn fails_closed(&self) -> bool {
        self.policy_allows && !self.maps_allow && !self.degraded.is_empty()
    }
}

/// How an explanation's closing line names the maps and what it says of them.
pub(crate) struct Words {
    pub maps: &'static str,
    pub agree: &'static str,
    /// Any difference the errors do not explain.
    pub bug: &'static str,
}

/// Ends an explanation whose line `verdict` is the reference evaluator's: the errors of every
/// side whose maps fail closed on some rules, that line corrected when the maps drop what the
/// policies allow (an explanation never says "allowed" of a flow the kernel drops), and a
/// closing line after `words.maps` ("live maps", ...). `true` (exit status 0) only when every
/// side's maps hold exactly what its policies say.
pub(crate) fn conclude(
    lines: &mut Vec<String>,
    verdict: usize,
    sides: &[Side<'_>],
    words: &Words,
) -> bool {
    let mut notes = Vec::new();
    for side in sides.iter().filter(|s| !s.degraded.is_empty()) {
        lines.extend(side.degraded.iter().map(|e| format!("error: {e}")));
        notes.push(if side.fails_closed() {
            format!(
                "drop what the policies allow: {} of {} cannot hold every rule (the errors above), \
                 and those allow nothing there",
                side.direction, side.pod
            )
        } else {
            format!(
                "agree on this flow, but {} of {} cannot hold every rule (the errors above), \
                 and those allow nothing there",
                side.direction, side.pod
            )
        });
    }
    if sides.iter().any(Side::fails_closed)
        && let Some(line) = lines.get_mut(verdict)
        && let Some(rest) = line.strip_prefix("allowed")
    {
        *line = format!("denied by the dataplane, though the policies allow it{rest}");
    }
    let unexplained = sides
        .iter()
        .any(|s| s.maps_allow != s.policy_allows && !s.fails_closed());
    if unexplained {
        notes.push(words.bug.to_owned());
    }
    let exact = notes.is_empty();
    if exact {
        notes.push(words.agree.to_owned());
    }
    lines.push(format!("{}: {}", words.maps, notes.join("; ")));
    exact
}

/// `FROM TO PROTO/PORT`, resolved in a cluster: each end is `namespace/pod` (a pod the cluster
/// holds) or an address (the pod that has it, if one does); the destination is taken at its
/// address of the source's family.
pub(crate) struct Question<'c> {
    /// The pods named as `namespace/pod` (`None` for an address).
    pub from_key: Option<ObjectKey>,
    pub to_key: Option<ObjectKey>,
    pub src: Endpoint<'c>,
    pub dst: Endpoint<'c>,
    pub protocol: u8,
    pub port: u16,
}

impl<'c> Question<'c> {
    /// `holders` says where pods come from in an error about an unknown one ("the manifests
    /// define", "the agent's cluster holds"), followed by the pods there are.
    pub(crate) fn resolve(
        cluster: &'c Cluster,
        from: &str,
        to: &str,
        flow: &str,
        holders: &str,
    ) -> Result<Self> {
        let (protocol, port) = parse_flow(flow)?;
        let from_key = pod_key(cluster, from, holders)?;
        let to_key = pod_key(cluster, to, holders)?;
        let src = end(cluster, from, from_key.as_ref(), None)?;
        let dst = end(cluster, to, to_key.as_ref(), Some(src.addr()))?;
        Ok(Self {
            from_key,
            to_key,
            src,
            dst,
            protocol,
            port,
        })
    }
}

/// `Some(key)` for `namespace/pod` (which `cluster` must hold), `None` for an address.
fn pod_key(cluster: &Cluster, name: &str, holders: &str) -> Result<Option<ObjectKey>> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(None);
    }
    let Some((ns, pod)) = name.split_once('/') else {
        bail!("{name:?} is neither namespace/pod nor an address")
    };
    let key = ObjectKey::new(ns, pod);
    if !cluster.pods.contains_key(&key) {
        bail!("unknown pod {key}: {holders} {}", known(cluster));
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

/// One end: the pod `key` (at its address of `like`'s family, when given), or whoever owns the
/// address `name`.
fn end<'c>(
    cluster: &'c Cluster,
    name: &str,
    key: Option<&ObjectKey>,
    like: Option<IpAddr>,
) -> Result<Endpoint<'c>> {
    match key {
        Some(k) => {
            let (k, _) = cluster.pods.get_key_value(k).context("pod vanished")?;
            let end = match like {
                Some(like) => Endpoint::pod_like(cluster, k, like),
                None => Endpoint::pod(cluster, k),
            };
            end.with_context(|| format!("pod {name} has no address (of that family)"))
        }
        None => {
            let ip = name
                .parse::<IpAddr>()
                .with_context(|| format!("{name:?} is neither namespace/pod nor an address"))?;
            Ok(Endpoint::at(cluster, ip))
        }
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

    const WORDS: Words = Words {
        maps: "maps",
        agree: "agree",
        bug: "DISAGREE: please report this",
    };

    fn side<'a>(pod: &'a ObjectKey, maps_allow: bool, degraded: &'a [PolicyError]) -> Side<'a> {
        Side {
            pod,
            direction: "ingress",
            maps_allow,
            policy_allows: true,
            degraded,
        }
    }

    #[test]
    fn a_difference_no_error_explains_is_a_bug_and_exits_non_zero() {
        let pod = ObjectKey::new("default", "nginx");
        let mut lines = vec!["allowed: ...".to_owned()];
        assert!(!conclude(&mut lines, 0, &[side(&pod, false, &[])], &WORDS));
        assert_eq!(
            lines,
            ["allowed: ...", "maps: DISAGREE: please report this"]
        );
    }

    #[test]
    fn a_drop_an_error_explains_prints_the_error_and_never_says_allowed() {
        let pod = ObjectKey::new("default", "nginx");
        let error = PolicyError {
            policy: ObjectKey::new("default", "many"),
            field: "spec.ingress[64]".into(),
            message: "pod default/nginx: more than 64".into(),
        };
        let mut lines = vec!["allowed: ingress of default/nginx allowed by ...".to_owned()];
        let degraded = [error];
        assert!(!conclude(
            &mut lines,
            0,
            &[side(&pod, false, &degraded)],
            &WORDS
        ));
        assert_eq!(
            lines[0],
            "denied by the dataplane, though the policies allow it: ingress of default/nginx allowed by ..."
        );
        assert_eq!(
            lines[1],
            "error: networkpolicy default/many: spec.ingress[64]: pod default/nginx: more than 64"
        );
        assert!(
            lines[2].starts_with("maps: drop what the policies allow"),
            "{lines:?}"
        );
        assert!(!lines[2].contains("please report"), "{lines:?}");
    }

    #[test]
    fn exact_maps_agree_and_exit_zero() {
        let pod = ObjectKey::new("default", "nginx");
        let mut lines = vec!["allowed: ...".to_owned()];
        assert!(conclude(&mut lines, 0, &[side(&pod, true, &[])], &WORDS));
        assert_eq!(lines, ["allowed: ...", "maps: agree"]);
    }
}
