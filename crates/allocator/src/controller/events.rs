//! Kubernetes Events (`core/v1`, as PureLB's client-go recorder writes them).
//!
//! Every reprocessing of a refused Service produces the same event again; a
//! repeat within [`REPEAT_WINDOW`] is not written, so a config change that
//! reprocesses every Service does not flood the API server. Events are written
//! by a task of their own, so they never hold up an allocation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::mpsc;

use crate::ipam::{Event, EventType};

pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// Hands events to the recording task.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<(ObjectReference, Event)>,
}

impl EventSink {
    /// Starts the task that records events as `component`.
    pub fn spawn(client: Client, component: &str) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(ObjectReference, Event)>();
        let mut recorder = EventRecorder {
            client,
            component: component.to_owned(),
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
        // Only fails when the task is gone, i.e. the process is stopping.
        let _ = self.tx.send((regarding, event));
    }
}

struct EventRecorder {
    client: Client,
    component: String,
    recent: HashMap<(String, String, String), Instant>,
}

impl EventRecorder {
    /// Records `event` on the object; failures are logged, never fatal.
    async fn record(&mut self, regarding: &ObjectReference, event: &Event) {
        let now = Instant::now();
        self.recent
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            event.reason.as_str().to_owned(),
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
            reason: Some(event.reason.as_str().to_owned()),
            message: Some(event.message.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            first_timestamp: Some(stamp.clone()),
            last_timestamp: Some(stamp),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                self.recent.insert(key, now);
            }
            Err(error) => {
                tracing::warn!(op = "event", reason = event.reason.as_str(), %error, "recording an event failed")
            }
        }
    }
}
