//! The controller's writes to a Service: its announcing annotations and, when a local
//! address cannot honour it, `externalTrafficPolicy: Cluster`, as one merge patch
//! conditional on the resourceVersion the plan was made from.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::announce::plan::{self, AnnotationChanges};

/// How long one Service write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a Service write failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// 409: the Service changed since the plan was made.
    Conflict,
    /// 404: it is gone.
    Gone,
    Other(String),
}

/// The merge patch for `changes` (and the policy rewrite), refused by the API server
/// if the Service changed since `svc` was read.
pub(super) fn service_patch(
    svc: &Service,
    changes: &AnnotationChanges,
    set_etp_cluster: bool,
) -> Value {
    let mut annotations = serde_json::Map::new();
    for (k, v) in &changes.changes {
        annotations.insert(k.clone(), v.clone().map_or(Value::Null, Value::String));
    }
    let mut patch = json!({"metadata": {"resourceVersion": svc.metadata.resource_version}});
    if !annotations.is_empty() {
        patch["metadata"]["annotations"] = Value::Object(annotations);
    }
    if set_etp_cluster {
        patch["spec"] = json!({"externalTrafficPolicy": plan::ETP_CLUSTER});
    }
    patch
}

/// Sends the patch; the new resourceVersion on success.
pub(super) async fn patch_service(
    api: &Api<Service>,
    name: &str,
    patch: &Value,
) -> Result<Option<String>, WriteError> {
    match tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)),
    )
    .await
    {
        Ok(Ok(updated)) => Ok(updated.metadata.resource_version),
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => Err(WriteError::Conflict),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => Err(WriteError::Gone),
        Ok(Err(e)) => Err(WriteError::Other(e.to_string())),
        Err(_) => Err(WriteError::Other(format!(
            "no answer within {WRITE_TIMEOUT:?}"
        ))),
    }
}
