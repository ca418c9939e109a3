//! ClusterNetworkPolicy, `policy.networking.k8s.io/v1alpha2` (kubernetes-sigs/network-policy-api,
//! `apis/v1alpha2/clusternetworkpolicy_types.go`, bundle v0.2.0): the cluster administrator's
//! tiers, `Admin` (before NetworkPolicy) and `Baseline` (after it).
//!
//! The types follow upstream's field for field, with one difference of shape: every field that
//! upstream's schema constrains with `minProperties`/`maxProperties` ("exactly one of") is an
//! `Option` here, and so is `tier` (an unknown value reads as [`Tier::Unknown`]), so that an
//! object the API server should have refused (v1.20 enforces no CEL rule) still reads, and
//! [`validate`] names what is wrong instead of the watch failing on it. The CRD these types
//! generate is checked against upstream's in `tests.rs`; the schema pieces serde cannot say
//! (selectors, conditions, list and map types) are in `schema.rs`.
//!
//! `nodes` and `domainNames` are upstream's experimental channel: `nodes` is read and enforced,
//! `domainNames` is refused by [`validate`] (named object and field) until it is implemented.

mod schema;
#[cfg(test)]
mod tests;
mod validation;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::validation::{CnpError, CnpProblem, parse_cidr, validate};

/// The API group and version, as manifests write them.
pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
/// The kind, as manifests write it.
pub const KIND: &str = "ClusterNetworkPolicy";

/// The CRD as users install it: what the types generate (held to upstream's schema by
/// `tests.rs`) with upstream's annotations, the API approval among them (an API server refuses
/// a CRD of a `*.k8s.io` group without it).
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt as _;
    let mut crd = ClusterNetworkPolicy::crd();
    let annotations = crd
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (key, value) in [
        (
            "api-approved.kubernetes.io",
            "https://github.com/kubernetes-sigs/network-policy-api/pull/347",
        ),
        ("policy.networking.k8s.io/bundle-version", "v0.2.0"),
        ("policy.networking.k8s.io/channel", "standard"),
    ] {
        annotations.insert(key.to_owned(), value.to_owned());
    }
    crd
}

/// The spec of a ClusterNetworkPolicy: which pods (`subject`), where it stands (`tier`,
/// `priority`) and its rules, in the order they are tried.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
    kind = "ClusterNetworkPolicy",
    shortname = "cnp",
    status = "ClusterNetworkPolicyStatus",
    derive = "PartialEq",
    // The JSON form: clippy reads two `printcolumn(type_ = "string", ..)` as duplicated
    // attributes.
    printcolumn = r#"{"name": "Tier", "type": "string", "jsonPath": ".spec.tier"}"#,
    printcolumn = r#"{"name": "Priority", "type": "string", "jsonPath": ".spec.priority"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::upstream_shape)]
pub struct ClusterNetworkPolicySpec {
    /// `None` only when the manifest leaves it out (required: [`validate`] refuses that).
    #[schemars(required)]
    pub tier: Option<Tier>,
    /// 0..=1000; lower values are tried first within the tier.
    #[schemars(required, range(min = 0, max = 1000))]
    pub priority: Option<i32>,
    #[schemars(required)]
    pub subject: Option<Subject>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub egress: Vec<EgressRule>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Tier {
    /// Before NetworkPolicy: its Accept and Deny cannot be overridden by namespace owners.
    Admin,
    /// After NetworkPolicy: decides only for pods no NetworkPolicy isolates.
    Baseline,
    /// Anything else (an old API server enforces no enum); [`validate`] refuses it.
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

/// The pods the policy applies to: exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Subject {
    /// Every pod of the namespaces selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods by namespace AND pod labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Empty or absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub namespace_selector: Option<LabelSelector>,
    /// Required (`None` only when the manifest leaves it out); empty: every pod.
    #[schemars(required, schema_with = "schema::label_selector")]
    pub pod_selector: Option<LabelSelector>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Final for this direction (an egress Accept still needs the destination's ingress).
    Accept,
    /// Final for the connection.
    Deny,
    /// Skips the rest of this tier; evaluation goes on in the next one.
    Pass,
    /// Anything else; [`validate`] refuses it.
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// For people and logs; at most 100 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    pub action: Action,
    /// 1..=25 sources; the rule matches when any does.
    #[schemars(length(min = 1, max = 25))]
    pub from: Vec<IngressPeer>,
    /// Absent: every protocol and port. Otherwise 1..=25, any of which matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<Protocol>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    pub action: Action,
    /// 1..=25 destinations; the rule matches when any does.
    #[schemars(length(min = 1, max = 25))]
    pub to: Vec<EgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<Protocol>>,
}

/// A source: exactly one field. None set means a field this version does not know (upstream:
/// "fail closed").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct IngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A destination: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct EgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Experimental channel: node addresses (`status.addresses`) of the nodes selected. Read
    /// when present, but left out of the generated CRD, which is upstream's standard channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub nodes: Option<LabelSelector>,
    /// CIDRs; they match pod addresses too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::networks")]
    pub networks: Option<Vec<String>>,
    /// Experimental channel, not implemented: [`validate`] refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub domain_names: Option<Vec<String>>,
}

/// Exactly one of the four.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Protocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// A container port name of the destination pod, with that port's protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// `tcp`, `udp` or `sctp`: at least one property (only `destinationPort` exists).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct ProtocolPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// A port number or a range: exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// Inclusive, `start < end`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "Start port must be less than End port", "rule": "self.start < self.end"}
]))]
pub struct PortRange {
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}

/// What an implementation reports (Palisade writes none yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::status_shape)]
pub struct ClusterNetworkPolicyStatus {
    #[serde(default)]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}
