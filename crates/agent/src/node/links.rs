//! The node's links and addresses as plain values, and the two questions asked of
//! them: which link a VIP is local to and which subnets the node's election lease
//! advertises. The kernel layer fills [`NodeInterfaces`].
//!
//! Both questions use the same links and the same address filter, so a node never
//! advertises a subnet it would not announce on (and vice versa).

use std::net::IpAddr;

use purelb_api::pool::{IpFamily, IpNet, Network, network_of};

use crate::node::selection::SelectorState;
use crate::node::settings::{AgentSettings, InterfaceChoice};

/// Address flags that make an IPv6 address unusable for containment and subnets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressFlags {
    pub tentative: bool,
    pub deprecated: bool,
    pub dad_failed: bool,
}

/// One address on a link, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub flags: AddressFlags,
}

impl LinkAddress {
    pub fn new(ip: IpAddr, prefix_len: u8) -> Self {
        Self {
            ip,
            prefix_len,
            flags: AddressFlags::default(),
        }
    }

    /// The address's network, if the prefix length fits its family.
    pub fn network(&self) -> Option<IpNet> {
        network_of(self.ip, self.prefix_len).ok()
    }

    /// Whether the address can vouch for a subnet: every IPv4 address; IPv6 ones that
    /// are not tentative, deprecated (our own IPv6 VIPs are), DAD-failed or link-local.
    pub fn is_usable(&self) -> bool {
        match self.ip.to_canonical() {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => {
                !(self.flags.tentative
                    || self.flags.deprecated
                    || self.flags.dad_failed
                    || v6.is_unicast_link_local())
            }
        }
    }
}

/// One link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    /// Whether the link can carry traffic (administratively up with carrier).
    ///
    /// Choice: a link that is not up is skipped for announcement and for subnet
    /// advertisement, so a node whose NIC lost its carrier stops being an election
    /// candidate for that subnet instead of winning and black-holing the VIP.
    pub up: bool,
    pub loopback: bool,
    pub addresses: Vec<LinkAddress>,
}

impl InterfaceInfo {
    /// The prefix length of the first usable address of `ip`'s family containing
    /// `ip`: the mask a local VIP gets.
    pub fn containing_prefix(&self, ip: IpAddr) -> Option<u8> {
        let family = IpFamily::of(ip);
        self.addresses
            .iter()
            .filter(|a| IpFamily::of(a.ip) == family && a.is_usable())
            .find(|a| a.network().is_some_and(|n| n.holds(ip)))
            .map(|a| a.prefix_len)
    }
}

/// A snapshot of the node's links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInterfaces {
    pub links: Vec<InterfaceInfo>,
    /// Index of the IPv4 default-route link.
    pub default_v4: Option<u32>,
    /// Index of the IPv6 default-route link.
    pub default_v6: Option<u32>,
    /// A netlink dump was interrupted: a missing address may just be unseen.
    pub incomplete: bool,
}

impl NodeInterfaces {
    pub fn link_by_name(&self, name: &str) -> Option<&InterfaceInfo> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&InterfaceInfo> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn default_link(&self, family: IpFamily) -> Option<&InterfaceInfo> {
        let index = match family {
            IpFamily::V4 => self.default_v4,
            IpFamily::V6 => self.default_v6,
        }?;
        self.link_by_index(index)
    }
}

/// Where a VIP is local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMatch {
    pub interface: String,
    /// The containing address's prefix length (the node's subnet), not the pool's.
    pub prefix_len: u8,
}

/// The result of the local-interface search for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalLookup {
    Found(LocalMatch),
    NotFound,
    /// Default-route mode, no default route for the family and no extra interfaces:
    /// the node cannot tell (upstream returns an error and retries).
    NoDefaultRoute(IpFamily),
}

/// Finds the link `ip` is local to.
///
/// Default mode: the family's default-route link. Regex mode: every link except the
/// dummy and loopback whose name the regex matches, sorted by name. Then the extra
/// `interfaces` in listed order (loopback allowed, missing ones skipped). A link
/// qualifies when one of its usable addresses of the VIP's family contains it.
///
/// Choice: regex mode skips loopback links as subnet advertisement does (upstream
/// announces on `lo` if the regex matches it but never advertises its subnets).
pub fn find_local(
    settings: &AgentSettings,
    interfaces: &NodeInterfaces,
    ip: IpAddr,
) -> LocalLookup {
    let ip = ip.to_canonical();
    let family = IpFamily::of(ip);
    let found = |link: &InterfaceInfo| {
        link.containing_prefix(ip).map(|prefix_len| LocalMatch {
            interface: link.name.clone(),
            prefix_len,
        })
    };
    let primary = match &settings.local_interface {
        InterfaceChoice::DefaultRoute => {
            let link = interfaces.default_link(family);
            if link.is_none() && settings.extra_interfaces.is_empty() {
                return LocalLookup::NoDefaultRoute(family);
            }
            link.filter(|l| l.up).and_then(found)
        }
        InterfaceChoice::Regex(regex) => regex_links(settings, interfaces, regex)
            .into_iter()
            .find_map(found),
    };
    primary
        .or_else(|| extra_links(settings, interfaces).find_map(found))
        .map_or(LocalLookup::NotFound, LocalLookup::Found)
}

fn regex_links<'a>(
    settings: &AgentSettings,
    interfaces: &'a NodeInterfaces,
    regex: &regex::Regex,
) -> Vec<&'a InterfaceInfo> {
    let mut links: Vec<&InterfaceInfo> = interfaces
        .links
        .iter()
        .filter(|l| {
            l.up && !l.loopback && l.name != settings.dummy_interface && regex.is_match(&l.name)
        })
        .collect();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    links
}

fn extra_links<'a>(
    settings: &'a AgentSettings,
    interfaces: &'a NodeInterfaces,
) -> impl Iterator<Item = &'a InterfaceInfo> {
    settings
        .extra_interfaces
        .iter()
        .filter_map(|name| interfaces.link_by_name(name))
        .filter(|l| l.up)
}

/// The subnets this node writes into its lease (`purelb.io/subnets`), sorted as
/// strings and deduplicated like [`purelb_api::lease::encode_subnets`].
///
/// * `Default` (no config yet, or no matching agent has `local`): the default-route
///   links, as for a configured `localInterface: default`;
/// * `Deselected`, `Invalid`: nothing;
/// * `Configured`: the links [`find_local`] would use — default-route links or regex
///   links, plus the extra interfaces.
///
/// Choice: in default-route mode only the family's own default link counts (IPv4
/// subnets from the IPv4 default link, IPv6 from the IPv6 one), matching what
/// [`find_local`] announces on; upstream advertises every address of both links.
pub fn lease_subnets(
    state: SelectorState,
    settings: Option<&AgentSettings>,
    interfaces: &NodeInterfaces,
) -> Vec<IpNet> {
    let default_settings = AgentSettings::default();
    let settings = match state {
        SelectorState::Deselected | SelectorState::Invalid => return Vec::new(),
        SelectorState::Default => &default_settings,
        SelectorState::Configured => settings.unwrap_or(&default_settings),
    };
    let mut subnets: Vec<IpNet> = Vec::new();
    let mut add = |link: &InterfaceInfo, family: Option<IpFamily>| {
        subnets.extend(
            link.addresses
                .iter()
                .filter(|a| family.is_none_or(|f| IpFamily::of(a.ip) == f) && a.is_usable())
                .filter_map(LinkAddress::network),
        );
    };
    match &settings.local_interface {
        InterfaceChoice::DefaultRoute => {
            for family in [IpFamily::V4, IpFamily::V6] {
                if let Some(link) = interfaces.default_link(family).filter(|l| l.up) {
                    add(link, Some(family));
                }
            }
        }
        InterfaceChoice::Regex(regex) => {
            for link in regex_links(settings, interfaces, regex) {
                add(link, None);
            }
        }
    }
    for link in extra_links(settings, interfaces) {
        add(link, None);
    }
    let mut spelled: Vec<(String, IpNet)> =
        subnets.into_iter().map(|c| (c.to_string(), c)).collect();
    spelled.sort();
    spelled.dedup();
    spelled.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn addr(s: &str) -> LinkAddress {
        let (ip, len) = s.split_once('/').unwrap();
        LinkAddress::new(ip.parse().unwrap(), len.parse().unwrap())
    }

    fn link(name: &str, index: u32, addresses: &[LinkAddress]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            index,
            up: true,
            loopback: name == "lo",
            addresses: addresses.to_vec(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node() -> NodeInterfaces {
        let mut tentative = addr("fd00:2::5/64");
        tentative.flags.tentative = true;
        NodeInterfaces {
            links: vec![
                link("lo", 1, &[addr("127.0.0.1/8"), addr("::1/128")]),
                link(
                    "eth0",
                    2,
                    &[
                        addr("192.168.1.10/24"),
                        addr("fd00:1::10/64"),
                        addr("fe80::1/64"),
                    ],
                ),
                link("eth1", 3, &[addr("10.1.0.10/16"), tentative]),
                link("veth9", 4, &[addr("172.16.0.1/30")]),
                link("kube-lb0", 5, &[addr("203.0.113.1/24")]),
                link("eth2", 6, &[addr("10.2.0.10/24")]),
            ],
            default_v4: Some(2),
            default_v6: Some(2),
            incomplete: false,
        }
    }

    fn regex_settings(pattern: &str) -> AgentSettings {
        AgentSettings {
            local_interface: InterfaceChoice::Regex(Regex::new(pattern).unwrap()),
            ..Default::default()
        }
    }

    fn found(interface: &str, prefix_len: u8) -> LocalLookup {
        LocalLookup::Found(LocalMatch {
            interface: interface.into(),
            prefix_len,
        })
    }

    #[test]
    fn default_mode_uses_the_family_default_link_and_its_mask() {
        let s = AgentSettings::default();
        let n = node();
        assert_eq!(find_local(&s, &n, ip("192.168.1.240")), found("eth0", 24));
        assert_eq!(
            find_local(&s, &n, ip("::ffff:192.168.1.240")),
            found("eth0", 24)
        );
        assert_eq!(find_local(&s, &n, ip("fd00:1::240")), found("eth0", 64));
        // On another link only: not local in default mode.
        assert_eq!(find_local(&s, &n, ip("10.1.0.240")), LocalLookup::NotFound);
        // Link-local IPv6 never vouches for a VIP.
        assert_eq!(find_local(&s, &n, ip("fe80::99")), LocalLookup::NotFound);
    }

    #[test]
    fn default_mode_without_default_route() {
        let mut n = node();
        n.default_v6 = None;
        let s = AgentSettings::default();
        assert_eq!(
            find_local(&s, &n, ip("fd00:1::240")),
            LocalLookup::NoDefaultRoute(IpFamily::V6)
        );
        assert_eq!(find_local(&s, &n, ip("192.168.1.240")), found("eth0", 24));
        // With extra interfaces the search goes on.
        let s = AgentSettings {
            extra_interfaces: vec!["eth0".into()],
            ..Default::default()
        };
        assert_eq!(find_local(&s, &n, ip("fd00:1::240")), found("eth0", 64));
        assert_eq!(find_local(&s, &n, ip("fd00:9::1")), LocalLookup::NotFound);
    }

    #[test]
    fn extra_interfaces_in_listed_order() {
        let mut n = node();
        n.links.push(link("eth3", 7, &[addr("10.2.0.20/16")]));
        let s = AgentSettings {
            extra_interfaces: vec!["missing".into(), "eth3".into(), "eth2".into()],
            ..Default::default()
        };
        // Both eth3 (/16) and eth2 (/24) contain it; eth3 is listed first.
        assert_eq!(find_local(&s, &n, ip("10.2.0.99")), found("eth3", 16));
        // The default link still comes first.
        assert_eq!(find_local(&s, &n, ip("192.168.1.5")), found("eth0", 24));
        // Loopback is allowed as an extra interface.
        let s = AgentSettings {
            extra_interfaces: vec!["lo".into()],
            ..Default::default()
        };
        assert_eq!(find_local(&s, &n, ip("127.0.0.9")), found("lo", 8));
    }

    #[test]
    fn regex_mode_sorted_by_name_excluding_dummy_and_loopback() {
        let n = node();
        // "eth" matches eth0, eth1, eth2; eth1 holds 10.1/16.
        assert_eq!(
            find_local(&regex_settings("eth"), &n, ip("10.1.2.3")),
            found("eth1", 16)
        );
        // Unanchored: "0" matches eth0 and kube-lb0, but the dummy is never local.
        assert_eq!(
            find_local(&regex_settings("0"), &n, ip("203.0.113.7")),
            LocalLookup::NotFound
        );
        assert_eq!(
            find_local(&regex_settings("0"), &n, ip("192.168.1.7")),
            found("eth0", 24)
        );
        // Loopback is not a regex candidate.
        assert_eq!(
            find_local(&regex_settings("lo"), &n, ip("127.0.0.5")),
            LocalLookup::NotFound
        );
        // Tentative IPv6 addresses are ignored.
        assert_eq!(
            find_local(&regex_settings("eth1"), &n, ip("fd00:2::9")),
            LocalLookup::NotFound
        );
        // Sorted by name, not by link order: both contain the address.
        let mut n = node();
        n.links.push(link("eth-a", 8, &[addr("10.1.0.1/24")]));
        assert_eq!(
            find_local(&regex_settings("^eth"), &n, ip("10.1.0.9")),
            found("eth-a", 24)
        );
        // Regex misses, then extras.
        let s = AgentSettings {
            extra_interfaces: vec!["veth9".into()],
            ..regex_settings("^eth")
        };
        assert_eq!(find_local(&s, &n, ip("172.16.0.2")), found("veth9", 30));
    }

    #[test]
    fn down_links_are_skipped() {
        let mut n = node();
        n.links[1].up = false; // eth0
        assert_eq!(
            find_local(&AgentSettings::default(), &n, ip("192.168.1.5")),
            LocalLookup::NotFound
        );
        assert_eq!(
            find_local(&regex_settings("eth"), &n, ip("192.168.1.5")),
            LocalLookup::NotFound
        );
        assert!(lease_subnets(SelectorState::Default, None, &n).is_empty());
    }

    fn strings(subnets: &[IpNet]) -> Vec<String> {
        subnets.iter().map(IpNet::to_string).collect()
    }

    #[test]
    fn subnet_advertisement() {
        let n = node();
        assert_eq!(
            strings(&lease_subnets(SelectorState::Default, None, &n)),
            ["192.168.1.0/24", "fd00:1::/64"]
        );
        assert!(lease_subnets(SelectorState::Deselected, None, &n).is_empty());
        assert!(
            lease_subnets(SelectorState::Invalid, Some(&AgentSettings::default()), &n).is_empty()
        );
        // Regex (unanchored, so veth9 too): non-loopback, not the dummy, usable addresses.
        let s = regex_settings("eth|lo|kube");
        assert_eq!(
            strings(&lease_subnets(SelectorState::Configured, Some(&s), &n)),
            [
                "10.1.0.0/16",
                "10.2.0.0/24",
                "172.16.0.0/30",
                "192.168.1.0/24",
                "fd00:1::/64"
            ]
        );
        // Extras: loopback allowed; the dummy never appears (settings drop it).
        let s = AgentSettings {
            extra_interfaces: vec!["lo".into(), "eth0".into(), "missing".into()],
            ..Default::default()
        };
        assert_eq!(
            strings(&lease_subnets(SelectorState::Configured, Some(&s), &n)),
            ["127.0.0.0/8", "192.168.1.0/24", "::1/128", "fd00:1::/64"]
        );
        // IPv4 from the IPv4 default link only, IPv6 from the IPv6 one.
        let mut n = node();
        n.default_v6 = Some(3);
        n.links[2].addresses.push(addr("fd00:3::1/64"));
        assert_eq!(
            strings(&lease_subnets(SelectorState::Default, None, &n)),
            ["192.168.1.0/24", "fd00:3::/64"]
        );
    }
}
