//! Why a connection is allowed or denied: asked of manifests ([`manifests`], `palisade explain
//! -f`: the reference evaluator and the maps the agent would compile) or of a running agent
//! ([`live`]: the evaluator on the agent's last snapshot and the kernel's maps as they are now).
//! Both read the question the same way ([`Question`]).

pub mod live;
pub mod manifests;

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use palisade_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

pub use self::manifests::explain;
use crate::{
    k8s::cluster::{Cluster, ObjectKey},
    policy::evaluate::Endpoint,
};

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
