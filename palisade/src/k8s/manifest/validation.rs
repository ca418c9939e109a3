//! What the API server rejects. Each check follows the upstream validation
//! (pkg/apis/networking/validation and pkg/apis/core/validation); nothing is normalised here.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::Pod,
        networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{ManifestError, Object};
use crate::k8s::cluster::{DEFAULT_NAMESPACE, ObjectKey};

/// What is wrong with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    #[error("invalid CIDR {cidr:?}")]
    InvalidCidr { cidr: String },
    #[error("{except} is not a strict subset of cidr {cidr}")]
    ExceptNotStrictSubset { except: String, cidr: String },
    #[error("{except} is not in the address family of cidr {cidr}")]
    ExceptOtherFamily { except: String, cidr: String },
    #[error("endPort needs a port")]
    EndPortWithoutPort,
    #[error("endPort cannot be used with the named port {port:?}")]
    EndPortWithNamedPort { port: String },
    #[error("endPort {end_port} is below port {port}")]
    EndPortBelowPort { port: i32, end_port: i32 },
    #[error("port {port} is outside 1..=65535")]
    PortOutOfRange { port: i32 },
    #[error(
        "invalid port name {name:?} (1 to 15 lowercase letters, digits and '-', with a letter, \
         no '-' at either end or twice in a row)"
    )]
    InvalidPortName { name: String },
    #[error("unsupported protocol {protocol:?} (expected TCP, UDP or SCTP)")]
    UnknownProtocol { protocol: String },
    #[error("unknown operator {operator:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator { operator: String },
    #[error("operator {operator} needs at least one value")]
    ValuesRequired { operator: String },
    #[error("operator {operator} takes no values")]
    ValuesForbidden { operator: String },
    #[error("invalid label key {key:?}")]
    InvalidLabelKey { key: String },
    #[error(
        "invalid label value {value:?} (at most 63 letters, digits, '-', '_' and '.', starting \
         and ending with a letter or digit)"
    )]
    InvalidLabelValue { value: String },
    #[error("ipBlock cannot be combined with podSelector or namespaceSelector in one peer")]
    IpBlockWithSelectors,
    #[error(
        "empty peer: give ipBlock, podSelector or namespaceSelector (to allow every peer, leave \
         out from/to instead)"
    )]
    EmptyPeer,
    #[error("unknown policy type {value:?} (expected Ingress or Egress)")]
    UnknownPolicyType { value: String },
    #[error("invalid IP address {ip:?}")]
    InvalidIp { ip: String },
}

/// Checks any object the way the API server would before storing it.
pub fn validate(object: &Object) -> Result<(), Vec<ManifestError>> {
    match object {
        Object::Namespace(namespace) => {
            let mut found = Findings::default();
            found.labels(namespace.metadata.labels.as_ref(), "metadata.labels");
            let name = namespace.metadata.name.clone().unwrap_or_default();
            found.into_result("Namespace", name)
        }
        Object::Pod(pod) => validate_pod(pod),
        Object::NetworkPolicy(policy) => validate_policy(policy),
        Object::ClusterNetworkPolicy(policy) => validate_cluster_policy(policy),
        Object::Node(node) => {
            let mut found = Findings::default();
            found.labels(node.metadata.labels.as_ref(), "metadata.labels");
            let name = node.metadata.name.clone().unwrap_or_default();
            found.into_result("Node", name)
        }
        Object::Ignored { .. } => Ok(()),
    }
}

/// Every problem of a NetworkPolicy the API server would reject, each naming the policy and the
/// field (`NetworkPolicy x/allow-b: spec.ingress[0].from[1].ipBlock.cidr: invalid CIDR ...`).
pub fn validate_policy(policy: &NetworkPolicy) -> Result<(), Vec<ManifestError>> {
    let mut found = Findings::default();
    found.labels(policy.metadata.labels.as_ref(), "metadata.labels");
    if let Some(spec) = &policy.spec {
        if let Some(selector) = &spec.pod_selector {
            found.selector(selector, "spec.podSelector");
        }
        for (i, policy_type) in spec.policy_types.iter().flatten().enumerate() {
            if !matches!(policy_type.as_str(), "Ingress" | "Egress") {
                let value = policy_type.clone();
                found.add(
                    format!("spec.policyTypes[{i}]"),
                    FieldProblem::UnknownPolicyType { value },
                );
            }
        }
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            found.policy_ports(rule.ports.as_deref(), &format!("spec.ingress[{i}].ports"));
            found.peers(rule.from.as_deref(), &format!("spec.ingress[{i}].from"));
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            found.policy_ports(rule.ports.as_deref(), &format!("spec.egress[{i}].ports"));
            found.peers(rule.to.as_deref(), &format!("spec.egress[{i}].to"));
        }
    }
    found.into_result("NetworkPolicy", namespaced_name(&policy.metadata))
}

/// Every problem of a ClusterNetworkPolicy that upstream's CRD (with its CEL rules) refuses, and
/// `domainNames`, which Palisade does not implement.
pub fn validate_cluster_policy(
    policy: &crate::k8s::cnp::ClusterNetworkPolicy,
) -> Result<(), Vec<ManifestError>> {
    let errors = crate::k8s::cnp::validate(policy);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors
            .into_iter()
            .map(ManifestError::InvalidCluster)
            .collect())
    }
}

/// Every problem of a label selector the API server's `LabelSelectorAsSelector` would refuse,
/// each with its field path under `at` (a ClusterNetworkPolicy's selectors are checked by no
/// schema: only this tells an unknown operator from a selector that matches nothing).
pub fn selector_problems(selector: &LabelSelector, at: &str) -> Vec<(String, FieldProblem)> {
    let mut found = Findings::default();
    found.selector(selector, at);
    found.0
}

/// Every problem of a Pod that matters here: labels, container ports and addresses.
pub fn validate_pod(pod: &Pod) -> Result<(), Vec<ManifestError>> {
    let mut found = Findings::default();
    found.labels(pod.metadata.labels.as_ref(), "metadata.labels");
    for (i, container) in pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .enumerate()
    {
        for (j, port) in container.ports.iter().flatten().enumerate() {
            let at = format!("spec.containers[{i}].ports[{j}]");
            found.port_number(port.container_port, format!("{at}.containerPort"));
            if let Some(protocol) = &port.protocol {
                found.protocol(protocol, format!("{at}.protocol"));
            }
            if let Some(name) = &port.name {
                found.port_name(name, format!("{at}.name"));
            }
        }
    }
    if let Some(status) = &pod.status {
        if let Some(ip) = &status.pod_ip {
            found.ip(ip, "status.podIP".to_owned());
        }
        for (i, pod_ip) in status.pod_ips.iter().flatten().enumerate() {
            found.ip(&pod_ip.ip, format!("status.podIPs[{i}].ip"));
        }
    }
    found.into_result("Pod", namespaced_name(&pod.metadata))
}

fn namespaced_name(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    let namespace = metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    ObjectKey::new(namespace, metadata.name.as_deref().unwrap_or_default()).to_string()
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let prefix_ok = prefix.is_none_or(|prefix| {
        prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_label_value(name)
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn valid_label_value(value: &str) -> bool {
    let alphanumeric_ends = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    value.is_empty()
        || (value.len() <= 63
            && alphanumeric_ends(value)
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// A port name (IANA_SVC_NAME): what a named NetworkPolicy port and a container port share.
fn valid_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Problems found so far, each with its field path.
#[derive(Default)]
struct Findings(Vec<(String, FieldProblem)>);

impl Findings {
    fn add(&mut self, field: String, problem: FieldProblem) {
        self.0.push((field, problem));
    }

    fn into_result(self, kind: &'static str, object: String) -> Result<(), Vec<ManifestError>> {
        if self.0.is_empty() {
            return Ok(());
        }
        let errors = self
            .0
            .into_iter()
            .map(|(field, problem)| ManifestError::Invalid {
                kind,
                object: object.clone(),
                field,
                problem,
            });
        Err(errors.collect())
    }

    fn labels(&mut self, labels: Option<&BTreeMap<String, String>>, at: &str) {
        for (key, value) in labels.into_iter().flatten() {
            if !valid_label_key(key) {
                self.add(
                    at.to_owned(),
                    FieldProblem::InvalidLabelKey { key: key.clone() },
                );
            }
            if !valid_label_value(value) {
                let value = value.clone();
                self.add(
                    format!("{at}.{key}"),
                    FieldProblem::InvalidLabelValue { value },
                );
            }
        }
    }

    fn selector(&mut self, selector: &LabelSelector, at: &str) {
        self.labels(selector.match_labels.as_ref(), &format!("{at}.matchLabels"));
        for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
            let at = format!("{at}.matchExpressions[{i}]");
            if !valid_label_key(&requirement.key) {
                let key = requirement.key.clone();
                self.add(format!("{at}.key"), FieldProblem::InvalidLabelKey { key });
            }
            let values = requirement.values.as_deref().unwrap_or_default();
            let operator = requirement.operator.clone();
            match operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    self.add(
                        format!("{at}.values"),
                        FieldProblem::ValuesRequired { operator },
                    );
                }
                "In" | "NotIn" => {
                    for (j, value) in values.iter().enumerate() {
                        if !valid_label_value(value) {
                            let value = value.clone();
                            let problem = FieldProblem::InvalidLabelValue { value };
                            self.add(format!("{at}.values[{j}]"), problem);
                        }
                    }
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    self.add(
                        format!("{at}.values"),
                        FieldProblem::ValuesForbidden { operator },
                    );
                }
                "Exists" | "DoesNotExist" => {}
                _ => self.add(
                    format!("{at}.operator"),
                    FieldProblem::UnknownOperator { operator },
                ),
            }
        }
    }

    fn policy_ports(&mut self, ports: Option<&[NetworkPolicyPort]>, at: &str) {
        for (i, port) in ports.unwrap_or_default().iter().enumerate() {
            let at = format!("{at}[{i}]");
            if let Some(protocol) = &port.protocol {
                self.protocol(protocol, format!("{at}.protocol"));
            }
            match (&port.port, port.end_port) {
                (None, None) => {}
                (None, Some(_)) => {
                    self.add(format!("{at}.endPort"), FieldProblem::EndPortWithoutPort)
                }
                (Some(IntOrString::String(name)), end_port) => {
                    self.port_name(name, format!("{at}.port"));
                    if end_port.is_some() {
                        let port = name.clone();
                        self.add(
                            format!("{at}.endPort"),
                            FieldProblem::EndPortWithNamedPort { port },
                        );
                    }
                }
                (Some(IntOrString::Int(port)), end_port) => {
                    self.port_number(*port, format!("{at}.port"));
                    if let Some(end_port) = end_port {
                        self.port_number(end_port, format!("{at}.endPort"));
                        if end_port < *port {
                            let problem = FieldProblem::EndPortBelowPort {
                                port: *port,
                                end_port,
                            };
                            self.add(format!("{at}.endPort"), problem);
                        }
                    }
                }
            }
        }
    }

    fn peers(&mut self, peers: Option<&[NetworkPolicyPeer]>, at: &str) {
        for (i, peer) in peers.unwrap_or_default().iter().enumerate() {
            let at = format!("{at}[{i}]");
            if let Some(selector) = &peer.pod_selector {
                self.selector(selector, &format!("{at}.podSelector"));
            }
            if let Some(selector) = &peer.namespace_selector {
                self.selector(selector, &format!("{at}.namespaceSelector"));
            }
            let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
            match &peer.ip_block {
                Some(_) if has_selector => self.add(at.clone(), FieldProblem::IpBlockWithSelectors),
                None if !has_selector => self.add(at.clone(), FieldProblem::EmptyPeer),
                _ => {}
            }
            if let Some(block) = &peer.ip_block {
                self.ip_block(block, &format!("{at}.ipBlock"));
            }
        }
    }

    fn ip_block(&mut self, block: &IPBlock, at: &str) {
        let cidr = block.cidr.parse::<IpNet>().ok();
        if cidr.is_none() {
            let problem = FieldProblem::InvalidCidr {
                cidr: block.cidr.clone(),
            };
            self.add(format!("{at}.cidr"), problem);
        }
        for (i, except_text) in block.except.iter().flatten().enumerate() {
            let field = format!("{at}.except[{i}]");
            let Ok(except) = except_text.parse::<IpNet>() else {
                self.add(
                    field,
                    FieldProblem::InvalidCidr {
                        cidr: except_text.clone(),
                    },
                );
                continue;
            };
            let Some(cidr) = cidr else { continue };
            let (except_text, cidr_text) = (except_text.clone(), block.cidr.clone());
            if except.addr().is_ipv4() != cidr.addr().is_ipv4() {
                let problem = FieldProblem::ExceptOtherFamily {
                    except: except_text,
                    cidr: cidr_text,
                };
                self.add(field, problem);
            } else if !cidr.contains(&except.network()) || except.prefix_len() <= cidr.prefix_len()
            {
                let problem = FieldProblem::ExceptNotStrictSubset {
                    except: except_text,
                    cidr: cidr_text,
                };
                self.add(field, problem);
            }
        }
    }

    fn port_number(&mut self, port: i32, field: String) {
        if !(1..=65535).contains(&port) {
            self.add(field, FieldProblem::PortOutOfRange { port });
        }
    }

    fn port_name(&mut self, name: &str, field: String) {
        if !valid_port_name(name) {
            self.add(
                field,
                FieldProblem::InvalidPortName {
                    name: name.to_owned(),
                },
            );
        }
    }

    fn protocol(&mut self, protocol: &str, field: String) {
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            self.add(
                field,
                FieldProblem::UnknownProtocol {
                    protocol: protocol.to_owned(),
                },
            );
        }
    }

    fn ip(&mut self, ip: &str, field: String) {
        if ip.parse::<IpAddr>().is_err() {
            self.add(field, FieldProblem::InvalidIp { ip: ip.to_owned() });
        }
    }
}
