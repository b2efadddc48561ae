//! Kubernetes label selectors (`metav1.LabelSelector`) as `LabelSelectorAsSelector`
//! converts and matches them: `matchLabels` plus `matchExpressions` with `In`,
//! `NotIn`, `Exists` and `DoesNotExist`, and the same validation, so a selector the
//! Go agent cannot convert is refused here too.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Why a selector cannot be converted. The text names the offending part the way the
/// apimachinery validation does, for the `InvalidNodeSelector` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// A selector that converted: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In { key: String, values: Vec<String> },
    NotIn { key: String, values: Vec<String> },
    Exists { key: String },
    DoesNotExist { key: String },
}

/// Whether a `nodeSelector` selects every node: absent, or with neither
/// `matchLabels` nor `matchExpressions` entries.
pub fn is_catch_all(selector: Option<&LabelSelector>) -> bool {
    selector.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    })
}

impl Selector {
    /// Converts a selector, validating keys, values and operators as Kubernetes does.
    /// An empty selector converts to one that matches everything.
    pub fn parse(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            validate_key(key)?;
            validate_value(key, value)?;
            requirements.push(Requirement::In {
                key: key.clone(),
                values: vec![value.clone()],
            });
        }
        for expression in selector.match_expressions.iter().flatten() {
            requirements.push(requirement(expression)?);
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn { key, values } => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            Requirement::Exists { key } => labels.contains_key(key),
            Requirement::DoesNotExist { key } => !labels.contains_key(key),
        })
    }
}

fn requirement(expression: &LabelSelectorRequirement) -> Result<Requirement, SelectorError> {
    let key = expression.key.clone();
    let values = expression.values.clone().unwrap_or_default();
    validate_key(&key)?;
    let requirement = match expression.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() {
                return Err(SelectorError(format!(
                    "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty (key {key:?})"
                )));
            }
            if expression.operator == "In" {
                Requirement::In {
                    key,
                    values: values.clone(),
                }
            } else {
                Requirement::NotIn {
                    key,
                    values: values.clone(),
                }
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                return Err(SelectorError(format!(
                    "values: Invalid value: {values:?}: values set must be empty for exists and does not exist (key {key:?})"
                )));
            }
            if expression.operator == "Exists" {
                Requirement::Exists { key }
            } else {
                Requirement::DoesNotExist { key }
            }
        }
        other => {
            return Err(SelectorError(format!(
                "{other:?} is not a valid label selector operator"
            )));
        }
    };
    for value in &values {
        validate_value(&expression.key, value)?;
    }
    Ok(requirement)
}

/// `IsQualifiedName`: an optional DNS-1123 subdomain prefix and `/`, then a name of
/// at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |why: &str| Err(SelectorError(format!("key: Invalid value: {key:?}: {why}")));
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return invalid("prefix part must be non-empty");
            }
            if !is_dns1123_subdomain(prefix) {
                return invalid("prefix part must be a lowercase RFC 1123 subdomain");
            }
            *name
        }
        _ => {
            return invalid(
                "a qualified name must consist of an optional DNS subdomain prefix and '/' followed by a name",
            );
        }
    };
    if name.is_empty() {
        return invalid("name part must be non-empty");
    }
    if name.len() > 63 {
        return invalid("name part must be no more than 63 characters");
    }
    if !is_qualified_name_part(name) {
        return invalid(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// `IsValidLabelValue`: empty, or at most 63 characters shaped like a name part.
fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.len() > 63 {
        return Err(SelectorError(format!(
            "values: Invalid value: {value:?}: must be no more than 63 characters (key {key:?})"
        )));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        return Err(SelectorError(format!(
            "values: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (key {key:?})"
        )));
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at most 253.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    is_lower_alnum(*first)
                        && is_lower_alnum(*last)
                        && bytes.iter().all(|b| is_lower_alnum(*b) || *b == b'-')
                }
                _ => false,
            }
        })
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        exprs: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(match_labels)),
            match_expressions: Some(exprs),
        }
    }

    #[test]
    fn catch_all() {
        assert!(is_catch_all(None));
        assert!(is_catch_all(Some(&LabelSelector::default())));
        assert!(is_catch_all(Some(&selector(&[], vec![]))));
        assert!(!is_catch_all(Some(&selector(&[("a", "b")], vec![]))));
        assert!(!is_catch_all(Some(&selector(
            &[],
            vec![expr("a", "Exists", None)]
        ))));
    }

    #[test]
    fn match_labels_and_expressions() {
        let node = labels(&[
            ("zone", "a"),
            ("role", "edge"),
            ("kubernetes.io/os", "linux"),
        ]);
        let cases = [
            (selector(&[("zone", "a")], vec![]), true),
            (selector(&[("zone", "b")], vec![]), false),
            (selector(&[("zone", "a"), ("role", "core")], vec![]), false),
            (
                selector(&[], vec![expr("zone", "In", Some(&["a", "b"]))]),
                true,
            ),
            (selector(&[], vec![expr("zone", "In", Some(&["b"]))]), false),
            (
                selector(&[], vec![expr("missing", "In", Some(&["b"]))]),
                false,
            ),
            (
                selector(&[], vec![expr("zone", "NotIn", Some(&["b"]))]),
                true,
            ),
            (
                selector(&[], vec![expr("zone", "NotIn", Some(&["a"]))]),
                false,
            ),
            (
                selector(&[], vec![expr("missing", "NotIn", Some(&["a"]))]),
                true,
            ),
            (selector(&[], vec![expr("role", "Exists", None)]), true),
            (
                selector(&[], vec![expr("missing", "Exists", Some(&[]))]),
                false,
            ),
            (
                selector(&[], vec![expr("role", "DoesNotExist", None)]),
                false,
            ),
            (
                selector(&[], vec![expr("missing", "DoesNotExist", None)]),
                true,
            ),
            (
                selector(
                    &[("kubernetes.io/os", "linux")],
                    vec![expr("role", "In", Some(&["edge"]))],
                ),
                true,
            ),
            (selector(&[], vec![]), true),
        ];
        for (sel, want) in cases {
            let parsed = Selector::parse(&sel).unwrap();
            assert_eq!(parsed.matches(&node), want, "{sel:?}");
        }
    }

    #[test]
    fn invalid_selectors() {
        let bad = [
            selector(&[], vec![expr("zone", "Equals", Some(&["a"]))]),
            selector(&[], vec![expr("zone", "in", Some(&["a"]))]),
            selector(&[], vec![expr("zone", "In", None)]),
            selector(&[], vec![expr("zone", "NotIn", Some(&[]))]),
            selector(&[], vec![expr("zone", "Exists", Some(&["a"]))]),
            selector(&[], vec![expr("zone", "DoesNotExist", Some(&["a"]))]),
            selector(&[], vec![expr("", "Exists", None)]),
            selector(&[], vec![expr("-zone", "Exists", None)]),
            selector(&[], vec![expr("a/b/c", "Exists", None)]),
            selector(&[], vec![expr("/zone", "Exists", None)]),
            selector(&[], vec![expr("Example.com/zone", "Exists", None)]),
            selector(&[], vec![expr("zone", "In", Some(&["bad value"]))]),
            selector(&[("zone", "a b")], vec![]),
            selector(&[("zone", "-a")], vec![]),
            selector(&[(&"k".repeat(64), "a")], vec![]),
            selector(&[("zone", &"v".repeat(64))], vec![]),
        ];
        for sel in bad {
            assert!(Selector::parse(&sel).is_err(), "{sel:?}");
        }
        let good = [
            selector(&[("zone", "")], vec![]),
            selector(&[("example.com/zone", "A_b-c.9")], vec![]),
            selector(&[(&"k".repeat(63), &"v".repeat(63))], vec![]),
            selector(
                &[],
                vec![expr("topology.kubernetes.io/zone", "Exists", None)],
            ),
        ];
        for sel in good {
            assert!(Selector::parse(&sel).is_ok(), "{sel:?}");
        }
        let err = Selector::parse(&selector(&[], vec![expr("zone", "Gt", Some(&["1"]))]));
        assert_eq!(
            err.unwrap_err().to_string(),
            "\"Gt\" is not a valid label selector operator"
        );
    }
}
