//! Which LBNodeAgent governs this node.
//!
//! [`select`] takes every LBNodeAgent (all namespaces) and the node's labels and
//! returns a [`Selection`]: the effective agent with its resolved [`AgentSettings`],
//! the agents to warn about, and the election selector state. Nothing here talks to
//! the API.

use std::collections::BTreeMap;
use std::fmt;

use purelb_api::crd::LBNodeAgent;

use crate::event::{self, Event};
use crate::node::settings::{AgentSettings, InvalidSettings};
use crate::parse::label_selector::{Selector, SelectorError, is_catch_all};

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
    use purelb_api::crd::lb_node_agent::LBNodeAgentLocalSpec;

    use crate::node::settings::InterfaceChoice;

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
