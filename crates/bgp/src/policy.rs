//! Export policy: which local routes a peer gets, and with which attributes.
//!
//! The model is BGPConfiguration's (k8gobgp, GoBGP underneath): named defined sets (prefix,
//! neighbour, community, AS path), named policies made of statements, and per neighbour an ordered
//! list of policy names with a default action. Evaluation follows GoBGP: policies in order, their
//! statements in order; the first statement whose conditions all hold applies its actions, and its
//! `accept`/`reject` ends the evaluation. When no statement matches, the default action decides.
//!
//! Pure: [`PolicySet::export`] takes a route and a neighbour address and returns the route as the
//! peer should see it, or `None`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use regex::Regex;

use ipnet::IpNet;

use crate::rib::LocalRoute;
use crate::wire::Prefix;

/// Parses a prefix of a set or a dynamic-neighbour range: `a.b.c.d/n` or `x::y/n` (surrounding
/// whitespace allowed, host bits allowed and ignored when matching); a bare address is a host
/// prefix.
pub fn parse_prefix(s: &str) -> Result<IpNet, PolicyError> {
    let bad = || PolicyError::BadPrefix(s.to_string());
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (
            a.trim().parse::<IpAddr>().map_err(|_| bad())?,
            l.trim().parse::<u8>().map_err(|_| bad())?,
        ),
        None => {
            let a = s.trim().parse::<IpAddr>().map_err(|_| bad())?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    IpNet::new(addr, len).map_err(|_| bad())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid prefix {0:?}")]
    BadPrefix(String),
    #[error("invalid community {0:?}: expected AS:VALUE with both parts 0-65535")]
    BadCommunity(String),
    #[error("invalid large community {0:?}: expected A:B:C with 32-bit parts")]
    BadLargeCommunity(String),
    #[error("invalid regular expression {0:?} in set {1:?}: {2}")]
    BadRegex(String, String, String),
    #[error(
        "mask range {min}..{max} of {prefix:?} is not within the prefix length and the family's maximum"
    )]
    BadMaskRange { prefix: String, min: u8, max: u8 },
    #[error("policy {policy:?} refers to {kind} set {set:?}, which is not defined")]
    UnknownSet {
        policy: String,
        kind: &'static str,
        set: String,
    },
    #[error("neighbour {neighbor} refers to policy {policy:?}, which is not defined")]
    UnknownPolicy { neighbor: String, policy: String },
}

/// Parses a standard community `AS:VALUE`.
pub fn parse_community(s: &str) -> Result<u32, PolicyError> {
    let bad = || PolicyError::BadCommunity(s.to_string());
    let (a, v) = s.split_once(':').ok_or_else(bad)?;
    let a: u16 = a.parse().map_err(|_| bad())?;
    let v: u16 = v.parse().map_err(|_| bad())?;
    Ok((u32::from(a) << 16) | u32::from(v))
}

/// Parses a large community `A:B:C`.
pub fn parse_large_community(s: &str) -> Result<(u32, u32, u32), PolicyError> {
    let bad = || PolicyError::BadLargeCommunity(s.to_string());
    let mut it = s.split(':').map(|p| p.parse::<u32>().map_err(|_| bad()));
    let (Some(a), Some(b), Some(c), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    Ok((a?, b?, c?))
}

/// One prefix-set entry: routes whose prefix lies in `prefix` with a length in `min..=max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: IpNet,
    pub min_len: u8,
    pub max_len: u8,
}

impl PrefixMatch {
    /// `maskLengthMin`/`maskLengthMax` of 0 mean "the prefix's own length" (GoBGP's reading).
    pub fn new(prefix: &str, min: u8, max: u8) -> Result<Self, PolicyError> {
        let net = parse_prefix(prefix)?;
        let len = net.prefix_len();
        let min_len = if min == 0 { len } else { min };
        let max_len = if max == 0 { len.max(min_len) } else { max };
        if min_len < len || max_len < min_len || max_len > net.max_prefix_len() {
            return Err(PolicyError::BadMaskRange {
                prefix: prefix.to_string(),
                min,
                max,
            });
        }
        Ok(Self {
            prefix: net,
            min_len,
            max_len,
        })
    }

    fn matches(&self, p: &Prefix) -> bool {
        let net = p.net();
        self.prefix.contains(&net.addr())
            && (self.min_len..=self.max_len).contains(&net.prefix_len())
    }
}

/// A community-set entry: an exact community or a regular expression over `AS:VALUE` (and
/// `A:B:C` for large communities), as GoBGP allows.
#[derive(Debug, Clone)]
pub struct CommunityPattern(Regex);

impl CommunityPattern {
    fn new(set: &str, s: &str) -> Result<Self, PolicyError> {
        let anchored = if s.chars().all(|c| c.is_ascii_digit() || c == ':') {
            format!("^{s}$")
        } else {
            s.to_string()
        };
        Regex::new(&anchored)
            .map(Self)
            .map_err(|e| PolicyError::BadRegex(s.to_string(), set.to_string(), e.to_string()))
    }
}

/// An AS-path-set entry: a regular expression over the path written as ASNs separated by single
/// spaces. As in GoBGP, `_` matches a boundary (start, end or a space).
#[derive(Debug, Clone)]
pub struct AsPathPattern(Regex);

impl AsPathPattern {
    fn new(set: &str, s: &str) -> Result<Self, PolicyError> {
        let expanded = s.replace('_', "(^|[ ]|$)");
        Regex::new(&expanded)
            .map(Self)
            .map_err(|e| PolicyError::BadRegex(s.to_string(), set.to_string(), e.to_string()))
    }
}

/// How a set condition applies (BGPConfiguration `match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchKind {
    /// At least one element matches.
    #[default]
    Any,
    /// Every element of the route (e.g. every community) is in the set.
    All,
    /// No element matches.
    Invert,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCondition {
    pub set: String,
    pub kind: MatchKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub prefix_set: Option<SetCondition>,
    pub neighbor_set: Option<SetCondition>,
    pub community_set: Option<SetCondition>,
    pub as_path_set: Option<SetCondition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteAction {
    #[default]
    Accept,
    Reject,
}

/// `community.type`: add to, remove from, or replace the route's communities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommunityOp {
    #[default]
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommunityAction {
    pub op: CommunityOp,
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// `med.type`: `mod` adds to the current MED (GoBGP), `replace` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MedAction {
    Add(i64),
    Replace(u32),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    pub route: RouteAction,
    pub community: Option<CommunityAction>,
    pub med: Option<MedAction>,
    pub local_pref: Option<u32>,
    /// Prepend `asn` this many times (after our own ASN, as FRR and GoBGP do on export).
    pub as_prepend: Option<(u32, u8)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    pub name: String,
    pub conditions: Conditions,
    pub actions: Actions,
}

/// Per neighbour: policy names in order and what happens to routes no statement decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPolicy {
    pub policies: Vec<String>,
    pub default_action: RouteAction,
}

impl Default for ExportPolicy {
    /// No policies; everything is exported.
    fn default() -> Self {
        Self {
            policies: Vec::new(),
            default_action: RouteAction::Accept,
        }
    }
}

/// Defined sets and policies as written in a configuration, before compilation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// name → entries (`ipPrefix`, `maskLengthMin`, `maskLengthMax`).
    pub prefix_sets: BTreeMap<String, Vec<(String, u8, u8)>>,
    /// name → neighbour addresses or prefixes.
    pub neighbor_sets: BTreeMap<String, Vec<String>>,
    /// name → communities or regular expressions.
    pub community_sets: BTreeMap<String, Vec<String>>,
    /// name → AS path regular expressions.
    pub as_path_sets: BTreeMap<String, Vec<String>>,
    /// name → statements.
    pub policies: BTreeMap<String, Vec<Statement>>,
}

/// Compiled sets and policies.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    prefix_sets: BTreeMap<String, Vec<PrefixMatch>>,
    neighbor_sets: BTreeMap<String, Vec<IpNet>>,
    community_sets: BTreeMap<String, Vec<CommunityPattern>>,
    as_path_sets: BTreeMap<String, Vec<AsPathPattern>>,
    policies: BTreeMap<String, Vec<Statement>>,
}

impl PolicySet {
    /// Compiles the sets and checks every reference; the first problem is the error.
    pub fn compile(config: &PolicyConfig) -> Result<Self, PolicyError> {
        let mut out = Self::default();
        for (name, entries) in &config.prefix_sets {
            let v = entries
                .iter()
                .map(|(p, min, max)| PrefixMatch::new(p, *min, *max))
                .collect::<Result<_, _>>()?;
            out.prefix_sets.insert(name.clone(), v);
        }
        for (name, entries) in &config.neighbor_sets {
            let v = entries
                .iter()
                .map(|s| parse_prefix(s))
                .collect::<Result<_, _>>()?;
            out.neighbor_sets.insert(name.clone(), v);
        }
        for (name, entries) in &config.community_sets {
            let v = entries
                .iter()
                .map(|s| CommunityPattern::new(name, s))
                .collect::<Result<_, _>>()?;
            out.community_sets.insert(name.clone(), v);
        }
        for (name, entries) in &config.as_path_sets {
            let v = entries
                .iter()
                .map(|s| AsPathPattern::new(name, s))
                .collect::<Result<_, _>>()?;
            out.as_path_sets.insert(name.clone(), v);
        }
        for (name, statements) in &config.policies {
            for s in statements {
                out.check_refs(name, &s.conditions)?;
            }
            out.policies.insert(name.clone(), statements.clone());
        }
        Ok(out)
    }

    fn check_refs(&self, policy: &str, c: &Conditions) -> Result<(), PolicyError> {
        let missing = |kind: &'static str, set: &SetCondition| PolicyError::UnknownSet {
            policy: policy.to_string(),
            kind,
            set: set.set.clone(),
        };
        if let Some(s) = &c.prefix_set
            && !self.prefix_sets.contains_key(&s.set)
        {
            return Err(missing("prefix", s));
        }
        if let Some(s) = &c.neighbor_set
            && !self.neighbor_sets.contains_key(&s.set)
        {
            return Err(missing("neighbor", s));
        }
        if let Some(s) = &c.community_set
            && !self.community_sets.contains_key(&s.set)
        {
            return Err(missing("community", s));
        }
        if let Some(s) = &c.as_path_set
            && !self.as_path_sets.contains_key(&s.set)
        {
            return Err(missing("as-path", s));
        }
        Ok(())
    }

    /// Checks that every policy a neighbour names exists.
    pub fn check_export(&self, neighbor: &str, export: &ExportPolicy) -> Result<(), PolicyError> {
        match export
            .policies
            .iter()
            .find(|p| !self.policies.contains_key(*p))
        {
            Some(p) => Err(PolicyError::UnknownPolicy {
                neighbor: neighbor.to_string(),
                policy: p.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The route as `neighbor` should receive it under `export`, or `None` if rejected.
    pub fn export(
        &self,
        route: &LocalRoute,
        neighbor: IpAddr,
        export: &ExportPolicy,
    ) -> Option<LocalRoute> {
        if export.policies.is_empty() {
            return (export.default_action == RouteAction::Accept).then(|| route.clone());
        }
        let mut out = route.clone();
        for name in &export.policies {
            for statement in self.policies.get(name).into_iter().flatten() {
                if self.matches(&statement.conditions, &out, neighbor) {
                    apply(&statement.actions, &mut out);
                    return (statement.actions.route == RouteAction::Accept).then_some(out);
                }
            }
        }
        (export.default_action == RouteAction::Accept).then_some(out)
    }

    fn matches(&self, c: &Conditions, route: &LocalRoute, neighbor: IpAddr) -> bool {
        if let Some(cond) = &c.prefix_set {
            let set = self.prefix_sets.get(&cond.set).map(Vec::as_slice);
            let hit = set
                .unwrap_or_default()
                .iter()
                .any(|m| m.matches(&route.prefix));
            if !apply_kind(cond.kind, hit, hit) {
                return false;
            }
        }
        if let Some(cond) = &c.neighbor_set {
            let set = self.neighbor_sets.get(&cond.set).map(Vec::as_slice);
            let hit = set
                .unwrap_or_default()
                .iter()
                .any(|n| n.contains(&neighbor));
            if !apply_kind(cond.kind, hit, hit) {
                return false;
            }
        }
        if let Some(cond) = &c.community_set {
            let set = self
                .community_sets
                .get(&cond.set)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let texts: Vec<String> = route
                .communities
                .iter()
                .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                .chain(
                    route
                        .large_communities
                        .iter()
                        .map(|(a, b, c)| format!("{a}:{b}:{c}")),
                )
                .collect();
            let in_set = |t: &String| set.iter().any(|p| p.0.is_match(t));
            let any = texts.iter().any(in_set);
            let all = !texts.is_empty() && texts.iter().all(in_set);
            if !apply_kind(cond.kind, any, all) {
                return false;
            }
        }
        if let Some(cond) = &c.as_path_set {
            let set = self
                .as_path_sets
                .get(&cond.set)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let path = route
                .as_path_prepend
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            let any = set.iter().any(|p| p.0.is_match(&path));
            let all = !set.is_empty() && set.iter().all(|p| p.0.is_match(&path));
            if !apply_kind(cond.kind, any, all) {
                return false;
            }
        }
        true
    }
}

fn apply_kind(kind: MatchKind, any: bool, all: bool) -> bool {
    match kind {
        MatchKind::Any => any,
        MatchKind::All => all,
        MatchKind::Invert => !any,
    }
}

fn apply(actions: &Actions, route: &mut LocalRoute) {
    if let Some(c) = &actions.community {
        match c.op {
            CommunityOp::Add => {
                for v in &c.communities {
                    if !route.communities.contains(v) {
                        route.communities.push(*v);
                    }
                }
                for v in &c.large_communities {
                    if !route.large_communities.contains(v) {
                        route.large_communities.push(*v);
                    }
                }
            }
            CommunityOp::Remove => {
                route.communities.retain(|v| !c.communities.contains(v));
                route
                    .large_communities
                    .retain(|v| !c.large_communities.contains(v));
            }
            CommunityOp::Replace => {
                route.communities = c.communities.clone();
                route.large_communities = c.large_communities.clone();
            }
        }
    }
    match actions.med {
        Some(MedAction::Replace(v)) => route.med = Some(v),
        Some(MedAction::Add(d)) => {
            let cur = i64::from(route.med.unwrap_or(0));
            route.med = Some(u32::try_from((cur + d).clamp(0, i64::from(u32::MAX))).unwrap_or(0));
        }
        None => {}
    }
    if let Some(lp) = actions.local_pref {
        route.local_pref = Some(lp);
    }
    if let Some((asn, n)) = actions.as_prepend {
        let mut prepend = vec![asn; usize::from(n)];
        prepend.extend_from_slice(&route.as_path_prepend);
        route.as_path_prepend = prepend;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv4Prefix;
    use std::net::Ipv4Addr;

    fn route(addr: [u8; 4], len: u8) -> LocalRoute {
        LocalRoute::originated(Prefix::V4(
            Ipv4Prefix::new(Ipv4Addr::from(addr), len).unwrap(),
        ))
    }

    fn cond(set: &str) -> Option<SetCondition> {
        Some(SetCondition {
            set: set.into(),
            kind: MatchKind::Any,
        })
    }

    fn config() -> PolicyConfig {
        let mut c = PolicyConfig::default();
        c.prefix_sets
            .insert("vips".into(), vec![("203.0.113.0/24".into(), 24, 32)]);
        c.neighbor_sets
            .insert("upstream".into(), vec!["198.51.100.1".into()]);
        c.community_sets
            .insert("tagged".into(), vec!["65001:100".into()]);
        c.policies.insert(
            "out".into(),
            vec![
                Statement {
                    name: "vips-upstream".into(),
                    conditions: Conditions {
                        prefix_set: cond("vips"),
                        neighbor_set: cond("upstream"),
                        ..Conditions::default()
                    },
                    actions: Actions {
                        route: RouteAction::Accept,
                        community: Some(CommunityAction {
                            op: CommunityOp::Add,
                            communities: vec![parse_community("65001:200").unwrap()],
                            large_communities: vec![(65001, 1, 2)],
                        }),
                        med: Some(MedAction::Replace(50)),
                        local_pref: Some(200),
                        as_prepend: Some((65001, 2)),
                    },
                },
                Statement {
                    name: "drop-tagged".into(),
                    conditions: Conditions {
                        community_set: cond("tagged"),
                        ..Conditions::default()
                    },
                    actions: Actions {
                        route: RouteAction::Reject,
                        ..Actions::default()
                    },
                },
            ],
        );
        c
    }

    fn export(policies: &[&str], default_action: RouteAction) -> ExportPolicy {
        ExportPolicy {
            policies: policies.iter().map(|s| s.to_string()).collect(),
            default_action,
        }
    }

    #[test]
    fn first_matching_statement_applies_its_actions() {
        let set = PolicySet::compile(&config()).unwrap();
        let out = set
            .export(
                &route([203, 0, 113, 10], 32),
                "198.51.100.1".parse().unwrap(),
                &export(&["out"], RouteAction::Reject),
            )
            .unwrap();
        assert_eq!(out.communities, vec![(65001 << 16) | 200]);
        assert_eq!(out.large_communities, vec![(65001, 1, 2)]);
        assert_eq!(out.med, Some(50));
        assert_eq!(out.local_pref, Some(200));
        assert_eq!(out.as_path_prepend, vec![65001, 65001]);
    }

    #[test]
    fn neighbour_and_default_action_decide_the_rest() {
        let set = PolicySet::compile(&config()).unwrap();
        let other = "198.51.100.9".parse().unwrap();
        let r = route([203, 0, 113, 10], 32);
        assert!(
            set.export(&r, other, &export(&["out"], RouteAction::Reject))
                .is_none()
        );
        assert_eq!(
            set.export(&r, other, &export(&["out"], RouteAction::Accept)),
            Some(r.clone())
        );
        let mut tagged = r;
        tagged.communities.push((65001 << 16) | 100);
        assert!(
            set.export(&tagged, other, &export(&["out"], RouteAction::Accept))
                .is_none()
        );
    }

    #[test]
    fn prefix_length_range_is_honoured() {
        let m = PrefixMatch::new("203.0.113.0/24", 25, 30).unwrap();
        let p = |len| Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 0), len).unwrap());
        assert!(!m.matches(&p(24)));
        assert!(m.matches(&p(25)) && m.matches(&p(30)));
        assert!(!m.matches(&p(32)));
        let exact = PrefixMatch::new("203.0.113.0/24", 0, 0).unwrap();
        assert!(exact.matches(&p(24)) && !exact.matches(&p(25)));
        assert!(PrefixMatch::new("203.0.113.0/24", 20, 32).is_err());
    }

    #[test]
    fn invert_and_all_match_kinds() {
        let mut c = config();
        c.community_sets
            .insert("two".into(), vec!["65001:1".into(), "65001:2".into()]);
        c.policies.insert(
            "only-all".into(),
            vec![Statement {
                name: "s".into(),
                conditions: Conditions {
                    community_set: Some(SetCondition {
                        set: "two".into(),
                        kind: MatchKind::All,
                    }),
                    ..Conditions::default()
                },
                actions: Actions::default(),
            }],
        );
        c.policies.insert(
            "not-vips".into(),
            vec![Statement {
                name: "s".into(),
                conditions: Conditions {
                    prefix_set: Some(SetCondition {
                        set: "vips".into(),
                        kind: MatchKind::Invert,
                    }),
                    ..Conditions::default()
                },
                actions: Actions::default(),
            }],
        );
        let set = PolicySet::compile(&c).unwrap();
        let nb = "198.51.100.9".parse().unwrap();
        let mut r = route([203, 0, 113, 10], 32);
        r.communities = vec![(65001 << 16) | 1];
        assert!(
            set.export(&r, nb, &export(&["only-all"], RouteAction::Reject))
                .is_some()
        );
        r.communities.push((65002 << 16) | 1);
        assert!(
            set.export(&r, nb, &export(&["only-all"], RouteAction::Reject))
                .is_none()
        );
        assert!(
            set.export(&r, nb, &export(&["not-vips"], RouteAction::Reject))
                .is_none()
        );
        assert!(
            set.export(
                &route([198, 51, 100, 7], 32),
                nb,
                &export(&["not-vips"], RouteAction::Reject)
            )
            .is_some()
        );
    }

    #[test]
    fn as_path_sets_use_gobgp_boundaries() {
        let p = AsPathPattern::new("s", "_65001_").unwrap();
        assert!(p.0.is_match("65001"));
        assert!(p.0.is_match("65000 65001 65002"));
        assert!(!p.0.is_match("650011"));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            parse_community("65536:1"),
            Err(PolicyError::BadCommunity("65536:1".into()))
        );
        assert!(parse_community("1:2:3").is_err());
        assert_eq!(parse_large_community("1:2:3"), Ok((1, 2, 3)));
        assert!(parse_large_community("1:2").is_err());
        let mut c = config();
        c.policies.insert(
            "broken".into(),
            vec![Statement {
                name: "s".into(),
                conditions: Conditions {
                    prefix_set: cond("nope"),
                    ..Conditions::default()
                },
                actions: Actions::default(),
            }],
        );
        assert!(matches!(
            PolicySet::compile(&c),
            Err(PolicyError::UnknownSet { .. })
        ));
        let set = PolicySet::compile(&config()).unwrap();
        assert!(
            set.check_export("198.51.100.1", &export(&["missing"], RouteAction::Accept))
                .is_err()
        );
    }

    #[test]
    fn ipnet_contains() {
        let n = parse_prefix("198.51.100.0/24").unwrap();
        assert!(n.contains(&"198.51.100.77".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"198.51.101.1".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"2001:db8::1".parse::<IpAddr>().unwrap()));
        assert!(
            parse_prefix("0.0.0.0/0")
                .unwrap()
                .contains(&"203.0.113.1".parse::<IpAddr>().unwrap())
        );
        assert!(
            parse_prefix("2001:db8::/32")
                .unwrap()
                .contains(&"2001:db8:5::1".parse::<IpAddr>().unwrap())
        );
        assert!(parse_prefix("198.51.100.0/33").is_err());
    }
}
