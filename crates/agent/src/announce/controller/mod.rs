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
use crate::event::{self, Event as AgentEvent};
use crate::kernel::{EventGroups, EventStream, Kernel, KernelEvent};
use crate::metrics::{Metrics, StealLabels};
use crate::node::election::Oracle;
use crate::node::election::{self, ElectionHandle, Identity, Notice, Timing};
use crate::node::links;
use crate::node::netstate::{self, NetSnapshot};
use crate::node::selection::{AgentId, SelectorState};

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
        spawn_kernel_events(tx.clone()).await?;
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

    fn load_pools(&mut self) {
        let groups = self.groups.state();
        self.pools = PoolTable::from_groups(groups.iter().map(|g| g.as_ref()));
    }

    /// Puts a selected configuration in force: dummy link, selector state, lease
    /// subnets, and a full pass when anything changed.
    async fn apply_config(&mut self, config: Configured) {
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

    fn update_lease_subnets(&mut self) {
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

    fn agent_event(&self, id: &AgentId, event: AgentEvent) {
        if let Some(agent) = self
            .agents
            .get(&ObjectRef::new(&id.name).within(&id.namespace))
        {
            self.events.record(agent.object_ref(&()), event);
        }
    }

    async fn kernel_changed(&mut self) {
        let net = match netstate::read(self.announcer.kernel()).await {
            Ok(net) => net,
            Err(error) => {
                tracing::warn!(op = "netlink", %error, "reading links and addresses failed");
                return;
            }
        };
        let vanished = self.announcer.forget_vanished(&net);
        let changed = net.interfaces != self.net.interfaces;
        self.net = net;
        if changed {
            tracing::info!(op = "netlink", "links or addresses changed; re-evaluating");
            self.update_lease_subnets();
            self.enqueue_all();
        } else {
            for key in vanished {
                self.enqueue(Work::Service(key));
            }
        }
    }

    async fn process_service(&mut self, key: &str) {
        if !self.intake.admit(key, &self.services) {
            return;
        }
        let Some(svc) = self.service(key) else {
            self.service_gone(key).await;
            return;
        };
        let previous = self.previous_ingress.get(key).cloned().unwrap_or_default();
        let healthy_nodes = self.healthy_nodes(key);
        let view = self.election.view();
        let settings = self.config.as_ref().and_then(|c| c.settings.clone());
        let node = self.settings.node.clone();
        let plan = {
            let announcer = &self.announcer;
            let holds = |ip: IpAddr| announcer.holds(ip);
            let oracle = Oracle {
                view: &view,
                now: Instant::now(),
                holds: &holds,
                metrics: &self.metrics,
            };
            let ctx = PlanContext {
                node: &node,
                settings: settings.as_ref(),
                interfaces: &self.net.interfaces,
                pools: &self.pools,
                election: &oracle,
                healthy_nodes: &healthy_nodes,
            };
            plan::plan_service(&svc, &previous, &ctx)
        };
        if plan.ingress.is_empty() {
            self.previous_ingress.remove(key);
        } else {
            self.previous_ingress
                .insert(key.to_owned(), plan.ingress.clone());
        }
        let preferred = annotations::node_affinity_requested(
            svc.annotations()
                .get(annotations::NODE_AFFINITY)
                .map(String::as_str),
            svc.annotations()
                .get(annotations::ALLOW_SHARED_IP)
                .map(String::as_str),
        )
        .then(|| healthy_nodes.clone());
        let garp_settings = settings.as_ref().and_then(|s| s.garp);
        let mut applied = Vec::with_capacity(plan.decisions.len());
        for decision in &plan.decisions {
            match decision {
                Decision::Local { .. } => {
                    self.metrics.election_wins.inc();
                }
                Decision::Withdraw {
                    ip,
                    reason: WithdrawReason::LostElection,
                } => {
                    self.metrics.election_losses.inc();
                    tracing::debug!(op = "announce", service = key, ip = %ip, "notWinner");
                }
                _ => {}
            }
            let job = match (decision, garp_settings) {
                (Decision::Local { garp: true, .. }, Some(g)) => Some(GarpJob {
                    settings: g,
                    preferred: preferred.clone(),
                }),
                _ => None,
            };
            let result = self.announcer.apply(key, decision, &self.net, job).await;
            self.log_applied(key, decision, &result).await;
            applied.push(result);
        }
        let outcome = outcome::settle(&svc, &node, &plan, &applied);
        if outcome.retry {
            self.metrics.update_errors.inc();
            self.retries.schedule(key);
        } else {
            self.retries.forget(key);
        }
        for steal in &outcome.annotations.steals {
            self.metrics
                .slot_steals
                .get_or_create(&StealLabels {
                    from: steal.from.clone(),
                    to: steal.to.clone(),
                })
                .inc();
        }
        if !outcome.events.is_empty() {
            let reference = svc.object_ref(&());
            for e in outcome.events {
                self.events.record(reference.clone(), e);
            }
        }
        if !outcome.annotations.is_empty() || plan.set_etp_cluster {
            self.write(key, &svc, outcome.annotations, plan.set_etp_cluster);
        }
    }

    /// Logs what applying `decision` did; an address that cannot be decided while it
    /// sits on a link that went down is withdrawn here.
    async fn log_applied(&mut self, key: &str, decision: &Decision, applied: &Applied) {
        let node = &self.settings.node;
        match (applied, decision) {
            (Applied::Added, Decision::Local { ip, interface, .. }) => {
                tracing::info!(op = "announce", service = key, node = %node, ip = %ip, interface = %interface, "electionWon");
            }
            (
                Applied::Added,
                Decision::Remote {
                    ip,
                    interface,
                    prefix_len,
                    ..
                },
            ) => {
                tracing::info!(op = "announce", service = key, node = %node, ip = %ip, interface = %interface, prefix_len, "announcingNonLocal");
            }
            (Applied::NotHealthy, _) => {}
            (Applied::Failed(message), _) => {
                tracing::warn!(op = "announce", service = key, ip = %decision.ip(), error = %message, "announcement failed");
            }
            (_, Decision::Retry { ip, message }) => {
                if self.announcer.local_on_down_links(&self.net).contains(ip) {
                    self.announcer
                        .withdraw(key, *ip, WithdrawReason::NoLocalInterface)
                        .await;
                }
                tracing::info!(op = "announce", service = key, ip = %ip, error = %message, "cannot decide; retrying");
            }
            (
                _,
                Decision::Withdraw {
                    ip,
                    reason: WithdrawReason::NoLocalInterface,
                },
            ) if self.no_local.insert((key.to_owned(), *ip)) => {
                tracing::info!(op = "announce", service = key, node = %node, ip = %ip, "noLocalInterface");
            }
            _ => {}
        }
        if !matches!(
            decision,
            Decision::Withdraw {
                reason: WithdrawReason::NoLocalInterface,
                ..
            }
        ) {
            self.no_local.remove(&(key.to_owned(), decision.ip()));
        }
    }

    /// The Service is gone from the cache: withdraw what it announced.
    async fn service_gone(&mut self, key: &str) {
        self.intake.forget(key);
        self.retries.forget(key);
        self.no_local.retain(|(k, _)| k != key);
        let Some(previous) = self.previous_ingress.remove(key) else {
            return;
        };
        for decision in plan::withdraw_all(&previous, WithdrawReason::ServiceDeleted) {
            self.announcer.apply(key, &decision, &self.net, None).await;
        }
    }

    fn node_labels(&self) -> BTreeMap<String, String> {
        self.nodes
            .get(&ObjectRef::new(&self.settings.node))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    fn service(&self, key: &str) -> Option<Arc<Service>> {
        let (namespace, name) = key.split_once('/')?;
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    fn healthy_nodes(&self, key: &str) -> BTreeSet<String> {
        let Some(names) = self.intake.slices_of(key) else {
            return BTreeSet::new();
        };
        let Some((namespace, _)) = key.split_once('/') else {
            return BTreeSet::new();
        };
        let slices: Vec<Arc<EndpointSlice>> = names
            .iter()
            .filter_map(|n| self.slices.get(&ObjectRef::new(n).within(namespace)))
            .collect();
        endpoints::healthy_nodes(slices.iter().map(|s| s.as_ref()))
    }

    /// Starts the annotation / policy write for a Service (one at a time per Service).
    fn write(
        &mut self,
        key: &str,
        svc: &Service,
        changes: AnnotationChanges,
        set_etp_cluster: bool,
    ) {
        let patch = write::service_patch(svc, &changes, set_etp_cluster);
        let api: Api<Service> = Api::namespaced(
            self.client.clone(),
            svc.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = svc.name_any();
        let tx = self.inputs_tx.clone();
        let key = key.to_owned();
        self.intake.echoes.started(&key);
        tokio::spawn(async move {
            let result = write::patch_service(&api, &name, &patch).await;
            let _ = tx.send(Input::Written { key, result });
        });
    }
}

/// Kernel notifications that can change a decision: links, foreign addresses, the
/// removal of one of ours, default routes. Coalesced before the controller re-reads.
async fn spawn_kernel_events(tx: mpsc::UnboundedSender<Input>) -> Result<(), Error> {
    let mut stream = EventStream::open(EventGroups::all()).await?;
    tokio::spawn(async move {
        loop {
            let Some(first) = stream.next().await else {
                tracing::warn!(op = "netlink", "kernel event stream ended");
                return;
            };
            if !relevant(&first) {
                continue;
            }
            let until = Instant::now() + KERNEL_DEBOUNCE;
            while let Ok(Some(_)) = tokio::time::timeout_at(until, stream.next()).await {}
            if tx.send(Input::Kernel).is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn relevant(event: &KernelEvent) -> bool {
    match event {
        KernelEvent::AddressAdded(a) => !a.is_owned(),
        KernelEvent::AddressRemoved(_) => true,
        KernelEvent::LinkChanged { .. }
        | KernelEvent::LinkRemoved { .. }
        | KernelEvent::Overrun => true,
        KernelEvent::RouteAdded(r) | KernelEvent::RouteRemoved(r) => {
            r.destination.prefix_len() == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Address, RouteChange};
    use purelb_api::pool::{IpFamily, parse_cidr};

    fn address(protocol: u8) -> Address {
        Address {
            ifindex: 2,
            ifname: Some("eth0".into()),
            ip: "198.51.100.4".parse().unwrap(),
            prefix_len: 28,
            flags: 0,
            protocol,
            valid_lifetime: None,
            preferred_lifetime: None,
            scope: 0,
        }
    }

    #[test]
    fn kernel_events_that_matter() {
        let ours = crate::kernel::PURELB_ADDR_PROTO;
        assert!(!relevant(&KernelEvent::AddressAdded(address(ours))));
        assert!(relevant(&KernelEvent::AddressAdded(address(0))));
        assert!(relevant(&KernelEvent::AddressRemoved(address(ours))));
        assert!(relevant(&KernelEvent::Overrun));
        let route = |dst: &str| RouteChange {
            family: IpFamily::V4,
            table: 254,
            destination: parse_cidr(dst).unwrap(),
            ifindex: Some(2),
            metric: 0,
            unicast: true,
        };
        assert!(relevant(&KernelEvent::RouteAdded(route("0.0.0.0/0"))));
        assert!(!relevant(&KernelEvent::RouteAdded(route(
            "198.51.100.4/32"
        ))));
    }
}
