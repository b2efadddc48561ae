//! The LBNodeAgent selection as the controller runs it: the selection's warnings
//! logged, its Events posted on the LBNodeAgents, and the last good configuration
//! kept when the effective one is invalid.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use purelb_api::crd::LBNodeAgent;
use purelb_kube_edge::events::EventSink;

use crate::event::{self, Event as AgentEvent};
use crate::metrics::Metrics;
use crate::node::selection::{self, AgentId, SelectorState};
use crate::node::settings::AgentSettings;

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
