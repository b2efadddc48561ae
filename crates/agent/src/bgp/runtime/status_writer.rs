//! The runtime's status writes: this node's BGPNodeStatus (with the import state read from
//! the kernel), debounced and at every heartbeat, and its entry in each BGPConfiguration's
//! status.

use super::*;

impl BgpAgent {
    pub(super) async fn write_applied_status(&mut self) {
        let Some((applied_key, mapped)) = self.applied.clone() else {
            return;
        };
        let Some(config) = self
            .configs
            .state()
            .into_iter()
            .find(|c| config_key(c) == applied_key)
        else {
            return;
        };
        let outcome = ConfigOutcome::Applied {
            mapped: &mapped,
            established: self.established,
        };
        self.write_config_status(&config, &outcome).await;
    }

    pub(super) async fn write_status(&mut self) {
        let heartbeat = self.heartbeat_due.is_some_and(|at| at <= Instant::now());
        self.status_due = None;
        let Some((_, mapped)) = self.applied.clone() else {
            self.heartbeat_due = None;
            return;
        };
        self.heartbeat_due = Some(Instant::now() + mapped.heartbeat);
        let established = self.established_now();
        if established != self.established {
            self.established = established;
            self.write_applied_status().await;
        }
        if !mapped.node_status_enabled {
            return;
        }
        let Some(speaker) = &self.speaker else {
            return;
        };
        let received = speaker.received_routes();
        self.sync_export(&mapped, &received).await;
        let Some(speaker) = &self.speaker else {
            return;
        };
        let import = self.import_state().await;
        let status = speaker.status();
        let exported: Vec<ExportedRoute> = self
            .export_report
            .routes
            .iter()
            .map(|r| ExportedRoute {
                prefix: r.route.cidr(),
                table: r.route.table_name(),
                metric: r.route.metric,
                installed: r.installed,
                reason: r.reason.clone(),
            })
            .collect();
        let previous = self
            .last_node_status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let new = node_status(&NodeStatusInput {
            node: &self.options.node,
            mapped: &mapped,
            speaker: &status,
            received: &received,
            import: &import,
            exported: &exported,
            previous_conditions: &previous,
            now: SystemTime::now(),
        });
        self.write_node_status(new, heartbeat).await;
    }

    /// Creates the node's BGPNodeStatus (owned by the Node) if needed and writes its status.
    /// Writes unless nothing changed since the last write and `always` (the heartbeat) is off.
    pub(super) async fn write_node_status(
        &mut self,
        mut status: BGPNodeStatusStatus,
        always: bool,
    ) {
        let unchanged = self
            .last_node_status
            .as_ref()
            .is_some_and(|last| !changed(last, &status));
        if unchanged && !always {
            return;
        }
        status.last_updated = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let api: Api<BGPNodeStatus> = Api::all(self.client.clone());
        let name = self.options.node.clone();
        let owner = self.own_node().and_then(|node| {
            Some(json!([{
                "apiVersion": "v1",
                "kind": "Node",
                "name": node.name_any(),
                "uid": node.uid()?,
            }]))
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let object = json!({
            "apiVersion": BGPNodeStatus::api_version(&()),
            "kind": BGPNodeStatus::kind(&()),
            "metadata": {"name": name, "ownerReferences": owner},
            "spec": {},
        });
        if let Err(error) = api.patch(&name, &params, &Patch::Apply(&object)).await {
            tracing::warn!(op = "nodeStatus", %error, "cannot create BGPNodeStatus");
            return;
        }
        let body = json!({
            "apiVersion": BGPNodeStatus::api_version(&()),
            "kind": BGPNodeStatus::kind(&()),
            "metadata": {"name": name},
            "status": status,
        });
        match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => self.last_node_status = Some(status),
            Err(error) => tracing::warn!(op = "nodeStatus", %error, "BGPNodeStatus write failed"),
        }
    }

    pub(super) async fn write_config_status(
        &mut self,
        config: &BGPConfiguration,
        outcome: &ConfigOutcome<'_>,
    ) {
        let k = config_key(config);
        let previous = self
            .config_status
            .get(&k)
            .cloned()
            .or_else(|| config.status.clone());
        let status = config_status(
            config.metadata.generation,
            previous.as_ref(),
            outcome,
            SystemTime::now(),
        );
        let same = |a: &BGPConfigurationStatus, b: &BGPConfigurationStatus| {
            let strip = |s: &BGPConfigurationStatus| BGPConfigurationStatus {
                last_reconcile_time: None,
                ..s.clone()
            };
            strip(a) == strip(b)
        };
        if self
            .config_status
            .get(&k)
            .is_some_and(|last| same(last, &status))
        {
            return;
        }
        let api: Api<BGPConfiguration> =
            Api::namespaced(self.client.clone(), &config.namespace().unwrap_or_default());
        let body = json!({
            "apiVersion": BGPConfiguration::api_version(&()),
            "kind": BGPConfiguration::kind(&()),
            "metadata": {"name": config.name_any()},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&config.name_any(), &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                self.config_status.insert(k, status);
            }
            Err(error) => {
                tracing::warn!(op = "bgpConfigStatus", config = %k, %error, "status write failed");
            }
        }
    }

    pub(super) async fn import_state(&self) -> ImportState {
        let Some(settings) = self.import_settings.as_ref().filter(|s| s.enabled) else {
            return ImportState::default();
        };
        let matches = |name: &str| settings.interfaces.iter().any(|p| glob_match(p, name));
        let links = self.kernel.list_links().await.unwrap_or_default();
        let mut interfaces: Vec<ImportInterface> = links
            .iter()
            .filter(|l| matches(&l.name))
            .map(|l| ImportInterface {
                name: l.name.clone(),
                exists: true,
                up: l.is_up() || (l.admin_up && l.oper_state == OperState::Unknown),
            })
            .collect();
        for p in &settings.interfaces {
            let literal = !p.contains(['*', '?']);
            if literal && !interfaces.iter().any(|i| &i.name == p) {
                interfaces.push(ImportInterface {
                    name: p.clone(),
                    exists: false,
                    up: false,
                });
            }
        }
        let imported: std::collections::BTreeSet<IpNet> = self
            .importer
            .as_ref()
            .map(|w| w.current().iter().map(|a| a.network()).collect())
            .unwrap_or_default();
        let mut addresses: Vec<(Prefix, String)> = self
            .kernel
            .list_addresses()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| {
                let ifname = a.ifname.clone().filter(|n| matches(n))?;
                imported
                    .contains(&a.network())
                    .then(|| (Prefix::of(a.network()), ifname))
            })
            .collect();
        addresses.sort();
        addresses.dedup();
        ImportState {
            interfaces,
            addresses,
        }
    }
}
