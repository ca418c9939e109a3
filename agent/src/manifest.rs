//! Kubernetes manifests as `kubectl apply` reads them: multi-document YAML (`---`) and
//! `kind: List`, turned into typed objects; and the checks the API server makes before
//! accepting one ([`validate`]), so that a case holding a policy no cluster would accept fails
//! loudly instead of testing something that cannot exist.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_yaml_ng::Value;

use crate::cluster::{DEFAULT_NAMESPACE, ObjectKey};

/// One object of a manifest.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "objects are read once per manifest and moved into the cluster; boxing would only \
              add noise to every match"
)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    /// Any other kind (Services among them: the lab makes one per pod by itself).
    Ignored {
        kind: String,
        name: String,
    },
}

impl Object {
    pub fn kind(&self) -> &str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Ignored { kind, .. } => kind,
        }
    }
}

/// Where an object sits in a file: `document 2` (counted from 1, as a reader counts), or
/// `document 2 items[0]` inside a `kind: List`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub document: u32,
    pub item: Option<u32>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read the manifest: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: document {document}: invalid YAML: {source}")]
    Syntax {
        origin: String,
        document: u32,
        source: serde_yaml_ng::Error,
    },
    #[error(
        "{origin}: {at}: not a Kubernetes object (expected a mapping with apiVersion and kind)"
    )]
    NotAnObject { origin: String, at: Position },
    #[error("{origin}: {at}: {kind} has no {field}")]
    MissingField {
        origin: String,
        at: Position,
        kind: String,
        field: &'static str,
    },
    /// `object` is the kind and name: `NetworkPolicy x/allow-b`.
    #[error("{origin}: {at}: {object}: apiVersion {api_version:?} is not served, use {expected}")]
    UnsupportedApiVersion {
        origin: String,
        at: Position,
        object: String,
        api_version: String,
        expected: &'static str,
    },
    /// `detail` is the YAML deserializer's message, which starts with the path of the offending
    /// field (`spec.containers[0].ports[0].containerPort: invalid type: ...`).
    #[error("{origin}: {at}: {kind} {object}: {detail}")]
    Malformed {
        origin: String,
        at: Position,
        kind: String,
        object: String,
        detail: String,
    },
    /// An object that the API server would reject (see [`validate`]).
    #[error("{kind} {object}: {field}: {problem}")]
    Invalid {
        kind: &'static str,
        object: String,
        field: String,
        problem: FieldProblem,
    },
}

/// Reads every object of a manifest file.
pub fn load_file(path: impl AsRef<Path>) -> Result<Vec<Object>, ManifestError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Reads every object of a manifest text; `origin` (usually the file name) prefixes errors.
///
/// Pods and NetworkPolicies without a namespace get `default`, as `kubectl apply` gives them.
pub fn parse_str(text: &str, origin: &str) -> Result<Vec<Object>, ManifestError> {
    let mut objects = Vec::new();
    // The same stream is read twice in lockstep: once as untyped values, to learn each
    // document's kind, and once straight into the typed object, so that errors carry both the
    // field path and the line in the original text.
    let untyped = serde_yaml_ng::Deserializer::from_str(text);
    let typed = serde_yaml_ng::Deserializer::from_str(text);
    for (number, (document, typed_document)) in (1..).zip(untyped.zip(typed)) {
        // After a syntax error the iterator yields that error forever: `?` stops at the first.
        let value = Value::deserialize(document).map_err(|source| ManifestError::Syntax {
            origin: origin.to_owned(),
            document: number,
            source,
        })?;
        if value.is_null() {
            continue; // an empty document, such as one after a trailing `---`
        }
        let at = Position {
            document: number,
            item: None,
        };
        let header = Header::read(&value, origin, at)?;
        if header.kind == "List" {
            for (item, value) in (0..).zip(list_items(&value, &header, origin, at)?) {
                if value.is_null() {
                    continue;
                }
                let at = Position {
                    item: Some(item),
                    ..at
                };
                let header = Header::read(value, origin, at)?;
                objects.push(header.build(value, origin, at)?);
            }
        } else {
            objects.push(header.build(typed_document, origin, at)?);
        }
    }
    Ok(objects)
}

fn list_items<'v>(
    list: &'v Value,
    header: &Header,
    origin: &str,
    at: Position,
) -> Result<&'v [Value], ManifestError> {
    match list.get("items") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Sequence(items)) => Ok(items),
        Some(_) => Err(ManifestError::Malformed {
            origin: origin.to_owned(),
            at,
            kind: header.kind.clone(),
            object: header.name.clone(),
            detail: "items: expected a sequence of objects".to_owned(),
        }),
    }
}

/// What the untyped value tells about an object before it is read into its type.
struct Header {
    kind: String,
    api_version: String,
    name: String,
    namespace: Option<String>,
}

impl Header {
    fn read(value: &Value, origin: &str, at: Position) -> Result<Self, ManifestError> {
        let not_an_object = || ManifestError::NotAnObject {
            origin: origin.to_owned(),
            at,
        };
        if !value.is_mapping() {
            return Err(not_an_object());
        }
        let kind = value
            .get("kind")
            .and_then(scalar_text)
            .ok_or_else(not_an_object)?;
        let api_version = value
            .get("apiVersion")
            .and_then(scalar_text)
            .ok_or_else(|| ManifestError::MissingField {
                origin: origin.to_owned(),
                at,
                kind: kind.clone(),
                field: "apiVersion",
            })?;
        let metadata = value.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(scalar_text)
            .unwrap_or_default();
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(scalar_text);
        Ok(Self {
            kind,
            api_version,
            name,
            namespace,
        })
    }

    /// `namespace/name` for namespaced kinds, else `name`.
    fn object(&self) -> String {
        match (&*self.kind, &self.namespace) {
            ("Namespace", _) | (_, None) => self.name.clone(),
            (_, Some(namespace)) => format!("{namespace}/{}", self.name),
        }
    }

    fn build(
        &self,
        source: impl Source,
        origin: &str,
        at: Position,
    ) -> Result<Object, ManifestError> {
        let Some(expected) = served_version(&self.kind, &self.api_version) else {
            return Ok(Object::Ignored {
                kind: self.kind.clone(),
                name: self.object(),
            });
        };
        if self.api_version != expected {
            return Err(ManifestError::UnsupportedApiVersion {
                origin: origin.to_owned(),
                at,
                object: format!("{} {}", self.kind, self.object()),
                api_version: self.api_version.clone(),
                expected,
            });
        }
        if self.name.is_empty() {
            return Err(ManifestError::MissingField {
                origin: origin.to_owned(),
                at,
                kind: self.kind.clone(),
                field: "metadata.name",
            });
        }
        let malformed = |detail| ManifestError::Malformed {
            origin: origin.to_owned(),
            at,
            kind: self.kind.clone(),
            object: self.object(),
            detail,
        };
        Ok(match &*self.kind {
            "Namespace" => Object::Namespace(source.decode().map_err(malformed)?),
            "Pod" => {
                let mut pod: Pod = source.decode().map_err(malformed)?;
                default_namespace(&mut pod.metadata.namespace);
                Object::Pod(pod)
            }
            _ => {
                let mut policy: NetworkPolicy = source.decode().map_err(malformed)?;
                default_namespace(&mut policy.metadata.namespace);
                Object::NetworkPolicy(policy)
            }
        })
    }
}

/// The apiVersion the API server serves `kind` under, for the kinds read here; `None` for
/// everything else. A known kind under its own group but another version (an old
/// `extensions/v1beta1` NetworkPolicy) gets `Some`, so it is reported instead of skipped; a
/// same-named kind of another group (a CRD) is not ours and is ignored.
fn served_version(kind: &str, api_version: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (kind, group) {
        ("Namespace" | "Pod", "") => Some("v1"),
        ("NetworkPolicy", "networking.k8s.io" | "extensions") => Some("networking.k8s.io/v1"),
        _ => None,
    }
}

fn default_namespace(namespace: &mut Option<String>) {
    if namespace.as_deref().is_none_or(str::is_empty) {
        *namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
}

/// A plain scalar as text: names such as `01` or `true` are still names.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Something a typed object can be read from, giving the deserializer's message on failure.
trait Source {
    fn decode<T: DeserializeOwned>(self) -> Result<T, String>;
}

impl Source for serde_yaml_ng::Deserializer<'_> {
    fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        T::deserialize(self).map_err(|error| error.to_string())
    }
}

/// Items of a `kind: List` exist only as values, which serde_yaml_ng reads without tracking the
/// field path. Writing the item back out and reading that text gives the path; its line
/// numbers would point into the rewritten text, so they are left out.
impl Source for &Value {
    fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        let text = serde_yaml_ng::to_string(self).map_err(|error| error.to_string())?;
        serde_yaml_ng::from_str(&text).map_err(|error| {
            let message = error.to_string();
            let suffix = error
                .location()
                .map(|at| format!(" at line {} column {}", at.line(), at.column()));
            match suffix {
                Some(suffix) => message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
                None => message,
            }
        })
    }
}

// What the API server rejects. Each check follows the upstream validation
// (pkg/apis/networking/validation and pkg/apis/core/validation); nothing is normalised here.

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Object> {
        match parse_str(text, "test.yaml") {
            Ok(objects) => objects,
            Err(error) => panic!("{error}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match parse_str(text, "test.yaml") {
            Ok(objects) => panic!("expected an error, got {objects:?}"),
            Err(error) => error.to_string(),
        }
    }

    const POD_AND_POLICY: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: a
  labels: {pod: a}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
---
";

    #[test]
    fn documents_are_read_in_order_and_a_trailing_separator_is_harmless() {
        let objects = parse(POD_AND_POLICY);
        assert_eq!(objects.len(), 2);
        assert!(
            matches!(&objects[0], Object::Pod(pod) if pod.metadata.name.as_deref() == Some("a"))
        );
        assert!(matches!(&objects[1], Object::NetworkPolicy(_)));
    }

    #[test]
    fn pods_and_policies_without_a_namespace_land_in_default() {
        let objects = parse(POD_AND_POLICY);
        let Object::Pod(pod) = &objects[0] else {
            panic!("not a pod: {objects:?}")
        };
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let Object::NetworkPolicy(policy) = &objects[1] else {
            panic!("{objects:?}")
        };
        assert_eq!(policy.metadata.namespace.as_deref(), Some("x"));
    }

    #[test]
    fn unquoted_y_namespace_stays_a_string() {
        // YAML 1.1 (and kubectl) would read a bare `y` as `true`; serde_yaml_ng reads YAML 1.2,
        // where it is the string "y". The shared cases quote it anyway.
        let objects = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: y}\n");
        let Object::Pod(pod) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert_eq!(pod.metadata.namespace.as_deref(), Some("y"));
        let objects = parse("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: y\n");
        let Object::Namespace(namespace) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert_eq!(namespace.metadata.name.as_deref(), Some("y"));
    }

    #[test]
    fn a_list_yields_its_items() {
        let objects = parse(
            "apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n\
             - {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}}\n",
        );
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].kind(), "Namespace");
        assert_eq!(objects[1].kind(), "Pod");
    }

    #[test]
    fn services_and_other_kinds_are_ignored_by_name() {
        let objects = parse("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n");
        assert_eq!(
            objects,
            [Object::Ignored {
                kind: "Service".into(),
                name: "x/s".into()
            }]
        );
    }

    #[test]
    fn malformed_field_error_names_file_document_object_and_field() {
        let error = parse_error(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  containers:\n\
             \x20 - name: c\n    ports:\n    - containerPort: eighty\n",
        );
        assert!(
            error.starts_with("test.yaml: document 2: Pod x/a: "),
            "{error}"
        );
        assert!(
            error.contains("spec.containers[0].ports[0].containerPort"),
            "{error}"
        );
        assert!(error.contains("at line 12"), "{error}");
    }

    #[test]
    fn malformed_list_item_names_the_item_and_field_without_a_misleading_line() {
        let error = parse_error(
            "apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: 3}}\n",
        );
        assert!(
            error.starts_with("test.yaml: document 1 items[0]: Pod a: "),
            "{error}"
        );
        assert!(error.contains("spec.containers: invalid type"), "{error}");
        assert!(!error.contains(" at line "), "{error}");
    }

    #[test]
    fn syntax_error_names_the_document_and_stops() {
        let error =
            parse_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\na: [\n");
        assert!(
            error.starts_with("test.yaml: document 2: invalid YAML"),
            "{error}"
        );
    }

    #[test]
    fn old_network_policy_api_version_is_an_error_not_ignored() {
        let error = parse_error(
            "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n",
        );
        assert!(
            error.contains("NetworkPolicy x/p: apiVersion \"extensions/v1beta1\""),
            "{error}"
        );
    }

    #[test]
    fn object_without_a_name_or_kind_is_an_error() {
        let error = parse_error("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n");
        assert_eq!(error, "test.yaml: document 1: Pod has no metadata.name");
        let error = parse_error("apiVersion: v1\nmetadata: {name: a}\n");
        assert!(error.contains("not a Kubernetes object"), "{error}");
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let Err(error) = load_file("/nonexistent/palisade/x.yaml") else {
            panic!("read it")
        };
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/palisade/x.yaml: cannot read")
        );
    }

    fn policy(spec: &str) -> NetworkPolicy {
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: allow-b, namespace: x}}\nspec:\n{spec}"
        );
        match parse(&text).pop() {
            Some(Object::NetworkPolicy(policy)) => policy,
            other => panic!("not a policy: {other:?}"),
        }
    }

    /// The messages of every problem `validate_policy` finds in `spec`.
    fn policy_problems(spec: &str) -> Vec<String> {
        match validate_policy(&policy(spec)) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_policy_passes() {
        let spec = "  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}
    ports: [{port: 80, endPort: 90}, {port: serve-81-tcp, protocol: UDP}, {protocol: SCTP}]
  egress:
  - to: [{ipBlock: {cidr: 'fd00::/64', except: ['fd00::1/128']}}]
";
        assert_eq!(policy_problems(spec), Vec::<String>::new());
    }

    #[test]
    fn invalid_cidr_names_policy_and_field() {
        let spec =
            "  ingress:\n  - from:\n    - podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/33}\n";
        assert_eq!(
            policy_problems(spec),
            [
                "NetworkPolicy x/allow-b: spec.ingress[0].from[1].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\""
            ]
        );
        let spec = "  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.1}\n";
        assert_eq!(policy_problems(spec).len(), 1, "an address is not a CIDR");
    }

    #[test]
    fn except_must_be_a_strict_subset_of_the_same_family() {
        let spec = "  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n        \
                    except: [10.0.0.0/16, 10.1.0.0/24, 'fd00::/64', 10.0.0.0/8, 10.0.5.0/24, bad]\n";
        let problems = policy_problems(spec);
        let field = "NetworkPolicy x/allow-b: spec.egress[0].to[0].ipBlock.except";
        assert_eq!(
            problems,
            [
                format!("{field}[0]: 10.0.0.0/16 is not a strict subset of cidr 10.0.0.0/16"),
                format!("{field}[1]: 10.1.0.0/24 is not a strict subset of cidr 10.0.0.0/16"),
                format!("{field}[2]: fd00::/64 is not in the address family of cidr 10.0.0.0/16"),
                format!("{field}[3]: 10.0.0.0/8 is not a strict subset of cidr 10.0.0.0/16"),
                format!("{field}[5]: invalid CIDR \"bad\""),
            ]
        );
    }

    #[test]
    fn end_port_needs_a_numeric_port_at_or_below_it() {
        let spec = "  ingress:\n  - ports:\n    - {endPort: 90}\n    - {port: http, endPort: 90}\n    \
                    - {port: 90, endPort: 80}\n    - {port: 80, endPort: 80}\n";
        let field = "NetworkPolicy x/allow-b: spec.ingress[0].ports";
        assert_eq!(
            policy_problems(spec),
            [
                format!("{field}[0].endPort: endPort needs a port"),
                format!("{field}[1].endPort: endPort cannot be used with the named port \"http\""),
                format!("{field}[2].endPort: endPort 80 is below port 90"),
            ]
        );
    }

    #[test]
    fn port_numbers_names_and_protocols_are_checked() {
        let spec = "  egress:\n  - ports:\n    - {port: 0}\n    - {port: 65536}\n    \
                    - {port: 80, endPort: 70000}\n    - {port: '80'}\n    - {port: 53, protocol: ICMP}\n    \
                    - {port: 53, protocol: udp}\n";
        let problems = policy_problems(spec);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].ends_with("ports[0].port: port 0 is outside 1..=65535"));
        assert!(problems[1].ends_with("ports[1].port: port 65536 is outside 1..=65535"));
        assert!(problems[2].ends_with("ports[2].endPort: port 70000 is outside 1..=65535"));
        assert!(
            problems[3].contains("ports[3].port: invalid port name \"80\""),
            "a quoted number is a name"
        );
        assert!(problems[4].ends_with(
            "ports[4].protocol: unsupported protocol \"ICMP\" (expected TCP, UDP or SCTP)"
        ));
        assert!(
            problems[5].contains("ports[5].protocol"),
            "protocols are case-sensitive"
        );
    }

    #[test]
    fn selector_operators_and_their_values_are_checked() {
        let spec = "  podSelector:\n    matchExpressions:\n    - {key: a, operator: In}\n    \
                    - {key: a, operator: NotIn, values: []}\n    - {key: a, operator: Exists, values: [x]}\n    \
                    - {key: a, operator: DoesNotExist}\n    - {key: a, operator: Equals, values: [x]}\n";
        let field = "NetworkPolicy x/allow-b: spec.podSelector.matchExpressions";
        assert_eq!(
            policy_problems(spec),
            [
                format!("{field}[0].values: operator In needs at least one value"),
                format!("{field}[1].values: operator NotIn needs at least one value"),
                format!("{field}[2].values: operator Exists takes no values"),
                format!(
                    "{field}[4].operator: unknown operator \"Equals\" (expected In, NotIn, Exists or DoesNotExist)"
                ),
            ]
        );
    }

    #[test]
    fn peer_selectors_are_checked_too() {
        let spec = "  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In}]}\n";
        let problems = policy_problems(spec);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .contains("spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values")
        );
    }

    #[test]
    fn ip_block_with_a_selector_and_an_empty_peer_are_invalid() {
        let spec = "  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n    - {}\n";
        let field = "NetworkPolicy x/allow-b: spec.ingress[0].from";
        let problems = policy_problems(spec);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(
            problems[0],
            format!(
                "{field}[0]: ipBlock cannot be combined with podSelector or namespaceSelector in one peer"
            )
        );
        assert!(
            problems[1].starts_with(&format!("{field}[1]: empty peer")),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn unknown_policy_types_and_label_keys_are_invalid() {
        let spec =
            "  podSelector: {matchLabels: {'bad key': x, ok: '-bad'}}\n  policyTypes: [ingress]\n";
        let problems = policy_problems(spec);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.policyTypes[0]: unknown policy type \"ingress\""))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.podSelector.matchLabels: invalid label key \"bad key\""))
        );
        assert!(
            problems.iter().any(
                |p| p.contains("spec.podSelector.matchLabels.ok: invalid label value \"-bad\"")
            )
        );
    }

    #[test]
    fn label_keys_and_values_follow_the_api_rules() {
        assert!(valid_label_key("kubernetes.io/metadata.name"));
        assert!(valid_label_key("app.kubernetes.io/name"));
        assert!(valid_label_key("Pod_Name-2"));
        assert!(!valid_label_key(""));
        assert!(!valid_label_key("/name"));
        assert!(!valid_label_key("Upper.io/name"));
        assert!(!valid_label_key(&"k".repeat(64)));
        assert!(valid_label_value(""));
        assert!(valid_label_value("y"));
        assert!(!valid_label_value("a b"));
        assert!(!valid_label_value("trailing-"));
    }

    #[test]
    fn pods_with_bad_ports_or_addresses_are_invalid() {
        let objects = parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  containers:\n  \
             - name: c\n    ports:\n    - {containerPort: 0}\n    - {containerPort: 80, protocol: ICMP, name: Serve}\n\
             status:\n  podIP: 10.0.0.300\n  podIPs: [{ip: 'fd00::1'}, {ip: nope}]\n",
        );
        let Err(errors) = validate(&objects[0]) else {
            panic!("accepted")
        };
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert_eq!(
            problems[0],
            "Pod x/a: spec.containers[0].ports[0].containerPort: port 0 is outside 1..=65535"
        );
        assert!(
            problems[1].starts_with("Pod x/a: spec.containers[0].ports[1].protocol: unsupported")
        );
        assert!(
            problems[2].starts_with(
                "Pod x/a: spec.containers[0].ports[1].name: invalid port name \"Serve\""
            )
        );
        assert_eq!(
            problems[3],
            "Pod x/a: status.podIP: invalid IP address \"10.0.0.300\""
        );
        assert_eq!(
            problems[4],
            "Pod x/a: status.podIPs[1].ip: invalid IP address \"nope\""
        );
    }
}
