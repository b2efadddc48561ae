//! Custom resource types, compatible field for field with PureLB v0.17 and k8gobgp 0.2.4,
//! plus the Netbox pool type.

pub mod bgp_configuration;
pub mod bgp_node_status;
pub mod lb_node_agent;
mod schema;
pub mod service_group;

pub use bgp_configuration::{BGPConfiguration, BGPConfigurationSpec, BGPConfigurationStatus};
pub use bgp_node_status::{BGPNodeStatus, BGPNodeStatusSpec, BGPNodeStatusStatus};
pub use lb_node_agent::{LBNodeAgent, LBNodeAgentSpec};
pub use service_group::{ServiceGroup, ServiceGroupSpec, ServiceGroupStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

/// Every CRD this project installs, as written to `deploy/crds/`.
pub fn all() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    let mut lb_node_agent = LBNodeAgent::crd();
    add_unwritten_lb_node_agent_status(&mut lb_node_agent)?;
    [
        ServiceGroup::crd(),
        lb_node_agent,
        BGPConfiguration::crd(),
        BGPNodeStatus::crd(),
    ]
    .into_iter()
    .map(without_nullable)
    .collect()
}

/// The file name under `deploy/crds/` for a CRD, as controller-gen names them.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// A CRD as YAML, the form committed under `deploy/crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    let yaml = serde_saphyr::to_string(crd)?;
    Ok(format!("---\n{yaml}"))
}

/// Upstream's schemas carry no `nullable`; kube-derive marks every `Option` nullable.
/// Without it the apiserver drops explicit nulls instead of storing them, as upstream.
fn without_nullable(
    crd: CustomResourceDefinition,
) -> Result<CustomResourceDefinition, serde_json::Error> {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd)?;
    strip(&mut value);
    serde_json::from_value(value)
}

/// PureLB's LBNodeAgent type has a `status.activeLeases` it never writes, and no status
/// subresource; kube-derive cannot express a status without the subresource.
fn add_unwritten_lb_node_agent_status(
    crd: &mut CustomResourceDefinition,
) -> Result<(), serde_json::Error> {
    let status: JSONSchemaProps = serde_json::from_value(serde_json::json!({
        "type": "object",
        "properties": { "activeLeases": { "type": "integer" } }
    }))?;
    let schema = crd
        .spec
        .versions
        .iter_mut()
        .filter_map(|v| v.schema.as_mut())
        .filter_map(|s| s.open_api_v3_schema.as_mut())
        .filter_map(|s| s.properties.as_mut());
    for properties in schema {
        properties.insert("status".to_owned(), status.clone());
    }
    Ok(())
}
