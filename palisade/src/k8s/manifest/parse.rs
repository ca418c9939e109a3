//! Reading manifest text into [`Object`]s: documents, `kind: List` items, the apiVersion each
//! kind is served under, and deserializer errors turned into [`ManifestError`]s with positions.

use std::path::Path;

use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use serde::{Deserialize, de::DeserializeOwned};
use serde_yaml_ng::Value;

use super::{ManifestError, Object, Position};
use crate::k8s::{
    cluster::DEFAULT_NAMESPACE,
    cnp::{self, ClusterNetworkPolicy},
};

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
            ("Namespace" | "Node" | cnp::KIND, _) | (_, None) => self.name.clone(),
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
            "Node" => Object::Node(source.decode().map_err(malformed)?),
            // Cluster-scoped: a namespace written in the manifest means nothing, as kubectl
            // ignores it.
            cnp::KIND => {
                let mut policy: ClusterNetworkPolicy = source.decode().map_err(malformed)?;
                policy.metadata.namespace = None;
                Object::ClusterNetworkPolicy(policy)
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
        ("Namespace" | "Pod" | "Node", "") => Some("v1"),
        (cnp::KIND, "policy.networking.k8s.io") => Some(cnp::API_VERSION),
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
