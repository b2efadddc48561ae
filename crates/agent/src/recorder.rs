//! Posts Kubernetes Events (`core/v1`, component `purelb-lbnodeagent`) from a task
//! of its own, so the reconcile loop never waits for the API server, also not
//! while this node is cut off from it.
//!
//! The same (object, reason, message) within [`REPEAT_WINDOW`] is written once:
//! a config reload re-derives the same `ConfigIgnored` events on every node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::mpsc;

use crate::event::Event;

pub const COMPONENT: &str = "purelb-lbnodeagent";
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// How long one Event write may take before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting beyond this are dropped (the node is cut off; they would be stale).
const QUEUE_LIMIT: usize = 10_000;

/// Hands events to the recording task.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventSink {
    /// Starts the task that records events as [`COMPONENT`] from `node`.
    pub fn spawn(client: Client, node: &str) -> Self {
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE_LIMIT);
        let mut recorder = Recorder {
            client,
            node: node.to_owned(),
            recent: HashMap::new(),
        };
        tokio::spawn(async move {
            while let Some((regarding, event)) = rx.recv().await {
                recorder.record(&regarding, &event).await;
            }
        });
        Self { tx }
    }

    pub fn record(&self, regarding: ObjectReference, event: Event) {
        if let Err(error) = self.tx.try_send((regarding, event)) {
            tracing::debug!(op = "event", %error, "event dropped");
        }
    }
}

struct Recorder {
    client: Client,
    node: String,
    recent: HashMap<(String, &'static str, String), Instant>,
}

impl Recorder {
    async fn record(&mut self, regarding: &ObjectReference, event: &Event) {
        let now = Instant::now();
        self.recent
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            event.reason,
            event.message.clone(),
        );
        if self.recent.contains_key(&key) {
            return;
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let stamp = Time(k8s_openapi::jiff::Timestamp::now());
        let object = k8s_openapi::api::core::v1::Event {
            metadata: ObjectMeta {
                generate_name: Some(format!(
                    "{}.",
                    regarding.name.as_deref().unwrap_or("object")
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(event.reason.to_owned()),
            message: Some(event.message.clone()),
            type_: Some(event.type_.as_str().to_owned()),
            source: Some(EventSource {
                component: Some(COMPONENT.to_owned()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(stamp.clone()),
            last_timestamp: Some(stamp),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &namespace);
        match tokio::time::timeout(WRITE_TIMEOUT, api.create(&PostParams::default(), &object)).await
        {
            Ok(Ok(_)) => {
                self.recent.insert(key, now);
            }
            Ok(Err(error)) => {
                tracing::warn!(op = "event", reason = event.reason, %error, "recording an event failed")
            }
            Err(_) => {
                tracing::warn!(
                    op = "event",
                    reason = event.reason,
                    "recording an event timed out"
                )
            }
        }
    }
}
