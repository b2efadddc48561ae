//! What the node's BGPNodeStatus and the BGPConfiguration status say,
//! built from the speaker's state as plain values.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use purelb_api::crd::bgp_configuration::BGPConfigurationStatus;
use purelb_api::crd::bgp_node_status::{
    BGPNodeStatusStatus, ExportRuleStatus, ExportedRoute, ImportedAddress, InterfaceStatus,
    NeighborStatus, NetlinkExportStatus, NetlinkImportStatus, RibRoute,
};
use purelb_bgp::fsm::State;
use purelb_bgp::rib::ReceivedRoute;
use purelb_bgp::speaker::SpeakerStatus;
use purelb_bgp::wire::Prefix;

use crate::bgp::config::{MapError, MappedConfig};

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

pub fn prefix_string(p: &Prefix) -> String {
    p.net().to_string()
}

/// The k8gobgp state names (`Idle` … `Established`).
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Idle => "Idle",
        State::Connect => "Connect",
        State::Active => "Active",
        State::OpenSent => "OpenSent",
        State::OpenConfirm => "OpenConfirm",
        State::Established => "Established",
    }
}

fn time(t: SystemTime) -> Time {
    Time(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A condition, keeping the previous transition time when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: SystemTime,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
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

/// How this node's view of one BGPConfiguration ended.
pub enum ConfigOutcome<'a> {
    /// Applied; `established` neighbours are up on this node.
    Applied {
        mapped: &'a MappedConfig,
        established: usize,
    },
    /// Refused; the last good configuration (if any) keeps running.
    Invalid(&'a MapError),
    /// Another BGPConfiguration is the one in effect.
    Superseded { by: &'a str },
}

/// The BGPConfiguration `status` this node writes.
pub fn config_status(
    generation: Option<i64>,
    previous: Option<&BGPConfigurationStatus>,
    outcome: &ConfigOutcome<'_>,
    now: SystemTime,
) -> BGPConfigurationStatus {
    let prev_conditions = previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default();
    let c = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(
            &prev_conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            now,
        )
    };
    let mut status = BGPConfigurationStatus {
        observed_generation: generation,
        last_reconcile_time: Some(time(now)),
        ..BGPConfigurationStatus::default()
    };
    match outcome {
        ConfigOutcome::Applied {
            mapped,
            established,
        } => {
            status.conditions = Some(vec![
                c(
                    "Ready",
                    true,
                    "ReconcileSuccess",
                    "BGP configuration applied successfully".to_owned(),
                ),
                c(
                    "RouterIDResolved",
                    true,
                    "Resolved",
                    format!(
                        "router ID {} ({})",
                        mapped.speaker.router_id,
                        mapped.router_id_source.as_str()
                    ),
                ),
            ]);
            status.neighbor_count = Some(count(mapped.neighbor_count));
            status.established_neighbors = Some(count(*established));
            status.message = Some(if mapped.unsupported.is_empty() {
                "applied".to_owned()
            } else {
                format!(
                    "applied; not supported and ignored: {}",
                    mapped.unsupported.join(", ")
                )
            });
            status.router_id_source = Some(mapped.router_id_source.as_str().to_owned());
            status.router_id_resolution_time = previous
                .filter(|p| p.router_id_source == status.router_id_source)
                .and_then(|p| p.router_id_resolution_time.clone())
                .or_else(|| Some(time(now)));
        }
        ConfigOutcome::Invalid(e) => {
            let router_id = matches!(e, MapError::RouterId(_));
            let mut conditions = vec![c(
                "Ready",
                false,
                "ConfigurationInvalid",
                format!("Configuration validation failed: {e}"),
            )];
            if router_id {
                conditions.push(c(
                    "RouterIDResolved",
                    false,
                    "ResolutionFailed",
                    e.to_string(),
                ));
            }
            status.conditions = Some(conditions);
            status.message = Some(format!(
                "Configuration validation failed: {e}; the last good configuration keeps running"
            ));
            status.neighbor_count = previous.and_then(|p| p.neighbor_count);
            status.established_neighbors = previous.and_then(|p| p.established_neighbors);
        }
        ConfigOutcome::Superseded { by } => {
            status.conditions = Some(vec![c(
                "Ready",
                false,
                "Superseded",
                format!("BGPConfiguration {by} is the one in effect; only one is applied"),
            )]);
            status.message = Some(format!(
                "not applied: BGPConfiguration {by} is in effect (the oldest one wins)"
            ));
        }
    }
    status
}

/// Whether two node statuses differ in anything but `lastUpdated` and the uptimes' rounding.
pub fn changed(a: &BGPNodeStatusStatus, b: &BGPNodeStatusStatus) -> bool {
    let strip = |s: &BGPNodeStatusStatus| BGPNodeStatusStatus {
        last_updated: None,
        ..s.clone()
    };
    strip(a) != strip(b)
}

/// A random-free jitter in [0, heartbeat/4) derived from the node name, so nodes do not write in
/// step.
pub fn jitter(node: &str, heartbeat: Duration) -> Duration {
    let h = node
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let quarter = heartbeat.as_millis() / 4;
    Duration::from_millis(u64::try_from(u128::from(h) % quarter.max(1)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::config::{ExportSettings, ImportSettings, RouterIdSource};
    use purelb_bgp::rib::LocalRoute;
    use purelb_bgp::speaker::{PeerStatus, RouteStatus, SpeakerConfig};
    use purelb_bgp::wire::Ipv4Prefix;
    use std::net::Ipv4Addr;

    fn mapped() -> MappedConfig {
        MappedConfig {
            speaker: SpeakerConfig::new(65000, Ipv4Addr::new(198, 51, 100, 5)),
            router_id_source: RouterIdSource::NodeIpv4,
            import: ImportSettings {
                enabled: true,
                interfaces: vec!["kube-lb0".into()],
            },
            export: ExportSettings {
                enabled: false,
                protocol: 186,
                rules: Vec::new(),
            },
            node_status_enabled: true,
            heartbeat: Duration::from_secs(60),
            neighbor_count: 1,
            unsupported: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn peer(state: State) -> PeerStatus {
        PeerStatus {
            address: "198.51.100.1".parse().unwrap(),
            peer_asn: 65001,
            local_asn: 65000,
            description: String::new(),
            dynamic: false,
            admin_down: false,
            state,
            established_at: (state == State::Established).then(std::time::Instant::now),
            peer_id: None,
            families: Vec::new(),
            prefixes_sent: 1,
            prefixes_received: 0,
            last_error: Some("HoldTimerExpired".into()),
        }
    }

    fn vip() -> Prefix {
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 10), 32).unwrap())
    }

    fn status(state: State, in_rib: bool) -> BGPNodeStatusStatus {
        let m = mapped();
        let speaker = SpeakerStatus {
            asn: 65000,
            router_id: Ipv4Addr::new(198, 51, 100, 5),
            peers: vec![peer(state)],
            routes: if in_rib {
                vec![RouteStatus {
                    route: LocalRoute::originated(vip()),
                    sent_to: vec!["198.51.100.1".parse().unwrap()],
                }]
            } else {
                Vec::new()
            },
        };
        let import = ImportState {
            interfaces: vec![ImportInterface {
                name: "kube-lb0".into(),
                exists: true,
                up: true,
            }],
            addresses: vec![(vip(), "kube-lb0".into())],
        };
        node_status(&NodeStatusInput {
            node: "n1",
            mapped: &m,
            speaker: &speaker,
            received: &[],
            import: &import,
            exported: &[],
            previous_conditions: &[],
            now: SystemTime::now(),
        })
    }

    #[test]
    fn healthy_when_every_neighbour_is_up_and_every_address_is_in_the_rib() {
        let s = status(State::Established, true);
        assert_eq!(s.healthy, Some(true));
        let ready = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AllHealthy")
        );
        assert_eq!(
            ready.message,
            "1 neighbor(s) established, netlinkImport active"
        );
        let n = &s.neighbors.as_ref().unwrap()[0];
        assert_eq!(n.state, "Established");
        assert!(n.session_up_since.is_some());
        assert_eq!(n.last_error, None, "no error while Established");
        let rib = s.rib.as_ref().unwrap();
        assert_eq!(
            rib.local_routes.as_ref().unwrap()[0].prefix,
            "203.0.113.10/32"
        );
        assert_eq!(
            rib.local_routes.as_ref().unwrap()[0].advertised_to,
            Some(vec!["198.51.100.1".to_owned()])
        );
        assert_eq!(s.router_id_source.as_deref(), Some("node-ipv4"));
        assert_eq!(s.neighbor_count, 1);
    }

    #[test]
    fn degraded_when_a_neighbour_is_down_or_an_address_is_missing() {
        let s = status(State::Active, true);
        assert_eq!(s.healthy, Some(false));
        assert_eq!(s.conditions.as_ref().unwrap()[0].reason, "Degraded");
        assert_eq!(
            s.neighbors.as_ref().unwrap()[0].last_error.as_deref(),
            Some("HoldTimerExpired")
        );
        let s = status(State::Established, false);
        assert_eq!(s.healthy, Some(false));
        let imported = s.netlink_import.as_ref().unwrap();
        assert!(!imported.imported_addresses.as_ref().unwrap()[0].in_rib);
        let down = shutdown_status(s, SystemTime::now());
        assert_eq!(down.conditions.as_ref().unwrap()[0].reason, "AgentShutdown");
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let first = condition(&[], "Ready", true, "AllHealthy", "x".into(), None, then);
        let again = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "AllHealthy",
            "y".into(),
            None,
            SystemTime::now(),
        );
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let flipped = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "Degraded",
            "z".into(),
            None,
            SystemTime::now(),
        );
        assert_ne!(flipped.last_transition_time, first.last_transition_time);
    }

    #[test]
    fn config_status_says_what_happened() {
        let m = mapped();
        let now = SystemTime::now();
        let ok = config_status(
            Some(3),
            None,
            &ConfigOutcome::Applied {
                mapped: &m,
                established: 1,
            },
            now,
        );
        assert_eq!(ok.observed_generation, Some(3));
        assert_eq!(ok.established_neighbors, Some(1));
        assert_eq!(ok.neighbor_count, Some(1));
        assert_eq!(ok.conditions.as_ref().unwrap().len(), 2);
        let e = MapError::RouterId("node n1 has no ExternalIP IPv4 address".into());
        let bad = config_status(Some(4), Some(&ok), &ConfigOutcome::Invalid(&e), now);
        let c = bad.conditions.as_ref().unwrap();
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_str()),
            ("False", "ConfigurationInvalid")
        );
        assert!(c[0].message.contains("ExternalIP"));
        assert_eq!(c[1].reason, "ResolutionFailed");
        assert_eq!(
            bad.neighbor_count,
            Some(1),
            "the running configuration's count stays"
        );
        let other = config_status(
            None,
            None,
            &ConfigOutcome::Superseded {
                by: "purelb-system/default",
            },
            now,
        );
        assert_eq!(other.conditions.as_ref().unwrap()[0].reason, "Superseded");
    }

    #[test]
    fn jitter_is_within_a_quarter_heartbeat() {
        for n in ["a", "node-1", "node-2", "a-much-longer-node-name"] {
            assert!(jitter(n, Duration::from_secs(60)) < Duration::from_secs(15));
        }
    }
}
