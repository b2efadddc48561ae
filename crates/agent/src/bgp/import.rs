//! `netlinkImport` as a pure step: the routes that the addresses on the import interfaces
//! (`kube-lb0`) become. Each address announces its network, the connected route the kernel
//! installs for it; addresses sharing a network (remote addresses under one aggregation mask)
//! share its route, which is withdrawn with the last of them.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::kernel::{AddressDelta, FollowedAddress};

/// What the speaker announces and withdraws for one delta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChanges {
    pub withdraw: Vec<IpNet>,
    pub announce: Vec<IpNet>,
}

/// The route changes for `delta`, `current` being the followed addresses after it.
pub fn route_changes(delta: &AddressDelta, current: &BTreeSet<FollowedAddress>) -> RouteChanges {
    RouteChanges {
        withdraw: delta
            .removed
            .iter()
            .map(FollowedAddress::network)
            .filter(|network| !current.iter().any(|c| c.network() == *network))
            .collect(),
        announce: delta.added.iter().map(FollowedAddress::network).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> FollowedAddress {
        let (ip, len) = s.split_once('/').unwrap();
        FollowedAddress {
            ip: ip.parse().unwrap(),
            prefix_len: len.parse().unwrap(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Feeds deltas the way the address follower reports them (its set updated first) and
    /// collects the speaker's changes.
    struct Replay(BTreeSet<FollowedAddress>);

    impl Replay {
        fn delta(&mut self, added: &[&str], removed: &[&str]) -> RouteChanges {
            let sorted = |list: &[&str]| {
                let mut v: Vec<FollowedAddress> = list.iter().map(|a| addr(a)).collect();
                v.sort();
                v
            };
            let delta = AddressDelta {
                added: sorted(added),
                removed: sorted(removed),
            };
            for a in &delta.removed {
                self.0.remove(a);
            }
            self.0.extend(delta.added.iter().copied());
            route_changes(&delta, &self.0)
        }
    }

    #[test]
    fn a_recorded_address_history_announces_each_network_until_its_last_address_goes() {
        let mut r = Replay(BTreeSet::new());
        // A host route and two remote addresses under one /24 aggregation.
        let c = r.delta(&["203.0.113.7/32", "10.255.10.1/24"], &[]);
        assert_eq!(c.announce, [net("10.255.10.0/24"), net("203.0.113.7/32")]);
        assert!(c.withdraw.is_empty());
        let c = r.delta(&["10.255.10.2/24"], &[]);
        assert_eq!(c.announce, [net("10.255.10.0/24")]);
        // The first of the two goes: the shared route stays.
        let c = r.delta(&[], &["10.255.10.1/24"]);
        assert_eq!(c, RouteChanges::default());
        // The last goes, with the host route: both withdrawn.
        let c = r.delta(&[], &["10.255.10.2/24", "203.0.113.7/32"]);
        assert_eq!(c.withdraw, [net("10.255.10.0/24"), net("203.0.113.7/32")]);
        // IPv6, and a mask change of one address: the old network goes, the new one comes.
        let c = r.delta(&["fd00:10:255:10::1/64"], &[]);
        assert_eq!(c.announce, [net("fd00:10:255:10::/64")]);
        let c = r.delta(&["fd00:10:255:10::1/128"], &["fd00:10:255:10::1/64"]);
        assert_eq!(c.withdraw, [net("fd00:10:255:10::/64")]);
        assert_eq!(c.announce, [net("fd00:10:255:10::1/128")]);
    }
}
