//! The parts of the ClusterNetworkPolicy schema that the derive cannot say: label selectors and
//! conditions as the API server's own types publish them (with their list and map types), the
//! CIDR strings with their CEL rule, and the shape fix-up that makes `Option` fields plain
//! optional properties, as upstream's Go `omitempty` fields are.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

/// `metav1.LabelSelector` as upstream's CRD embeds it (`x-kubernetes-map-type: atomic`).
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchExpressions": {
                "type": "array",
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"type": "string"},
                        "values": {
                            "type": "array",
                            "x-kubernetes-list-type": "atomic",
                            "items": {"type": "string"}
                        }
                    }
                }
            },
            "matchLabels": {
                "type": "object",
                "additionalProperties": {"type": "string"}
            }
        }
    })
}

/// `networks`: 1..=25 CIDRs, a set, each checked by CEL's `isCIDR`.
pub fn networks(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 25,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 43,
            "x-kubernetes-validations": [
                {"message": "Invalid CIDR format provided", "rule": "isCIDR(self)"}
            ]
        }
    })
}

/// `status.conditions`: `metav1.Condition`, a map keyed by `type`.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string", "maxLength": 32768},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "reason": {
                    "type": "string",
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}

/// Upstream requires `conditions` in a status; reading one without them (`status: {}`) as empty
/// is kinder to a watch, so serde defaults it and only the schema requires it.
pub fn status_shape(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        object.insert("required".into(), serde_json::json!(["conditions"]));
        if let Some(Value::Object(conditions)) = object
            .get_mut("properties")
            .and_then(|p| p.get_mut("conditions"))
        {
            conditions.remove("default");
        }
    }
}

/// Applied to the whole spec: an `Option` field is an optional property, not a nullable one
/// (upstream's are `omitempty`; `nullable` would let `null` through where upstream has none),
/// and an `Option` the schema requires (`tier`, `priority`, `subject`, `podSelector`) is listed
/// in `required` by the derive's `#[schemars(required)]`.
pub fn upstream_shape(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        strip_null(object);
    }
}

fn strip_null(object: &mut Map<String, Value>) {
    // `Option<T>` with `T` a plain type: `"type": ["integer", "null"]`.
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    // `Option<T>` with `T` a structure: `"anyOf": [T, {"type": "null"}]`.
    if let Some(Value::Array(alternatives)) = object.get("anyOf") {
        let kept: Vec<Value> = alternatives
            .iter()
            .filter(|a| a.get("type") != Some(&Value::from("null")))
            .cloned()
            .collect();
        if let [Value::Object(inner)] = kept.as_slice() {
            let inner = inner.clone();
            object.remove("anyOf");
            for (key, value) in inner {
                object.entry(key).or_insert(value);
            }
        }
    }
    for value in object.values_mut() {
        match value {
            Value::Object(inner) => strip_null(inner),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        strip_null(inner);
                    }
                }
            }
            _ => {}
        }
    }
}
