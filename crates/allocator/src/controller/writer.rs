//! Writes to Services.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::service;
use crate::ipam::Outcome;

/// Annotations first (with the brand), then the status, each conditional on
/// the resourceVersion the decision was made from. Returns the resourceVersion
/// the writes produced, `None` when nothing needed writing.
pub async fn write_service(
    client: &Client,
    svc: &Service,
    outcome: &Outcome,
) -> Result<Option<String>, kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    let name = svc.name_any();
    let params = PatchParams::default();
    let mut written = None;
    if let Some(patch) = service::annotation_patch(svc, &outcome.annotations) {
        let updated = api.patch(&name, &params, &Patch::Merge(&patch)).await?;
        written = updated.metadata.resource_version;
    }
    let base = written
        .as_deref()
        .or(svc.metadata.resource_version.as_deref());
    if let Some(patch) = service::status_patch(svc, outcome, base) {
        let updated = api
            .patch_status(&name, &params, &Patch::Merge(&patch))
            .await?;
        written = updated.metadata.resource_version;
    }
    Ok(written)
}
