//! What the node's BGPNodeStatus ([`node`]) and the BGPConfiguration status ([`config`]) say,
//! built from the speaker's state as plain values.

pub mod config;
pub mod node;

pub use config::{ConfigOutcome, config_status};
pub use node::{
    ImportInterface, ImportState, MAX_EXPORTED, MAX_IMPORTED, MAX_LOCAL_ROUTES,
    MAX_RECEIVED_ROUTES, NodeStatusInput, changed, node_status, shutdown_status,
};

use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use purelb_bgp::fsm::State;
use purelb_bgp::wire::Prefix;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use purelb_api::crd::bgp_node_status::BGPNodeStatusStatus;
    use purelb_bgp::speaker::SpeakerStatus;

    use super::*;
    use crate::bgp::config::{
        ExportSettings, ImportSettings, MapError, MappedConfig, RouterIdSource,
    };
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
}
