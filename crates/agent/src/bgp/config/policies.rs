//! Policies of a BGPConfiguration: defined sets, statements with their conditions and
//! actions, communities, and a neighbour's export policy.

use super::*;

impl Mapper<'_> {
    pub(super) fn policy(&mut self, spec: &BGPConfigurationSpec) -> Result<PolicyConfig, MapError> {
        let mut out = PolicyConfig::default();
        for (i, set) in spec.defined_sets.iter().flatten().enumerate() {
            let path = format!("spec.definedSets[{i}]");
            let list = set.list.clone().unwrap_or_default();
            match set.set_type.as_str() {
                "neighbor" => {
                    out.neighbor_sets.insert(set.name.clone(), list);
                }
                "community" => {
                    for (j, c) in list.iter().enumerate() {
                        if c.chars().all(|ch| ch.is_ascii_digit() || ch == ':') {
                            check_community(&format!("{path}.list[{j}]"), c)?;
                        }
                    }
                    out.community_sets.insert(set.name.clone(), list);
                }
                "as-path" => {
                    out.as_path_sets.insert(set.name.clone(), list);
                }
                _ => {
                    let prefixes = set
                        .prefixes
                        .iter()
                        .flatten()
                        .map(|p| {
                            (
                                p.ip_prefix.clone(),
                                u8::try_from(p.mask_length_min.unwrap_or(0)).unwrap_or(u8::MAX),
                                u8::try_from(p.mask_length_max.unwrap_or(0)).unwrap_or(u8::MAX),
                            )
                        })
                        .collect();
                    out.prefix_sets.insert(set.name.clone(), prefixes);
                }
            }
        }
        for (i, def) in spec.policy_definitions.iter().flatten().enumerate() {
            let mut statements = Vec::new();
            for (j, s) in def.statements.iter().enumerate() {
                let path = format!("spec.policyDefinitions[{i}].statements[{j}]");
                statements.push(self.statement(&path, s)?);
            }
            out.policies.insert(def.name.clone(), statements);
        }
        policy::PolicySet::compile(&out).map_err(|e| invalid("spec.policyDefinitions", e))?;
        Ok(out)
    }

    pub(super) fn statement(
        &mut self,
        path: &str,
        s: &crd::Statement,
    ) -> Result<Statement, MapError> {
        let set =
            |m: &Option<crd::MatchSet>, field: &str| -> Result<Option<SetCondition>, MapError> {
                m.as_ref()
                    .map(|m| {
                        let kind = match m.match_option.as_deref().unwrap_or("any") {
                            "any" | "" => MatchKind::Any,
                            "all" => MatchKind::All,
                            "invert" => MatchKind::Invert,
                            other => {
                                return Err(invalid(
                                    format!("{path}.conditions.{field}.matchOption"),
                                    format!("{other:?} is not any, all or invert"),
                                ));
                            }
                        };
                        Ok(SetCondition {
                            set: m.name.clone(),
                            kind,
                        })
                    })
                    .transpose()
            };
        let c = &s.conditions;
        if c.rpki_result.is_some() {
            self.unsupported
                .push(format!("{path}.conditions.rpkiResult"));
        }
        let conditions = Conditions {
            prefix_set: set(&c.prefix_set, "prefixSet")?,
            neighbor_set: set(&c.neighbor_set, "neighborSet")?,
            community_set: set(&c.community_set, "communitySet")?,
            as_path_set: set(&c.as_path_set, "asPathSet")?,
        };
        let a = &s.actions;
        let route = match a.route_action.as_str() {
            "accept" => RouteAction::Accept,
            "reject" => RouteAction::Reject,
            other => {
                return Err(invalid(
                    format!("{path}.actions.routeAction"),
                    format!("{other:?} is not accept or reject"),
                ));
            }
        };
        let community = a
            .community
            .as_ref()
            .map(|c| -> Result<CommunityAction, MapError> {
                let op = match c.action_type.to_ascii_lowercase().as_str() {
                    "add" | "" => CommunityOp::Add,
                    "remove" => CommunityOp::Remove,
                    "replace" => CommunityOp::Replace,
                    other => {
                        return Err(invalid(
                            format!("{path}.actions.community.type"),
                            format!("{other:?} is not add, remove or replace"),
                        ));
                    }
                };
                let (communities, large_communities) = parse_communities(
                    &format!("{path}.actions.community.communities"),
                    &c.communities,
                )?;
                Ok(CommunityAction {
                    op,
                    communities,
                    large_communities,
                })
            })
            .transpose()?;
        let med = a
            .med
            .as_ref()
            .map(|m| match m.action_type.to_ascii_lowercase().as_str() {
                "mod" => Ok(MedAction::Add(m.value)),
                "replace" | "" => u32::try_from(m.value).map(MedAction::Replace).map_err(|_| {
                    invalid(
                        format!("{path}.actions.med.value"),
                        "out of range 0..4294967295",
                    )
                }),
                other => Err(invalid(
                    format!("{path}.actions.med.type"),
                    format!("{other:?} is not mod or replace"),
                )),
            })
            .transpose()?;
        let as_prepend = a.as_prepend.as_ref().map(|p| {
            (
                p.asn,
                u8::try_from(p.repeat.unwrap_or(1).clamp(1, 255)).unwrap_or(u8::MAX),
            )
        });
        Ok(Statement {
            name: s.name.clone(),
            conditions,
            actions: Actions {
                route,
                community,
                med,
                local_pref: a.local_pref,
                as_prepend,
            },
        })
    }
}

pub(super) fn check_community(path: &str, s: &str) -> Result<(), MapError> {
    let parts = s.split(':').count();
    let result = if parts == 3 {
        policy::parse_large_community(s).map(|_| ())
    } else {
        policy::parse_community(s).map(|_| ())
    };
    result.map_err(|e| invalid(path, e))
}

/// Standard and large communities.
type Communities = (Vec<u32>, Vec<(u32, u32, u32)>);

/// Splits `AS:VALUE` and `A:B:C` strings into standard and large communities.
pub(super) fn parse_communities(path: &str, list: &[String]) -> Result<Communities, MapError> {
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if s.split(':').count() == 3 {
            large.push(policy::parse_large_community(s).map_err(|e| invalid(&p, e))?);
        } else {
            standard.push(policy::parse_community(s).map_err(|e| invalid(&p, e))?);
        }
    }
    Ok((standard, large))
}

pub(super) fn export_policy(
    apply: Option<&ApplyPolicy>,
    path: &str,
) -> Result<Option<ExportPolicy>, MapError> {
    let Some(e) = apply.and_then(|a| a.export_policy.as_ref()) else {
        return Ok(None);
    };
    let default_action = match e.default_action.as_deref().unwrap_or("accept") {
        "accept" | "" => RouteAction::Accept,
        "reject" => RouteAction::Reject,
        other => {
            return Err(invalid(
                format!("{path}.exportPolicy.defaultAction"),
                format!("{other:?} is not accept or reject"),
            ));
        }
    };
    Ok(Some(ExportPolicy {
        policies: e.policies.clone().unwrap_or_default(),
        default_action,
    }))
}
