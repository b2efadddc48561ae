//! The embedded speaker inside the agent: BGPConfiguration in, routes out, status written.
//!
//! One task owns the [`Speaker`]. It watches the BGPConfigurations and Secrets of the install
//! namespace and its own Node; on a change it maps the configuration ([`crate::bgp::config`]) and
//! applies it — only sessions whose identity changed are reset — or, if the configuration is
//! bad, keeps the last good one and says why in the BGPConfiguration's status and a Warning
//! event. The addresses on the `netlinkImport` interfaces (`kube-lb0`) arrive from the kernel as
//! deltas ([`AddressWatcher`]) and become announcements and withdrawals at once. Received routes
//! go into kernel tables per `netlinkExport`. BGPNodeStatus is written a second after something
//! changed and at every heartbeat; on shutdown it says `AgentShutdown`.
//!
//! Several BGPConfigurations: the oldest (then by namespace/name) is applied; the others get
//! `Ready=False/Superseded` naming it, so none silently erases another's peers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use purelb_api::crd::bgp_configuration::{BGPConfiguration, BGPConfigurationStatus};
use purelb_api::crd::bgp_node_status::{BGPNodeStatus, BGPNodeStatusStatus, ExportedRoute};
use purelb_api::pool::Cidr;
use purelb_bgp::driver::LocalRoute;
use purelb_bgp::fsm::State;
use purelb_bgp::speaker::Speaker;
use purelb_bgp::wire::{Ipv4Prefix, Ipv6Prefix, Prefix};
use purelb_kube_edge::events::EventSink;
use purelb_kube_edge::watch;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bgp::config::{ImportSettings, MapError, MappedConfig, NodeFacts, Secrets, map_config};
use crate::bgp::export::{ExportReport, NetlinkExporter, plan_export};
use crate::bgp::status::{
    ConfigOutcome, ImportInterface, ImportState, NodeStatusInput, changed, config_status,
    node_status, shutdown_status,
};
use crate::event::Event;
use crate::kernel::{AddressWatcher, Kernel, OperState, glob_match};

/// The field manager of every write this module makes.
pub const FIELD_MANAGER: &str = "purelb-lbnodeagent";
/// How long changes are collected before a configuration is re-applied.
const CONFIG_DEBOUNCE: Duration = Duration::from_millis(100);
/// How long after a change BGPNodeStatus is written.
const STATUS_DEBOUNCE: Duration = Duration::from_secs(1);

/// Where the BGP side of the agent runs.
#[derive(Debug, Clone)]
pub struct BgpOptions {
    pub namespace: String,
    pub node: String,
}

/// Runs until `shutdown` turns true, then writes `AgentShutdown` and stops every session with a
/// Cease. Must run on a runtime whose threads are in the node's network namespace.
pub async fn run(
    client: Client,
    options: BgpOptions,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, mut changes) = mpsc::unbounded_channel::<()>();
    let configs: Store<BGPConfiguration> = watch(
        Api::namespaced(client.clone(), &options.namespace),
        watcher::Config::default(),
        tx.clone(),
        |_| (),
    );
    let secrets: Store<Secret> = watch(
        Api::namespaced(client.clone(), &options.namespace),
        watcher::Config::default(),
        tx.clone(),
        |_| (),
    );
    let nodes: Store<Node> = watch(
        Api::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", options.node)),
        tx,
        |_| (),
    );
    let mut agent = BgpAgent {
        client,
        options,
        events,
        kernel: Kernel::new()?,
        configs,
        secrets,
        nodes,
        speaker: None,
        speaker_changes: None,
        applied: None,
        importer: None,
        import_settings: None,
        exporter: None,
        export_report: ExportReport::default(),
        config_status: BTreeMap::new(),
        last_node_status: None,
        status_due: None,
        heartbeat_due: None,
        established: 0,
    };
    loop {
        let status_at = earliest(agent.status_due, agent.heartbeat_due);
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            Some(()) = changes.recv() => {
                tokio::time::sleep(CONFIG_DEBOUNCE).await;
                while changes.try_recv().is_ok() {}
                agent.reconcile().await;
            }
            delta = next_delta(agent.importer.as_mut()) => agent.imported(delta).await,
            () = speaker_changed(agent.speaker_changes.as_mut()) => {
                agent.status_due.get_or_insert(Instant::now() + STATUS_DEBOUNCE);
            }
            () = sleep_until(status_at) => agent.write_status().await,
        }
    }
    agent.stop().await;
    Ok(())
}

struct BgpAgent {
    client: Client,
    options: BgpOptions,
    events: EventSink,
    kernel: Kernel,
    configs: Store<BGPConfiguration>,
    secrets: Store<Secret>,
    nodes: Store<Node>,
    speaker: Option<Speaker>,
    speaker_changes: Option<watch::Receiver<u64>>,
    /// The configuration running and the object it came from (namespace/name).
    applied: Option<(String, MappedConfig)>,
    importer: Option<AddressWatcher>,
    import_settings: Option<ImportSettings>,
    /// Installs received routes per `netlinkExport` (created at the first sync).
    exporter: Option<NetlinkExporter>,
    export_report: ExportReport,
    /// What this node last wrote into each BGPConfiguration's status.
    config_status: BTreeMap<String, BGPConfigurationStatus>,
    last_node_status: Option<BGPNodeStatusStatus>,
    status_due: Option<Instant>,
    heartbeat_due: Option<Instant>,
    established: usize,
}

fn key(c: &BGPConfiguration) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

impl BgpAgent {
    fn node_facts(&self) -> Option<(NodeFacts, Node)> {
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

    fn secrets(&self) -> Secrets {
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

    async fn reconcile(&mut self) {
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

    async fn refuse(&mut self, config: &BGPConfiguration, error: &MapError) {
        tracing::warn!(op = "bgpConfig", config = %key(config), %error, "configuration refused; the last good one keeps running");
        self.event(
            config,
            Event::warning(
                "ConfigurationInvalid",
                format!(
                    "node {}: {error}; the last good configuration keeps running",
                    self.options.node
                ),
            ),
        );
        self.write_config_status(config, &ConfigOutcome::Invalid(error))
            .await;
    }

    async fn apply(&mut self, config: &BGPConfiguration, mapped: MappedConfig) {
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
                    "RouterIDResolved",
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

    fn established_now(&self) -> usize {
        self.speaker.as_ref().map_or(0, |s| {
            s.status()
                .peers
                .iter()
                .filter(|p| p.state == State::Established)
                .count()
        })
    }

    async fn write_applied_status(&mut self) {
        let Some((applied_key, mapped)) = self.applied.clone() else {
            return;
        };
        let Some(config) = self
            .configs
            .state()
            .into_iter()
            .find(|c| key(c) == applied_key)
        else {
            return;
        };
        let outcome = ConfigOutcome::Applied {
            mapped: &mapped,
            established: self.established,
        };
        self.write_config_status(&config, &outcome).await;
    }

    /// Replaces the address watcher: withdraws what the old one imported, then imports what the
    /// new one finds.
    async fn restart_import(&mut self, settings: &ImportSettings) {
        if let Some(old) = self.importer.take()
            && let Some(s) = &self.speaker
        {
            for a in old.current() {
                s.withdraw(cidr_prefix(a.network()));
            }
        }
        self.import_settings = Some(settings.clone());
        if !settings.enabled {
            return;
        }
        match AddressWatcher::open(settings.interfaces.clone()).await {
            Ok(w) => self.importer = Some(w),
            Err(error) => {
                tracing::error!(op = "netlinkImport", %error, "cannot watch the import interfaces");
            }
        }
    }

    async fn imported(
        &mut self,
        delta: Result<crate::kernel::AddressDelta, crate::kernel::KernelError>,
    ) {
        let delta = match delta {
            Ok(d) => d,
            Err(error) => {
                tracing::error!(op = "netlinkImport", %error, "address watch failed; reopening");
                self.importer = None;
                if let Some(settings) = self.import_settings.take() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.restart_import(&settings).await;
                }
                return;
            }
        };
        let Some(speaker) = &self.speaker else {
            return;
        };
        let current = self
            .importer
            .as_ref()
            .map(|w| w.current().clone())
            .unwrap_or_default();
        for a in &delta.removed {
            // Two addresses of one network share the route: withdraw with the last of them.
            let network = a.network();
            if !current.iter().any(|c| c.network() == network) {
                speaker.withdraw(cidr_prefix(network));
                tracing::info!(op = "netlinkImport", prefix = %network, "withdrawn");
            }
        }
        for a in &delta.added {
            let network = a.network();
            speaker.announce(LocalRoute::originated(cidr_prefix(network)));
            tracing::info!(op = "netlinkImport", prefix = %network, "announced");
        }
        self.status_due
            .get_or_insert(Instant::now() + STATUS_DEBOUNCE);
    }

    /// Installs the received routes `netlinkExport` selects (removes ours when it is off).
    async fn sync_export(
        &mut self,
        mapped: &MappedConfig,
        received: &[(IpAddr, purelb_bgp::driver::ReceivedRoute)],
    ) {
        if !mapped.export.enabled && self.exporter.is_none() {
            return;
        }
        let exporter = match self.exporter.as_mut() {
            Some(e) => e,
            None => match NetlinkExporter::new(self.kernel.clone(), mapped.export.protocol) {
                Ok(e) => self.exporter.insert(e),
                Err(error) => {
                    tracing::error!(op = "netlinkExport", ?error, "unusable route protocol");
                    return;
                }
            },
        };
        if let Err(error) = exporter.set_protocol(mapped.export.protocol) {
            tracing::error!(op = "netlinkExport", ?error, "unusable route protocol");
            return;
        }
        let filter = match exporter.next_hop_filter().await {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(op = "netlinkExport", %error, "cannot read connected routes");
                return;
            }
        };
        let plan = plan_export(&mapped.export, received, |nh, table| {
            filter.check(nh, table)
        });
        self.export_report = exporter.sync_plan(plan).await;
    }

    async fn import_state(&self) -> ImportState {
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
        let imported: std::collections::BTreeSet<Cidr> = self
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
                    .then(|| (cidr_prefix(a.network()), ifname))
            })
            .collect();
        addresses.sort();
        addresses.dedup();
        ImportState {
            interfaces,
            addresses,
        }
    }

    async fn write_status(&mut self) {
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
    async fn write_node_status(&mut self, mut status: BGPNodeStatusStatus, always: bool) {
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
        let owner = self.node_facts().and_then(|(_, node)| {
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

    async fn write_config_status(
        &mut self,
        config: &BGPConfiguration,
        outcome: &ConfigOutcome<'_>,
    ) {
        let k = key(config);
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

    fn event(&self, config: &BGPConfiguration, event: Event) {
        let regarding = ObjectReference {
            api_version: Some(BGPConfiguration::api_version(&()).into_owned()),
            kind: Some(BGPConfiguration::kind(&()).into_owned()),
            name: Some(config.name_any()),
            namespace: config.namespace(),
            uid: config.uid(),
            ..ObjectReference::default()
        };
        self.events.record(regarding, event);
    }

    async fn stop_speaker(&mut self) {
        if let Some(e) = self.exporter.as_mut() {
            e.clear().await;
        }
        self.exporter = None;
        self.importer = None;
        self.import_settings = None;
        self.applied = None;
        self.speaker_changes = None;
        if let Some(s) = self.speaker.take() {
            s.stop().await;
        }
    }

    async fn stop(mut self) {
        if let Some(last) = self.last_node_status.clone() {
            let status = shutdown_status(last, SystemTime::now());
            self.status_due = None;
            self.last_node_status = None;
            self.write_node_status(status, true).await;
        }
        self.stop_speaker().await;
    }
}

fn cidr_prefix(c: Cidr) -> Prefix {
    match c.network() {
        IpAddr::V4(a) => Prefix::V4(
            Ipv4Prefix::new(a, c.prefix_len()).unwrap_or_else(|| unreachable!("a valid Cidr")),
        ),
        IpAddr::V6(a) => Prefix::V6(
            Ipv6Prefix::new(a, c.prefix_len()).unwrap_or_else(|| unreachable!("a valid Cidr")),
        ),
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_delta(
    w: Option<&mut AddressWatcher>,
) -> Result<crate::kernel::AddressDelta, crate::kernel::KernelError> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // A closed channel means the process is ending too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn speaker_changed(rx: Option<&mut watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
