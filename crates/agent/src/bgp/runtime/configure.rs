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
        let addresses = |kind: &str| -> Vec<IpAddr> {
            node.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == kind)
                .filter_map(|a| a.address.parse().ok())
                .collect()
        };
        let facts = NodeFacts {
            name: node.name_any(),
            labels: node.labels().clone(),
            annotations: node.annotations().clone(),
            internal_ips: addresses("InternalIP"),
            external_ips: addresses("ExternalIP"),
        };
        Some((facts, (*node).clone()))
    }

    pub(super) fn secrets(&self) -> Secrets {
        self.secrets
            .state()
            .iter()
            .flat_map(|s| {
                let name = s.name_any();
                s.data
                    .iter()
                    .flatten()
                    .filter_map(move |(k, v)| {
                        let value = String::from_utf8(v.0.clone()).ok()?;
                        Some(((name.clone(), k.clone()), value))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(super) async fn reconcile(&mut self) {
        let mut configs: Vec<_> = self.configs.state();
        configs.sort_by(|a, b| {
            (a.creation_timestamp().map(|t| t.0), key(a))
                .cmp(&(b.creation_timestamp().map(|t| t.0), key(b)))
        });
        let Some(active) = configs.first().cloned() else {
            if self.speaker.is_some() {
                tracing::info!(
                    op = "bgpConfig",
                    "no BGPConfiguration: stopping the speaker"
                );
            }
            self.stop_speaker().await;
            return;
        };
        let active_key = key(&active);
        for other in configs.iter().skip(1) {
            let outcome = ConfigOutcome::Superseded { by: &active_key };
            self.write_config_status(other, &outcome).await;
        }
        let Some((facts, _)) = self.node_facts() else {
            tracing::warn!(op = "bgpConfig", node = %self.options.node, "own Node not found yet");
            return;
        };
        match map_config(&active, &facts, &self.secrets()) {
            Ok(mapped) => self.apply(&active, mapped).await,
            Err(error) => self.refuse(&active, &error).await,
        }
    }

    pub(super) async fn refuse(&mut self, config: &BGPConfiguration, error: &MapError) {
        tracing::warn!(op = "bgpConfig", config = %key(config), %error, "configuration refused; the last good one keeps running");
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
            .is_some_and(|(k, m)| *k == key(config) && *m == mapped);
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
                tracing::info!(op = "bgpConfig", config = %key(config), ?report, "configuration applied");
            }),
            None => Speaker::start(mapped.speaker.clone()).await.map(|s| {
                tracing::info!(op = "bgpConfig", config = %key(config), "speaker started");
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
        self.applied = Some((key(config), mapped));
        self.established = self.established_now();
        self.write_applied_status().await;
    }
}
