//! `LBNodeAgent` (`purelb.io/v2`): how the node agents announce addresses.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which nodes this configuration applies to and how they announce.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "purelb.io",
    version = "v2",
    kind = "LBNodeAgent",
    doc = "How the node agents announce LoadBalancer addresses",
    plural = "lbnodeagents",
    singular = "lbnodeagent",
    shortname = "lbna",
    shortname = "lbnas",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct LBNodeAgentSpec {
    /// Nodes this object applies to; absent or empty selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// The announcer configuration; an object without it configures nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LBNodeAgentLocalSpec>,
}

/// Interfaces, gratuitous announcements and address flags.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LBNodeAgentLocalSpec {
    /// `default` (the default-route interface per family) or an unanchored regex.
    #[serde(default = "default_local_interface")]
    #[schemars(schema_with = "local_interface")]
    pub local_interface: String,
    /// Link for remote addresses.
    #[serde(default = "default_dummy_interface")]
    #[schemars(schema_with = "dummy_interface")]
    pub dummy_interface: String,
    /// Gratuitous ARP / unsolicited NA; absent means none are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp_config: Option<GARPConfig>,
    /// Lifetimes and flags of the addresses the agent adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_config: Option<AddressConfig>,
    /// Extra interfaces by exact name, for subnets and as fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
}

impl Default for LBNodeAgentLocalSpec {
    fn default() -> Self {
        Self {
            local_interface: default_local_interface(),
            dummy_interface: default_dummy_interface(),
            garp_config: None,
            address_config: None,
            interfaces: None,
        }
    }
}

/// The `localInterface` value that means "the default-route interface".
pub const DEFAULT_LOCAL_INTERFACE: &str = "default";
/// The default dummy interface for remote addresses.
pub const DEFAULT_DUMMY_INTERFACE: &str = "kube-lb0";

fn default_local_interface() -> String {
    DEFAULT_LOCAL_INTERFACE.to_owned()
}

fn default_dummy_interface() -> String {
    DEFAULT_DUMMY_INTERFACE.to_owned()
}

fn local_interface(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "default": DEFAULT_LOCAL_INTERFACE })
}

fn dummy_interface(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "default": DEFAULT_DUMMY_INTERFACE })
}

/// Gratuitous ARP / unsolicited NA after a local address is added.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GARPConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "default_true")]
    pub enabled: Option<bool>,
    /// Go duration to wait after the address is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "initial_delay")]
    pub initial_delay: Option<String>,
    /// Packets per announcement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "garp_count")]
    pub count: Option<i64>,
    /// Go duration between packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "garp_interval")]
    pub interval: Option<String>,
    /// Re-run the election before each packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "default_true")]
    pub verify_before_send: Option<bool>,
}

fn default_true(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "boolean", "default": true })
}

fn initial_delay(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "default": "100ms" })
}

fn garp_interval(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "default": "500ms" })
}

fn garp_count(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer", "default": 3, "minimum": 1, "maximum": 10 })
}

/// Lifetimes and flags, separately for the real and the dummy interface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_interface: Option<InterfaceAddressConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dummy_interface: Option<InterfaceAddressConfig>,
}

/// Address lifetimes in seconds (0 = permanent) and the no-prefix-route flag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceAddressConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::non_negative_int")]
    pub valid_lifetime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::non_negative_int")]
    pub preferred_lifetime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_prefix_route: Option<bool>,
}
