//! `BGPNodeStatus` (`bgp.purelb.io/v1`, cluster-scoped): one per node, name = node
//! name, written by the node's speaker.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Empty: everything lives in the status.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_, which clippy mistakes for a duplicate"
)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bgp.purelb.io",
    version = "v1",
    kind = "BGPNodeStatus",
    doc = "BGP state of one node, written by that node's speaker",
    plural = "bgpnodestatuses",
    singular = "bgpnodestatus",
    shortname = "bgpns",
    status = "BGPNodeStatusStatus",
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "RouterID", type_ = "string", json_path = ".status.routerID"),
    printcolumn(name = "Healthy", type_ = "boolean", json_path = ".status.healthy"),
    printcolumn(
        name = "Neighbors",
        type_ = "integer",
        json_path = ".status.neighborCount"
    ),
    printcolumn(
        name = "LastUpdated",
        type_ = "date",
        json_path = ".status.lastUpdated"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct BGPNodeStatusSpec {}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPNodeStatusStatus {
    pub node_name: String,
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// `explicit`, `template`, `node-ipv4` or `hash-from-node-name`.
    #[serde(
        default,
        rename = "routerIDSource",
        skip_serializing_if = "Option::is_none"
    )]
    pub router_id_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int32")]
    pub heartbeat_seconds: Option<i32>,
    #[schemars(schema_with = "schema::int")]
    pub neighbor_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbors: Option<Vec<NeighborStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_import: Option<NetlinkImportStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rib: Option<RibStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_export: Option<NetlinkExportStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrfs: Option<Vec<VrfStatus>>,
    /// All neighbours Established, every imported address in the RIB, every exported route installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NeighborStatus {
    pub address: String,
    #[serde(rename = "peerASN")]
    #[schemars(schema_with = "schema::uint32")]
    pub peer_asn: u32,
    #[serde(rename = "localASN")]
    #[schemars(schema_with = "schema::uint32")]
    pub local_asn: u32,
    /// `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`, `Established` or `Unknown`.
    pub state: String,
    /// Only when Established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_up_since: Option<Time>,
    #[schemars(schema_with = "schema::int64")]
    pub prefixes_sent: u64,
    #[schemars(schema_with = "schema::int64")]
    pub prefixes_received: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetlinkImportStatus {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<InterfaceStatus>>,
    /// Capped at 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_addresses: Option<Vec<ImportedAddress>>,
    #[schemars(schema_with = "schema::int")]
    pub total_imported: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStatus {
    pub name: String,
    pub exists: bool,
    /// `up` or `down`.
    pub oper_state: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedAddress {
    /// `prefix/len`.
    pub address: String,
    pub interface: String,
    #[serde(rename = "inRIB")]
    pub in_rib: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RibStatus {
    /// Capped at 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_routes: Option<Vec<RibRoute>>,
    #[schemars(schema_with = "schema::int")]
    pub local_route_count: i64,
    /// Best paths only, capped at 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_routes: Option<Vec<RibRoute>>,
    #[schemars(schema_with = "schema::int")]
    pub received_route_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RibRoute {
    pub prefix: String,
    pub next_hop: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_to: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetlinkExportStatus {
    pub enabled: bool,
    #[schemars(schema_with = "schema::int32")]
    pub protocol: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<ExportRuleStatus>>,
    /// Capped at 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_routes: Option<Vec<ExportedRoute>>,
    #[schemars(schema_with = "schema::int")]
    pub total_exported: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportRuleStatus {
    pub name: String,
    #[schemars(schema_with = "schema::uint32")]
    pub metric: u32,
    #[serde(rename = "tableID")]
    #[schemars(schema_with = "schema::int32")]
    pub table_id: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedRoute {
    pub prefix: String,
    /// `main`, `default`, `local` or the table number.
    pub table: String,
    #[schemars(schema_with = "schema::uint32")]
    pub metric: u32,
    pub installed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VrfStatus {
    pub name: String,
    pub rd: String,
    #[schemars(schema_with = "schema::int")]
    pub imported_route_count: i64,
    #[schemars(schema_with = "schema::int")]
    pub exported_route_count: i64,
}
