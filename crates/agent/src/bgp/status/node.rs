//! This node's BGPNodeStatus: its neighbours, the routes it imports, advertises, receives and
//! exports, and its conditions, as a value built from the speaker's state.

use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use purelb_api::crd::bgp_node_status::{
    BGPNodeStatusStatus, ExportRuleStatus, ExportedRoute, ImportedAddress, InterfaceStatus,
    NeighborStatus, NetlinkExportStatus, NetlinkImportStatus, RibRoute,
};
use purelb_bgp::fsm::State;
use purelb_bgp::rib::ReceivedRoute;
use purelb_bgp::speaker::SpeakerStatus;
use purelb_bgp::wire::Prefix;

use super::{condition, count, prefix_string, state_name, time};
use crate::bgp::config::MappedConfig;

/// Caps on the lists in BGPNodeStatus.
pub const MAX_IMPORTED: usize = 500;
pub const MAX_LOCAL_ROUTES: usize = 500;
pub const MAX_RECEIVED_ROUTES: usize = 100;
pub const MAX_EXPORTED: usize = 500;

/// One interface named by `netlinkImport.interfaceList` as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInterface {
    pub name: String,
    pub exists: bool,
    pub up: bool,
}

/// The netlink import as it stands: the interfaces and the addresses found on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportState {
    pub interfaces: Vec<ImportInterface>,
    /// (prefix, interface) of every address on the imported interfaces.
    pub addresses: Vec<(Prefix, String)>,
}

/// Everything the node status is made of.
pub struct NodeStatusInput<'a> {
    pub node: &'a str,
    pub mapped: &'a MappedConfig,
    pub speaker: &'a SpeakerStatus,
    pub received: &'a [(IpAddr, ReceivedRoute)],
    pub import: &'a ImportState,
    /// Kernel routes from `netlinkExport`, as the exporter reports them.
    pub exported: &'a [ExportedRoute],
    /// The conditions last written, to keep `lastTransitionTime` when nothing flipped.
    pub previous_conditions: &'a [Condition],
    pub now: SystemTime,
}

/// The node's BGPNodeStatus `status`, without `lastUpdated` (set when written).
pub fn node_status(input: &NodeStatusInput<'_>) -> BGPNodeStatusStatus {
    let m = input.mapped;
    let s = input.speaker;
    let wall = |at: std::time::Instant| input.now.checked_sub(at.elapsed()).unwrap_or(input.now);
    let neighbors: Vec<NeighborStatus> = s
        .peers
        .iter()
        .map(|p| NeighborStatus {
            address: p.address.to_string(),
            peer_asn: p.peer_asn,
            local_asn: p.local_asn,
            state: state_name(p.state).to_owned(),
            session_up_since: p.established_at.map(|at| time(wall(at))),
            prefixes_sent: p.prefixes_sent as u64,
            prefixes_received: p.prefixes_received as u64,
            description: Some(p.description.clone()).filter(|d| !d.is_empty()),
            last_error: p
                .last_error
                .clone()
                .filter(|_| p.state != State::Established),
        })
        .collect();

    let local: Vec<Prefix> = s.routes.iter().map(|r| r.route.prefix).collect();
    let imported: Vec<ImportedAddress> = input
        .import
        .addresses
        .iter()
        .map(|(p, ifname)| ImportedAddress {
            address: prefix_string(p),
            interface: ifname.clone(),
            in_rib: local.contains(p),
        })
        .collect();
    let import = NetlinkImportStatus {
        enabled: m.import.enabled,
        vrf: None,
        interfaces: Some(
            input
                .import
                .interfaces
                .iter()
                .map(|i| InterfaceStatus {
                    name: i.name.clone(),
                    exists: i.exists,
                    oper_state: if i.up { "up" } else { "down" }.to_owned(),
                })
                .collect(),
        ),
        total_imported: count(imported.len()),
        truncated: Some(imported.len() > MAX_IMPORTED),
        imported_addresses: Some(imported.iter().take(MAX_IMPORTED).cloned().collect()),
    };

    let local_routes: Vec<RibRoute> = s
        .routes
        .iter()
        .take(MAX_LOCAL_ROUTES)
        .map(|r| RibRoute {
            prefix: prefix_string(&r.route.prefix),
            next_hop: r.route.next_hop.map_or_else(
                || match r.route.prefix {
                    Prefix::V4(_) => "0.0.0.0".to_owned(),
                    Prefix::V6(_) => "::".to_owned(),
                },
                |nh| nh.to_string(),
            ),
            advertised_to: Some(r.sent_to.iter().map(IpAddr::to_string).collect()),
            from_peer: None,
            communities: None,
        })
        .collect();
    let received_routes: Vec<RibRoute> = input
        .received
        .iter()
        .take(MAX_RECEIVED_ROUTES)
        .map(|(peer, r)| RibRoute {
            prefix: prefix_string(&r.prefix),
            next_hop: r.next_hop.map(|n| n.to_string()).unwrap_or_default(),
            advertised_to: None,
            from_peer: Some(peer.to_string()),
            communities: None,
        })
        .collect();
    let rib = purelb_api::crd::bgp_node_status::RibStatus {
        local_routes: Some(local_routes),
        local_route_count: count(s.routes.len()),
        received_routes: Some(received_routes),
        received_route_count: count(input.received.len()),
        truncated: Some(
            s.routes.len() > MAX_LOCAL_ROUTES || input.received.len() > MAX_RECEIVED_ROUTES,
        ),
    };

    let export = NetlinkExportStatus {
        enabled: m.export.enabled,
        protocol: i32::from(m.export.protocol),
        rules: Some(
            m.export
                .rules
                .iter()
                .map(|r| ExportRuleStatus {
                    name: r.name.clone(),
                    metric: r.metric,
                    table_id: i32::try_from(r.table).unwrap_or(i32::MAX),
                })
                .collect(),
        ),
        exported_routes: Some(input.exported.iter().take(MAX_EXPORTED).cloned().collect()),
        total_exported: count(input.exported.len()),
        truncated: Some(input.exported.len() > MAX_EXPORTED),
    };

    let established = s
        .peers
        .iter()
        .filter(|p| p.state == State::Established)
        .count();
    let all_up = established == s.peers.len();
    let imports_ok = imported.iter().all(|a| a.in_rib);
    let exports_ok = input.exported.iter().all(|e| e.installed);
    let healthy = all_up && imports_ok && exports_ok;
    let message = if healthy {
        let mut msg = format!("{established} neighbor(s) established");
        if m.import.enabled {
            msg.push_str(", netlinkImport active");
        }
        msg
    } else {
        let mut problems = Vec::new();
        if !all_up {
            problems.push(format!(
                "{established} of {} neighbor(s) established",
                s.peers.len()
            ));
        }
        if !imports_ok {
            problems.push("imported addresses missing from the RIB".to_owned());
        }
        if !exports_ok {
            problems.push("exported routes not installed".to_owned());
        }
        problems.join("; ")
    };
    let ready = condition(
        input.previous_conditions,
        "Ready",
        healthy,
        if healthy { "AllHealthy" } else { "Degraded" },
        message,
        None,
        input.now,
    );
    BGPNodeStatusStatus {
        node_name: input.node.to_owned(),
        router_id: Some(s.router_id.to_string()),
        router_id_source: Some(m.router_id_source.as_str().to_owned()),
        asn: Some(s.asn),
        last_updated: None,
        heartbeat_seconds: Some(i32::try_from(m.heartbeat.as_secs()).unwrap_or(i32::MAX)),
        neighbor_count: count(neighbors.len()),
        neighbors: Some(neighbors),
        netlink_import: Some(import),
        rib: Some(rib),
        netlink_export: Some(export),
        vrfs: None,
        healthy: Some(healthy),
        conditions: Some(vec![ready]),
    }
}

/// The status written when the agent stops: not healthy, `Ready=False/AgentShutdown`.
pub fn shutdown_status(mut last: BGPNodeStatusStatus, now: SystemTime) -> BGPNodeStatusStatus {
    let previous = last.conditions.take().unwrap_or_default();
    last.healthy = Some(false);
    last.conditions = Some(vec![condition(
        &previous,
        "Ready",
        false,
        "AgentShutdown",
        "lbnodeagent is shutting down".to_owned(),
        None,
        now,
    )]);
    last
}

/// Whether two node statuses differ in anything but `lastUpdated` and the uptimes' rounding.
pub fn changed(a: &BGPNodeStatusStatus, b: &BGPNodeStatusStatus) -> bool {
    let strip = |s: &BGPNodeStatusStatus| BGPNodeStatusStatus {
        last_updated: None,
        ..s.clone()
    };
    strip(a) != strip(b)
}
