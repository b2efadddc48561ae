//! Writes to Services and Events.

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::service;
use crate::ipam::{Event, EventType, Outcome};

/// Annotations first (with the brand), then the status, each conditional on
/// the resourceVersion the decision was made from.
pub async fn write_service(client: &Client, svc: &Service, outcome: &Outcome) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    let name = svc.name_any();
    let params = PatchParams::default();
    let mut resource_version = svc.metadata.resource_version.clone();
    if let Some(patch) = service::annotation_patch(svc, &outcome.annotations) {
        let updated = api.patch(&name, &params, &Patch::Merge(&patch)).await?;
        resource_version = updated.metadata.resource_version;
    }
    if let Some(patch) = service::status_patch(svc, outcome, resource_version.as_deref()) {
        api.patch_status(&name, &params, &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// Records an IPAM event on a Service.
pub async fn record(recorder: &Recorder, svc: &Service, event: &Event) {
    record_on(recorder, &svc.object_ref(&()), event).await;
}

/// Records an IPAM event on any object; a failure is logged, never fatal.
pub async fn record_on(recorder: &Recorder, reference: &ObjectReference, event: &Event) {
    let event = KubeEvent {
        type_: match event.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: event.reason.as_str().to_owned(),
        note: Some(event.message.clone()),
        action: event.reason.as_str().to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::warn!(op = "event", reason = %event.reason, %error, "recording an event failed");
    }
}
