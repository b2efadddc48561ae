//! Leader election through a `coordination.k8s.io/v1` Lease, so several allocator
//! replicas can run and exactly one writes.
//!
//! Fencing: the leader counts its term from the moment it *sent* the renewal
//! and gives it up `safety_margin` before the Lease could expire for anyone
//! else, so a slow or partitioned leader stops writing before a successor may
//! start. Writes are gated on [`Leadership::is_leader`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Timing of the election, as client-go's defaults scaled for fast failover.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and candidates retry.
    pub retry_period: Duration,
    /// How long before the Lease's expiry the leader stops writing.
    pub safety_margin: Duration,
}

impl Timing {
    /// Retries every fifth and stops writing a fifth before expiry, of a
    /// lease of `seconds` (client-go's 15 s / 2 s / 10 s, rounded to one rule).
    pub fn scaled(seconds: u64) -> Self {
        let lease_duration = Duration::from_secs(seconds);
        Self {
            lease_duration,
            retry_period: lease_duration / 5,
            safety_margin: lease_duration / 5,
        }
    }
}

/// Whether this replica may write, shared with the controller.
#[derive(Clone)]
pub enum Leadership {
    /// A single replica without election: always leads.
    Always,
    /// Leads until the instant the election task last granted.
    Elected(watch::Receiver<Option<Instant>>),
}

impl Leadership {
    /// True while this replica holds a Lease that no one else can take yet.
    pub fn is_leader(&self) -> bool {
        match self {
            Self::Always => true,
            Self::Elected(term_ends) => term_ends.borrow().is_some_and(|end| Instant::now() < end),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquired(&mut self) {
        while !self.is_leader() {
            let Self::Elected(term_ends) = self else {
                return;
            };
            if term_ends.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs the election forever for `identity` on Lease `name` in `namespace`.
pub fn spawn(api: Api<Lease>, name: String, identity: String, timing: Timing) -> Leadership {
    let (tx, term_ends) = watch::channel(None);
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        loop {
            let sent = Instant::now();
            match try_acquire_or_renew(&api, &name, &identity, timing).await {
                Ok(true) => {
                    let end = sent + timing.lease_duration.saturating_sub(timing.safety_margin);
                    if !tx.borrow().is_some() {
                        tracing::info!(op = "leaderElection", lease = %name, identity = %identity, "acquired leadership");
                    }
                    tx.send_replace(Some(end));
                }
                Ok(false) => {
                    if tx.borrow().is_some() {
                        tracing::warn!(op = "leaderElection", lease = %name, "lost leadership");
                    }
                    tx.send_replace(None);
                }
                Err(error) => {
                    tracing::warn!(op = "leaderElection", lease = %name, %error, "cannot reach the Lease; keeping the current term until it ends");
                }
            }
            tokio::time::sleep(timing.retry_period).await;
        }
    });
    Leadership::Elected(term_ends)
}

/// One round: `Ok(true)` when we hold the Lease after it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: Timing,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let held_by_us = spec.holder_identity.as_deref() == Some(identity);
    if !held_by_us && is_held(spec, now) {
        return Ok(false);
    }
    if !held_by_us {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(MicroTime(now));
    // The resourceVersion from the GET makes this a compare-and-swap: of two
    // candidates racing for an expired Lease, one gets 409.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether someone holds the Lease at `now`.
fn is_held(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(holder), Some(renewed), Some(seconds)) = (
        &spec.holder_identity,
        &spec.renew_time,
        spec.lease_duration_seconds,
    ) else {
        return false;
    };
    !holder.is_empty()
        && purelb_api::lease::is_live(renewed.0.as_microsecond(), seconds, now.as_microsecond())
}
