//! The election runtime: this node's Lease, the electorate
//! built from every node's Lease, and fencing.
//!
//! One task owns it all. It
//! * writes `purelb-node-<node>` (subnets, instance, owner = the Node) at start,
//!   every `lease_duration / 2`, and at once when this node's subnets change;
//! * watches every `purelb-node-*` Lease of the install namespace and rebuilds the
//!   [`Electorate`] on each change and at the instant the next live lease
//!   expires (a killed node drops out when its lease runs out, not at the next
//!   resync); a new [`View`] is published, and the controller told, only when
//!   members or subnets changed;
//! * **fences**: a renewal counts from the moment it was *sent*. When no renewal
//!   has succeeded for `renew_deadline` (shorter than the lease duration), the
//!   node turns itself unhealthy — every election answers "nobody" — and the
//!   controller withdraws all local addresses at once, before any other node
//!   can see the lease expire (`lease_duration - renew_deadline` later at the
//!   earliest). After the next successful renewal the node is healthy again,
//!   but claims addresses it does not hold only after `join_delay`, so the
//!   nodes that took them over meanwhile have seen its lease and let go.
//!
//! The same hold-down applies when the agent starts: a node (re)joining never
//! overlaps with the node it takes an address from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use purelb_api::election::Electorate;
use purelb_api::lease;
use purelb_api::pool::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Notice, Timing, View};
use crate::metrics::Metrics;

/// Who this node is to the election.
#[derive(Debug, Clone)]
pub struct Identity {
    pub namespace: String,
    pub node: String,
    /// `purelb.io/instance`: the pod UID.
    pub instance: String,
}

/// The handle the rest of the agent holds.
#[derive(Clone)]
pub struct ElectionHandle {
    view: watch::Receiver<View>,
    subnets: watch::Sender<Vec<IpNet>>,
    commands: mpsc::UnboundedSender<Command>,
}

enum Command {
    /// Stop renewing, mark unhealthy, and delete the lease if it is still ours.
    Leave(tokio::sync::oneshot::Sender<()>),
    /// Mark unhealthy (shutting down) without touching the lease.
    Unhealthy(tokio::sync::oneshot::Sender<()>),
}

impl ElectionHandle {
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver of every new [`View`], for tasks that check the election later
    /// (GARP verification).
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// This node's subnets changed: the lease is rewritten at once.
    pub fn set_subnets(&self, subnets: Vec<IpNet>) {
        self.subnets.send_if_modified(|current| {
            if *current == subnets {
                false
            } else {
                *current = subnets;
                true
            }
        });
    }

    /// Marks the node unhealthy (the first step of a graceful shutdown): no new local claims,
    /// GARP stops.
    pub async fn mark_unhealthy(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Unhealthy(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops renewing and deletes the lease if its `purelb.io/instance` is still
    /// ours (resourceVersion precondition), so a replacement agent's lease is safe.
    pub async fn leave(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Why the election could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading Node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// Starts the election: reads the Node (for the owner reference), starts the lease
/// watch, and returns once the first renewal was attempted and the lease cache is
/// synced. `initial_subnets` go into the first write.
pub async fn start(
    client: kube::Client,
    identity: Identity,
    timing: Timing,
    initial_subnets: Vec<IpNet>,
    metrics: Arc<Metrics>,
    notices: mpsc::UnboundedSender<Notice>,
) -> Result<ElectionHandle, StartError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get(&identity.node)
        .await
        .map_err(|source| StartError::Node {
            node: identity.node.clone(),
            source,
        })?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: identity.node.clone(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        block_owner_deletion: Some(false),
        controller: Some(false),
    };
    let leases: Api<Lease> = Api::namespaced(client, &identity.namespace);
    let (reader, writer) = reflector::store();
    let (changes_tx, changes) = mpsc::unbounded_channel::<()>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(leases.clone(), watcher::Config::default().timeout(60)).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if changes_tx.send(()).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(op = "election", %error, "lease watch failed; retrying")
                }
            }
        }
    });
    let (view_tx, view) = watch::channel(View {
        node: identity.node.clone(),
        electorate: Arc::new(Electorate::new()),
        healthy: false,
        claim_after: None,
    });
    let (subnets, subnets_rx) = watch::channel(initial_subnets);
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let mut runtime = LeaseTask {
        leases,
        store: reader,
        identity,
        owner,
        timing,
        metrics,
        notices,
        view: view_tx,
        written_subnets: None,
        last_ok_sent: None,
        healthy: false,
        claim_after: None,
        leaving: false,
        failures: 0,
        joined_once: false,
    };
    let _ = runtime.store.wait_until_ready().await;
    // The first write happens before the handle is returned: the first reconcile
    // then sees this node as a member.
    let subnets_now = subnets_rx.borrow().clone();
    runtime.renew_once(subnets_now).await;
    runtime.rebuild();
    tokio::spawn(runtime.run(changes, subnets_rx, commands_rx));
    Ok(ElectionHandle {
        view,
        subnets,
        commands,
    })
}

struct LeaseTask {
    leases: Api<Lease>,
    store: Store<Lease>,
    identity: Identity,
    owner: OwnerReference,
    timing: Timing,
    metrics: Arc<Metrics>,
    notices: mpsc::UnboundedSender<Notice>,
    view: watch::Sender<View>,
    /// The subnets of the last successful write.
    written_subnets: Option<Vec<IpNet>>,
    /// When the last successful renewal was sent.
    last_ok_sent: Option<Instant>,
    healthy: bool,
    claim_after: Option<Instant>,
    leaving: bool,
    failures: u32,
    joined_once: bool,
}

/// What reaches the Lease task, one handler each.
enum Input {
    /// A Lease of the install namespace changed (bursts coalesced).
    LeasesChanged,
    /// The next live Lease expires now.
    LeaseExpires,
    /// The join hold-down is over: this node may claim addresses it does not hold.
    HoldDownOver,
    /// No renewal succeeded within the renew deadline: fence.
    RenewDeadline,
    /// This node's subnets changed: renew at once.
    SubnetsChanged,
    /// The next renewal is due.
    RenewDue,
    /// A renewal finished.
    Renewed(Renewed),
    Command(Command),
}

/// The renewal in progress and the next one.
struct Renewal {
    subnets: watch::Receiver<Vec<IpNet>>,
    renewing: bool,
    next_renew: Instant,
    done_tx: mpsc::UnboundedSender<Renewed>,
    done: mpsc::UnboundedReceiver<Renewed>,
}

/// The result of one renewal, sent back from its task.
struct Renewed {
    sent: Instant,
    subnets: Vec<IpNet>,
    result: Result<(), String>,
}

impl LeaseTask {
    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<()>,
        subnets: watch::Receiver<Vec<IpNet>>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let (renewed_tx, renewed) = mpsc::unbounded_channel::<Renewed>();
        // After a failed first write, retry soon rather than after a whole interval.
        let next_renew = Instant::now()
            + if self.healthy {
                self.next_renew_delay()
            } else {
                self.timing.retry_period
            };
        let mut renewal = Renewal {
            subnets,
            renewing: false,
            next_renew,
            done_tx: renewed_tx,
            done: renewed,
        };
        let far = || Instant::now() + Duration::from_secs(3600);
        loop {
            let fence_at = self
                .last_ok_sent
                .filter(|_| self.healthy)
                .map(|t| t + self.timing.renew_deadline);
            let next_expiry = self.next_expiry().unwrap_or_else(far);
            let claim_at = self.claim_after.unwrap_or_else(far);
            let input = tokio::select! {
                Some(()) = changes.recv() => {
                    // Coalesce a burst (the initial list, many renewals at once).
                    while changes.try_recv().is_ok() {}
                    Input::LeasesChanged
                }
                _ = tokio::time::sleep_until(next_expiry) => Input::LeaseExpires,
                _ = tokio::time::sleep_until(claim_at), if self.claim_after.is_some() => {
                    Input::HoldDownOver
                }
                _ = tokio::time::sleep_until(fence_at.unwrap_or_else(far)), if fence_at.is_some() => {
                    Input::RenewDeadline
                }
                changed = renewal.subnets.changed(), if !self.leaving => {
                    if changed.is_err() {
                        return;
                    }
                    Input::SubnetsChanged
                }
                _ = tokio::time::sleep_until(renewal.next_renew), if !renewal.renewing && !self.leaving => {
                    Input::RenewDue
                }
                Some(done) = renewal.done.recv() => Input::Renewed(done),
                Some(command) = commands.recv() => Input::Command(command),
            };
            match input {
                Input::LeasesChanged | Input::LeaseExpires => self.rebuild(),
                Input::HoldDownOver => self.hold_down_over(),
                Input::RenewDeadline => self.fence(),
                Input::SubnetsChanged => renewal.next_renew = Instant::now(),
                Input::RenewDue => self.start_renewal(&mut renewal),
                Input::Renewed(done) => self.renewed(&mut renewal, done),
                Input::Command(Command::Unhealthy(done)) => {
                    self.stop_claiming();
                    let _ = done.send(());
                }
                Input::Command(Command::Leave(done)) => {
                    self.stop_claiming();
                    if renewal.renewing {
                        // A renewal landing between our read and the delete
                        // would fail the delete's resourceVersion precondition.
                        let _ = renewal.done.recv().await;
                        renewal.renewing = false;
                    }
                    self.delete_own_lease().await;
                    let _ = done.send(());
                }
            }
        }
    }

    fn hold_down_over(&mut self) {
        self.claim_after = None;
        self.publish_view(None);
        tracing::info!(op = "election", node = %self.identity.node, "join hold-down over: claiming addresses");
        let _ = self.notices.send(Notice::Changed);
    }

    /// Shutting down: no renewals, and this node is unhealthy from now on.
    fn stop_claiming(&mut self) {
        self.leaving = true;
        self.healthy = false;
        self.metrics.lease_healthy.set(0);
        self.publish_view(None);
    }

    /// Writes the lease on a task of its own, with the subnets as they are now.
    fn start_renewal(&mut self, renewal: &mut Renewal) {
        renewal.renewing = true;
        let subnets_now = renewal.subnets.borrow_and_update().clone();
        let task = RenewTask {
            leases: self.leases.clone(),
            identity: self.identity.clone(),
            owner: self.owner.clone(),
            timing: self.timing,
        };
        let tx = renewal.done_tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = task.renew(&subnets_now).await;
            let _ = tx.send(Renewed {
                sent,
                subnets: subnets_now,
                result,
            });
        });
    }

    fn renewed(&mut self, renewal: &mut Renewal, done: Renewed) {
        renewal.renewing = false;
        if self.leaving {
            return;
        }
        let ok = done.result.is_ok();
        self.after_renewal(done);
        renewal.next_renew = Instant::now()
            + if ok {
                self.next_renew_delay()
            } else {
                self.timing.retry_period
            };
        // A change that arrived while renewing is written now.
        if ok && renewal.subnets.has_changed().unwrap_or(false) {
            renewal.next_renew = Instant::now();
        }
    }

    fn next_renew_delay(&self) -> Duration {
        self.timing.renew_interval()
    }

    /// The first write (start-up): awaited inline.
    async fn renew_once(&mut self, subnets: Vec<IpNet>) {
        let task = RenewTask {
            leases: self.leases.clone(),
            identity: self.identity.clone(),
            owner: self.owner.clone(),
            timing: self.timing,
        };
        let sent = Instant::now();
        let result = task.renew(&subnets).await;
        self.after_renewal(Renewed {
            sent,
            subnets,
            result,
        });
    }

    fn after_renewal(&mut self, done: Renewed) {
        match done.result {
            Ok(()) => {
                self.metrics.lease_renewals.inc();
                self.failures = 0;
                // A renewal sent before the fence fired cannot extend a term that
                // already ended: only one sent after the previous success counts.
                self.last_ok_sent = Some(self.last_ok_sent.map_or(done.sent, |t| t.max(done.sent)));
                if self.written_subnets.as_ref() != Some(&done.subnets) {
                    if self.written_subnets.is_some() {
                        tracing::info!(op = "election", node = %self.identity.node,
                            subnets = %lease::encode_subnets(done.subnets.iter().copied()), "subnetsChanged");
                    }
                    self.metrics
                        .local_subnet_count
                        .set(i64::try_from(done.subnets.len()).unwrap_or(i64::MAX));
                    self.written_subnets = Some(done.subnets);
                }
                let deadline_ok = Instant::now() < done.sent + self.timing.renew_deadline;
                if !self.healthy && deadline_ok {
                    let first = !self.joined_once;
                    self.joined_once = true;
                    self.healthy = true;
                    self.metrics.lease_healthy.set(1);
                    self.claim_after = Some(Instant::now() + self.timing.join_delay);
                    if first {
                        tracing::info!(op = "election", node = %self.identity.node, "lease written; joined the election");
                    } else {
                        tracing::info!(op = "election", node = %self.identity.node, "lease renewed again; rejoining the election");
                        let _ = self.notices.send(Notice::Rejoined);
                    }
                }
                self.rebuild_force();
            }
            Err(error) => {
                self.metrics.lease_renewal_failures.inc();
                self.failures += 1;
                tracing::warn!(op = "election", node = %self.identity.node, failures = self.failures, %error, "lease renewal failed");
            }
        }
    }

    /// No renewal succeeded within the renew deadline.
    fn fence(&mut self) {
        if !self.healthy {
            return;
        }
        self.healthy = false;
        self.claim_after = None;
        self.metrics.lease_healthy.set(0);
        self.metrics.fenced.inc();
        tracing::warn!(op = "election", node = %self.identity.node,
            deadline = ?self.timing.renew_deadline,
            "fenced: lease not renewed in time; withdrawing local addresses before it can expire elsewhere");
        self.publish_view(None);
        let _ = self.notices.send(Notice::Fenced);
    }

    /// The electorate from the store: every live `purelb-node-*` lease except our
    /// own, which is represented by what we last wrote (while healthy).
    fn electorate(&self) -> (Electorate, BTreeSet<IpNet>) {
        let now = Timestamp::now();
        let mut electorate = Electorate::new();
        let mut all_subnets = BTreeSet::new();
        for lease_object in self.store.state() {
            let Some(name) = lease_object.metadata.name.as_deref() else {
                continue;
            };
            let Some(node) = lease::node_name(name) else {
                continue;
            };
            if node == self.identity.node || !lease::lease_is_live(&lease_object, now) {
                continue;
            }
            let subnets: Vec<IpNet> = lease::lease_subnets(&lease_object)
                .into_iter()
                .map(|s| s.cidr())
                .collect();
            all_subnets.extend(subnets.iter().copied());
            electorate.insert(node, subnets);
        }
        if self.healthy
            && let Some(subnets) = &self.written_subnets
        {
            all_subnets.extend(subnets.iter().copied());
            electorate.insert(self.identity.node.clone(), subnets.iter().copied());
        }
        (electorate, all_subnets)
    }

    /// When the next live lease (other than ours) expires.
    fn next_expiry(&self) -> Option<Instant> {
        let now = Timestamp::now();
        let now_micros = now.as_microsecond();
        self.store
            .state()
            .iter()
            .filter(|l| {
                l.metadata
                    .name
                    .as_deref()
                    .and_then(lease::node_name)
                    .is_some_and(|n| n != self.identity.node)
            })
            .filter_map(|l| {
                let spec = l.spec.as_ref()?;
                let renewed = spec.renew_time.as_ref()?.0.as_microsecond();
                let expires =
                    renewed.saturating_add(i64::from(spec.lease_duration_seconds?) * 1_000_000);
                (expires > now_micros).then_some(expires - now_micros)
            })
            .min()
            .map(|micros| {
                // A millisecond late, so the lease is surely expired when we look.
                Instant::now()
                    + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
                    + Duration::from_millis(1)
            })
    }

    fn rebuild(&mut self) {
        let built = self.electorate();
        if *self.view.borrow().electorate != built.0 {
            self.publish_view(Some(built));
            let _ = self.notices.send(Notice::Changed);
        }
    }

    /// After our own write: publish even if only health changed.
    fn rebuild_force(&mut self) {
        let built = self.electorate();
        let changed = *self.view.borrow().electorate != built.0;
        self.publish_view(Some(built));
        if changed {
            let _ = self.notices.send(Notice::Changed);
        }
    }

    fn publish_view(&self, built: Option<(Electorate, BTreeSet<IpNet>)>) {
        let (electorate, subnets) = built.unwrap_or_else(|| self.electorate());
        self.metrics
            .member_count
            .set(i64::try_from(electorate.len()).unwrap_or(i64::MAX));
        self.metrics
            .subnet_count
            .set(i64::try_from(subnets.len()).unwrap_or(i64::MAX));
        self.view.send_replace(View {
            node: self.identity.node.clone(),
            electorate: Arc::new(electorate),
            healthy: self.healthy,
            claim_after: self.claim_after,
        });
    }

    /// Graceful shutdown: delete the lease only if it is still this instance's.
    async fn delete_own_lease(&self) {
        // A write by someone else between the read and the delete (409) means
        // reading again: the lease may still be ours.
        for _ in 0..3 {
            match self.try_delete_own_lease().await {
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(
                        op = "election",
                        "own lease changed while deleting it; reading it again"
                    );
                }
                Err(error) => {
                    tracing::warn!(op = "election", %error, "deleting own lease failed");
                    return;
                }
                Ok(()) => return,
            }
        }
        tracing::warn!(op = "election", "own lease kept changing; left for expiry");
    }

    /// Deletes our lease if it is still ours (instance annotation), with the
    /// resourceVersion read as precondition. `Ok` also when there is nothing
    /// to delete or it timed out (logged).
    async fn try_delete_own_lease(&self) -> Result<(), kube::Error> {
        let name = lease::lease_name(&self.identity.node);
        let current = match tokio::time::timeout(
            self.timing.retry_period,
            self.leases.get_opt(&name),
        )
        .await
        {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                tracing::warn!(
                    op = "election",
                    "reading own lease before deleting it timed out"
                );
                return Ok(());
            }
        };
        let instance = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(lease::INSTANCE_ANNOTATION));
        if instance != Some(&self.identity.instance) {
            tracing::info!(
                op = "election",
                "own lease belongs to another instance; leaving it"
            );
            return Ok(());
        }
        let params = DeleteParams::default().preconditions(Preconditions {
            resource_version: current.metadata.resource_version.clone(),
            uid: None,
        });
        match tokio::time::timeout(self.timing.retry_period, self.leases.delete(&name, &params))
            .await
        {
            Ok(Ok(_)) => {
                tracing::info!(op = "election", lease = %name, "lease deleted");
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => {
                tracing::warn!(op = "election", "deleting own lease timed out");
                Ok(())
            }
        }
    }
}

/// One renewal, runnable on its own task.
struct RenewTask {
    leases: Api<Lease>,
    identity: Identity,
    owner: OwnerReference,
    timing: Timing,
}

impl RenewTask {
    /// Writes the lease (merge patch; created when missing, also when someone else
    /// deleted it) within `retry_period`.
    async fn renew(&self, subnets: &[IpNet]) -> Result<(), String> {
        let timeout = self.timing.retry_period.max(Duration::from_secs(1));
        match tokio::time::timeout(timeout, self.write(subnets)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn write(&self, subnets: &[IpNet]) -> Result<(), kube::Error> {
        let name = lease::lease_name(&self.identity.node);
        let body = self.object(&name, subnets);
        match self
            .leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                match self.leases.create(&PostParams::default(), &body).await {
                    Ok(_) => Ok(()),
                    // Created concurrently (a second instance): patch it next round.
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn object(&self, name: &str, subnets: &[IpNet]) -> Lease {
        let seconds =
            i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.identity.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        lease::COMPONENT_LABEL.to_owned(),
                        lease::COMPONENT_LABEL_VALUE.to_owned(),
                    ),
                    (
                        lease::NAME_LABEL.to_owned(),
                        lease::NAME_LABEL_VALUE.to_owned(),
                    ),
                ])),
                annotations: Some(BTreeMap::from([
                    (
                        lease::SUBNETS_ANNOTATION.to_owned(),
                        lease::encode_subnets(subnets.iter().copied()),
                    ),
                    (
                        lease::INSTANCE_ANNOTATION.to_owned(),
                        self.identity.instance.clone(),
                    ),
                ])),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(self.identity.node.clone()),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        }
    }
}
