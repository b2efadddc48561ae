//! Kubernetes Events (`core/v1`, as client-go's recorder writes them), posted by a task of its
//! own so that a component's reconcile loop never waits for the API server, also not while the
//! process is cut off from it.
//!
//! The same (object, reason, message) within [`REPEAT_WINDOW`] is written once: reprocessing
//! (a config change, a reload) re-derives the same events and must not flood the API server.
//! At most [`QUEUE_LIMIT`] events wait; more are dropped (they would be stale by the time they
//! were written). A write that takes longer than [`WRITE_TIMEOUT`] is given up.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::mpsc;

/// A repeat of an event within this window is not written.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// How long one Event write may take before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting beyond this are dropped.
pub const QUEUE_LIMIT: usize = 10_000;

/// The Kubernetes event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event to post; the object it is about is given to [`EventSink::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub reason: &'static str,
    pub type_: EventType,
    pub message: String,
}

impl Event {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            type_: EventType::Normal,
            message: message.into(),
        }
    }

    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            type_: EventType::Warning,
            message: message.into(),
        }
    }
}

/// Hands events to the recording task.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventSink {
    /// Starts the task that records events as `component` (`source.component`,
    /// `reportingComponent`). `host` is `source.host` and the `reportingInstance`; without one
    /// the instance is the component.
    pub fn spawn(client: Client, component: &str, host: Option<String>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE_LIMIT);
        let mut recorder = Recorder {
            client,
            source: Source {
                component: component.to_owned(),
                host,
            },
            recent: Recent::default(),
        };
        tokio::spawn(async move {
            while let Some((regarding, event)) = rx.recv().await {
                recorder.record(&regarding, &event).await;
            }
        });
        Self { tx }
    }

    /// Queues `event` about `regarding`; never waits. Dropped when the queue is full or the
    /// task is gone (the process is stopping).
    pub fn record(&self, regarding: ObjectReference, event: Event) {
        if let Err(error) = self.tx.try_send((regarding, event)) {
            tracing::debug!(op = "event", %error, "event dropped");
        }
    }
}

/// Who writes the events.
struct Source {
    component: String,
    host: Option<String>,
}

/// (object UID, reason, message) of an event.
type Key = (String, &'static str, String);

/// When each event was last written, within [`REPEAT_WINDOW`].
#[derive(Default)]
struct Recent {
    written: HashMap<Key, Instant>,
}

impl Recent {
    /// Forgets what is older than the window; true if `key` was written within it.
    fn contains(&mut self, key: &Key, now: Instant) -> bool {
        self.written
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        self.written.contains_key(key)
    }

    fn insert(&mut self, key: Key, now: Instant) {
        self.written.insert(key, now);
    }
}

struct Recorder {
    client: Client,
    source: Source,
    recent: Recent,
}

impl Recorder {
    /// Records `event` on the object; failures are logged, never fatal.
    async fn record(&mut self, regarding: &ObjectReference, event: &Event) {
        let now = Instant::now();
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            event.reason,
            event.message.clone(),
        );
        if self.recent.contains(&key, now) {
            return;
        }
        let object = core_event(
            regarding,
            event,
            &self.source,
            Time(k8s_openapi::jiff::Timestamp::now()),
        );
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &namespace);
        match tokio::time::timeout(WRITE_TIMEOUT, api.create(&PostParams::default(), &object)).await
        {
            Ok(Ok(_)) => self.recent.insert(key, now),
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

/// The core/v1 Event for `event` about `regarding`, in the object's namespace (`default` for a
/// cluster-scoped object), as client-go's recorder writes a first occurrence.
fn core_event(
    regarding: &ObjectReference,
    event: &Event,
    source: &Source,
    stamp: Time,
) -> k8s_openapi::api::core::v1::Event {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let instance = source.host.as_ref().unwrap_or(&source.component);
    k8s_openapi::api::core::v1::Event {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}.",
                regarding.name.as_deref().unwrap_or("object")
            )),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: regarding.clone(),
        reason: Some(event.reason.to_owned()),
        message: Some(event.message.clone()),
        type_: Some(event.type_.as_str().to_owned()),
        source: Some(EventSource {
            component: Some(source.component.clone()),
            host: source.host.clone(),
        }),
        reporting_component: Some(source.component.clone()),
        reporting_instance: Some(instance.clone()),
        first_timestamp: Some(stamp.clone()),
        last_timestamp: Some(stamp),
        count: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(message: &str) -> Key {
        ("uid-1".to_owned(), "AddressAssigned", message.to_owned())
    }

    #[test]
    fn a_repeat_within_the_window_is_recent_and_one_after_it_is_not() {
        let mut recent = Recent::default();
        let t0 = Instant::now();
        assert!(!recent.contains(&key("a"), t0));
        recent.insert(key("a"), t0);
        assert!(recent.contains(&key("a"), t0 + REPEAT_WINDOW - Duration::from_secs(1)));
        assert!(
            !recent.contains(&key("b"), t0),
            "another message is another event"
        );
        assert!(!recent.contains(&key("a"), t0 + REPEAT_WINDOW));
        assert!(recent.written.is_empty(), "expired entries are forgotten");
    }

    fn regarding(namespace: Option<&str>) -> ObjectReference {
        ObjectReference {
            kind: Some("Service".to_owned()),
            name: Some("web".to_owned()),
            namespace: namespace.map(str::to_owned),
            uid: Some("uid-1".to_owned()),
            ..Default::default()
        }
    }

    fn stamp() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn without_a_host_the_component_is_the_reporting_instance() {
        let source = Source {
            component: "purelb-allocator".to_owned(),
            host: None,
        };
        let event = Event::normal("AddressAssigned", "Assigned {Ingress:[{IP:192.0.2.1}]}");
        let e = core_event(&regarding(Some("ns")), &event, &source, stamp());
        assert_eq!(e.metadata.generate_name.as_deref(), Some("web."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.involved_object, regarding(Some("ns")));
        assert_eq!(e.reason.as_deref(), Some("AddressAssigned"));
        assert_eq!(e.message, Some(event.message));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        let s = e.source.unwrap();
        assert_eq!(s.component.as_deref(), Some("purelb-allocator"));
        assert_eq!(s.host, None);
        assert_eq!(e.reporting_component.as_deref(), Some("purelb-allocator"));
        assert_eq!(e.reporting_instance.as_deref(), Some("purelb-allocator"));
        assert_eq!(e.first_timestamp, Some(stamp()));
        assert_eq!(e.last_timestamp, Some(stamp()));
        assert_eq!(e.count, Some(1));
    }

    #[test]
    fn with_a_host_the_host_is_source_and_instance() {
        let source = Source {
            component: "purelb-lbnodeagent".to_owned(),
            host: Some("node-a".to_owned()),
        };
        let event = Event::warning("ConfigError", "bad");
        let e = core_event(&regarding(None), &event, &source, stamp());
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        let s = e.source.unwrap();
        assert_eq!(s.component.as_deref(), Some("purelb-lbnodeagent"));
        assert_eq!(s.host.as_deref(), Some("node-a"));
        assert_eq!(e.reporting_component.as_deref(), Some("purelb-lbnodeagent"));
        assert_eq!(e.reporting_instance.as_deref(), Some("node-a"));
    }
}
