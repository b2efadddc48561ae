//! The LBNodeAgent selection as the controller runs it: the selection's warnings
//! logged, its Events posted on the LBNodeAgents, and the last good configuration
//! kept when the effective one is invalid.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use purelb_api::crd::LBNodeAgent;
use purelb_kube_edge::events::EventSink;

use super::Controller;
use crate::announce::plan::PoolTable;
use crate::event::{self, Event as AgentEvent};
use crate::metrics::Metrics;
use crate::node::selection::{self, AgentId, SelectorState};
use crate::node::settings::AgentSettings;
use crate::node::{links, netstate};

/// The configuration in force on this node.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Configured {
    pub(super) agent: Option<AgentId>,
    pub(super) settings: Option<AgentSettings>,
    pub(super) state: SelectorState,
}

/// Selection of the LBNodeAgent for this node, with events, keeping the
/// last good configuration on an error.
pub(super) struct ConfigSelection<'a> {
    pub(super) agents: &'a Store<LBNodeAgent>,
    pub(super) nodes: &'a Store<Node>,
    pub(super) node: &'a str,
    pub(super) events: &'a EventSink,
    pub(super) metrics: &'a Metrics,
}

impl ConfigSelection<'_> {
    pub(super) fn select(
        &mut self,
        last_good: Option<Configured>,
    ) -> (Configured, Option<Configured>) {
        let labels: BTreeMap<String, String> = self
            .nodes
            .get(&ObjectRef::new(self.node))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let agents = self.agents.state();
        let selection = selection::select(agents.iter().map(|a| a.as_ref()), &labels);
        for warning in &selection.warnings {
            tracing::info!(op = "setConfig", node = self.node, warning = %warning, "configuration value defaulted");
        }
        let keep_previous = selection.config_error.is_some() && last_good.is_some();
        let record = |id: &AgentId, e: AgentEvent| {
            if let Some(agent) = agents.iter().find(|a| AgentId::of(a) == *id) {
                self.events.record(agent.object_ref(&()), e);
            }
        };
        for (id, e) in selection.events(self.node) {
            if e.reason == event::CONFIG_ERROR {
                continue;
            }
            record(&id, e);
        }
        match &selection.config_error {
            Some(error) => {
                self.metrics.update_errors.inc();
                if keep_previous {
                    tracing::warn!(op = "setConfig", node = self.node, agent = %error.id, error = %error.error, "invalid configuration; keeping the previous one");
                    record(&error.id, error.event_keeping_previous(self.node));
                    let kept = last_good.clone().unwrap_or(Configured {
                        agent: None,
                        settings: None,
                        state: SelectorState::Invalid,
                    });
                    (kept, last_good)
                } else {
                    tracing::warn!(op = "setConfig", node = self.node, agent = %error.id, error = %error.error, "invalid configuration; announcing nothing");
                    record(&error.id, error.event(self.node));
                    (
                        Configured {
                            agent: Some(error.id.clone()),
                            settings: None,
                            state: SelectorState::Invalid,
                        },
                        None,
                    )
                }
            }
            None => {
                let configured = Configured {
                    agent: selection.effective.as_ref().map(|e| e.id.clone()),
                    settings: selection.effective.map(|e| e.settings),
                    state: selection.selector_state,
                };
                (configured.clone(), Some(configured))
            }
        }
    }
}

impl Controller {
    pub(super) fn load_pools(&mut self) {
        let groups = self.groups.state();
        self.pools = PoolTable::from_groups(groups.iter().map(|g| g.as_ref()));
    }

    /// Puts a selected configuration in force: dummy link, selector state, lease
    /// subnets, and a full pass when anything changed.
    pub(super) async fn apply_config(&mut self, config: Configured) {
        if self.config.as_ref() == Some(&config) {
            return;
        }
        if let Some(settings) = &config.settings {
            match self
                .announcer
                .kernel()
                .ensure_link(&settings.dummy_interface)
                .await
            {
                Ok(link) => {
                    tracing::info!(op = "setConfig", interface = %link.name, kind = link.kind.as_deref().unwrap_or("-"), "dummy interface ready")
                }
                Err(error) => {
                    tracing::warn!(op = "setConfig", interface = %settings.dummy_interface, %error, "dummy interface unavailable; remote addresses cannot be announced");
                    if let Some(id) = &config.agent {
                        self.agent_event(
                            id,
                            AgentEvent::warning(
                                event::CONFIG_ERROR,
                                format!(
                                    "node {} cannot set up dummy interface {}: {error}",
                                    self.settings.node, settings.dummy_interface
                                ),
                            ),
                        );
                    }
                }
            }
            self.metrics.config_loaded.set(1);
        }
        self.metrics.set_selector_state(config.state);
        tracing::info!(op = "setConfig", node = %self.settings.node,
            agent = %config.agent.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            state = config.state.as_str(), configured = config.settings.is_some(), "configuration in force");
        self.config = Some(config);
        if let Ok(net) = netstate::read(self.announcer.kernel()).await {
            self.net = net;
        }
        self.update_lease_subnets();
        self.enqueue_all();
    }

    pub(super) fn update_lease_subnets(&mut self) {
        let (state, settings) = match &self.config {
            Some(c) => (c.state, c.settings.as_ref()),
            None => (SelectorState::Default, None),
        };
        let subnets = links::lease_subnets(state, settings, &self.net.interfaces);
        if subnets != self.lease_subnets {
            self.lease_subnets = subnets.clone();
            self.election.set_subnets(subnets);
        }
    }

    pub(super) fn agent_event(&self, id: &AgentId, event: AgentEvent) {
        if let Some(agent) = self
            .agents
            .get(&ObjectRef::new(&id.name).within(&id.namespace))
        {
            self.events.record(agent.object_ref(&()), event);
        }
    }

    pub(super) fn node_labels(&self) -> BTreeMap<String, String> {
        self.nodes
            .get(&ObjectRef::new(&self.settings.node))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }
}
