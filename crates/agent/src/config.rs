//! Which LBNodeAgent governs this node, and the announcer settings it resolves to
//! (spec §2.2, §5.2 steps 3–6).
//!
//! [`select`] takes every LBNodeAgent (all namespaces) and the node's labels and
//! returns a [`Selection`]: the effective agent with its [`AgentSettings`], the agents
//! to warn about, and the election selector state. Nothing here talks to the API.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use purelb_api::crd::LBNodeAgent;
use purelb_api::crd::lb_node_agent::{
    DEFAULT_DUMMY_INTERFACE, DEFAULT_LOCAL_INTERFACE, GARPConfig, InterfaceAddressConfig,
    LBNodeAgentLocalSpec,
};
use regex::Regex;

use crate::event::{self, Event};
use crate::go_duration::{format_go_duration, parse_go_duration};
use crate::label_selector::{Selector, SelectorError, is_catch_all};

/// An LBNodeAgent's namespace and name; displays as `ns/name`. Orders by
/// (namespace, name), the precedence order within a selector class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId {
    pub namespace: String,
    pub name: String,
}

impl AgentId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(agent: &LBNodeAgent) -> Self {
        Self::new(
            agent.metadata.namespace.clone().unwrap_or_default(),
            agent.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The election interface-selector state, the `state` label of
/// `purelb_lbnodeagent_selector_state` (exactly one series is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorState {
    /// No matching agent has `local` (or there are no agents): the lease advertises
    /// the default-route subnets.
    Default,
    /// The effective agent's interfaces decide what the lease advertises.
    Configured,
    /// Agents exist but none selects this node: the lease advertises nothing.
    Deselected,
    /// The effective agent's configuration is invalid: the lease advertises nothing.
    Invalid,
}

impl SelectorState {
    pub const ALL: [Self; 4] = [
        Self::Default,
        Self::Configured,
        Self::Deselected,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Configured => "configured",
            Self::Deselected => "deselected",
            Self::Invalid => "invalid",
        }
    }
}

impl fmt::Display for SelectorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the local announcement interface is found (`spec.local.localInterface`).
#[derive(Debug, Clone)]
pub enum InterfaceChoice {
    /// `default` or empty: the default-route link of the address's family.
    DefaultRoute,
    /// An unanchored regular expression matched against link names.
    Regex(Regex),
}

impl PartialEq for InterfaceChoice {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::DefaultRoute, Self::DefaultRoute) => true,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for InterfaceChoice {}

/// Gratuitous ARP / unsolicited NA after a local address is added (spec §5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpSettings {
    pub initial_delay: Duration,
    /// Packets per announcement, 1..=10.
    pub count: u32,
    pub interval: Duration,
    pub verify_before_send: bool,
}

impl Default for GarpSettings {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            count: 3,
            interval: Duration::from_millis(500),
            verify_before_send: true,
        }
    }
}

/// Lifetimes (seconds, 0 = permanent) and the no-prefix-route flag of added addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSettings {
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
    pub no_prefix_route: bool,
}

impl AddressSettings {
    /// Real-interface addresses: five minutes, no prefix route (so CNIs such as
    /// Flannel do not take the VIP for a node address).
    pub const LOCAL_DEFAULT: Self = Self {
        valid_lifetime: 300,
        preferred_lifetime: 300,
        no_prefix_route: true,
    };
    /// Dummy-interface addresses: permanent, with the prefix route BGP advertises.
    pub const DUMMY_DEFAULT: Self = Self {
        valid_lifetime: 0,
        preferred_lifetime: 0,
        no_prefix_route: false,
    };
    /// The shortest non-zero valid lifetime accepted.
    pub const MIN_LIFETIME: u32 = 60;

    pub fn is_permanent(&self) -> bool {
        self.valid_lifetime == 0
    }

    /// How often a finite-lifetime address is re-added: `max(valid/2, 30 s)`
    /// (spec §5.6); `None` for a permanent address.
    pub fn renewal_interval(&self) -> Option<Duration> {
        (!self.is_permanent()).then(|| {
            Duration::from_secs(u64::from(self.valid_lifetime / 2)).max(Duration::from_secs(30))
        })
    }
}

/// An LBNodeAgent `local` spec with defaults applied and values clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub local_interface: InterfaceChoice,
    /// `interfaces` in listed order, without empty names, the dummy name and repeats.
    pub extra_interfaces: Vec<String>,
    pub dummy_interface: String,
    /// `None` when `garpConfig` is absent or `enabled: false`.
    pub garp: Option<GarpSettings>,
    pub local_address: AddressSettings,
    pub dummy_address: AddressSettings,
}

impl Default for AgentSettings {
    /// The shipped default LBNodeAgent: default-route interface, `kube-lb0`, no GARP.
    fn default() -> Self {
        Self {
            local_interface: InterfaceChoice::DefaultRoute,
            extra_interfaces: Vec::new(),
            dummy_interface: DEFAULT_DUMMY_INTERFACE.to_owned(),
            garp: None,
            local_address: AddressSettings::LOCAL_DEFAULT,
            dummy_address: AddressSettings::DUMMY_DEFAULT,
        }
    }
}

/// A `local` spec the announcer cannot use (bad regex, bad dummy name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSettings(pub String);

/// Settings plus what was defaulted or clamped on the way (one line each, for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSettings {
    pub settings: AgentSettings,
    pub warnings: Vec<String>,
}

impl AgentSettings {
    /// Resolves a `local` spec.
    ///
    /// Choice: an empty `dummyInterface` means `kube-lb0` (the CRD default), as an
    /// empty `localInterface` means `default`; a name Linux would refuse is an error
    /// here rather than at link creation.
    pub fn resolve(spec: &LBNodeAgentLocalSpec) -> Result<ResolvedSettings, InvalidSettings> {
        let mut warnings = Vec::new();
        let local_interface = match spec.local_interface.as_str() {
            "" | DEFAULT_LOCAL_INTERFACE => InterfaceChoice::DefaultRoute,
            pattern => InterfaceChoice::Regex(Regex::new(pattern).map_err(|e| {
                InvalidSettings(format!(
                    "error compiling localInterface regex {pattern:?}: {}",
                    regex_error_text(&e)
                ))
            })?),
        };
        let dummy_interface = if spec.dummy_interface.is_empty() {
            DEFAULT_DUMMY_INTERFACE.to_owned()
        } else {
            spec.dummy_interface.clone()
        };
        validate_link_name(&dummy_interface)?;
        let mut extra_interfaces: Vec<String> = Vec::new();
        for name in spec.interfaces.iter().flatten() {
            if name.is_empty() || *name == dummy_interface || extra_interfaces.contains(name) {
                continue;
            }
            extra_interfaces.push(name.clone());
        }
        let garp = spec
            .garp_config
            .as_ref()
            .and_then(|g| resolve_garp(g, &mut warnings));
        let addresses = spec.address_config.as_ref();
        let local_address = resolve_address(
            addresses.and_then(|a| a.local_interface.as_ref()),
            AddressSettings::LOCAL_DEFAULT,
            "addressConfig.localInterface",
            &mut warnings,
        );
        let dummy_address = resolve_address(
            addresses.and_then(|a| a.dummy_interface.as_ref()),
            AddressSettings::DUMMY_DEFAULT,
            "addressConfig.dummyInterface",
            &mut warnings,
        );
        Ok(ResolvedSettings {
            settings: Self {
                local_interface,
                extra_interfaces,
                dummy_interface,
                garp,
                local_address,
                dummy_address,
            },
            warnings,
        })
    }
}

/// The regex crate's message without its multi-line caret diagram.
fn regex_error_text(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(|| text.trim().to_owned(), str::to_owned)
}

/// Linux `dev_valid_name`: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn validate_link_name(name: &str) -> Result<(), InvalidSettings> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(InvalidSettings(format!(
            "invalid dummyInterface {name:?}: not a valid Linux interface name"
        )));
    }
    Ok(())
}

fn resolve_garp(config: &GARPConfig, warnings: &mut Vec<String>) -> Option<GarpSettings> {
    if config.enabled == Some(false) {
        return None;
    }
    let defaults = GarpSettings::default();
    let count = match config.count {
        None => defaults.count,
        Some(c) if c < 1 => {
            warnings.push(format!("garpConfig.count {c} is below 1; using 1"));
            1
        }
        Some(c) if c > 10 => {
            warnings.push(format!("garpConfig.count {c} is above 10; using 10"));
            10
        }
        Some(c) => u32::try_from(c).unwrap_or(defaults.count),
    };
    Some(GarpSettings {
        initial_delay: duration_or_default(
            config.initial_delay.as_deref(),
            defaults.initial_delay,
            "garpConfig.initialDelay",
            warnings,
        ),
        count,
        interval: duration_or_default(
            config.interval.as_deref(),
            defaults.interval,
            "garpConfig.interval",
            warnings,
        ),
        verify_before_send: config
            .verify_before_send
            .unwrap_or(defaults.verify_before_send),
    })
}

fn duration_or_default(
    value: Option<&str>,
    default: Duration,
    field: &str,
    warnings: &mut Vec<String>,
) -> Duration {
    match value {
        None | Some("") => default,
        Some(text) => parse_go_duration(text).unwrap_or_else(|e| {
            warnings.push(format!(
                "{field}: {e}; using {}",
                format_go_duration(default)
            ));
            default
        }),
    }
}

fn resolve_address(
    config: Option<&InterfaceAddressConfig>,
    default: AddressSettings,
    path: &str,
    warnings: &mut Vec<String>,
) -> AddressSettings {
    let Some(config) = config else {
        return default;
    };
    let mut settings = default;
    if let Some(valid) = config.valid_lifetime
        && let Some(mut valid) = lifetime(valid, path, "validLifetime", warnings)
    {
        if valid > 0 && valid < AddressSettings::MIN_LIFETIME {
            warnings.push(format!(
                "{path}.validLifetime {valid} is below the {} s minimum; using {}",
                AddressSettings::MIN_LIFETIME,
                AddressSettings::MIN_LIFETIME
            ));
            valid = AddressSettings::MIN_LIFETIME;
        }
        settings.valid_lifetime = valid;
        settings.preferred_lifetime = valid;
    }
    if let Some(preferred) = config.preferred_lifetime
        && let Some(preferred) = lifetime(preferred, path, "preferredLifetime", warnings)
    {
        if preferred > settings.valid_lifetime {
            warnings.push(format!(
                "{path}.preferredLifetime {preferred} is longer than validLifetime {}; using {}",
                settings.valid_lifetime, settings.valid_lifetime
            ));
        }
        settings.preferred_lifetime = preferred;
    }
    settings.preferred_lifetime = settings.preferred_lifetime.min(settings.valid_lifetime);
    if let Some(no_prefix_route) = config.no_prefix_route {
        settings.no_prefix_route = no_prefix_route;
    }
    settings
}

/// A configured lifetime as the kernel's `u32`; negative values are ignored (the CRD
/// forbids them) and huge ones mean "infinite" (`u32::MAX`).
fn lifetime(value: i64, path: &str, field: &str, warnings: &mut Vec<String>) -> Option<u32> {
    if value < 0 {
        warnings.push(format!(
            "{path}.{field} {value} is negative; using the default"
        ));
        return None;
    }
    Some(u32::try_from(value).unwrap_or_else(|_| {
        warnings.push(format!(
            "{path}.{field} {value} is too long; using {}",
            u32::MAX
        ));
        u32::MAX
    }))
}

/// The agent in force on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveAgent {
    pub id: AgentId,
    pub settings: AgentSettings,
}

/// A matching agent that another one overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredAgent {
    pub id: AgentId,
    /// The agent in force.
    pub precedence: AgentId,
}

/// An agent whose `nodeSelector` does not convert; it applies to no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSelectorAgent {
    pub id: AgentId,
    pub error: SelectorError,
}

/// The first agent with `local` (by precedence) has a spec the announcer cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub id: AgentId,
    pub error: InvalidSettings,
}

impl ConfigError {
    /// Warning `ConfigError` on the offending agent when the node announces nothing
    /// (upstream's behaviour and text, with the cause appended).
    pub fn event(&self, node: &str) -> Event {
        Event::warning(
            event::CONFIG_ERROR,
            format!(
                "invalid configuration: node {node} is announcing nothing until this is fixed: {}",
                self.error
            ),
        )
    }

    /// Warning `ConfigError` for a caller that keeps announcing with the last good
    /// configuration instead.
    pub fn event_keeping_previous(&self, node: &str) -> Event {
        Event::warning(
            event::CONFIG_ERROR,
            format!(
                "invalid configuration: node {node} keeps its previous configuration until this is fixed: {}",
                self.error
            ),
        )
    }
}

/// The outcome of LBNodeAgent selection for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Agents selecting this node, in precedence order.
    pub matching: Vec<AgentId>,
    /// The first matching agent with `local`, if its spec resolved.
    pub effective: Option<EffectiveAgent>,
    /// Matching agents overridden by the effective one (Warning `ConfigIgnored`).
    pub ignored: Vec<IgnoredAgent>,
    /// Agents with a selector that does not convert (Warning `InvalidNodeSelector`),
    /// sorted by (namespace, name).
    pub invalid_selectors: Vec<InvalidSelectorAgent>,
    /// The first matching agent with `local` had an unusable spec.
    pub config_error: Option<ConfigError>,
    /// Values of the effective spec that were defaulted or clamped.
    pub warnings: Vec<String>,
    /// What the election lease advertises. `Invalid` whenever `config_error` is set;
    /// a caller that keeps its last good configuration on a config error should also
    /// keep the selector state that went with it, so the lease stays coherent with
    /// what the node announces.
    pub selector_state: SelectorState,
}

impl Selection {
    /// The events to post on LBNodeAgents, in a stable order (`ConfigError` as
    /// [`ConfigError::event`] words it).
    pub fn events(&self, node: &str) -> Vec<(AgentId, Event)> {
        let mut events: Vec<(AgentId, Event)> = self
            .invalid_selectors
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    Event::warning(
                        event::INVALID_NODE_SELECTOR,
                        format!(
                            "nodeSelector could not be evaluated ({}); this LBNodeAgent applies to no node",
                            a.error
                        ),
                    ),
                )
            })
            .collect();
        events.extend(self.ignored.iter().map(|a| {
            (
                a.id.clone(),
                Event::warning(
                    event::CONFIG_IGNORED,
                    format!(
                        "LBNodeAgent {} takes precedence on node {node}",
                        a.precedence
                    ),
                ),
            )
        }));
        if let Some(error) = &self.config_error {
            events.push((error.id.clone(), error.event(node)));
        }
        events
    }
}

/// Chooses the LBNodeAgent for a node with labels `node_labels`.
///
/// Precedence: agents with a specific selector, then catch-alls (absent or empty
/// selector), each class sorted by (namespace, name). The effective agent is the first
/// matching one with `local`; when more than one agent matches, every other matching
/// agent is reported as ignored.
///
/// Choice: when several agents match and none has `local`, nothing takes precedence,
/// so none is reported as ignored (upstream v0.17 then names no agent either).
pub fn select<'a>(
    agents: impl IntoIterator<Item = &'a LBNodeAgent>,
    node_labels: &BTreeMap<String, String>,
) -> Selection {
    let mut total = 0usize;
    let mut matching: Vec<(bool, AgentId, &LBNodeAgent)> = Vec::new();
    let mut invalid_selectors = Vec::new();
    for agent in agents {
        total += 1;
        let id = AgentId::of(agent);
        let selector = agent.spec.node_selector.as_ref();
        match selector.filter(|_| !is_catch_all(selector)) {
            None => matching.push((true, id, agent)),
            Some(selector) => match Selector::parse(selector) {
                Ok(parsed) if parsed.matches(node_labels) => matching.push((false, id, agent)),
                Ok(_) => {}
                Err(error) => invalid_selectors.push(InvalidSelectorAgent { id, error }),
            },
        }
    }
    matching.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    invalid_selectors.sort_by(|a, b| a.id.cmp(&b.id));

    let first_local = matching
        .iter()
        .find_map(|(_, id, agent)| agent.spec.local.as_ref().map(|local| (id, local)));
    let ignored = match first_local {
        Some((winner, _)) if matching.len() > 1 => matching
            .iter()
            .filter(|(_, id, _)| id != winner)
            .map(|(_, id, _)| IgnoredAgent {
                id: id.clone(),
                precedence: winner.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let (mut effective, mut config_error, mut warnings) = (None, None, Vec::new());
    if let Some((id, local)) = first_local {
        match AgentSettings::resolve(local) {
            Ok(resolved) => {
                warnings = resolved.warnings;
                effective = Some(EffectiveAgent {
                    id: id.clone(),
                    settings: resolved.settings,
                });
            }
            Err(error) => {
                config_error = Some(ConfigError {
                    id: id.clone(),
                    error,
                })
            }
        }
    }
    let selector_state = if config_error.is_some() {
        SelectorState::Invalid
    } else if total > 0 && matching.is_empty() {
        SelectorState::Deselected
    } else if effective.is_none() {
        SelectorState::Default
    } else {
        SelectorState::Configured
    };
    Selection {
        matching: matching.into_iter().map(|(_, id, _)| id).collect(),
        effective,
        ignored,
        invalid_selectors,
        config_error,
        warnings,
        selector_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use proptest::prelude::*;
    use purelb_api::crd::LBNodeAgentSpec;
    use purelb_api::crd::lb_node_agent::AddressConfig;

    fn agent(
        ns: &str,
        name: &str,
        selector: Option<LabelSelector>,
        local: Option<LBNodeAgentLocalSpec>,
    ) -> LBNodeAgent {
        let mut a = LBNodeAgent::new(
            name,
            LBNodeAgentSpec {
                node_selector: selector,
                local,
            },
        );
        a.metadata.namespace = Some(ns.to_owned());
        a
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn match_labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        })
    }

    fn bad_selector() -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Equals".into(),
                values: Some(vec!["a".into()]),
            }]),
        })
    }

    fn local() -> Option<LBNodeAgentLocalSpec> {
        Some(LBNodeAgentLocalSpec::default())
    }

    fn local_with_interface(pattern: &str) -> Option<LBNodeAgentLocalSpec> {
        Some(LBNodeAgentLocalSpec {
            local_interface: pattern.into(),
            ..Default::default()
        })
    }

    fn id(ns: &str, name: &str) -> AgentId {
        AgentId::new(ns, name)
    }

    #[test]
    fn specific_selectors_take_precedence_over_catch_alls() {
        let agents = [
            agent("purelb-system", "default", None, local()),
            agent(
                "z-ns",
                "edge",
                match_labels(&[("role", "edge")]),
                local_with_interface("^eth1$"),
            ),
            agent("a-ns", "empty", Some(LabelSelector::default()), local()),
            agent("b-ns", "other", match_labels(&[("role", "core")]), local()),
        ];
        let node = labels(&[("role", "edge")]);
        let s = select(&agents, &node);
        assert_eq!(
            s.matching,
            vec![
                id("z-ns", "edge"),
                id("a-ns", "empty"),
                id("purelb-system", "default")
            ]
        );
        let effective = s.effective.clone().unwrap();
        assert_eq!(effective.id, id("z-ns", "edge"));
        assert!(matches!(
            effective.settings.local_interface,
            InterfaceChoice::Regex(ref r) if r.as_str() == "^eth1$"
        ));
        assert_eq!(s.selector_state, SelectorState::Configured);
        assert_eq!(
            s.ignored,
            vec![
                IgnoredAgent {
                    id: id("a-ns", "empty"),
                    precedence: id("z-ns", "edge")
                },
                IgnoredAgent {
                    id: id("purelb-system", "default"),
                    precedence: id("z-ns", "edge")
                },
            ]
        );
        let events = s.events("node-1");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].1.reason, "ConfigIgnored");
        assert_eq!(
            events[0].1.message,
            "LBNodeAgent z-ns/edge takes precedence on node node-1"
        );
        assert_eq!(events[0].0, id("a-ns", "empty"));
    }

    #[test]
    fn first_agent_with_local_wins_and_selector_only_agents_are_skipped() {
        let agents = [
            agent(
                "a",
                "selector-only",
                match_labels(&[("role", "edge")]),
                None,
            ),
            agent("b", "catch-all", None, local()),
        ];
        let s = select(&agents, &labels(&[("role", "edge")]));
        assert_eq!(s.effective.as_ref().unwrap().id, id("b", "catch-all"));
        assert_eq!(
            s.ignored,
            vec![IgnoredAgent {
                id: id("a", "selector-only"),
                precedence: id("b", "catch-all")
            }]
        );
    }

    #[test]
    fn single_match_is_not_ignored_and_no_local_means_default() {
        let s = select(&[agent("a", "x", None, None)], &labels(&[]));
        assert_eq!(s.matching, vec![id("a", "x")]);
        assert!(s.effective.is_none());
        assert!(s.ignored.is_empty());
        assert_eq!(s.selector_state, SelectorState::Default);

        // Several matches, none with local: nothing takes precedence.
        let s = select(
            &[agent("a", "x", None, None), agent("a", "y", None, None)],
            &labels(&[]),
        );
        assert!(s.ignored.is_empty());
        assert_eq!(s.selector_state, SelectorState::Default);

        let s = select(&[], &labels(&[]));
        assert_eq!(s.selector_state, SelectorState::Default);
        assert!(s.matching.is_empty());
    }

    #[test]
    fn deselected_when_agents_exist_but_none_matches() {
        let agents = [
            agent("a", "edge", match_labels(&[("role", "edge")]), local()),
            agent("a", "broken", bad_selector(), local()),
        ];
        let s = select(&agents, &labels(&[("role", "core")]));
        assert!(s.matching.is_empty());
        assert!(s.effective.is_none());
        assert_eq!(s.selector_state, SelectorState::Deselected);
        assert_eq!(s.invalid_selectors.len(), 1);
        assert_eq!(s.invalid_selectors[0].id, id("a", "broken"));
        let events = s.events("n");
        assert_eq!(events[0].1.reason, "InvalidNodeSelector");
        assert_eq!(
            events[0].1.message,
            "nodeSelector could not be evaluated (\"Equals\" is not a valid label selector operator); this LBNodeAgent applies to no node"
        );
    }

    #[test]
    fn invalid_regex_is_a_config_error() {
        let agents = [
            agent("a", "bad", None, local_with_interface("eth(")),
            agent("b", "good", None, local()),
        ];
        let s = select(&agents, &labels(&[]));
        assert!(s.effective.is_none());
        assert_eq!(s.selector_state, SelectorState::Invalid);
        let error = s.config_error.clone().unwrap();
        assert_eq!(error.id, id("a", "bad"));
        assert!(
            error
                .error
                .0
                .starts_with("error compiling localInterface regex \"eth(\": "),
            "{}",
            error.error
        );
        assert!(!error.error.0.contains('\n'));
        let event = error.event("node-1");
        assert_eq!(event.reason, "ConfigError");
        assert_eq!(event.type_, crate::event::EventType::Warning);
        assert!(event.message.starts_with(
            "invalid configuration: node node-1 is announcing nothing until this is fixed: "
        ));
        assert!(
            error
                .event_keeping_previous("node-1")
                .message
                .contains("keeps its previous configuration")
        );
        // The other catch-all is still reported as overridden.
        assert_eq!(s.ignored.len(), 1);
    }

    #[test]
    fn interface_choice_and_dummy_name() {
        for (pattern, default) in [("default", true), ("", true), ("eth", false)] {
            let r = AgentSettings::resolve(&LBNodeAgentLocalSpec {
                local_interface: pattern.into(),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(
                r.settings.local_interface == InterfaceChoice::DefaultRoute,
                default
            );
        }
        let r = AgentSettings::resolve(&LBNodeAgentLocalSpec {
            dummy_interface: String::new(),
            interfaces: Some(vec![
                "eth1".into(),
                String::new(),
                "kube-lb0".into(),
                "eth2".into(),
                "eth1".into(),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.settings.dummy_interface, "kube-lb0");
        assert_eq!(r.settings.extra_interfaces, vec!["eth1", "eth2"]);
        for bad in ["a/b", "a b", "a:b", "0123456789abcdef", ".", ".."] {
            assert!(
                AgentSettings::resolve(&LBNodeAgentLocalSpec {
                    dummy_interface: bad.into(),
                    ..Default::default()
                })
                .is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            AgentSettings::resolve(&LBNodeAgentLocalSpec::default())
                .unwrap()
                .settings,
            AgentSettings::default()
        );
    }

    #[test]
    fn garp_defaults_clamps_and_durations() {
        let resolve = |g: GARPConfig| {
            AgentSettings::resolve(&LBNodeAgentLocalSpec {
                garp_config: Some(g),
                ..Default::default()
            })
            .unwrap()
        };
        let r = resolve(GARPConfig::default());
        assert_eq!(r.settings.garp, Some(GarpSettings::default()));
        assert!(r.warnings.is_empty());
        assert_eq!(
            GarpSettings::default(),
            GarpSettings {
                initial_delay: Duration::from_millis(100),
                count: 3,
                interval: Duration::from_millis(500),
                verify_before_send: true
            }
        );

        let r = resolve(GARPConfig {
            enabled: Some(false),
            ..Default::default()
        });
        assert_eq!(r.settings.garp, None);
        assert_eq!(
            AgentSettings::resolve(&LBNodeAgentLocalSpec::default())
                .unwrap()
                .settings
                .garp,
            None
        );

        let r = resolve(GARPConfig {
            enabled: Some(true),
            initial_delay: Some("1m30s".into()),
            count: Some(0),
            interval: Some("1.5s".into()),
            verify_before_send: Some(false),
        });
        let g = r.settings.garp.unwrap();
        assert_eq!(g.initial_delay, Duration::from_secs(90));
        assert_eq!(g.count, 1);
        assert_eq!(g.interval, Duration::from_millis(1500));
        assert!(!g.verify_before_send);
        assert_eq!(r.warnings, vec!["garpConfig.count 0 is below 1; using 1"]);

        let r = resolve(GARPConfig {
            count: Some(11),
            initial_delay: Some("soon".into()),
            interval: Some("5".into()),
            ..Default::default()
        });
        let g = r.settings.garp.unwrap();
        assert_eq!(g.count, 10);
        assert_eq!(g.initial_delay, Duration::from_millis(100));
        assert_eq!(g.interval, Duration::from_millis(500));
        assert_eq!(r.warnings.len(), 3);
        assert!(r.warnings[0].contains("above 10"));
        assert!(r.warnings[1].starts_with("garpConfig.initialDelay: "));
        assert!(r.warnings[1].ends_with("using 100ms"));
        assert!(r.warnings[2].starts_with("garpConfig.interval: "));
        assert!(r.warnings[2].ends_with("using 500ms"));

        let r = resolve(GARPConfig {
            initial_delay: Some(String::new()),
            count: Some(10),
            ..Default::default()
        });
        assert_eq!(r.settings.garp.unwrap().count, 10);
        assert!(r.warnings.is_empty());
    }

    fn addresses(
        local: Option<InterfaceAddressConfig>,
        dummy: Option<InterfaceAddressConfig>,
    ) -> ResolvedSettings {
        AgentSettings::resolve(&LBNodeAgentLocalSpec {
            address_config: Some(AddressConfig {
                local_interface: local,
                dummy_interface: dummy,
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn lifetimes(valid: Option<i64>, preferred: Option<i64>) -> InterfaceAddressConfig {
        InterfaceAddressConfig {
            valid_lifetime: valid,
            preferred_lifetime: preferred,
            no_prefix_route: None,
        }
    }

    #[test]
    fn address_defaults() {
        let s = addresses(None, None).settings;
        assert_eq!(
            s.local_address,
            AddressSettings {
                valid_lifetime: 300,
                preferred_lifetime: 300,
                no_prefix_route: true
            }
        );
        assert_eq!(
            s.dummy_address,
            AddressSettings {
                valid_lifetime: 0,
                preferred_lifetime: 0,
                no_prefix_route: false
            }
        );
        assert_eq!(
            AddressSettings::LOCAL_DEFAULT.renewal_interval(),
            Some(Duration::from_secs(150))
        );
        assert_eq!(AddressSettings::DUMMY_DEFAULT.renewal_interval(), None);
    }

    #[test]
    fn address_clamps() {
        // Non-zero below 60 is raised to 60; preferred follows valid.
        let r = addresses(Some(lifetimes(Some(10), None)), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 60);
        assert_eq!(r.settings.local_address.preferred_lifetime, 60);
        assert_eq!(
            r.settings.local_address.renewal_interval(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(r.warnings.len(), 1);
        // Zero stays zero (permanent).
        let r = addresses(Some(lifetimes(Some(0), Some(100))), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 0);
        assert_eq!(r.settings.local_address.preferred_lifetime, 0);
        // Preferred is clamped to valid.
        let r = addresses(Some(lifetimes(Some(120), Some(600))), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 120);
        assert_eq!(r.settings.local_address.preferred_lifetime, 120);
        assert_eq!(r.warnings.len(), 1);
        let r = addresses(Some(lifetimes(Some(600), Some(120))), None);
        assert_eq!(r.settings.local_address.preferred_lifetime, 120);
        assert!(r.warnings.is_empty());
        // Only preferred: valid keeps its default.
        let r = addresses(Some(lifetimes(None, Some(100))), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 300);
        assert_eq!(r.settings.local_address.preferred_lifetime, 100);
        // Dummy: preferred alone is clamped to the permanent valid 0.
        let r = addresses(None, Some(lifetimes(None, Some(100))));
        assert_eq!(r.settings.dummy_address, AddressSettings::DUMMY_DEFAULT);
        // Dummy with a finite lifetime and the flag flipped.
        let r = addresses(
            None,
            Some(InterfaceAddressConfig {
                valid_lifetime: Some(30),
                preferred_lifetime: None,
                no_prefix_route: Some(true),
            }),
        );
        assert_eq!(
            r.settings.dummy_address,
            AddressSettings {
                valid_lifetime: 60,
                preferred_lifetime: 60,
                no_prefix_route: true
            }
        );
        // Negative is ignored, huge is infinite.
        let r = addresses(Some(lifetimes(Some(-5), None)), None);
        assert_eq!(r.settings.local_address, AddressSettings::LOCAL_DEFAULT);
        assert_eq!(r.warnings.len(), 1);
        let r = addresses(Some(lifetimes(Some(1 << 40), None)), None);
        assert_eq!(r.settings.local_address.valid_lifetime, u32::MAX);
    }

    #[test]
    fn selector_state_names() {
        let names: Vec<&str> = SelectorState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["default", "configured", "deselected", "invalid"]);
    }

    fn arb_agent() -> impl Strategy<Value = LBNodeAgent> {
        let selector = prop_oneof![
            Just(None),
            Just(Some(LabelSelector::default())),
            Just(match_labels(&[("role", "edge")])),
            Just(match_labels(&[("role", "core")])),
            Just(bad_selector()),
        ];
        let local = prop_oneof![
            Just(None),
            Just(local()),
            Just(local_with_interface("eth[01]")),
            Just(local_with_interface("(")),
        ];
        (0u8..3, 0u8..4, selector, local).prop_map(|(ns, name, selector, local)| {
            agent(&format!("ns{ns}"), &format!("a{name}"), selector, local)
        })
    }

    proptest! {
        #[test]
        fn selection_does_not_depend_on_input_order(
            agents in proptest::collection::vec(arb_agent(), 0..8),
            seed in any::<u64>(),
            edge in any::<bool>(),
        ) {
            // Distinct (namespace, name), as in a real cluster.
            let mut seen = std::collections::BTreeSet::new();
            let agents: Vec<LBNodeAgent> = agents
                .into_iter()
                .filter(|a| seen.insert(AgentId::of(a)))
                .collect();
            let node = labels(&[("role", if edge { "edge" } else { "core" })]);
            let mut shuffled = agents.clone();
            // A deterministic permutation from the seed.
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = usize::try_from(state >> 33).unwrap_or(0) % (i + 1);
                shuffled.swap(i, j);
            }
            prop_assert_eq!(select(&agents, &node), select(&shuffled, &node));
        }
    }
}
