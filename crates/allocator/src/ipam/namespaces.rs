//! Which ServiceGroup a Service may use: the namespace binding
//! index, built once per generation from the accepted groups, and the
//! resolution and boundary checks run for every allocation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::error::{IpamError, go_list};
use super::{DEFAULT_GROUP, Group, Ipam};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Binding {
    /// Every group serving the namespace, sorted.
    pub eligible: Vec<String>,
    pub default: Option<String>,
    /// Some eligible group sets `enforceNamespaces`.
    pub enforce: bool,
    /// Why there is no default (verbatim into events).
    pub default_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Bindings {
    by_namespace: HashMap<String, Binding>,
    /// Groups eligible for at least one enforcing namespace.
    confined: HashSet<String>,
}

impl Bindings {
    pub(crate) fn build(groups: &[Group]) -> Self {
        let mut eligible: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut marked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut enforce: HashSet<&str> = HashSet::new();
        for g in groups {
            for ns in &g.served {
                eligible.entry(ns).or_default().insert(&g.name);
                if g.enforce {
                    enforce.insert(ns);
                }
                if g.namespace_default {
                    marked.entry(ns).or_default().insert(&g.name);
                }
            }
        }
        let mut by_namespace = HashMap::new();
        let mut confined = HashSet::new();
        for (ns, names) in eligible {
            let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
            let marks: Vec<String> = marked
                .get(ns)
                .map(|m| m.iter().map(|s| (*s).to_owned()).collect())
                .unwrap_or_default();
            let (default, default_error) = if names.len() == 1 {
                (Some(names[0].clone()), None)
            } else if marks.len() == 1 {
                (Some(marks[0].clone()), None)
            } else if marks.is_empty() {
                (
                    None,
                    Some(format!(
                        "namespace {ns:?} is served by {} and none sets namespaceDefault; exactly one must",
                        go_list(&names)
                    )),
                )
            } else {
                (
                    None,
                    Some(format!(
                        "namespace {ns:?}: {} all set namespaceDefault; exactly one must",
                        go_list(&marks)
                    )),
                )
            };
            let enforcing = enforce.contains(ns);
            if enforcing {
                confined.extend(names.iter().cloned());
            }
            by_namespace.insert(
                ns.to_owned(),
                Binding {
                    eligible: names,
                    default,
                    enforce: enforcing,
                    default_error,
                },
            );
        }
        Self {
            by_namespace,
            confined,
        }
    }

    pub(crate) fn binding(&self, namespace: &str) -> Option<&Binding> {
        self.by_namespace.get(namespace)
    }
}

/// How the group was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `purelb.io/service-group`.
    Annotation,
    /// The namespace's default.
    Namespace,
    /// The group named `default`.
    Default,
    /// `default`, because the namespace's groups name no single default.
    AmbiguousDefault,
}

/// The group a Service allocates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub group: String,
    pub via: Via,
    /// For [`Via::AmbiguousDefault`]: the Warning `ConfigurationWarning` text.
    pub warning: Option<String>,
}

impl Ipam {
    /// Chooses the group for a Service in `namespace` that requests no
    /// specific address: the `service-group` annotation, else the
    /// namespace's default, else `default`.
    pub fn resolve(
        &self,
        namespace: &str,
        service_group: Option<&str>,
    ) -> Result<Resolution, IpamError> {
        let binding = self.bindings.binding(namespace);
        if let Some(name) = service_group {
            self.check(namespace, name)?;
            return Ok(Resolution {
                group: name.to_owned(),
                via: Via::Annotation,
                warning: None,
            });
        }
        if let Some(b) = binding {
            if let Some(default) = &b.default {
                self.check(namespace, default)?;
                return Ok(Resolution {
                    group: default.clone(),
                    via: Via::Namespace,
                    warning: None,
                });
            }
            let reason = b.default_error.clone().unwrap_or_default();
            if b.enforce {
                return Err(IpamError::AmbiguousDefault(reason));
            }
            self.check(namespace, DEFAULT_GROUP)?;
            return Ok(Resolution {
                group: DEFAULT_GROUP.to_owned(),
                via: Via::AmbiguousDefault,
                warning: Some(format!(
                    "{reason}; allocated from {DEFAULT_GROUP:?} instead"
                )),
            });
        }
        self.check(namespace, DEFAULT_GROUP)?;
        Ok(Resolution {
            group: DEFAULT_GROUP.to_owned(),
            via: Via::Default,
            warning: None,
        })
    }

    /// Whether a Service in `namespace` may use group `name` (upstream's
    /// `checked`): the group exists, is not confined elsewhere, and the
    /// namespace is not confined to other groups.
    pub fn check(&self, namespace: &str, name: &str) -> Result<(), IpamError> {
        let Some(group) = self.group(name) else {
            if self.rejected.contains(name) {
                return Err(IpamError::NoUsablePool(name.to_owned()));
            }
            return Err(IpamError::UnknownPool(name.to_owned()));
        };
        if self.bindings.confined.contains(name) && !group.serves(namespace) {
            return Err(IpamError::GroupConfined {
                group: name.to_owned(),
                namespace: namespace.to_owned(),
            });
        }
        if let Some(b) = self.bindings.binding(namespace)
            && b.enforce
            && b.eligible
                .binary_search_by(|n| n.as_str().cmp(name))
                .is_err()
        {
            return Err(IpamError::NamespaceConfined {
                namespace: namespace.to_owned(),
                eligible: b.eligible.clone(),
                group: name.to_owned(),
            });
        }
        Ok(())
    }
}
