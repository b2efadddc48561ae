//! The per-node Lease contract, shared by agents, the allocator
//! (multi-pool active subnets) and the kubectl plugin.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;

use crate::pool::{IpNet, parse_cidr};

/// Prefix of every node lease name; the node name follows.
pub const NAME_PREFIX: &str = "purelb-node-";
/// Comma-joined subnets the node can announce on; see [`encode_subnets`].
pub const SUBNETS_ANNOTATION: &str = "purelb.io/subnets";
/// Pod UID of the agent that last wrote the lease; only that pod deletes it.
pub const INSTANCE_ANNOTATION: &str = "purelb.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const COMPONENT_LABEL_VALUE: &str = "lbnodeagent";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const NAME_LABEL_VALUE: &str = "purelb";
/// Readers keep at most this many subnets per lease, so one buggy writer
/// cannot bloat every node's election state.
pub const MAX_SUBNETS: usize = 256;

/// The lease name for `node`.
pub fn lease_name(node: &str) -> String {
    format!("{NAME_PREFIX}{node}")
}

/// The node a lease belongs to, taken from its name (not its holder, as
/// upstream does); `None` for other leases and for the bare prefix.
pub fn node_name(lease_name: &str) -> Option<&str> {
    lease_name
        .strip_prefix(NAME_PREFIX)
        .filter(|node| !node.is_empty())
}

/// The annotation value for `subnets`: canonical CIDRs, sorted as strings
/// (Go's `sort.Strings`), deduplicated, comma-joined.
pub fn encode_subnets(subnets: impl IntoIterator<Item = IpNet>) -> String {
    let mut spelled: Vec<String> = subnets.into_iter().map(|s| s.to_string()).collect();
    spelled.sort();
    spelled.dedup();
    spelled.join(",")
}

/// One subnet read from a lease, with its spelling as written: multi-pool
/// matches ServiceGroup `subnet` strings against it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdvertisedSubnet {
    spelling: String,
    cidr: IpNet,
}

impl AdvertisedSubnet {
    pub fn spelling(&self) -> &str {
        &self.spelling
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }
}

/// Reads the subnets annotation as upstream does: entries that are not CIDRs
/// are dropped, spelling and order are kept (no dedup), and at most
/// [`MAX_SUBNETS`] valid entries are returned.
pub fn decode_subnets(value: &str) -> Vec<AdvertisedSubnet> {
    value
        .split(',')
        .filter_map(|entry| {
            parse_cidr(entry).ok().map(|cidr| AdvertisedSubnet {
                spelling: entry.to_owned(),
                cidr,
            })
        })
        .take(MAX_SUBNETS)
        .collect()
}

/// The liveness rule: renewed at `renew_time_micros` (Unix microseconds) for
/// `duration_seconds`, live iff `renewTime + leaseDurationSeconds > now`.
pub fn is_live(renew_time_micros: i64, duration_seconds: i32, now_micros: i64) -> bool {
    let duration_micros = i64::from(duration_seconds) * 1_000_000;
    renew_time_micros.saturating_add(duration_micros) > now_micros
}

/// [`is_live`] for a Lease object; one without `renewTime` or
/// `leaseDurationSeconds` is not live.
pub fn lease_is_live(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renew), Some(duration)) => {
            is_live(renew.0.as_microsecond(), duration, now.as_microsecond())
        }
        _ => false,
    }
}

/// The subnets a Lease object advertises (empty when unannotated).
pub fn lease_subnets(lease: &Lease) -> Vec<AdvertisedSubnet> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(SUBNETS_ANNOTATION))
        .map_or_else(Vec::new, |value| decode_subnets(value))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    use super::*;

    fn cidr(s: &str) -> IpNet {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(lease_name("node-a"), "purelb-node-node-a");
        assert_eq!(node_name("purelb-node-node-a"), Some("node-a"));
        assert_eq!(node_name("purelb-node-"), None);
        assert_eq!(node_name("purelb-node"), None);
        assert_eq!(node_name("kube-controller-manager"), None);
        assert_eq!(node_name(""), None);
        assert_eq!(node_name(&lease_name("x")), Some("x"));
    }

    #[test]
    fn encode_sorts_as_strings_and_dedupes() {
        let value = encode_subnets([
            cidr("192.168.1.0/24"),
            cidr("fd00::/64"),
            cidr("10.2.0.0/16"),
            cidr("10.10.0.0/16"),
            cidr("192.168.1.9/24"),
        ]);
        assert_eq!(value, "10.10.0.0/16,10.2.0.0/16,192.168.1.0/24,fd00::/64");
        assert_eq!(encode_subnets([]), "");
    }

    #[test]
    fn decode_keeps_spelling_and_drops_garbage() {
        let subnets =
            decode_subnets("192.168.1.5/24,junk,, 10.0.0.0/8,fd00::/64,fd00::/64,fe80::%eth0/64");
        let spelled: Vec<&str> = subnets.iter().map(AdvertisedSubnet::spelling).collect();
        assert_eq!(spelled, vec!["192.168.1.5/24", "fd00::/64", "fd00::/64"]);
        assert_eq!(subnets[0].cidr(), cidr("192.168.1.0/24"));
        assert!(decode_subnets("").is_empty());
        assert!(decode_subnets(",,,").is_empty());
    }

    #[test]
    fn decode_caps_valid_entries() {
        let value: Vec<String> = (0..300)
            .flat_map(|i| [format!("10.{}.{}.0/24", i / 256, i % 256), "bad".to_owned()])
            .collect();
        let subnets = decode_subnets(&value.join(","));
        assert_eq!(subnets.len(), MAX_SUBNETS);
        assert_eq!(subnets[255].spelling(), "10.0.255.0/24");
    }

    #[test]
    fn liveness() {
        let s = 1_000_000;
        assert!(is_live(100 * s, 10, 109 * s));
        assert!(is_live(100 * s, 10, 110 * s - 1));
        assert!(!is_live(100 * s, 10, 110 * s));
        assert!(!is_live(100 * s, 0, 100 * s));
        assert!(!is_live(100 * s, -5, 96 * s));
        assert!(is_live(i64::MAX, i32::MAX, i64::MAX - 1));
        assert!(!is_live(i64::MIN, i32::MIN, i64::MIN));
    }

    #[test]
    fn lease_objects() {
        let renew: Timestamp = "2025-01-01T00:00:00.5Z".parse().unwrap();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(lease_name("node-a")),
                annotations: Some(BTreeMap::from([(
                    SUBNETS_ANNOTATION.to_owned(),
                    "192.168.1.0/24,fd00::/64".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renew)),
                lease_duration_seconds: Some(10),
                ..LeaseSpec::default()
            }),
        };
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(lease_is_live(&lease, at("2025-01-01T00:00:10.4Z")));
        assert!(!lease_is_live(&lease, at("2025-01-01T00:00:10.5Z")));
        assert_eq!(lease_subnets(&lease).len(), 2);

        let mut no_duration = lease.clone();
        if let Some(spec) = no_duration.spec.as_mut() {
            spec.lease_duration_seconds = None;
        }
        assert!(!lease_is_live(&no_duration, at("2025-01-01T00:00:01Z")));
        let bare = Lease::default();
        assert!(!lease_is_live(&bare, at("2025-01-01T00:00:01Z")));
        assert!(lease_subnets(&bare).is_empty());
    }
}
