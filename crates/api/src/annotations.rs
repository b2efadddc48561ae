//! Service annotation keys and value codecs.
//! Keys and values are byte-for-byte PureLB's, so mixed fleets and the
//! kubectl plugin keep working.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::pool::{IpFamily, parse_ip};

/// ServiceGroup to allocate from (user-set).
pub const SERVICE_GROUP: &str = "purelb.io/service-group";
/// Specific addresses, comma-separated (user-set); see [`parse_addresses`].
pub const ADDRESSES: &str = "purelb.io/addresses";
/// Sharing key (user-set); see [`sharing_key`].
pub const ALLOW_SHARED_IP: &str = "purelb.io/allow-shared-ip";
/// Presence keeps `externalTrafficPolicy: Local` on local-pool addresses.
pub const ALLOW_LOCAL: &str = "purelb.io/allow-local";
/// Overrides the group's `multiPool`; see [`multi_pool_enabled`].
pub const MULTI_POOL: &str = "purelb.io/multi-pool";
/// One-shot reprocess trigger, deleted by the allocator when it is [`TRUE`].
pub const RE_EVALUATE: &str = "purelb.io/re-evaluate";
/// Election affinity; the only value is [`NODE_AFFINITY_SERVICE_ENDPOINTS`].
pub const NODE_AFFINITY: &str = "purelb.io/node-affinity";
/// Brand set after a successful allocation; value [`BRAND`].
pub const ALLOCATED_BY: &str = "purelb.io/allocated-by";
/// ServiceGroup name(s) the addresses came from; see [`encode_allocated_from`].
pub const ALLOCATED_FROM: &str = "purelb.io/allocated-from";
/// `local` or `remote`; informational, agents do not read it.
pub const POOL_TYPE: &str = "purelb.io/pool-type";
/// [`TRUE`] when the local group sets `skipIPv6DAD`, otherwise absent.
pub const SKIP_IPV6_DAD: &str = "purelb.io/skip-ipv6-dad";
/// Announcing node per IPv4 address; see [`Announcements`].
pub const ANNOUNCING_IPV4: &str = "purelb.io/announcing-IPv4";
/// Announcing node per IPv6 address; see [`Announcements`].
pub const ANNOUNCING_IPV6: &str = "purelb.io/announcing-IPv6";
/// Legacy announcing key, only ever deleted.
pub const LEGACY_ANNOUNCING: &str = "purelb.io/announcing";
/// Legacy announcing key, only ever deleted.
pub const LEGACY_ANNOUNCING_UNKNOWN: &str = "purelb.io/announcing-unknown";

/// Keys an agent deletes from a branded Service that is no longer a
/// LoadBalancer.
pub const NON_LOAD_BALANCER_CLEANUP: [&str; 5] = [
    ALLOCATED_BY,
    LEGACY_ANNOUNCING,
    ANNOUNCING_IPV4,
    ANNOUNCING_IPV6,
    LEGACY_ANNOUNCING_UNKNOWN,
];

/// Value of [`ALLOCATED_BY`]; also the `DEFAULT_ANNOUNCER` that makes the
/// allocator handle Services without a load balancer class.
pub const BRAND: &str = "PureLB";
/// The truthy value of [`MULTI_POOL`], [`RE_EVALUATE`] and [`SKIP_IPV6_DAD`].
pub const TRUE: &str = "true";
/// The only supported value of [`NODE_AFFINITY`].
pub const NODE_AFFINITY_SERVICE_ENDPOINTS: &str = "service-endpoints";
/// [`POOL_TYPE`] value for addresses announced on a node's own interface.
pub const POOL_TYPE_LOCAL: &str = "local";
/// [`POOL_TYPE`] value for addresses announced on the dummy interface.
pub const POOL_TYPE_REMOTE: &str = "remote";
/// `spec.loadBalancerClass` PureLB v2 handles (v1 used `purelb.io/purelb`).
pub const LOAD_BALANCER_CLASS: &str = "purelb.io/purelbv2";

/// Separator of the [`ALLOCATED_FROM`] list.
const ALLOCATED_FROM_SEPARATOR: &str = ", ";

/// Whether `key` is one of the announcing annotations (current or legacy).
/// Agents ignore Service updates that change nothing else, to avoid a write
/// storm between nodes.
pub fn is_announcing_key(key: &str) -> bool {
    key.starts_with(LEGACY_ANNOUNCING)
}

/// The announcing key for `ip`'s family (a mapped address is IPv4).
pub fn announcing_key(ip: IpAddr) -> &'static str {
    match IpFamily::of(ip) {
        IpFamily::V4 => ANNOUNCING_IPV4,
        IpFamily::V6 => ANNOUNCING_IPV6,
    }
}

/// The sharing key in [`ALLOW_SHARED_IP`]: an absent or empty value means the
/// Service does not share.
pub fn sharing_key(annotation: Option<&str>) -> Option<&str> {
    annotation.filter(|key| !key.is_empty())
}

/// Whether the election should prefer endpoint nodes: [`NODE_AFFINITY`] is
/// `service-endpoints` and the Service does not share its IP (sharing wins).
pub fn node_affinity_requested(node_affinity: Option<&str>, allow_shared_ip: Option<&str>) -> bool {
    node_affinity == Some(NODE_AFFINITY_SERVICE_ENDPOINTS) && sharing_key(allow_shared_ip).is_none()
}

/// Multi-pool for a Service: a present [`MULTI_POOL`] annotation decides both
/// ways (anything but `"true"` turns it off); absent ⇒ the group's setting.
pub fn multi_pool_enabled(annotation: Option<&str>, group_multi_pool: bool) -> bool {
    annotation.map_or(group_multi_pool, |value| value == TRUE)
}

/// An item of [`ADDRESSES`] (or `spec.loadBalancerIP`) that is not a plain IP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user-specified address: {item:?}")]
pub struct InvalidAddress {
    pub item: String,
}

/// Parses [`ADDRESSES`] strictly, as upstream's `net.ParseIP` over a comma
/// split: no whitespace trimming, no ranges, no CIDRs, no zones; an empty value
/// or an empty item is an error. Mapped addresses come back as IPv4 (Go prints
/// them that way in the ingress list). Order and duplicates are kept.
pub fn parse_addresses(value: &str) -> Result<Vec<IpAddr>, InvalidAddress> {
    value
        .split(',')
        .map(|item| {
            parse_ip(item).ok_or_else(|| InvalidAddress {
                item: item.to_owned(),
            })
        })
        .collect()
}

/// Encodes [`ALLOCATED_FROM`]: the group names in first-use order joined by
/// `", "`. A repeated name is written once, so a dual-stack request from one
/// group reads as that group's plain name (which the kubectl plugin expects).
pub fn encode_allocated_from<'a>(groups: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for group in groups {
        if !names.contains(&group) {
            names.push(group);
        }
    }
    names.join(ALLOCATED_FROM_SEPARATOR)
}

/// Splits [`ALLOCATED_FROM`] into group names, dropping empty items.
pub fn parse_allocated_from(value: &str) -> Vec<&str> {
    value
        .split(ALLOCATED_FROM_SEPARATOR)
        .filter(|name| !name.is_empty())
        .collect()
}

/// A node name or interface that cannot be written into an announcing entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSlotOwner {
    #[error("announcing node name {0:?} is empty or contains a comma or whitespace")]
    Node(String),
    #[error("announcing interface {0:?} is empty or contains whitespace")]
    Interface(String),
}

/// The owner of an IP's announcing slot: the node announcing it and the interface carrying
/// the address.
/// Validated so every value encodes to an entry that parses back to itself:
/// the node ends at the first comma, and entries are separated by whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotOwner {
    node: String,
    interface: String,
}

impl SlotOwner {
    pub fn new(
        node: impl Into<String>,
        interface: impl Into<String>,
    ) -> Result<Self, InvalidSlotOwner> {
        let (node, interface) = (node.into(), interface.into());
        if node.is_empty() || node.contains(',') || node.contains(char::is_whitespace) {
            return Err(InvalidSlotOwner::Node(node));
        }
        if interface.is_empty() || interface.contains(char::is_whitespace) {
            return Err(InvalidSlotOwner::Interface(interface));
        }
        Ok(Self { node, interface })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }
}

/// The value of an announcing annotation: one announcer per IP.
/// Held in canonical form, so equal sets encode to identical strings and an
/// unchanged reconcile can skip the API write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcements {
    slots: BTreeMap<IpAddr, SlotOwner>,
}

impl Announcements {
    /// Lenient parse: entries `node,interface,ip` separated by whitespace; the
    /// node runs to the first comma, the IP follows the last, the interface is
    /// everything between (Linux allows commas in interface names). Entries
    /// with fewer than two commas, an empty node or interface, or an IP that
    /// does not parse (zoned included) are dropped, because a malformed
    /// annotation must not stall reconciliation. Mapped IPs are unmapped. Of
    /// several entries for one IP, the least by (node, interface) is kept.
    pub fn parse(value: &str) -> Self {
        let mut parsed = Self::default();
        for entry in value.split_whitespace() {
            let Some((node, rest)) = entry.split_once(',') else {
                continue;
            };
            let Some((interface, ip)) = rest.rsplit_once(',') else {
                continue;
            };
            let (Some(ip), Ok(announcer)) = (parse_ip(ip), SlotOwner::new(node, interface)) else {
                continue;
            };
            match parsed.slots.get(&ip) {
                Some(kept) if *kept <= announcer => {}
                _ => {
                    parsed.slots.insert(ip, announcer);
                }
            }
        }
        parsed
    }

    /// Canonical form: entries sorted by IP, one per IP, single spaces.
    /// `None` means the set is empty and the key must be deleted (an empty
    /// value is never stored).
    pub fn encode(&self) -> Option<String> {
        if self.slots.is_empty() {
            return None;
        }
        let entries: Vec<String> = self
            .slots
            .iter()
            .map(|(ip, a)| format!("{},{},{ip}", a.node, a.interface))
            .collect();
        Some(entries.join(" "))
    }

    /// The announcer recorded for `ip`.
    pub fn announcer(&self, ip: IpAddr) -> Option<&SlotOwner> {
        self.slots.get(&ip.to_canonical())
    }

    /// Slots in IP order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &SlotOwner)> {
        self.slots.iter().map(|(ip, a)| (*ip, a))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A node that won the election for `ip` takes its slot, and slots whose IP
    /// of `ip`'s family is no longer in the Service's `ingress` list are swept.
    /// Slots for other live IPs are never touched, so nodes winning different
    /// IPs do not contend. Returns the node the slot is taken from, if it was
    /// another one (the `AnnounceSlotSteal` event and metric).
    pub fn claim(
        &mut self,
        ip: IpAddr,
        announcer: SlotOwner,
        ingress: &[IpAddr],
    ) -> Option<String> {
        let ip = ip.to_canonical();
        let family = IpFamily::of(ip);
        let live: Vec<IpAddr> = ingress
            .iter()
            .map(|i| i.to_canonical())
            .filter(|i| IpFamily::of(*i) == family)
            .collect();
        let previous = self.slots.insert(ip, announcer.clone());
        self.slots
            .retain(|slot_ip, _| *slot_ip == ip || live.contains(slot_ip));
        previous
            .filter(|previous| previous.node != announcer.node)
            .map(|previous| previous.node)
    }

    /// Removes `node`'s own slot for `ip` (it stopped announcing for a stable
    /// reason); another node's slot is left alone. Returns whether it changed.
    pub fn release(&mut self, node: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.slots.get(&ip).is_some_and(|a| a.node == node) {
            self.slots.remove(&ip);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn announcer(node: &str, interface: &str) -> SlotOwner {
        SlotOwner::new(node, interface).unwrap()
    }

    #[test]
    fn keys_and_values() {
        assert_eq!(announcing_key(ip("10.0.0.1")), "purelb.io/announcing-IPv4");
        assert_eq!(
            announcing_key(ip("::ffff:10.0.0.1")),
            "purelb.io/announcing-IPv4"
        );
        assert_eq!(announcing_key(ip("fd00::1")), "purelb.io/announcing-IPv6");
        for key in [
            ANNOUNCING_IPV4,
            ANNOUNCING_IPV6,
            LEGACY_ANNOUNCING,
            LEGACY_ANNOUNCING_UNKNOWN,
        ] {
            assert!(is_announcing_key(key));
        }
        assert!(!is_announcing_key(ALLOCATED_BY));
        assert_eq!(BRAND, "PureLB");
        assert_eq!(LOAD_BALANCER_CLASS, "purelb.io/purelbv2");
    }

    #[test]
    fn multi_pool_override() {
        assert!(multi_pool_enabled(Some("true"), false));
        assert!(!multi_pool_enabled(Some("false"), true));
        assert!(!multi_pool_enabled(Some("True"), true));
        assert!(!multi_pool_enabled(Some(""), true));
        assert!(multi_pool_enabled(None, true));
        assert!(!multi_pool_enabled(None, false));
    }

    #[test]
    fn sharing_and_affinity() {
        assert_eq!(sharing_key(Some("k")), Some("k"));
        assert_eq!(sharing_key(Some("")), None);
        assert_eq!(sharing_key(None), None);
        assert!(node_affinity_requested(Some("service-endpoints"), None));
        assert!(node_affinity_requested(Some("service-endpoints"), Some("")));
        assert!(!node_affinity_requested(
            Some("service-endpoints"),
            Some("k")
        ));
        assert!(!node_affinity_requested(Some("zone"), None));
        assert!(!node_affinity_requested(None, None));
    }

    #[test]
    fn addresses_parse_strictly() {
        assert_eq!(parse_addresses("10.0.0.1"), Ok(vec![ip("10.0.0.1")]));
        assert_eq!(
            parse_addresses("10.0.0.1,fd00::1"),
            Ok(vec![ip("10.0.0.1"), ip("fd00::1")])
        );
        assert_eq!(parse_addresses("::ffff:10.0.0.1"), Ok(vec![ip("10.0.0.1")]));
        assert_eq!(
            parse_addresses("10.0.0.1,10.0.0.1"),
            Ok(vec![ip("10.0.0.1"), ip("10.0.0.1")])
        );
        for (value, bad) in [
            ("", ""),
            ("10.0.0.1, fd00::1", " fd00::1"),
            (" 10.0.0.1", " 10.0.0.1"),
            ("10.0.0.1,", ""),
            (",10.0.0.1", ""),
            ("10.0.0.1-10.0.0.5", "10.0.0.1-10.0.0.5"),
            ("10.0.0.0/24", "10.0.0.0/24"),
            ("fe80::1%eth0", "fe80::1%eth0"),
            ("010.0.0.1", "010.0.0.1"),
            ("10.0.0.1;10.0.0.2", "10.0.0.1;10.0.0.2"),
        ] {
            assert_eq!(
                parse_addresses(value),
                Err(InvalidAddress { item: bad.into() }),
                "{value:?}"
            );
        }
        assert_eq!(
            parse_addresses("x").unwrap_err().to_string(),
            "invalid user-specified address: \"x\""
        );
    }

    #[test]
    fn allocated_from() {
        assert_eq!(encode_allocated_from(["a"]), "a");
        assert_eq!(encode_allocated_from(["a", "b"]), "a, b");
        assert_eq!(encode_allocated_from(["a", "a"]), "a");
        assert_eq!(encode_allocated_from(["b", "a", "b"]), "b, a");
        assert_eq!(encode_allocated_from([]), "");
        assert_eq!(parse_allocated_from("a, b"), vec!["a", "b"]);
        assert_eq!(parse_allocated_from("default"), vec!["default"]);
        assert!(parse_allocated_from("").is_empty());
    }

    #[test]
    fn announcer_validation() {
        assert!(SlotOwner::new("node-a", "eth0,1").is_ok());
        assert_eq!(
            SlotOwner::new("", "eth0"),
            Err(InvalidSlotOwner::Node(String::new()))
        );
        assert!(SlotOwner::new("a,b", "eth0").is_err());
        assert!(SlotOwner::new("a b", "eth0").is_err());
        assert!(SlotOwner::new("a", "").is_err());
        assert!(SlotOwner::new("a", "eth\t0").is_err());
        assert!(SlotOwner::new("a", "eth\u{a0}0").is_err());
    }

    #[test]
    fn parse_splits_on_first_and_last_comma() {
        let a = Announcements::parse("node-a,eth0,1,192.0.2.10");
        let slot = a.announcer(ip("192.0.2.10")).unwrap();
        assert_eq!((slot.node(), slot.interface()), ("node-a", "eth0,1"));
        assert_eq!(a.encode().as_deref(), Some("node-a,eth0,1,192.0.2.10"));

        let a = Announcements::parse("node-a,,,192.0.2.10");
        assert_eq!(a.announcer(ip("192.0.2.10")).unwrap().interface(), ",");
    }

    #[test]
    fn parse_drops_malformed_entries() {
        for value in [
            "",
            "   ",
            "kube-lb0",
            "node-a,eth0",
            "node-a,192.0.2.1",
            ",eth0,192.0.2.1",
            "node-a,,192.0.2.1",
            "node-a,eth0,",
            "node-a,eth0,not-an-ip",
            "node-a,eth0,fe80::1%eth0",
            "node-a,eth0,192.0.2.0/24",
            "node-a,eth0, 192.0.2.1",
        ] {
            assert!(Announcements::parse(value).is_empty(), "{value:?}");
            assert_eq!(Announcements::parse(value).encode(), None);
        }
        let mixed = Announcements::parse("junk node-b,eth1,192.0.2.2\n\tnode-a,eth0");
        assert_eq!(mixed.encode().as_deref(), Some("node-b,eth1,192.0.2.2"));
    }

    #[test]
    fn encode_is_canonical() {
        let a = Announcements::parse(
            "  node-z,eth0,192.0.2.20   node-b,eth1,::ffff:192.0.2.3 node-a,eth9,192.0.2.20 fd00::1,x,y node-c,eth0,fd00::1 ",
        );
        assert_eq!(
            a.encode().as_deref(),
            Some("node-b,eth1,192.0.2.3 node-a,eth9,192.0.2.20 node-c,eth0,fd00::1")
        );
        // Same IP and node: the lesser interface wins.
        let a = Announcements::parse("n,eth1,192.0.2.1 n,eth0,192.0.2.1");
        assert_eq!(a.encode().as_deref(), Some("n,eth0,192.0.2.1"));
        assert_eq!(a.len(), 1);
        // IPs sort numerically, not as strings.
        let a = Announcements::parse("n,e,192.0.2.10 n,e,192.0.2.9");
        assert_eq!(a.encode().as_deref(), Some("n,e,192.0.2.9 n,e,192.0.2.10"));
        let ips: Vec<IpAddr> = a.iter().map(|(ip, _)| ip).collect();
        assert_eq!(ips, vec![ip("192.0.2.9"), ip("192.0.2.10")]);
    }

    #[test]
    fn claim_takes_slot_and_reports_the_previous_holder() {
        let ingress = [ip("192.0.2.1"), ip("192.0.2.2"), ip("fd00::1")];
        let mut a = Announcements::parse("node-b,eth0,192.0.2.1 node-c,eth0,192.0.2.2");
        let stolen = a.claim(ip("192.0.2.1"), announcer("node-a", "eth1"), &ingress);
        assert_eq!(stolen.as_deref(), Some("node-b"));
        assert_eq!(
            a.encode().as_deref(),
            Some("node-a,eth1,192.0.2.1 node-c,eth0,192.0.2.2")
        );
        // Re-claiming its own slot (even on another interface) is no steal.
        assert_eq!(
            a.claim(ip("192.0.2.1"), announcer("node-a", "eth2"), &ingress),
            None
        );
        assert_eq!(
            a.encode().as_deref(),
            Some("node-a,eth2,192.0.2.1 node-c,eth0,192.0.2.2")
        );
        // A fresh slot is no steal either.
        let mut empty = Announcements::default();
        assert_eq!(
            empty.claim(ip("192.0.2.2"), announcer("n", "e"), &ingress),
            None
        );
        assert_eq!(empty.encode().as_deref(), Some("n,e,192.0.2.2"));
    }

    #[test]
    fn claim_sweeps_departed_ips_of_the_same_family_only() {
        let mut a =
            Announcements::parse("node-b,eth0,192.0.2.1 node-c,eth0,192.0.2.9 node-d,eth0,fd00::9");
        // 192.0.2.9 left the Service; an IPv6 slot in the IPv4 key is swept too.
        let ingress = [ip("192.0.2.1"), ip("192.0.2.2")];
        assert_eq!(
            a.claim(ip("192.0.2.2"), announcer("node-a", "eth0"), &ingress),
            None
        );
        assert_eq!(
            a.encode().as_deref(),
            Some("node-b,eth0,192.0.2.1 node-a,eth0,192.0.2.2")
        );
        // Mapped ingress entries count as IPv4.
        let mut a = Announcements::parse("node-b,eth0,192.0.2.1");
        a.claim(
            ip("192.0.2.2"),
            announcer("node-a", "eth0"),
            &[ip("::ffff:192.0.2.1"), ip("192.0.2.2")],
        );
        assert_eq!(a.len(), 2);
        // The claimed IP is written even if the ingress list lags behind.
        let mut a = Announcements::parse("node-b,eth0,fd00::5");
        let stolen = a.claim(ip("fd00::5"), announcer("node-a", "eth0"), &[]);
        assert_eq!(stolen.as_deref(), Some("node-b"));
        assert_eq!(a.encode().as_deref(), Some("node-a,eth0,fd00::5"));
    }

    #[test]
    fn release_only_removes_own_slot() {
        let mut a = Announcements::parse("node-a,eth0,192.0.2.1 node-b,eth0,192.0.2.2");
        assert!(!a.release("node-a", ip("192.0.2.2")));
        assert!(!a.release("node-a", ip("192.0.2.3")));
        assert!(a.release("node-a", ip("::ffff:192.0.2.1")));
        assert_eq!(a.encode().as_deref(), Some("node-b,eth0,192.0.2.2"));
        assert!(a.release("node-b", ip("192.0.2.2")));
        assert_eq!(a.encode(), None);
    }
}
