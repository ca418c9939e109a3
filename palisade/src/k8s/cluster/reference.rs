//! How `delete` and `label` steps name what they change: object references
//! (`pod/x/a`, `netpol/x/p`) and label edits (`pod/x/b key=value other-`), parsed and checked.

use super::{ClusterError, ObjectKey};

/// An object named the way `delete` and `label` steps name them: `namespace/y`, `pod/x/a`,
/// `networkpolicy/x/allow-b` (kubectl's plurals and short names are accepted too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectRef {
    Namespace(String),
    Pod(ObjectKey),
    NetworkPolicy(ObjectKey),
    /// Cluster-scoped: `clusternetworkpolicy/NAME` (or `cnp/NAME`).
    ClusterNetworkPolicy(String),
}

impl std::str::FromStr for ObjectRef {
    type Err = ClusterError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        let bad = || ClusterError::BadReference {
            reference: reference.to_owned(),
        };
        let mut parts = reference.split('/');
        let kind = parts.next().ok_or_else(bad)?;
        let names: Vec<&str> = parts.collect();
        if names.iter().any(|name| name.is_empty()) {
            return Err(bad());
        }
        match (kind.to_ascii_lowercase().as_str(), names.as_slice()) {
            ("namespace" | "namespaces" | "ns", [name]) => Ok(Self::Namespace((*name).to_owned())),
            ("pod" | "pods" | "po", [namespace, name]) => {
                Ok(Self::Pod(ObjectKey::new(*namespace, *name)))
            }
            ("networkpolicy" | "networkpolicies" | "netpol", [namespace, name]) => {
                Ok(Self::NetworkPolicy(ObjectKey::new(*namespace, *name)))
            }
            ("clusternetworkpolicy" | "clusternetworkpolicies" | "cnp", [name]) => {
                Ok(Self::ClusterNetworkPolicy((*name).to_owned()))
            }
            (
                "namespace"
                | "namespaces"
                | "ns"
                | "pod"
                | "pods"
                | "po"
                | "networkpolicy"
                | "networkpolicies"
                | "netpol"
                | "clusternetworkpolicy"
                | "clusternetworkpolicies"
                | "cnp",
                _,
            ) => Err(bad()),
            _ => Err(ClusterError::UnknownKind {
                reference: reference.to_owned(),
                kind: kind.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Namespace(name) => write!(f, "namespace/{name}"),
            Self::Pod(key) => write!(f, "pod/{key}"),
            Self::NetworkPolicy(key) => write!(f, "networkpolicy/{key}"),
            Self::ClusterNetworkPolicy(name) => write!(f, "clusternetworkpolicy/{name}"),
        }
    }
}

/// A parsed `label` step: `pod/x/b pod2=updated other-`, changes applied left to right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelChange {
    pub target: ObjectRef,
    pub edits: Vec<LabelEdit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelEdit {
    Set { key: String, value: String },
    Remove { key: String },
}

impl std::str::FromStr for LabelChange {
    type Err = ClusterError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut words = spec.split_whitespace();
        let no_changes = || ClusterError::NoLabelChanges {
            spec: spec.to_owned(),
        };
        let target: ObjectRef = words.next().ok_or_else(no_changes)?.parse()?;
        let edits = words
            .map(|word| parse_label_edit(spec, word))
            .collect::<Result<Vec<_>, _>>()?;
        if edits.is_empty() {
            return Err(no_changes());
        }
        Ok(Self { target, edits })
    }
}

fn parse_label_edit(spec: &str, word: &str) -> Result<LabelEdit, ClusterError> {
    let edit = match word.split_once('=') {
        Some((key, value)) => LabelEdit::Set {
            key: key.to_owned(),
            value: value.to_owned(),
        },
        None => match word.strip_suffix('-') {
            Some(key) => LabelEdit::Remove {
                key: key.to_owned(),
            },
            None => {
                return Err(ClusterError::BadLabelChange {
                    spec: spec.to_owned(),
                    change: word.to_owned(),
                });
            }
        },
    };
    let (LabelEdit::Set { key, .. } | LabelEdit::Remove { key }) = &edit;
    if !crate::k8s::manifest::valid_label_key(key) {
        return Err(ClusterError::BadLabelKey {
            spec: spec.to_owned(),
            key: key.clone(),
        });
    }
    if let LabelEdit::Set { key, value } = &edit
        && !crate::k8s::manifest::valid_label_value(value)
    {
        return Err(ClusterError::BadLabelValue {
            spec: spec.to_owned(),
            key: key.clone(),
            value: value.clone(),
        });
    }
    Ok(edit)
}
