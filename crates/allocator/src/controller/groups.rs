//! ServiceGroups in, their status out.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use purelb_api::crd::{ServiceGroup, ServiceGroupSpec, ServiceGroupStatus};
use serde_json::json;
use tokio::sync::mpsc;

use super::Settings;
use crate::ipam::{GroupInput, GroupResult, Ipam};
use crate::metrics::{GroupLabels, KindLabel, Metrics};
use purelb_kube_edge::events::EventSink;

/// The field manager of every allocator write, as upstream's.
pub const FIELD_MANAGER: &str = "purelb-allocator";

/// Remembers each group's last accepted spec, so a bad edit keeps the old
/// pool in force instead of removing it.
#[derive(Default)]
pub struct Intake {
    last_good: HashMap<(String, String), ServiceGroupSpec>,
    /// Groups whose current spec was refused at the last load, and why.
    refused: HashMap<(String, String), String>,
}

/// What became of a group that was not accepted as written.
pub struct Refusal {
    pub group: Arc<ServiceGroup>,
    pub message: String,
    /// Its previous spec is still in force.
    pub kept_previous: bool,
}

impl Intake {
    /// A new IPAM generation from the listed groups, or `None` when none is
    /// usable (the caller keeps the current one). Records the intake events,
    /// the out-of-scope gauge, and returns the refused groups.
    pub fn load(
        &mut self,
        settings: &Settings,
        groups: &[Arc<ServiceGroup>],
        metrics: &Metrics,
        events: &EventSink,
    ) -> (Option<Ipam>, Vec<Refusal>) {
        let inputs = |substitute: &dyn Fn(&ServiceGroup) -> ServiceGroupSpec| -> Vec<GroupInput> {
            groups
                .iter()
                .map(|g| {
                    let (namespace, name) = id(g);
                    GroupInput {
                        namespace,
                        name,
                        spec: substitute(g),
                    }
                })
                .collect()
        };
        let namespace = settings.namespace.as_deref();
        let (first, first_report) = Ipam::from_groups(namespace, &inputs(&|g| g.spec.clone()));
        let failed: Vec<(String, String)> = first_report
            .groups
            .iter()
            .filter(|r| is_refused(&r.result))
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect();
        let can_substitute = failed.iter().any(|key| self.last_good.contains_key(key));
        let (ipam, report) = if can_substitute {
            Ipam::from_groups(
                namespace,
                &inputs(&|g| match failed
                    .contains(&id(g))
                    .then(|| self.last_good.get(&id(g)))
                    .flatten()
                {
                    Some(previous) => previous.clone(),
                    None => g.spec.clone(),
                }),
            )
        } else {
            (first, first_report.clone())
        };

        metrics.out_of_scope.clear();
        let mut refusals = Vec::new();
        for result in &first_report.groups {
            let Some(group) = groups
                .iter()
                .find(|g| id(g) == (result.namespace.clone(), result.name.clone()))
            else {
                continue;
            };
            let final_result = report
                .groups
                .iter()
                .find(|r| r.namespace == result.namespace && r.name == result.name);
            events.record(group.object_ref(&()), super::kube_event(&result.event));
            match &result.result {
                GroupResult::OutOfScope => {
                    let labels = GroupLabels {
                        namespace: result.namespace.clone(),
                        name: result.name.clone(),
                        kind: KindLabel {
                            r#type: result.kind.as_str().to_owned(),
                        },
                    };
                    metrics.out_of_scope.get_or_create(&labels).set(1);
                }
                GroupResult::Parsed => {
                    self.last_good.insert(id(group), group.spec.clone());
                }
                refused => {
                    let kept_previous =
                        final_result.is_some_and(|r| r.result == GroupResult::Parsed);
                    let mut message = refusal_message(refused);
                    if kept_previous {
                        message.push_str("; the last accepted spec stays in force");
                    }
                    refusals.push(Refusal {
                        message,
                        kept_previous,
                        group: group.clone(),
                    });
                }
            }
        }
        self.refused = refusals
            .iter()
            .map(|r| (id(&r.group), r.message.clone()))
            .collect();
        let present: Vec<(String, String)> = groups.iter().map(|g| id(g)).collect();
        self.last_good.retain(|key, _| present.contains(key));
        (ipam.ok(), refusals)
    }
}

impl Intake {
    /// The group's `Ready` condition: why its current spec was refused, or that it parsed.
    pub fn ready_condition(&self, group: &ServiceGroup) -> Condition {
        match self.refused.get(&id(group)) {
            Some(message) => ready_condition(group, false, "ParseFailed", message.clone()),
            None => ready_condition(
                group,
                true,
                "Parsed",
                "ServiceGroup parsed successfully".to_owned(),
            ),
        }
    }
}

/// (namespace, name) of a group.
fn id(group: &ServiceGroup) -> (String, String) {
    (group.namespace().unwrap_or_default(), group.name_any())
}

fn is_refused(result: &GroupResult) -> bool {
    matches!(
        result,
        GroupResult::ParseFailed(_) | GroupResult::Duplicate | GroupResult::Overlaps(_)
    )
}

fn refusal_message(result: &GroupResult) -> String {
    match result {
        GroupResult::ParseFailed(error) => format!("Failed to parse: {error}"),
        GroupResult::Duplicate => "Duplicate definition of pool".to_owned(),
        GroupResult::Overlaps(other) => {
            format!("Pool overlaps with already defined pool {other:?}")
        }
        GroupResult::Parsed | GroupResult::OutOfScope => String::new(),
    }
}

/// The `Ready` condition of a group's status.
fn ready_condition(group: &ServiceGroup, ready: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: "Ready".to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: group.metadata.generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// Hands ServiceGroup statuses to the task that applies them. Statuses of
/// one group queued while a write is under way collapse into the latest.
#[derive(Clone)]
pub struct StatusSink {
    tx: mpsc::UnboundedSender<((String, String), ServiceGroupStatus)>,
}

impl StatusSink {
    pub fn spawn(client: Client, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut writer = StatusWriter {
            client,
            metrics,
            last_written: HashMap::new(),
        };
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut latest: HashMap<(String, String), ServiceGroupStatus> =
                    HashMap::from([first]);
                while let Ok((key, status)) = rx.try_recv() {
                    latest.insert(key, status);
                }
                for ((namespace, name), status) in latest {
                    writer.apply(&namespace, &name, status).await;
                }
            }
        });
        Self { tx }
    }

    pub fn apply(&self, namespace: &str, name: &str, status: ServiceGroupStatus) {
        // Only fails when the task is gone, i.e. the process is stopping.
        let _ = self
            .tx
            .send(((namespace.to_owned(), name.to_owned()), status));
    }
}

/// Applies ServiceGroup status with server-side apply, skipping writes that
/// would change nothing.
struct StatusWriter {
    client: Client,
    metrics: Arc<Metrics>,
    last_written: HashMap<(String, String), ServiceGroupStatus>,
}

impl StatusWriter {
    async fn apply(&mut self, namespace: &str, name: &str, mut status: ServiceGroupStatus) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(last) = self.last_written.get(&key) {
            keep_transition_times(last, &mut status);
        }
        if self
            .last_written
            .get(&key)
            .is_some_and(|last| same_ignoring_times(last, &status))
        {
            return;
        }
        let api: Api<ServiceGroup> = Api::namespaced(self.client.clone(), namespace);
        let body = json!({
            "apiVersion": ServiceGroup::api_version(&()),
            "kind": ServiceGroup::kind(&()),
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let outcome = match api.patch_status(name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                self.last_written.insert(key, status);
                "success"
            }
            Err(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Err(kube::Error::Api(e)) if e.code == 403 => "forbidden",
            Err(error) => {
                tracing::warn!(op = "statusUpdate", group = name, %error, "ServiceGroup status write failed");
                "other"
            }
        };
        self.metrics
            .status_writes
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// A condition whose status did not change keeps the time it last changed.
fn keep_transition_times(last: &ServiceGroupStatus, status: &mut ServiceGroupStatus) {
    for condition in status.conditions.iter_mut().flatten() {
        let previous = last
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == condition.type_);
        if let Some(previous) = previous.filter(|p| p.status == condition.status) {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
}

/// Equal but for condition timestamps, which change on every computation.
fn same_ignoring_times(a: &ServiceGroupStatus, b: &ServiceGroupStatus) -> bool {
    let strip = |s: &ServiceGroupStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}
