//! The BGPConfiguration in force on this node: the node's facts and the Secrets it may
//! reference, the oldest configuration chosen (the others superseded), and the speaker
//! started, reconfigured, or the configuration refused with the last good one kept.

use super::*;

impl BgpAgent {
    pub(super) fn node_facts(&self) -> Option<(NodeFacts, Node)> {
        let node = self
            .nodes
            .state()
            .into_iter()
            .find(|n| n.name_any() == self.options.node)?;
        Some((NodeFacts::of(&node), (*node).clone()))
    }

    pub(super) async fn reconcile(&mut self) {
        let Some((active, superseded)) = in_force(self.configs.state()) else {
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
        for other in &superseded {
            let outcome = ConfigOutcome::Superseded { by: &active_key };
            self.write_config_status(other, &outcome).await;
        }
        let Some((facts, _)) = self.node_facts() else {
            tracing::warn!(op = "bgpConfig", node = %self.options.node, "own Node not found yet");
            return;
        };
        match map_config(&active, &facts, &secrets_of(&self.secrets.state())) {
            Ok(mapped) => self.apply(&active, mapped).await,
            Err(error) => self.refuse(&active, &error).await,
        }
    }

    pub(super) async fn refuse(&mut self, config: &BGPConfiguration, error: &MapError) {
        tracing::warn!(op = "bgpConfig", config = %config_key(config), %error, "configuration refused; the last good one keeps running");
        self.event(
            config,
            Event::warning(
                event::CONFIGURATION_INVALID,
                format!(
                    "node {}: {error}; the last good configuration keeps running",
                    self.options.node
                ),
            ),
        );
        self.write_config_status(config, &ConfigOutcome::Invalid(error))
            .await;
    }

    pub(super) async fn apply(&mut self, config: &BGPConfiguration, mapped: MappedConfig) {
        // Our own status writes come back through the watch: nothing to apply then.
        let unchanged = self
            .applied
            .as_ref()
            .is_some_and(|(k, m)| *k == config_key(config) && *m == mapped);
        if unchanged && self.speaker.is_some() {
            self.write_applied_status().await;
            return;
        }
        let first_router_id = self
            .applied
            .as_ref()
            .is_none_or(|(_, m)| m.speaker.router_id != mapped.speaker.router_id);
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
        for (reason, message) in &mapped.warnings {
            self.event(config, Event::warning(reason, message.clone()));
        }
        if first_router_id {
            self.event(
                config,
                Event::normal(
                    event::ROUTER_ID_RESOLVED,
                    format!(
                        "Router ID resolved to {} via {} from node {}",
                        mapped.speaker.router_id,
                        mapped.router_id_source.as_str(),
                        self.options.node
                    ),
                ),
            );
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
