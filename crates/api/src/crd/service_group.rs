//! `ServiceGroup` (`purelb.io/v2`): the address pools Services are allocated from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Which pools a group holds and which namespaces it serves.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_, which clippy mistakes for a duplicate"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "purelb.io",
    version = "v2",
    kind = "ServiceGroup",
    doc = "Address pools that LoadBalancer Services are allocated from",
    plural = "servicegroups",
    singular = "servicegroup",
    shortname = "sg",
    shortname = "sgs",
    namespaced,
    status = "ServiceGroupStatus",
    printcolumn(name = "Announce", type_ = "string", json_path = ".status.announce"),
    printcolumn(name = "IPAM", type_ = "string", json_path = ".status.ipam"),
    printcolumn(
        name = "Allocated-V4",
        type_ = "integer",
        json_path = ".status.allocatedIPv4"
    ),
    printcolumn(
        name = "Allocated-V6",
        type_ = "integer",
        json_path = ".status.allocatedIPv6"
    ),
    printcolumn(
        name = "Addresses",
        type_ = "string",
        json_path = ".status.addresses",
        priority = "1"
    ),
    printcolumn(
        name = "Available-V4",
        type_ = "integer",
        json_path = ".status.availableIPv4",
        priority = "1"
    ),
    printcolumn(
        name = "Available-V6",
        type_ = "integer",
        json_path = ".status.availableIPv6",
        priority = "1"
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "string",
        json_path = ".spec.namespaces",
        priority = "1"
    ),
    printcolumn(
        name = "Enforced",
        type_ = "boolean",
        json_path = ".spec.enforceNamespaces",
        priority = "1"
    ),
    printcolumn(
        name = "Bound",
        type_ = "string",
        json_path = ".status.boundNamespaces",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("(has(self.local)?1:0) + (has(self.remote)?1:0) + (has(self.netbox)?1:0) + (has(self.external)?1:0) == 1")
        .message("exactly one of local, remote, netbox or external must be specified"),
    validation = Rule::new("!self.enforceNamespaces || (has(self.namespaces) && size(self.namespaces) > 0)")
        .message("enforceNamespaces requires a non-empty namespaces list, otherwise it silently enforces nothing"),
    validation = Rule::new("!self.namespaceDefault || (has(self.namespaces) && size(self.namespaces) > 0)")
        .message("namespaceDefault requires a non-empty namespaces list, otherwise it defaults nothing")
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceGroupSpec {
    /// Pool announced on one elected node's real interface (ARP/NDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<ServiceGroupLocalSpec>,
    /// Pool announced on the dummy interface of every node (routed, ECMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<ServiceGroupRemoteSpec>,
    /// Pool kept in Netbox: reserved addresses of a tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netbox: Option<ServiceGroupNetboxSpec>,
    /// Addresses come from an external IPAM sidecar over gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ServiceGroupExternalSpec>,
    /// Service namespaces this group serves; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1024),
        inner(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub namespaces: Option<Vec<String>>,
    /// Turns `namespaces` into a boundary in both directions.
    #[serde(default)]
    #[schemars(schema_with = "default_false")]
    pub enforce_namespaces: bool,
    /// Default group for unannotated Services in its namespaces.
    #[serde(default)]
    #[schemars(schema_with = "default_false")]
    pub namespace_default: bool,
}

fn default_false(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "boolean", "default": false })
}

/// A local pool: addresses go on one node's real interface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceGroupLocalSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4pool: Option<AddressPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6pool: Option<AddressPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4pools: Option<Vec<AddressPool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6pools: Option<Vec<AddressPool>>,
    /// Add IPv6 addresses with IFA_F_NODAD.
    #[serde(default, rename = "skipIPv6DAD")]
    #[schemars(schema_with = "default_false")]
    pub skip_ipv6_dad: bool,
    /// One address per range (per family) whose subnet has live nodes.
    #[serde(default)]
    #[schemars(schema_with = "default_false")]
    pub multi_pool: bool,
    /// Pick the least-used range per family.
    #[serde(default)]
    #[schemars(schema_with = "default_false")]
    pub balance_pools: bool,
}

/// A remote pool: addresses go on every node's dummy interface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceGroupRemoteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4pool: Option<AddressPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6pool: Option<AddressPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4pools: Option<Vec<AddressPool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6pools: Option<Vec<AddressPool>>,
    #[serde(default)]
    #[schemars(schema_with = "default_false")]
    pub multi_pool: bool,
    #[serde(default)]
    #[schemars(schema_with = "default_false")]
    pub balance_pools: bool,
}

/// A Netbox pool: reserved addresses of `tenant` in the Netbox at `url`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceGroupNetboxSpec {
    /// Base URL of the Netbox API, e.g. `https://netbox.example.com`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Netbox tenant whose reserved addresses this group hands out.
    #[schemars(length(min = 1))]
    pub tenant: String,
    /// Mask for the address on the dummy interface, as for other pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(default|/([89]|[1-9][0-9]|1[01][0-9]|12[0-8]))$"))]
    pub aggregation: Option<String>,
}

/// An external IPAM sidecar reached over a Unix socket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceGroupExternalSpec {
    /// Cosmetic provider name, echoed into `status.ipam`.
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Absolute path of the sidecar's socket inside the allocator pod.
    #[serde(default = "default_ipam_socket")]
    #[schemars(schema_with = "ipam_socket")]
    pub socket: String,
    /// How the addresses are announced: `local` or `remote`.
    pub announce: ExternalAnnounce,
}

/// The default socket of the external IPAM sidecar.
pub const DEFAULT_IPAM_SOCKET: &str = "/var/run/purelb/ipam.sock";

fn default_ipam_socket() -> String {
    DEFAULT_IPAM_SOCKET.to_owned()
}

fn ipam_socket(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "default": DEFAULT_IPAM_SOCKET })
}

/// How an external pool's addresses are announced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalAnnounce {
    #[default]
    Local,
    Remote,
}

/// One address range and the subnet it lives in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressPool {
    /// A CIDR (`192.168.1.240/29`) or an inclusive range (`a-b`).
    pub pool: String,
    /// The CIDR that contains the whole pool.
    pub subnet: String,
    /// Mask on the dummy interface: `default` (the subnet's) or `/N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(default|/([89]|[1-9][0-9]|1[01][0-9]|12[0-8]))$"))]
    pub aggregation: Option<String>,
}

/// Written only by the allocator, through server-side apply.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceGroupStatus {
    /// `spec.namespaces` as the allocator parsed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_namespaces: Option<Vec<String>>,
    /// `Local` or `Remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    /// `Cluster`, `Netbox`, or the external provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<String>,
    /// The pool strings, IPv4 ranges first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    #[serde(rename = "allocatedIPv4")]
    #[schemars(schema_with = "schema::non_negative_int64")]
    pub allocated_ipv4: i64,
    #[serde(rename = "allocatedIPv6")]
    #[schemars(schema_with = "schema::non_negative_int64")]
    pub allocated_ipv6: i64,
    /// Absent when the capacity is unknown.
    #[serde(
        default,
        rename = "availableIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "schema::non_negative_int64")]
    pub available_ipv4: Option<i64>,
    #[serde(
        default,
        rename = "availableIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "schema::non_negative_int64")]
    pub available_ipv6: Option<i64>,
    /// `Ready`: whether the allocator accepted the spec, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}
