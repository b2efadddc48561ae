//! The allocator controller: watches Services, ServiceGroups and node Leases,
//! feeds them to the IPAM one at a time, and writes the outcomes back.
//!
//! One task owns the IPAM, so no two decisions interleave (as upstream's single
//! worker); the writes those decisions need run concurrently, at most one per
//! Service at a time, and a Service is decided again only once the watch has
//! brought back what was written to it. Before the first allocation, and after
//! every new ServiceGroup generation, the IPAM is rebuilt from every branded
//! Service's addresses, so a restart or a new leader never hands out an
//! address twice. Writes go out only while this replica leads; losing the lead
//! ends the process.

mod groups;
mod remote;
mod service;
mod writer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use purelb_api::crd::ServiceGroup;
use purelb_kube_edge::Watches;
use purelb_kube_edge::echoes::WriteEchoes;
use purelb_kube_edge::events::EventSink;
use purelb_kube_edge::http::Health;
use purelb_kube_edge::queue::WorkQueue;
use purelb_kube_edge::retry::Retries;
use tokio::sync::mpsc;

use crate::ipam::{Ipam, Outcome};
use crate::leader::Leadership;
use crate::metrics::Metrics;

pub use service::{Handling, handling};

/// Settings of one allocator process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The install namespace: ServiceGroups are used only from here, node
    /// Leases are read from here. `None` disables scoping and multi-pool.
    pub namespace: Option<String>,
    /// `DEFAULT_ANNOUNCER=PureLB`: also handle Services without a class.
    pub default_announcer: bool,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lost leadership; stopping so that a new leader starts from the API's state")]
    LostLeadership,
    #[error("watch stream of {0} ended")]
    WatchEnded(&'static str),
}

/// Everything that reaches the controller, in arrival order.
enum Input {
    Service(Box<Event<Service>>),
    Group(Box<Event<ServiceGroup>>),
    /// A node Lease changed (the store holds it).
    Lease,
    Retry(String),
    /// A Service write finished: the resourceVersion it produced (`None` when
    /// nothing needed writing) and whether to try again.
    Written {
        key: String,
        result: Result<Option<String>, kube::Error>,
        requeue: bool,
    },
}

/// A unit of work; equal items queued twice run once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Work {
    Service(String),
    Deleted {
        key: String,
        allocated_from: Option<String>,
    },
    Config,
}

pub struct Controller {
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    leadership: Leadership,
    events: EventSink,
    services: Store<Service>,
    groups: Store<ServiceGroup>,
    leases: Option<Store<Lease>>,
    ipam: Ipam,
    /// `metadata.generation` of each ServiceGroup last seen, so status writes
    /// (which do not bump it) cause no reprocessing.
    group_generations: HashMap<String, Option<i64>>,
    queue: WorkQueue<Work>,
    /// Retries of failed Services, with a backoff per Service key.
    retries: Retries<Input>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    /// Our Service writes under way and their echoes awaited: work for a Service waits
    /// for both.
    echoes: WriteEchoes,
    /// ServiceGroups whose usage changed since their status was last sent.
    dirty_groups: BTreeSet<String>,
    intake: groups::Intake,
    status: groups::StatusSink,
    remote: remote::RemoteIpams,
}

impl Controller {
    /// Watches and serves until an error ends it.
    pub async fn run(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        leadership: Leadership,
    ) -> Result<(), Error> {
        let (tx, mut inputs) = mpsc::unbounded_channel();
        let watches = Watches::new(client.clone(), tx.clone());
        let services = watches.all(watcher::Config::default(), |event| {
            Input::Service(Box::new(event))
        });
        let groups = watches.all(watcher::Config::default(), |event| {
            Input::Group(Box::new(event))
        });
        let leases: Option<Store<Lease>> = settings
            .namespace
            .as_deref()
            .map(|ns| watches.namespaced(ns, watcher::Config::default(), |_| Input::Lease));
        let events = EventSink::spawn(client.clone(), groups::FIELD_MANAGER, None);
        let status = groups::StatusSink::spawn(client.clone(), metrics.clone());
        let mut controller = Controller {
            remote: remote::RemoteIpams::new(metrics.clone()),
            client,
            settings,
            metrics,
            health,
            leadership,
            events,
            services,
            groups,
            leases,
            ipam: Ipam::empty(),
            group_generations: HashMap::new(),
            queue: WorkQueue::default(),
            retries: Retries::new(tx.clone(), Input::Retry),
            inputs_tx: tx,
            echoes: WriteEchoes::default(),
            dirty_groups: BTreeSet::new(),
            intake: groups::Intake::default(),
            status,
        };
        controller.wait_for_caches().await;
        // Ready means "able to take over": a standby is ready too.
        controller.health.set_ready(true);
        controller.leadership.clone().acquired().await;
        tracing::info!(
            op = "startup",
            "caches synced and leading: rebuilding state from Services"
        );
        controller.load_config().await?;
        loop {
            while let Some(work) = controller.queue.pop() {
                controller.process(work).await?;
                // Take what arrived meanwhile before the next item, so a burst is
                // deduplicated rather than processed once per event.
                while let Ok(input) = inputs.try_recv() {
                    controller.accept(input);
                }
            }
            controller.publish_status().await;
            let input = inputs
                .recv()
                .await
                .ok_or(Error::WatchEnded("controller inputs"))?;
            controller.accept(input);
        }
    }

    async fn wait_for_caches(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.groups.wait_until_ready().await;
        if let Some(leases) = &self.leases {
            let _ = leases.wait_until_ready().await;
        }
    }

    fn enqueue(&mut self, work: Work) {
        self.queue.push(work);
    }

    fn enqueue_all_services(&mut self) {
        let keys: Vec<String> = self
            .services
            .state()
            .iter()
            .map(|s| purelb_api::service::key(s))
            .collect();
        keys.into_iter()
            .for_each(|key| self.enqueue(Work::Service(key)));
    }

    /// Turns an input into work. Lease changes need none: they only matter to
    /// multi-pool Services, which read the live subnets when processed.
    fn accept(&mut self, input: Input) {
        match input {
            Input::Service(event) => self.accept_service(*event),
            Input::Group(event) => self.accept_group(*event),
            Input::Lease => {}
            Input::Retry(key) => self.enqueue(Work::Service(key)),
            Input::Written {
                key,
                result,
                requeue,
            } => self.written(key, result, requeue),
        }
    }

    fn written(&mut self, key: String, result: Result<Option<String>, kube::Error>, requeue: bool) {
        let (produced, retry) = match result {
            Ok(version) => (version, requeue),
            Err(error) => {
                tracing::warn!(op = "updateService", service = %key, %error, "writing the Service failed; retrying");
                (None, true)
            }
        };
        let released = self.echoes.finished(&key, produced);
        if retry {
            self.metrics.update_errors.inc();
            self.retries.schedule(&key);
        } else {
            self.retries.forget(&key);
        }
        if released {
            self.enqueue(Work::Service(key));
        }
    }

    fn accept_service(&mut self, event: Event<Service>) {
        match event {
            Event::Apply(s) => {
                let key = purelb_api::service::key(&s);
                let version = s.metadata.resource_version.as_deref().unwrap_or_default();
                self.echoes.observed(&key, version);
                self.enqueue(Work::Service(key));
            }
            // A re-list may skip versions: what it shows is the latest.
            Event::InitApply(s) => {
                let key = purelb_api::service::key(&s);
                self.echoes.forget(&key);
                self.enqueue(Work::Service(key));
            }
            Event::Delete(s) => {
                let allocated_from = s
                    .annotations()
                    .get(purelb_api::annotations::ALLOCATED_FROM)
                    .cloned();
                self.enqueue(Work::Deleted {
                    key: purelb_api::service::key(&s),
                    allocated_from,
                });
            }
            // After a re-list the watcher reports no deletions: release what
            // the IPAM holds for Services that are gone.
            Event::InitDone => {
                let present: HashSet<String> = self
                    .services
                    .state()
                    .iter()
                    .map(|s| purelb_api::service::key(s))
                    .collect();
                for key in self.ipam.service_keys() {
                    if !present.contains(&key) {
                        self.enqueue(Work::Deleted {
                            key,
                            allocated_from: None,
                        });
                    }
                }
                for key in self.echoes.relisted() {
                    self.enqueue(Work::Service(key));
                }
            }
            Event::Init => {}
        }
    }

    /// Only spec changes (a new generation) or deletions reload the pools;
    /// our own status writes do not.
    fn accept_group(&mut self, event: Event<ServiceGroup>) {
        let (Event::Apply(g) | Event::InitApply(g) | Event::Delete(g)) = event else {
            return;
        };
        let id = group_id(&g);
        let generation = g.metadata.generation;
        let deleted = self
            .groups
            .get(&reflector::ObjectRef::from_obj(&g))
            .is_none();
        let previous = if deleted {
            self.group_generations.remove(&id)
        } else {
            self.group_generations.insert(id, generation)
        };
        if deleted || previous != Some(generation) {
            self.enqueue(Work::Config);
        }
    }

    async fn process(&mut self, work: Work) -> Result<(), Error> {
        self.metrics.updates.inc();
        match work {
            Work::Config => self.load_config().await,
            Work::Deleted {
                key,
                allocated_from,
            } => {
                self.echoes.forget(&key);
                let outcome = self.ipam.release_service(&key, allocated_from.as_deref());
                self.remote.release(&self.ipam, &outcome).await;
                self.dirty_groups.extend(outcome.touched.iter().cloned());
                self.retries.forget(&key);
                // Freed space may let a refused Service through now (as upstream).
                if !outcome.released.is_empty() {
                    self.enqueue_all_services();
                }
                Ok(())
            }
            Work::Service(key) => self.process_service(&key).await,
        }
    }

    async fn process_service(&mut self, key: &str) -> Result<(), Error> {
        let svc = self.service(key);
        // A write under way, or the cache still behind our last write: deciding on
        // the older object would undo it.
        let version = svc
            .as_ref()
            .and_then(|s| s.metadata.resource_version.as_deref());
        if !self.echoes.admit(key, version) {
            return Ok(());
        }
        let Some(svc) = svc else {
            // Deleted before we got to it; the Delete event releases it.
            return Ok(());
        };
        let outcome = match handling(&svc, self.settings.default_announcer) {
            Handling::Ignore => return Ok(()),
            Handling::NotLoadBalancer(service_type) => self
                .ipam
                .release_not_load_balancer(&service::request(&svc), &service_type),
            Handling::Allocate => {
                let request = service::request(&svc);
                let subnets = self.active_subnets();
                let step = self.ipam.reconcile(&request, subnets.as_ref());
                let mut outcome = self.remote.complete(&mut self.ipam, step).await;
                if service::wants_re_evaluation(&svc) {
                    outcome.annotations.insert(
                        purelb_api::annotations::RE_EVALUATE,
                        crate::ipam::AnnotationChange::Remove,
                    );
                }
                outcome
            }
        };
        self.write(key, svc, outcome).await
    }

    fn service(&self, key: &str) -> Option<Arc<Service>> {
        let (namespace, name) = key.split_once('/')?;
        self.services
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// The subnets of live node Leases, `None` without an install namespace.
    fn active_subnets(&self) -> Option<BTreeSet<String>> {
        let leases = self.leases.as_ref()?;
        let now = k8s_openapi::jiff::Timestamp::now();
        Some(
            leases
                .state()
                .iter()
                .filter(|lease| purelb_api::lease::node_name(&lease.name_any()).is_some())
                .filter(|lease| purelb_api::lease::lease_is_live(lease, now))
                .flat_map(|lease| purelb_api::lease::lease_subnets(lease))
                .map(|subnet| subnet.spelling().to_owned())
                .collect(),
        )
    }

    /// Starts writing an outcome (annotations, then status) and records its
    /// events and metrics. The brand goes on before the address, so a crash
    /// between the two leaves an unbranded Service without an address, never
    /// an address the next leader does not know about.
    async fn write(&mut self, key: &str, svc: Arc<Service>, outcome: Outcome) -> Result<(), Error> {
        if !self.leadership.is_leader() {
            return Err(Error::LostLeadership);
        }
        if let Some(error) = &outcome.error {
            tracing::info!(op = "allocate", service = key, %error, "allocation refused");
        }
        for assignment in &outcome.assigned {
            tracing::info!(op = "allocate", service = key, ip = %assignment.ip, group = %assignment.group, "addressAssigned");
        }
        for released in &outcome.released {
            tracing::info!(op = "release", service = key, ip = %released.ip, group = %released.group, "addressReleased");
        }
        for unknown in &outcome.unknown {
            tracing::info!(op = "allocate", service = key, ip = %unknown, "unknown LoadBalancer IP: no pool found");
        }
        for event in &outcome.events {
            tracing::debug!(op = "event", service = key, reason = event.reason.as_str(), message = %event.message);
            self.events.record(svc.object_ref(&()), kube_event(event));
        }
        for metric in &outcome.metrics {
            self.metrics.count(metric);
        }
        self.dirty_groups.extend(outcome.touched.iter().cloned());
        self.echoes.started(key);
        let (client, tx, key) = (self.client.clone(), self.inputs_tx.clone(), key.to_owned());
        tokio::spawn(async move {
            let result = writer::write_service(&client, &svc, &outcome).await;
            let _ = tx.send(Input::Written {
                key,
                result,
                requeue: outcome.requeue,
            });
        });
        Ok(())
    }

    /// A new ServiceGroup generation: parse, keep the old
    /// one if nothing parses, otherwise replay every branded Service's
    /// addresses before anything is allocated, then reprocess everything.
    async fn load_config(&mut self) -> Result<(), Error> {
        if !self.leadership.is_leader() {
            return Err(Error::LostLeadership);
        }
        let groups = self.groups.state();
        self.group_generations = groups
            .iter()
            .map(|g| (group_id(g), g.metadata.generation))
            .collect();
        let (ipam, refusals) =
            self.intake
                .load(&self.settings, &groups, &self.metrics, &self.events);
        let accepted = ipam.is_some();
        if let Some(mut ipam) = ipam {
            self.rebuild(&mut ipam);
            let removed: Vec<String> = self
                .ipam
                .group_names()
                .filter(|name| ipam.group_kind(name).is_none())
                .map(str::to_owned)
                .collect();
            for name in &removed {
                self.metrics.remove_pool_gauges(name);
            }
            self.ipam = ipam;
        } else {
            self.metrics.update_errors.inc();
            tracing::warn!(
                op = "setConfig",
                "No valid pools found; the previous configuration stays in force"
            );
        }
        for refusal in refusals {
            self.publish_refusal(refusal);
        }
        if !accepted {
            return Ok(());
        }
        self.metrics.config_loaded.set(1);
        let names: Vec<String> = self.ipam.group_names().map(str::to_owned).collect();
        self.dirty_groups.extend(names);
        self.enqueue_all_services();
        Ok(())
    }

    /// Replays every branded Service's addresses into a new generation
    /// before it allocates anything. Where a write of ours has not yet
    /// come back through the watch, the store is behind: the addresses the
    /// current generation holds for that Service are the truth.
    fn rebuild(&self, ipam: &mut Ipam) {
        for svc in self.services.state() {
            if handling(&svc, self.settings.default_announcer) != Handling::Allocate {
                continue;
            }
            let mut request = service::request(&svc);
            if self.echoes.pending(&request.key) {
                request.ingress = self
                    .ipam
                    .holdings(&request.key)
                    .into_iter()
                    .map(|(ip, _)| ip)
                    .collect();
                request.branded = true;
            }
            if request.branded && !request.ingress.is_empty() {
                for ip in ipam.notify(&request) {
                    tracing::info!(op = "rebuild", service = %request.key, %ip, "unknown LoadBalancer IP: no pool found");
                }
            }
        }
    }

    /// A refused group's status says why. One whose previous spec still serves
    /// is published with its usage; one that never parsed gets only the reason.
    fn publish_refusal(&mut self, refusal: groups::Refusal) {
        let group = &refusal.group;
        if refusal.kept_previous {
            self.dirty_groups.insert(group.name_any());
            return;
        }
        let status = purelb_api::crd::ServiceGroupStatus {
            conditions: Some(vec![self.intake.ready_condition(group)]),
            ..Default::default()
        };
        self.status.apply(
            &group.namespace().unwrap_or_default(),
            &group.name_any(),
            status,
        );
    }

    /// Sends the status of every group whose usage changed; called when the
    /// queue runs dry, so a burst costs one write per group, not per Service.
    async fn publish_status(&mut self) {
        for name in std::mem::take(&mut self.dirty_groups) {
            let name = name.as_str();
            let Some(namespace) = self.ipam.group_namespace(name).map(str::to_owned) else {
                continue;
            };
            let Some(mut status) = self.ipam.group_status(name) else {
                continue;
            };
            if let Some(stats) = self.remote.external_stats(&self.ipam, name).await {
                status = status.with_external_stats(&stats);
            }
            self.metrics.set_pool_gauges(name, &status);
            let mut crd_status = status.to_crd();
            let group = self
                .groups
                .get(&reflector::ObjectRef::new(name).within(&namespace));
            crd_status.conditions = group.map(|g| vec![self.intake.ready_condition(&g)]);
            self.status.apply(&namespace, name, crd_status);
        }
    }
}

/// `namespace/name` of a ServiceGroup.
fn group_id(group: &ServiceGroup) -> String {
    format!(
        "{}/{}",
        group.namespace().unwrap_or_default(),
        group.name_any()
    )
}

/// An IPAM event (pure, no Kubernetes types) as the recorder posts it.
fn kube_event(event: &crate::ipam::Event) -> purelb_kube_edge::events::Event {
    use purelb_kube_edge::events::EventType as Type;
    purelb_kube_edge::events::Event {
        reason: event.reason.as_str(),
        type_: match event.type_ {
            crate::ipam::EventType::Normal => Type::Normal,
            crate::ipam::EventType::Warning => Type::Warning,
        },
        message: event.message.clone(),
    }
}
