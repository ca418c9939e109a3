//! Label selectors (`matchLabels` AND `matchExpressions`), as `metav1.LabelSelector` defines them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// "A label selector is a label query over a set of resources. The result of matchLabels and
/// matchExpressions are ANDed. An empty label selector matches all objects."
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                // "NotIn" also matches objects that do not have the key.
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // Validation rejects unknown operators; if one slips through, select nothing
                // (fail closed: a peer that selects nothing allows nothing).
                _ => false,
            }
        })
}

/// Whether `selector` is empty (`{}`): it matches every object whatever its labels, so a
/// caller may skip reading them.
pub fn matches_everything(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        assert!(matches(&LabelSelector::default(), &labels(&[("a", "b")])));
        assert!(super::matches_everything(&LabelSelector::default()));
        let empty_lists = LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(Vec::new()),
        };
        assert!(super::matches_everything(&empty_lists));
        assert!(!super::matches_everything(&expr("tier", "Exists", &[])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let mut sel = expr("tier", "In", &["web"]);
        sel.match_labels = Some([("app".to_string(), "x".to_string())].into());
        assert!(matches(&sel, &labels(&[("app", "x"), ("tier", "web")])));
        assert!(!matches(&sel, &labels(&[("app", "x"), ("tier", "db")])));
        assert!(!matches(&sel, &labels(&[("tier", "web")])));
    }

    #[test]
    fn not_in_matches_objects_without_the_key() {
        assert!(matches(&expr("ns", "NotIn", &["x"]), &labels(&[])));
        assert!(!matches(
            &expr("ns", "NotIn", &["x"]),
            &labels(&[("ns", "x")])
        ));
    }

    #[test]
    fn exists_and_does_not_exist_ignore_values() {
        assert!(matches(&expr("k", "Exists", &[]), &labels(&[("k", "")])));
        assert!(!matches(
            &expr("k", "DoesNotExist", &[]),
            &labels(&[("k", "")])
        ));
    }

    #[test]
    fn unknown_operator_selects_nothing() {
        assert!(!matches(&expr("k", "Near", &["v"]), &labels(&[("k", "v")])));
    }
}
