//! The node agent's control loop: watches Services,
//! EndpointSlices, LBNodeAgents (all namespaces), ServiceGroups (install
//! namespace) and this node's Node; hears the election and the kernel; and runs one
//! serial queue of work, so plans and kernel changes never interleave.
//!
//! Per Service: [`plan_service`](super::plan::plan_service) decides, the [`Announcer`] carries the decisions
//! out, and the annotation / `externalTrafficPolicy` changes and events are written
//! by tasks of their own (one write per Service at a time, conditional on the
//! resourceVersion the plan was made from), so a slow or unreachable API server
//! never holds up the kernel side. Updates whose only change is an announcing
//! annotation are not re-run (upstream's O(N²) write-storm guard).
//!
//! Start-up: the caches sync, the configuration is selected, the lease is written;
//! then one full pass over every Service, after which addresses an earlier run
//! added and no Service wants any more are removed. Addresses still wanted are
//! kept in place (no withdraw / re-add).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use purelb_api::annotations;
use purelb_api::crd::{LBNodeAgent, ServiceGroup};
use purelb_api::pool::IpNet;
use purelb_kube_edge::Watches;
use purelb_kube_edge::events::EventSink;
use purelb_kube_edge::http::Health;
use purelb_kube_edge::retry::Retries;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::announce::announcer::{Announcer, Applied, GarpJob};
use crate::announce::endpoints::{self, SERVICE_NAME_LABEL};
use crate::announce::outcome;
use crate::announce::plan::{
    self, AnnotationChanges, Decision, PlanContext, PoolTable, WithdrawReason,
};
use crate::event;
use crate::kernel::{EventGroups, EventStream, Kernel, KernelEvent};
use crate::metrics::{Metrics, StealLabels};
use crate::node::election::Oracle;
use crate::node::election::{self, ElectionHandle, Identity, Notice, Timing};
use crate::node::links;
use crate::node::netstate::{self, NetSnapshot};

/// Kernel notifications are coalesced over this long before the state is re-read.
const KERNEL_DEBOUNCE: Duration = Duration::from_millis(30);

/// Who this agent process is and its election timing.
#[derive(Debug, Clone)]
pub struct Options {
    /// The install namespace: ServiceGroups and Leases live here.
    pub namespace: String,
    pub node: String,
    /// `purelb.io/instance` on the lease.
    pub instance: String,
    pub timing: Timing,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Election(#[from] election::StartError),
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
    #[error("watch stream of {0} ended")]
    WatchEnded(&'static str),
}

enum Input {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Agents,
    Groups,
    Node,
    Election(Notice),
    Kernel,
    Retry(String),
    Written {
        key: String,
        result: Result<Option<String>, WriteError>,
    },
}

mod configure;
mod intake;
mod kernel;
mod service;
mod write;

use configure::{ConfigSelection, Configured};
use intake::{Intake, Work};
use write::WriteError;

pub struct Controller {
    client: Client,
    settings: Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    events: EventSink,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    agents: Store<LBNodeAgent>,
    groups: Store<ServiceGroup>,
    nodes: Store<Node>,
    net: NetSnapshot,
    announcer: Announcer,
    election: ElectionHandle,
    config: Option<Configured>,
    /// The last configuration selected without error (kept on a config error).
    last_good: Option<Configured>,
    pools: PoolTable,
    lease_subnets: Vec<IpNet>,
    previous_ingress: HashMap<String, Vec<IpAddr>>,
    /// What the watches and our writes brought in, as work.
    intake: Intake,
    /// Retries of failed Services, with a backoff per Service key.
    retries: Retries<Input>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    /// (Service, address) pairs last decided `noLocalInterface`: logged at info once
    /// per change, not on every pass.
    no_local: HashSet<(String, IpAddr)>,
    /// This node's labels as last used for the selection.
    node_labels: BTreeMap<String, String>,
}

impl Controller {
    /// Runs the agent until `shutdown` resolves, then shuts down as PureLB does (addresses
    /// withdrawn, the lease deleted, the dummy link removed), except that local addresses
    /// are withdrawn *before* the lease is deleted.
    pub async fn run(
        client: Client,
        settings: Options,
        kernel: Kernel,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let (tx, mut inputs) = mpsc::unbounded_channel();
        let watches = Watches::new(client.clone(), tx.clone());
        let services = watches.all(watcher::Config::default(), |e| Input::Service(Box::new(e)));
        let slice_config = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let slices = watches.all(slice_config, |e| Input::Slice(Box::new(e)));
        let agents: Store<LBNodeAgent> = watches.all(watcher::Config::default(), |_| Input::Agents);
        let groups: Store<ServiceGroup> =
            watches.namespaced(&settings.namespace, watcher::Config::default(), |_| {
                Input::Groups
            });
        let node_config =
            watcher::Config::default().fields(&format!("metadata.name={}", settings.node));
        let nodes: Store<Node> = watches.all(node_config, |_| Input::Node);
        kernel::spawn_kernel_events(tx.clone()).await?;
        let _ = agents.wait_until_ready().await;
        let _ = groups.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;

        let net = netstate::read(&kernel).await?;
        let (notices_tx, mut notices) = mpsc::unbounded_channel();
        let events = EventSink::spawn(
            client.clone(),
            event::COMPONENT,
            Some(settings.node.clone()),
        );
        // Selection before the election: the first lease write carries the subnets
        // of the configuration in force.
        let mut pre = ConfigSelection {
            agents: &agents,
            nodes: &nodes,
            node: &settings.node,
            events: &events,
            metrics: &metrics,
        };
        let (config, last_good) = pre.select(None);
        let lease_subnets =
            links::lease_subnets(config.state, config.settings.as_ref(), &net.interfaces);
        let election = election::start(
            client.clone(),
            Identity {
                namespace: settings.namespace.clone(),
                node: settings.node.clone(),
                instance: settings.instance.clone(),
            },
            settings.timing,
            lease_subnets.clone(),
            metrics.clone(),
            notices_tx,
        )
        .await?;
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(notice) = notices.recv().await {
                    if tx.send(Input::Election(notice)).is_err() {
                        return;
                    }
                }
            });
        }
        let mut announcer = Announcer::new(
            kernel,
            &settings.node,
            metrics.clone(),
            election.subscribe(),
        );
        announcer.adopt(&net.owned);
        let mut controller = Controller {
            client,
            settings,
            metrics,
            health,
            events,
            services,
            slices,
            agents,
            groups,
            nodes,
            net,
            announcer,
            election,
            config: None,
            last_good,
            pools: PoolTable::default(),
            lease_subnets,
            previous_ingress: HashMap::new(),
            intake: Intake::default(),
            retries: Retries::new(tx.clone(), Input::Retry),
            inputs_tx: tx,
            no_local: HashSet::new(),
            node_labels: BTreeMap::new(),
        };
        controller.node_labels = controller.node_labels();
        controller.apply_config(config).await;
        controller.load_pools();
        let _ = controller.services.wait_until_ready().await;
        let _ = controller.slices.wait_until_ready().await;
        // Service inputs that arrived while starting are covered by the full pass;
        // a configuration or pool change (an LBNodeAgent created right after the
        // agents started, as `kubectl apply -k deploy/defaults` does) is not, so
        // that work stays queued, ahead of the pass.
        while let Ok(input) = inputs.try_recv() {
            controller.accept(input).await;
        }
        controller.intake.rebuild_slice_index(&controller.slices);
        controller
            .intake
            .queue
            .retain(|work| !matches!(work, Work::Service(_)));
        controller.enqueue_all();
        tracing::info!(op = "startup", node = %controller.settings.node, services = controller.intake.queue.len(), "caches synced; first full pass");
        controller.drain(&mut inputs).await;
        controller.announcer.remove_unclaimed().await;
        controller.health.set_ready(true);
        tracing::info!(op = "startup", node = %controller.settings.node, "first full pass done");

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let renewal = controller.announcer.next_renewal();
            tokio::select! {
                input = inputs.recv() => {
                    let input = input.ok_or(Error::WatchEnded("controller inputs"))?;
                    controller.accept(input).await;
                    controller.drain(&mut inputs).await;
                }
                _ = tokio::time::sleep_until(renewal.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if renewal.is_some() => {
                    controller.announcer.renew_due(Instant::now()).await;
                }
                () = &mut shutdown => break,
            }
        }
        controller.shutdown().await;
        Ok(())
    }

    /// Graceful shutdown: no new claims, local addresses withdrawn, then the lease
    /// deleted (if still ours), then everything else withdrawn.
    async fn shutdown(&mut self) {
        let node = self.settings.node.clone();
        tracing::info!(op = "shutdown", node = %node, "shutting down");
        self.election.mark_unhealthy().await;
        let reason = WithdrawReason::Shutdown.as_str();
        self.announcer.withdraw_all_local(reason).await;
        self.election.leave().await;
        self.announcer.withdraw_everything(reason).await;
        if let Some(settings) = self.config.as_ref().and_then(|c| c.settings.as_ref())
            && let Some(link) = self.net.link_named(&settings.dummy_interface)
            && link.kind.as_deref() == Some("dummy")
        {
            match self
                .announcer
                .kernel()
                .delete_link(&settings.dummy_interface)
                .await
            {
                Ok(_) => {
                    tracing::info!(op = "shutdown", interface = %settings.dummy_interface, "dummy interface deleted")
                }
                Err(error) => {
                    tracing::warn!(op = "shutdown", %error, "deleting the dummy interface failed")
                }
            }
        }
        tracing::info!(op = "shutdown", node = %node, "stopped");
    }

    /// Processes the queue, taking in what arrives between items so bursts coalesce.
    async fn drain(&mut self, inputs: &mut mpsc::UnboundedReceiver<Input>) {
        while let Ok(input) = inputs.try_recv() {
            self.accept(input).await;
        }
        while let Some(work) = self.intake.queue.pop() {
            self.process(work).await;
            while let Ok(input) = inputs.try_recv() {
                self.accept(input).await;
            }
        }
    }

    fn enqueue(&mut self, work: Work) {
        self.intake.enqueue(work);
    }

    /// Every Service in the store and every one we still remember (deleted ones).
    fn enqueue_all(&mut self) {
        let mut keys: BTreeSet<String> = self
            .services
            .state()
            .iter()
            .map(|s| purelb_api::service::key(s))
            .collect();
        keys.extend(self.previous_ingress.keys().cloned());
        for key in keys {
            self.enqueue(Work::Service(key));
        }
    }

    async fn accept(&mut self, input: Input) {
        match input {
            Input::Service(event) => {
                let remembered = self.previous_ingress.keys();
                self.intake.service(&event, &self.services, remembered);
            }
            Input::Slice(event) => self.intake.slice(&event, &self.slices),
            Input::Agents => self.enqueue(Work::Config),
            // Status heartbeats do not matter: only the labels select an LBNodeAgent.
            Input::Node => {
                let labels = self.node_labels();
                if labels != self.node_labels {
                    self.node_labels = labels;
                    self.enqueue(Work::Config);
                }
            }
            Input::Groups => self.enqueue(Work::Pools),
            Input::Election(Notice::Fenced) => {
                // Before anything else in the queue: the lease may expire elsewhere
                // in `lease_duration - renew_deadline`.
                let services = self.announcer.withdraw_all_local("fenced").await;
                tracing::warn!(op = "election", node = %self.settings.node, services = services.len(), "local addresses withdrawn (fenced)");
                self.enqueue_all();
            }
            Input::Election(Notice::Changed | Notice::Rejoined) => {
                tracing::debug!(op = "election", "ForceSync");
                self.enqueue_all();
            }
            Input::Kernel => self.kernel_changed().await,
            Input::Retry(key) => self.enqueue(Work::Service(key)),
            Input::Written { key, result } => self.written(key, result),
        }
    }

    fn written(&mut self, key: String, result: Result<Option<String>, WriteError>) {
        let produced = match result {
            Ok(version) => {
                self.retries.forget(&key);
                version
            }
            Err(WriteError::Conflict) => {
                // The Service changed under us: decided afresh once the watch has
                // (most likely) brought the new version.
                tracing::debug!(op = "updateService", service = %key, "conflict; re-planning");
                self.retries.schedule(&key);
                None
            }
            Err(WriteError::Gone) => None,
            Err(WriteError::Other(error)) => {
                tracing::warn!(op = "updateService", service = %key, %error, "writing the Service failed; retrying");
                self.metrics.update_errors.inc();
                self.retries.schedule(&key);
                None
            }
        };
        self.intake.written(&key, produced);
    }

    async fn process(&mut self, work: Work) {
        self.metrics.updates.inc();
        match work {
            Work::Config => {
                let mut pre = ConfigSelection {
                    agents: &self.agents,
                    nodes: &self.nodes,
                    node: &self.settings.node,
                    events: &self.events,
                    metrics: &self.metrics,
                };
                let (config, last_good) = pre.select(self.last_good.take());
                self.last_good = last_good;
                self.apply_config(config).await;
            }
            Work::Pools => {
                let before = self.pools.clone();
                self.load_pools();
                if self.pools != before {
                    self.enqueue_all();
                }
            }
            Work::Service(key) => self.process_service(&key).await,
        }
    }
}
