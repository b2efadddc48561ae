//! Address pools: the `pool`/`subnet`/`aggregation` strings of a ServiceGroup
//! `AddressPool`, and networks ([`IpNet`], the prefix type every PureLB crate uses) as Go
//! reads them, shared with the election and the Lease contract.
//!
//! IPv4-mapped addresses (`::ffff:a.b.c.d`) count as IPv4 and come out
//! unmapped, as with Go's `net.IP`, so Go and Rust agents agree on them.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use std::str::FromStr;

pub use ipnet::IpNet;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The family of `ip` after unmapping an IPv4-mapped IPv6 address.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Address width in bits: the longest valid prefix length.
    pub fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// `"IPv4"`/`"IPv6"`, the suffix of the announcing annotation keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a CIDR string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}")]
    Invalid(String),
    #[error("prefix length /{prefix_len} is longer than {family} allows")]
    PrefixTooLong { prefix_len: u8, family: IpFamily },
}

/// A network as Go's `net.IPNet` reads it, on the shared prefix type [`IpNet`].
pub trait Network {
    /// The family of the network address.
    fn family(&self) -> IpFamily;
    /// The highest address in the network (the IPv4 broadcast address).
    fn last(&self) -> IpAddr;
    /// Whether `ip` (unmapped first) lies in this network; never across families.
    fn holds(&self, ip: IpAddr) -> bool;
}

impl Network for IpNet {
    fn family(&self) -> IpFamily {
        IpFamily::of(self.network())
    }

    fn last(&self) -> IpAddr {
        self.broadcast()
    }

    fn holds(&self, ip: IpAddr) -> bool {
        self.contains(&ip.to_canonical())
    }
}

/// The network of `addr` with `prefix_len` bits (host bits cleared). The length counts in
/// `addr`'s own width, as in Go: an IPv6 network that comes out IPv4-mapped
/// (`::ffff:1.2.3.0/120`) is that IPv4 network (`1.2.3.0/24`), which is how Go's `net.IPNet`
/// treats it. Displays like Go's `net.IPNet`: `192.168.1.0/24`, `fd53:9ef0:8683::/120`.
pub fn network_of(addr: IpAddr, prefix_len: u8) -> Result<IpNet, CidrError> {
    let family = match addr {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    };
    let too_long = CidrError::PrefixTooLong { prefix_len, family };
    let network = IpNet::new(addr, prefix_len)
        .map_err(|_| too_long.clone())?
        .trunc();
    let unmapped = network.network().to_canonical();
    if unmapped == network.network() {
        return Ok(network);
    }
    IpNet::new(unmapped, prefix_len.saturating_sub(96)).map_err(|_| too_long)
}

/// Parses `addr/len` like Go's `net.ParseCIDR`: no whitespace, no zone, decimal length
/// (leading zeros allowed); host bits are cleared, so `192.168.1.5/24` is `192.168.1.0/24`
/// (see [`network_of`] for mapped ones).
pub fn parse_cidr(s: &str) -> Result<IpNet, CidrError> {
    let (addr, prefix_len) = parse_cidr_parts(s)?;
    network_of(addr, prefix_len).map_err(|_| CidrError::Invalid(s.to_owned()))
}

/// Why a pool, range or aggregation string was rejected. Messages follow
/// upstream's where it has one, because they surface in `ParseFailed` events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("invalid IP range {range:?}: invalid start IP {start:?}")]
    InvalidStart { range: String, start: String },
    #[error("invalid IP range {range:?}: invalid end IP {end:?}")]
    InvalidEnd { range: String, end: String },
    #[error("invalid IP range {range:?}: start and end are of different families")]
    MixedFamilies { range: String },
    #[error("invalid IP range {range:?}: start is after end")]
    Reversed { range: String },
    #[error("{} range {range} not contained by network {subnet}", upper_family(.range))]
    NotContained { range: AddressRange, subnet: IpNet },
    #[error("invalid aggregation {0:?}: want \"default\" or \"/N\"")]
    InvalidAggregation(String),
    #[error("aggregation {aggregation:?} is longer than {family} allows")]
    AggregationTooLong {
        aggregation: String,
        family: IpFamily,
    },
}

/// Upstream's spelling in the "not contained" message.
fn upper_family(range: &AddressRange) -> &'static str {
    match range.family() {
        IpFamily::V4 => "IPV4",
        IpFamily::V6 => "IPV6",
    }
}

/// An inclusive range of addresses, `first <= last`, both ends of one family.
/// Like upstream's `IPRange`, it orders addresses in IPv6 space with IPv4
/// mapped (`::ffff:a.b.c.d`), so the few IPv6 ranges that span the mapped block
/// (`::/0`, `::/64`, …) also hold those IPv4 addresses; `nth` returns every
/// address in canonical (unmapped) form. Displays like upstream's
/// `IPRange.String()`: `(192.168.1.240 - 192.168.1.247)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

impl AddressRange {
    /// The range `first..=last`; same family once unmapped, not reversed.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<Self, PoolError> {
        let (first, last) = (first.to_canonical(), last.to_canonical());
        let range = || format!("{first}-{last}");
        if IpFamily::of(first) != IpFamily::of(last) {
            return Err(PoolError::MixedFamilies { range: range() });
        }
        if to_v6_bits(first) > to_v6_bits(last) {
            return Err(PoolError::Reversed { range: range() });
        }
        Ok(Self { first, last })
    }

    /// Parses a `pool` string: `a-b` if it contains any `-` (whitespace around
    /// each end trimmed), otherwise `addr/len`. The CIDR form runs from the
    /// written address to the end of its network, as upstream does: `/29`
    /// includes network and broadcast, and `192.168.1.5/24` starts at `.5`.
    pub fn parse(s: &str) -> Result<Self, PoolError> {
        if let Some((start, end)) = s.split_once('-') {
            let first = parse_ip(start.trim()).ok_or_else(|| PoolError::InvalidStart {
                range: s.to_owned(),
                start: start.to_owned(),
            })?;
            let last = parse_ip(end.trim()).ok_or_else(|| PoolError::InvalidEnd {
                range: s.to_owned(),
                end: end.to_owned(),
            })?;
            let family_or_order = |err: PoolError| match err {
                PoolError::MixedFamilies { .. } => PoolError::MixedFamilies {
                    range: s.to_owned(),
                },
                _ => PoolError::Reversed {
                    range: s.to_owned(),
                },
            };
            return Self::new(first, last).map_err(family_or_order);
        }
        let (addr, prefix_len) = parse_cidr_parts(s)?;
        let network = network_of(addr, prefix_len).map_err(|_| CidrError::Invalid(s.to_owned()))?;
        // The ends differ in family only if one is IPv4-mapped: a mapped address
        // under a short prefix (`::ffff:1.2.3.4/64`), or a network ending in the
        // mapped block (`::/80`). Go fails such pools too, at the subnet check.
        Self::new(addr, network.last()).map_err(|_| PoolError::MixedFamilies {
            range: s.to_owned(),
        })
    }

    pub fn first(&self) -> IpAddr {
        self.first
    }

    pub fn last(&self) -> IpAddr {
        self.last
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.first)
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether both ends lie in `network`.
    pub fn is_within(&self, network: &IpNet) -> bool {
        network.holds(self.first) && network.holds(self.last)
    }

    /// The offset of the last address: exact for every range, including `::/0`.
    pub fn max_offset(&self) -> u128 {
        to_v6_bits(self.last).saturating_sub(to_v6_bits(self.first))
    }

    /// Number of addresses, saturating at `u128::MAX`: only a range spanning
    /// all of IPv6 (2^128 addresses) saturates; use `max_offset` to be exact.
    pub fn size(&self) -> u128 {
        self.max_offset().saturating_add(1)
    }

    /// The address `offset` places after `first` (unmapped), if still in the range.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        if offset > self.max_offset() {
            return None;
        }
        let bits = to_v6_bits(self.first).checked_add(offset)?;
        Some(IpAddr::V6(Ipv6Addr::from(bits)).to_canonical())
    }

    /// The inverse of `nth`: how far `ip` is from `first`.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let bits = to_v6_bits(ip);
        if bits < to_v6_bits(self.first) || bits > to_v6_bits(self.last) {
            return None;
        }
        bits.checked_sub(to_v6_bits(self.first))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({} - {})", self.first, self.last)
    }
}

/// One parsed ServiceGroup `AddressPool`: its addresses, the subnet that must
/// contain them, the aggregation, and the strings as written (status echoes
/// `pool`; multi-pool matches `subnet` against lease subnets as exact strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRange {
    addresses: AddressRange,
    subnet: IpNet,
    pool_spec: String,
    subnet_spec: String,
    aggregation: String,
}

impl PoolRange {
    /// Parses and checks one `AddressPool`. The aggregation is only checked by
    /// `announce_prefix_len`: upstream accepts any value here and fails at
    /// announce time, and local pools never use it.
    pub fn parse(pool: &str, subnet: &str, aggregation: Option<&str>) -> Result<Self, PoolError> {
        let addresses = AddressRange::parse(pool)?;
        let subnet_cidr = parse_cidr(subnet)?;
        if !addresses.is_within(&subnet_cidr) {
            return Err(PoolError::NotContained {
                range: addresses,
                subnet: subnet_cidr,
            });
        }
        Ok(Self {
            addresses,
            subnet: subnet_cidr,
            pool_spec: pool.to_owned(),
            subnet_spec: subnet.to_owned(),
            aggregation: aggregation.unwrap_or_default().to_owned(),
        })
    }

    pub fn addresses(&self) -> &AddressRange {
        &self.addresses
    }

    pub fn subnet(&self) -> &IpNet {
        &self.subnet
    }

    /// The `pool` string exactly as written.
    pub fn pool_spec(&self) -> &str {
        &self.pool_spec
    }

    /// The `subnet` string exactly as written.
    pub fn subnet_spec(&self) -> &str {
        &self.subnet_spec
    }

    pub fn family(&self) -> IpFamily {
        self.addresses.family()
    }

    /// Whether `ip` (unmapped first) is one of the pool's addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.contains(ip)
    }

    /// Prefix length for a remote announcement on the dummy interface:
    /// `default`/empty ⇒ the subnet's, `/N` ⇒ N (at most 32 for IPv4, 128 for
    /// IPv6; the CRD pattern admits `/8`..`/128` for either family).
    pub fn announce_prefix_len(&self) -> Result<u8, PoolError> {
        let aggregation = self.aggregation.as_str();
        if aggregation.is_empty() || aggregation == "default" {
            return Ok(self.subnet.prefix_len());
        }
        let family = self.subnet.family();
        let digits = aggregation
            .strip_prefix('/')
            .ok_or_else(|| PoolError::InvalidAggregation(aggregation.to_owned()))?;
        parse_prefix_len(digits, u8::MAX)
            .ok_or_else(|| PoolError::InvalidAggregation(aggregation.to_owned()))
            .and_then(|len| {
                if len <= family.bits() {
                    Ok(len)
                } else {
                    Err(PoolError::AggregationTooLong {
                        aggregation: aggregation.to_owned(),
                        family,
                    })
                }
            })
    }
}

/// A plain address as Go's `net.ParseIP` takes it (no zone, no whitespace),
/// unmapped.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    IpAddr::from_str(s).ok().map(|ip| ip.to_canonical())
}

/// Splits `addr/len` the way Go's `net.ParseCIDR` does; the address is
/// returned as written, and the length is checked against its own width.
fn parse_cidr_parts(s: &str) -> Result<(IpAddr, u8), CidrError> {
    let invalid = || CidrError::Invalid(s.to_owned());
    let (addr, len) = s.split_once('/').ok_or_else(invalid)?;
    let addr = IpAddr::from_str(addr).map_err(|_| invalid())?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = parse_prefix_len(len, width).ok_or_else(invalid)?;
    Ok((addr, prefix_len))
}

/// A non-empty run of ASCII digits no greater than `max`. Unlike `u8::from_str`
/// this refuses a leading `+`, matching Go.
fn parse_prefix_len(digits: &str, max: u8) -> Option<u8> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: u16 = 0;
    for b in digits.bytes() {
        value = value * 10 + u16::from(b - b'0');
        if value > u16::from(max) {
            return None;
        }
    }
    u8::try_from(value).ok()
}

/// `ip` as a 128-bit number with IPv4 mapped, the order upstream ranges use.
fn to_v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> IpNet {
        parse_cidr(s).unwrap()
    }

    fn range(s: &str) -> AddressRange {
        AddressRange::parse(s).unwrap()
    }

    #[test]
    fn cidr_formats_like_go() {
        assert_eq!(cidr("192.168.1.0/24").to_string(), "192.168.1.0/24");
        assert_eq!(cidr("192.168.1.77/24").to_string(), "192.168.1.0/24");
        assert_eq!(
            cidr("fd53:9ef0:8683:0:0::5/120").to_string(),
            "fd53:9ef0:8683::/120"
        );
        assert_eq!(cidr("FD00::1/64").to_string(), "fd00::/64");
        assert_eq!(cidr("10.0.0.0/024").to_string(), "10.0.0.0/24");
        assert_eq!(cidr("1.2.3.4/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("1.2.3.4/32").to_string(), "1.2.3.4/32");
        assert_eq!(cidr("::1/128").to_string(), "::1/128");
        assert_eq!(cidr("::/0").to_string(), "::/0");
    }

    #[test]
    fn cidr_rejects_malformed() {
        for bad in [
            "",
            "/",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/ 8",
            "10.0.0.0/99999999999999999999999",
            "::/129",
            "fe80::%eth0/64",
            "fe80::1%eth0/64",
            "010.0.0.0/8",
            "10.0.0/8",
            "10.0.0.0-10.0.0.5/8",
        ] {
            assert!(
                matches!(parse_cidr(bad), Err(CidrError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mapped_networks_follow_go() {
        // Go's net.ParseCIDR gives 1.2.3.0/24 here, and it contains 1.2.3.x.
        let mapped = cidr("::ffff:1.2.3.0/120");
        assert_eq!(mapped.to_string(), "1.2.3.0/24");
        assert!(mapped.holds(ip("1.2.3.77")));
        assert_eq!(cidr("::ffff:0:0/96").to_string(), "0.0.0.0/0");
        // A shorter prefix masks the mapping away and leaves an IPv6 network.
        assert_eq!(cidr("::ffff:1.2.3.0/64").to_string(), "::/64");
        assert!(!cidr("::ffff:1.2.3.0/64").holds(ip("1.2.3.0")));
        assert_eq!(cidr("::ffff:1.2.3.0/95").to_string(), "::fffe:0:0/95");

        let r = range("::ffff:1.2.3.0/120");
        assert_eq!((r.first(), r.last()), (ip("1.2.3.0"), ip("1.2.3.255")));
        assert_eq!(
            AddressRange::parse("::ffff:1.2.3.4/64"),
            Err(PoolError::MixedFamilies {
                range: "::ffff:1.2.3.4/64".into()
            })
        );
    }

    #[test]
    fn cidr_new_clears_host_bits() {
        assert_eq!(
            network_of(ip("10.1.2.3"), 8).unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            network_of(ip("::ffff:10.1.2.3"), 104).unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            network_of(ip("::ffff:10.1.2.3"), 8).unwrap().to_string(),
            "::/8"
        );
        assert_eq!(
            network_of(ip("10.0.0.1"), 33),
            Err(CidrError::PrefixTooLong {
                prefix_len: 33,
                family: IpFamily::V4
            })
        );
        assert!(network_of(ip("::1"), 129).is_err());
        assert_eq!(network_of(ip("::1"), 128).unwrap().to_string(), "::1/128");
    }

    #[test]
    fn cidr_contains() {
        let net = cidr("192.168.1.0/24");
        assert!(net.holds(ip("192.168.1.0")));
        assert!(net.holds(ip("192.168.1.255")));
        assert!(net.holds(ip("::ffff:192.168.1.9")));
        assert!(!net.holds(ip("192.168.2.0")));
        assert!(!net.holds(ip("::")));

        let all4 = cidr("0.0.0.0/0");
        assert!(all4.holds(ip("255.255.255.255")));
        assert!(!all4.holds(ip("::1")));

        let all6 = cidr("::/0");
        assert!(all6.holds(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        // Go turns a mapped address into IPv4 first, so no IPv6 network has it.
        assert!(!all6.holds(ip("::ffff:1.2.3.4")));

        let host = cidr("fd00::5/128");
        assert!(host.holds(ip("fd00::5")));
        assert!(!host.holds(ip("fd00::4")));
        assert_eq!(host.last(), ip("fd00::5"));
        assert_eq!(cidr("10.0.0.0/8").last(), ip("10.255.255.255"));
        assert_eq!(cidr("0.0.0.0/0").last(), ip("255.255.255.255"));
        assert_eq!(
            cidr("::/0").last(),
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
    }

    #[test]
    fn cidr_pool_includes_network_and_broadcast() {
        let r = range("192.168.1.240/29");
        assert_eq!(r.first(), ip("192.168.1.240"));
        assert_eq!(r.last(), ip("192.168.1.247"));
        assert_eq!(r.size(), 8);
        assert_eq!(r.to_string(), "(192.168.1.240 - 192.168.1.247)");
    }

    #[test]
    fn cidr_pool_with_host_bits_starts_at_written_address() {
        let r = range("192.168.1.5/24");
        assert_eq!(r.first(), ip("192.168.1.5"));
        assert_eq!(r.last(), ip("192.168.1.255"));
        assert_eq!(r.size(), 251);
    }

    #[test]
    fn range_form_trims_and_accepts_both_families() {
        let r = range(" 192.168.1.10 - 192.168.1.20 ");
        assert_eq!(
            (r.first(), r.last()),
            (ip("192.168.1.10"), ip("192.168.1.20"))
        );
        assert_eq!(r.size(), 11);

        let r6 = range("fd00::1-fd00::ff");
        assert_eq!(r6.family(), IpFamily::V6);
        assert_eq!(r6.size(), 255);

        let single = range("10.0.0.7-10.0.0.7");
        assert_eq!(single.size(), 1);
        assert_eq!(single.max_offset(), 0);

        let mapped = range("::ffff:10.0.0.1-::ffff:10.0.0.3");
        assert_eq!(mapped.family(), IpFamily::V4);
        assert_eq!(mapped.first(), ip("10.0.0.1"));
    }

    #[test]
    fn range_form_errors() {
        assert_eq!(
            AddressRange::parse("10.0.0.9-10.0.0.1"),
            Err(PoolError::Reversed {
                range: "10.0.0.9-10.0.0.1".into()
            })
        );
        assert_eq!(
            AddressRange::parse("10.0.0.1-fd00::1"),
            Err(PoolError::MixedFamilies {
                range: "10.0.0.1-fd00::1".into()
            })
        );
        assert_eq!(
            AddressRange::parse("x -10.0.0.1"),
            Err(PoolError::InvalidStart {
                range: "x -10.0.0.1".into(),
                start: "x ".into()
            })
        );
        assert!(matches!(
            AddressRange::parse("10.0.0.1-10.0.0.2-10.0.0.3"),
            Err(PoolError::InvalidEnd { .. })
        ));
        for bad in [
            "-",
            "10.0.0.1-",
            "-10.0.0.1",
            "fe80::1%eth0-fe80::2",
            "10.0.0.0/8-10.0.0.9",
        ] {
            assert!(AddressRange::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "10.0.0.1", "10.0.0.0/33", "garbage"] {
            assert!(
                matches!(AddressRange::parse(bad), Err(PoolError::Cidr(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            AddressRange::parse("x-y").unwrap_err().to_string(),
            "invalid IP range \"x-y\": invalid start IP \"x\""
        );
    }

    #[test]
    fn sizes_do_not_overflow() {
        assert_eq!(range("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(range("fd00::/64").size(), 1 << 64);
        assert_eq!(range("::/1").size(), 1 << 127);
        let all = range("::/0");
        assert_eq!(all.max_offset(), u128::MAX);
        assert_eq!(all.size(), u128::MAX);
        assert_eq!(range("255.255.255.255/32").size(), 1);
        assert_eq!(
            range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128").size(),
            1
        );
    }

    #[test]
    fn nth_and_offset_of_at_the_edges() {
        let all = range("::/0");
        assert_eq!(
            all.nth(u128::MAX),
            Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(
            all.offset_of(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(u128::MAX)
        );
        // As upstream: a range spanning the mapped block holds IPv4 addresses.
        assert_eq!(all.offset_of(ip("1.2.3.4")), Some(0xffff_0102_0304));
        assert_eq!(all.offset_of(ip("::ffff:1.2.3.4")), Some(0xffff_0102_0304));
        assert_eq!(all.nth(0xffff_0102_0304), Some(ip("1.2.3.4")));
        assert_eq!(all.family(), IpFamily::V6);
        assert!(!range("fd00::/64").contains(ip("1.2.3.4")));
        assert!(!range("1.2.3.0/24").contains(ip("fd00::1")));
        assert!(!range("0.0.0.0/0").contains(ip("::1")));
        assert_eq!(
            AddressRange::parse("::/80"),
            Err(PoolError::MixedFamilies {
                range: "::/80".into()
            })
        );

        let top = range("255.255.255.250-255.255.255.255");
        assert_eq!(top.nth(5), Some(ip("255.255.255.255")));
        assert_eq!(top.nth(6), None);
        assert_eq!(top.nth(u128::MAX), None);
        assert_eq!(top.offset_of(ip("255.255.255.250")), Some(0));
        assert_eq!(top.offset_of(ip("::ffff:255.255.255.251")), Some(1));
        assert_eq!(top.offset_of(ip("255.255.255.249")), None);
        assert!(top.contains(ip("255.255.255.252")));

        let v6 = range("fd00::fffe-fd00::1:1");
        assert_eq!(v6.nth(2), Some(ip("fd00::1:0")));
        assert_eq!(v6.offset_of(ip("fd00::1:1")), Some(3));
    }

    #[test]
    fn pool_range_checks_containment() {
        let p = PoolRange::parse("192.168.1.240/29", "192.168.1.0/24", None).unwrap();
        assert_eq!(p.pool_spec(), "192.168.1.240/29");
        assert_eq!(p.subnet_spec(), "192.168.1.0/24");
        assert_eq!(p.subnet().to_string(), "192.168.1.0/24");
        assert!(p.contains(ip("192.168.1.244")));
        assert!(!p.contains(ip("192.168.1.248")));

        let err =
            PoolRange::parse("192.168.1.250-192.168.2.5", "192.168.1.0/24", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "IPV4 range (192.168.1.250 - 192.168.2.5) not contained by network 192.168.1.0/24"
        );
        let err = PoolRange::parse("fd00::/120", "fd01::/64", None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("IPV6 range (fd00:: - fd00::ff)"),
            "{err}"
        );
        assert!(PoolRange::parse("fd00::/120", "10.0.0.0/8", None).is_err());
        assert!(PoolRange::parse("10.0.0.0/8", "::/0", None).is_err());
        assert!(PoolRange::parse("10.0.0.0/8", "", None).is_err());
        assert!(PoolRange::parse("10.0.0.0/8", "0.0.0.0/0", None).is_ok());
        assert!(PoolRange::parse("::/0", "::/0", None).is_ok());
    }

    #[test]
    fn pool_subnet_with_host_bits_is_masked_but_spelling_kept() {
        let p = PoolRange::parse("192.168.1.10-192.168.1.20", "192.168.1.5/24", None).unwrap();
        assert_eq!(p.subnet().to_string(), "192.168.1.0/24");
        assert_eq!(p.subnet_spec(), "192.168.1.5/24");
    }

    #[test]
    fn aggregation() {
        let agg = |pool: &str, subnet: &str, a: Option<&str>| {
            PoolRange::parse(pool, subnet, a)
                .unwrap()
                .announce_prefix_len()
        };
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", None), Ok(24));
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", Some("")), Ok(24));
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", Some("default")), Ok(24));
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", Some("/32")), Ok(32));
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", Some("/8")), Ok(8));
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", Some("/0")), Ok(0));
        assert_eq!(agg("10.0.0.0/29", "10.0.0.0/24", Some("/016")), Ok(16));
        assert_eq!(agg("fd00::/120", "fd00::/64", Some("/128")), Ok(128));
        assert_eq!(agg("fd00::/120", "fd00::/64", None), Ok(64));
        assert_eq!(
            agg("10.0.0.0/29", "10.0.0.0/24", Some("/33")),
            Err(PoolError::AggregationTooLong {
                aggregation: "/33".into(),
                family: IpFamily::V4
            })
        );
        assert!(matches!(
            agg("fd00::/120", "fd00::/64", Some("/129")),
            Err(PoolError::AggregationTooLong { .. })
        ));
        for bad in [
            "24",
            "/",
            "/+8",
            "/ 8",
            "/8 ",
            "Default",
            "/99999999999",
            "/-1",
        ] {
            assert!(
                matches!(
                    agg("10.0.0.0/29", "10.0.0.0/24", Some(bad)),
                    Err(PoolError::InvalidAggregation(_))
                ),
                "{bad:?}"
            );
        }
    }
}
