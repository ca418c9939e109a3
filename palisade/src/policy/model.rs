//! A NetworkPolicy read once into the shape the compiler and the evaluator need, with the API
//! server's defaulting applied and invalid parts rejected with the policy and field named.

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::ports::PortRange;
use crate::k8s::cluster::ObjectKey;
use crate::k8s::keys::protocol_number;

/// A policy field the resolver cannot use. The policy's pods stay isolated, with no rule from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("networkpolicy {policy}: {field}: {message}")]
pub struct PolicyError {
    pub policy: ObjectKey,
    /// The field path, e.g. `spec.ingress[0].from[1].ipBlock.cidr`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub key: ObjectKey,
    pub pod_selector: LabelSelector,
    /// `Some` when the policy isolates its pods for ingress (`Ingress` in the defaulted
    /// policyTypes); the rules may be empty (deny all).
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in `spec.ingress` / `spec.egress`.
    pub index: usize,
    /// `None`: `from`/`to` empty or absent, every peer.
    pub peers: Option<Vec<Peer>>,
    /// Empty: `ports` empty or absent, every port and protocol.
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// Pods: with no namespace selector, those of the policy's own namespace.
    Pods {
        namespaces: Option<LabelSelector>,
        pods: Option<LabelSelector>,
    },
    /// Addresses in `cidr` minus every `except` block.
    Block { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    Numeric(PortRange),
    /// Resolved against the destination pod's container ports, name and protocol both.
    Named {
        protocol: u8,
        name: String,
    },
}

impl Policy {
    /// Reads a policy. On error the policy still isolates what it selects, with no rules: a
    /// policy we cannot understand must never widen access.
    pub fn from_api(policy: &NetworkPolicy) -> (Self, Vec<PolicyError>) {
        let key = ObjectKey::new(
            policy
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            policy.metadata.name.clone().unwrap_or_default(),
        );
        let mut errors = Vec::new();
        let spec = policy.spec.clone().unwrap_or_default();
        // policyTypes defaulting, as the API server does it: Ingress always, Egress when there
        // are egress rules.
        let types = match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => types.to_vec(),
            _ => {
                let mut t = vec!["Ingress".to_string()];
                if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push("Egress".to_string());
                }
                t
            }
        };
        for (i, t) in types.iter().enumerate() {
            if t != "Ingress" && t != "Egress" {
                errors.push(err(
                    &key,
                    format!("spec.policyTypes[{i}]"),
                    format!("unknown policy type {t:?}"),
                ));
            }
        }
        // A policy type we do not know could mean either direction: isolate both (fail closed).
        let unknown_type = types.iter().any(|t| t != "Ingress" && t != "Egress");
        let mut read = |dir: &str, rules: Option<Vec<RawRule>>| {
            rules
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(index, (peers, ports))| {
                    let at = format!("spec.{dir}[{index}]");
                    let peer_field = if dir == "ingress" { "from" } else { "to" };
                    Rule {
                        index,
                        peers: peers.filter(|p| !p.is_empty()).map(|p| {
                            p.iter()
                                .enumerate()
                                .filter_map(|(i, peer)| {
                                    read_peer(peer)
                                        .map_err(|(f, m)| {
                                            errors.push(err(
                                                &key,
                                                format!("{at}.{peer_field}[{i}]{f}"),
                                                m,
                                            ))
                                        })
                                        .ok()
                                })
                                .collect()
                        }),
                        ports: ports
                            .unwrap_or_default()
                            .iter()
                            .enumerate()
                            .filter_map(|(i, port)| {
                                read_port(port)
                                    .map_err(|(f, m)| {
                                        errors.push(err(&key, format!("{at}.ports[{i}]{f}"), m))
                                    })
                                    .ok()
                            })
                            .collect(),
                    }
                })
                .collect::<Vec<_>>()
        };
        let ingress = spec
            .ingress
            .map(|r| r.into_iter().map(|r| (r.from, r.ports)).collect());
        let egress = spec
            .egress
            .map(|r| r.into_iter().map(|r| (r.to, r.ports)).collect());
        let ingress_rules = read("ingress", ingress);
        let egress_rules = read("egress", egress);
        let (ingress_rules, egress_rules) = if errors.is_empty() {
            (ingress_rules, egress_rules)
        } else {
            (Vec::new(), Vec::new())
        };
        let policy = Self {
            key,
            pod_selector: spec.pod_selector.unwrap_or_default(),
            ingress: (unknown_type || types.iter().any(|t| t == "Ingress"))
                .then_some(ingress_rules),
            egress: (unknown_type || types.iter().any(|t| t == "Egress")).then_some(egress_rules),
        };
        (policy, errors)
    }
}

fn err(key: &ObjectKey, field: String, message: String) -> PolicyError {
    PolicyError {
        policy: key.clone(),
        field,
        message,
    }
}

type FieldError = (String, String);

/// A rule as the API has it: its peers (`from` or `to`) and its ports.
type RawRule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

fn read_peer(peer: &NetworkPolicyPeer) -> Result<Peer, FieldError> {
    match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
        (Some(block), None, None) => {
            let cidr = parse_cidr(&block.cidr).map_err(|m| (".ipBlock.cidr".to_string(), m))?;
            let mut except = Vec::new();
            for (i, e) in block.except.iter().flatten().enumerate() {
                let field = format!(".ipBlock.except[{i}]");
                let e = parse_cidr(e).map_err(|m| (field.clone(), m))?;
                let inside = e.prefix_len() > cidr.prefix_len() && cidr.contains(&e.network());
                if !inside || is_v4(&e) != is_v4(&cidr) {
                    return Err((field, format!("{e} is not a strict subset of cidr {cidr}")));
                }
                except.push(e);
            }
            Ok(Peer::Block { cidr, except })
        }
        (Some(_), _, _) => Err((
            String::new(),
            "ipBlock cannot be combined with podSelector or namespaceSelector".into(),
        )),
        (None, None, None) => Err((
            String::new(),
            "a peer must set podSelector, namespaceSelector or ipBlock".into(),
        )),
        (None, namespaces, pods) => Ok(Peer::Pods {
            namespaces: namespaces.clone(),
            pods: pods.clone(),
        }),
    }
}

fn read_port(port: &NetworkPolicyPort) -> Result<Port, FieldError> {
    let protocol = protocol_number(port.protocol.as_deref()).ok_or_else(|| {
        (
            ".protocol".to_string(),
            format!(
                "unsupported protocol {:?} (TCP, UDP or SCTP)",
                port.protocol.as_deref().unwrap_or("")
            ),
        )
    })?;
    let check = |p: i32, field: &str| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| (field.to_string(), format!("port {p} is not in 1-65535")))
    };
    match (&port.port, port.end_port) {
        (None, None) => Ok(Port::Numeric(PortRange::all(protocol))),
        (None, Some(_)) => Err((".endPort".into(), "endPort requires port".into())),
        (Some(IntOrString::Int(p)), end) => {
            let first = check(*p, ".port")?;
            let last = match end {
                None => first,
                Some(e) => {
                    let e = check(e, ".endPort")?;
                    if e < first {
                        return Err((
                            ".endPort".into(),
                            format!("endPort {e} is below port {first}"),
                        ));
                    }
                    e
                }
            };
            Ok(Port::Numeric(PortRange {
                protocol,
                first,
                last,
            }))
        }
        (Some(IntOrString::String(name)), None) => {
            // A numeric string is what `port: "80"` decodes to; treat it as the number.
            match name.parse::<i32>() {
                Ok(p) => Ok(Port::Numeric(PortRange {
                    protocol,
                    first: check(p, ".port")?,
                    last: check(p, ".port")?,
                })),
                Err(_) if name.is_empty() => Err((".port".into(), "empty port name".into())),
                Err(_) => Ok(Port::Named {
                    protocol,
                    name: name.clone(),
                }),
            }
        }
        (Some(IntOrString::String(_)), Some(_)) => Err((
            ".endPort".into(),
            "endPort cannot be used with a named port".into(),
        )),
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    // Legacy forms such as "10.0.0.1/8" (host bits set) are accepted and normalised, as the
    // API server accepted them before v1.22's stricter validation.
    let net = text
        .trim()
        .parse::<IpNet>()
        .map_err(|e| format!("invalid CIDR {text:?}: {e}"))?
        .trunc();
    // An IPv4-mapped IPv6 block (`::ffff:a.b.c.d/n`, n >= 96) is the IPv4 block a.b.c.d/(n-96),
    // as Go's net.IPNet.Contains (and so the API server's own helpers) reads it.
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .map(IpNet::V4)
            .map_err(|e| format!("invalid CIDR {text:?}: {e}"));
    }
    Ok(net)
}

pub fn is_v4(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(_))
}
