//! The embedded speaker inside the agent: BGPConfiguration in, routes out, status written.
//!
//! One task owns the [`Speaker`]. It watches the BGPConfigurations and Secrets of the install
//! namespace and its own Node; on a change it maps the configuration ([`crate::bgp::config`]) and
//! applies it — only sessions whose identity changed are reset — or, if the configuration is
//! bad, keeps the last good one and says why in the BGPConfiguration's status and a Warning
//! event. The addresses on the `netlinkImport` interfaces (`kube-lb0`) arrive from the kernel as
//! deltas ([`AddressFollower`]) and become announcements and withdrawals at once. Received routes
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
use purelb_api::pool::IpNet;
use purelb_bgp::fsm::State;
use purelb_bgp::rib::LocalRoute;
use purelb_bgp::speaker::Speaker;
use purelb_bgp::wire::Prefix;
use purelb_kube_edge::Watches;
use purelb_kube_edge::events::EventSink;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bgp::config::step::{Step, applied_events, decide, refused_event};
use crate::bgp::config::{ImportSettings, MapError, MappedConfig, config_key};
use crate::bgp::export::{ExportReport, NetlinkExporter, plan_export};
use crate::bgp::status::{
    ConfigOutcome, ImportInterface, ImportState, NodeStatusInput, changed, config_status,
    node_status, shutdown_status,
};
use crate::event::Event;
use crate::kernel::{AddressDelta, AddressFollower, Kernel, KernelError, OperState, glob_match};

mod configure;
mod export;
mod import;
mod status_writer;

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
    let watches = Watches::new(client.clone(), tx);
    let configs: Store<BGPConfiguration> =
        watches.namespaced(&options.namespace, watcher::Config::default(), |_| ());
    let secrets: Store<Secret> =
        watches.namespaced(&options.namespace, watcher::Config::default(), |_| ());
    let node_config = watcher::Config::default().fields(&format!("metadata.name={}", options.node));
    let nodes: Store<Node> = watches.all(node_config, |_| ());
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
        let input = tokio::select! {
            () = stopped(&mut shutdown) => Input::Stop,
            Some(()) = changes.recv() => {
                tokio::time::sleep(CONFIG_DEBOUNCE).await;
                while changes.try_recv().is_ok() {}
                Input::Configuration
            }
            delta = next_delta(agent.importer.as_mut()) => Input::Address(delta),
            () = speaker_changed(agent.speaker_changes.as_mut()) => Input::Speaker,
            () = sleep_until(status_at) => Input::StatusDue,
        };
        match input {
            Input::Stop => break,
            Input::Configuration => agent.reconcile().await,
            Input::Address(delta) => agent.imported(delta).await,
            Input::Speaker => {
                agent
                    .status_due
                    .get_or_insert(Instant::now() + STATUS_DEBOUNCE);
            }
            Input::StatusDue => agent.write_status().await,
        }
    }
    agent.stop().await;
    Ok(())
}

/// What reaches the BGP runtime, one handler each.
enum Input {
    /// A BGPConfiguration, Secret or this node's Node changed (bursts coalesced).
    Configuration,
    /// An address appeared on or left a `netlinkImport` interface.
    Address(Result<AddressDelta, KernelError>),
    /// A session's state or its received routes changed.
    Speaker,
    /// The debounced status write or the heartbeat is due.
    StatusDue,
    /// The agent is stopping.
    Stop,
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
    importer: Option<AddressFollower>,
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

impl BgpAgent {
    fn established_now(&self) -> usize {
        self.speaker.as_ref().map_or(0, |s| {
            s.status()
                .peers
                .iter()
                .filter(|p| p.state == State::Established)
                .count()
        })
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

async fn next_delta(w: Option<&mut AddressFollower>) -> Result<AddressDelta, KernelError> {
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
