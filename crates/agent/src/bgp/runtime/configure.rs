//! The BGPConfiguration in force on this node: the node's facts and the Secrets it may
//! reference, the oldest configuration chosen (the others superseded), and the speaker
//! started, reconfigured, or the configuration refused with the last good one kept.

use std::sync::Arc;

use super::*;

impl BgpAgent {
    /// This node's Node, as the watch shows it.
    pub(super) fn own_node(&self) -> Option<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.name_any() == self.options.node)
    }

    pub(super) async fn reconcile(&mut self) {
        let node = self.own_node();
        let decision = decide(
            self.configs.state(),
            node.as_deref(),
            &self.secrets.state(),
            self.applied.as_ref(),
            self.speaker.is_some(),
        );
        let Some(active) = decision.active else {
            if self.speaker.is_some() {
                tracing::info!(
                    op = "bgpConfig",
                    "no BGPConfiguration: stopping the speaker"
                );
            }
            self.stop_speaker().await;
            return;
        };
        let active_key = config_key(&active);
        for other in &decision.superseded {
            let outcome = ConfigOutcome::Superseded { by: &active_key };
            self.write_config_status(other, &outcome).await;
        }
        match decision.step {
            Step::Stop => self.stop_speaker().await,
            Step::WaitForNode => {
                tracing::warn!(op = "bgpConfig", node = %self.options.node, "own Node not found yet");
            }
            Step::Refuse { error } => self.refuse(&active, &error).await,
            Step::Unchanged => self.write_applied_status().await,
            Step::Apply {
                mapped,
                router_id_changed,
            } => self.apply(&active, *mapped, router_id_changed).await,
        }
    }

    pub(super) async fn refuse(&mut self, config: &BGPConfiguration, error: &MapError) {
        tracing::warn!(op = "bgpConfig", config = %config_key(config), %error, "configuration refused; the last good one keeps running");
        self.event(config, refused_event(&self.options.node, error));
        self.write_config_status(config, &ConfigOutcome::Invalid(error))
            .await;
    }

    pub(super) async fn apply(
        &mut self,
        config: &BGPConfiguration,
        mapped: MappedConfig,
        router_id_changed: bool,
    ) {
        let result = match self.speaker.as_mut() {
            Some(s) => s.apply(mapped.speaker.clone()).await.map(|report| {
                tracing::info!(op = "bgpConfig", config = %config_key(config), ?report, "configuration applied");
            }),
            None => Speaker::start(mapped.speaker.clone()).await.map(|s| {
                tracing::info!(op = "bgpConfig", config = %config_key(config), "speaker started");
                self.speaker_changes = Some(s.subscribe());
                self.speaker = Some(s);
            }),
        };
        if let Err(error) = result {
            let error = MapError::Invalid {
                path: "spec".into(),
                message: error.to_string(),
            };
            self.refuse(config, &error).await;
            return;
        }
        for e in applied_events(&self.options.node, &mapped, router_id_changed) {
            self.event(config, e);
        }
        if self.import_settings.as_ref() != Some(&mapped.import) {
            self.restart_import(&mapped.import).await;
        }
        self.heartbeat_due = Some(Instant::now() + mapped.heartbeat);
        self.status_due
            .get_or_insert(Instant::now() + STATUS_DEBOUNCE);
        self.applied = Some((config_key(config), mapped));
        self.established = self.established_now();
        self.write_applied_status().await;
    }
}
