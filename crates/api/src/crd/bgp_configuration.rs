//! `BGPConfiguration` (`bgp.purelb.io/v1`, plural `configs`): the embedded speaker's
//! configuration, schema-compatible with k8gobgp 0.2.4.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Global settings, neighbours, policies and the netlink route import/export.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bgp.purelb.io",
    version = "v1",
    kind = "BGPConfiguration",
    doc = "Configuration of the BGP speaker embedded in each node agent",
    plural = "configs",
    singular = "config",
    shortname = "bgpconfig",
    namespaced,
    status = "BGPConfigurationStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    pub global: GlobalSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbors: Option<Vec<Neighbor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_groups: Option<Vec<PeerGroup>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_neighbors: Option<Vec<DynamicNeighbor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrfs: Option<Vec<Vrf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_definitions: Option<Vec<PolicyDefinition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defined_sets: Option<Vec<DefinedSet>>,
    /// Which kernel addresses become advertised routes (PureLB: `kube-lb0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_import: Option<NetlinkImport>,
    /// Where received routes are installed in the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_export: Option<NetlinkExport>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalSpec {
    /// ASN is the Autonomous System Number for this BGP speaker
    #[schemars(schema_with = "schema::uint32")]
    pub asn: u32,
    /// Empty = automatic; an IPv4 address; or a `${NODE_IP}`-style template.
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// IPv4 CIDR for hash-derived router IDs when the node has no IPv4.
    #[serde(
        default,
        rename = "routerIDPool",
        skip_serializing_if = "Option::is_none"
    )]
    pub router_id_pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int32")]
    pub listen_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_addresses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub families: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_multiple_paths: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_selection_options: Option<RouteSelectionOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route_distance: Option<DefaultRouteDistance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confederation: Option<Confederation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_policy: Option<ApplyPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_to_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_status: Option<NodeStatusConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSelectionOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_compare_med: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_inactive_routes: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefaultRouteDistance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub external_route_distance: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub internal_route_distance: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Confederation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub identifier: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32_list")]
    pub member_as_list: Option<Vec<u32>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GracefulRestart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub restart_time: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper_only: Option<bool>,
}

/// Import and export policy chains.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_policy: Option<PolicyAssignment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_policy: Option<PolicyAssignment>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAssignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    /// `accept` or `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<String>,
}

/// The BGPNodeStatus reporter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatusConfig {
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "heartbeat_seconds")]
    pub heartbeat_seconds: Option<i32>,
}

fn heartbeat_seconds(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer", "format": "int32", "minimum": 10 })
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Neighbor {
    pub config: NeighborConfig,
    /// Peer only on nodes whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub afi_safis: Option<Vec<AfiSafi>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_policy: Option<ApplyPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timers: Option<Timers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reflector: Option<RouteReflector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multihop: Option<EbgpMultihop>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NeighborConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbor_address: Option<String>,
    /// Unnumbered / link-local peering over this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbor_interface: Option<String>,
    #[schemars(schema_with = "schema::uint32")]
    pub peer_asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub local_asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_down: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Deprecated inline MD5 password; prefer `authPasswordSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password_secret_ref: Option<SecretKeySelector>,
}

/// A key of a Secret in the BGPConfiguration's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct SecretKeySelector {
    #[serde(default)]
    #[schemars(schema_with = "secret_name")]
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

fn secret_name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "default": "" })
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AfiSafi {
    /// `ipv4-unicast`, `ipv6-unicast`, ...
    pub family: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_limit: Option<PrefixLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_paths: Option<AddPaths>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrefixLimit {
    #[schemars(schema_with = "schema::uint32")]
    pub max_prefixes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub shutdown_threshold_pct: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddPaths {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub send_max: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timers {
    pub config: TimersConfig,
}

/// Seconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimersConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int64")]
    pub connect_retry: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int64")]
    pub hold_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int64")]
    pub keepalive_interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int64")]
    pub minimum_advertisement_interval: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_interface: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteReflector {
    pub route_reflector_client: bool,
    pub route_reflector_cluster_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EbgpMultihop {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub multihop_ttl: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerGroup {
    pub config: PeerGroupConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub afi_safis: Option<Vec<AfiSafi>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_policy: Option<ApplyPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timers: Option<Timers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerGroupConfig {
    pub peer_group_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub peer_asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub local_asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password_secret_ref: Option<SecretKeySelector>,
}

/// Accept sessions from any address in `prefix` into `peerGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DynamicNeighbor {
    pub prefix: String,
    pub peer_group: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vrf {
    pub name: String,
    /// `ASN:value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_rt: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_rt: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_import: Option<VrfNetlinkImport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_export: Option<VrfNetlinkExport>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VrfNetlinkImport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_list: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VrfNetlinkExport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_vrf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int32")]
    pub linux_table_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub metric: Option<u32>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_nexthop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::community_list")]
    pub community_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::large_community_list")]
    pub large_community_list: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDefinition {
    pub name: String,
    pub statements: Vec<Statement>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    pub name: String,
    pub conditions: Conditions,
    pub actions: Actions,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_set: Option<MatchSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbor_set: Option<MatchSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path_set: Option<MatchSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_set: Option<MatchSet>,
    /// `valid`, `invalid` or `not-found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpki_result: Option<String>,
}

/// A reference to a defined set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchSet {
    pub name: String,
    /// `any`, `all` or `invert`.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_option: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Actions {
    /// `accept` or `reject`.
    pub route_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community: Option<CommunityAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<MedAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_prepend: Option<AsPrependAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub local_pref: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunityAction {
    /// `add`, `remove` or `replace`.
    #[serde(rename = "type")]
    pub action_type: String,
    pub communities: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MedAction {
    /// `mod` or `replace`.
    #[serde(rename = "type")]
    pub action_type: String,
    #[schemars(schema_with = "schema::int64")]
    pub value: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsPrependAction {
    #[schemars(schema_with = "schema::uint32")]
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub repeat: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinedSet {
    /// `prefix`, `neighbor`, `as-path` or `community`.
    #[serde(rename = "type")]
    pub set_type: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<Vec<PrefixMatch>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrefixMatch {
    pub ip_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub mask_length_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub mask_length_max: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetlinkImport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `""` = the global RIB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Interface name globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_list: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetlinkExport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub dampening_interval: Option<u32>,
    /// Kernel route protocol; default 186 (RTPROT_BGP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int32")]
    pub route_protocol: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<NetlinkExportRule>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetlinkExportRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::community_list")]
    pub community_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::large_community_list")]
    pub large_community_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// 0 = main.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int32")]
    pub table_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::uint32")]
    pub metric: Option<u32>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_nexthop: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int64")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `RouterIDResolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int")]
    pub neighbor_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int")]
    pub established_neighbors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `explicit`, `template`, `node-ipv4` or `hash-from-node-name`.
    #[serde(
        default,
        rename = "routerIDSource",
        skip_serializing_if = "Option::is_none"
    )]
    pub router_id_source: Option<String>,
    #[serde(
        default,
        rename = "routerIDResolutionTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub router_id_resolution_time: Option<Time>,
}
