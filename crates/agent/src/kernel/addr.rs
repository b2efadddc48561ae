//! Interface addresses: add (replace) with lifetimes, flags and the PureLB
//! protocol marker; remove by IP; list; subnets for the election lease.

use super::{DUMP_ATTEMPTS, Dump, Kernel, KernelError};
use purelb_api::pool::{IpNet, network_of};
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol, CacheInfo,
};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{AddressMessageBuilder, packet_route::AddressFamily};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The `IFA_PROTO` value on every address the agent adds. The kernel's own
/// values are 0 (unspecified), 1 (loopback), 2 (router advertisement) and
/// 3 (link-local); 0x50 (`'P'`) is ours. Linux >= 5.18 stores and reports
/// it (and updates it on replace); the iproute2 6.1 on the test machines
/// can neither set nor show it, read it with [`Kernel::list_addresses`].
pub const PURELB_ADDR_PROTO: u8 = 0x50;

/// The kernel's "forever" lifetime (`INFINITY_LIFE_TIME`).
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// `IFA_F_*` address flags, as reported in [`Address::flags`].
pub mod flags {
    pub const SECONDARY: u32 = 0x01;
    pub const NODAD: u32 = 0x02;
    pub const OPTIMISTIC: u32 = 0x04;
    pub const DADFAILED: u32 = 0x08;
    pub const HOMEADDRESS: u32 = 0x10;
    pub const DEPRECATED: u32 = 0x20;
    pub const TENTATIVE: u32 = 0x40;
    pub const PERMANENT: u32 = 0x80;
    pub const MANAGETEMPADDR: u32 = 0x100;
    pub const NOPREFIXROUTE: u32 = 0x200;
}

/// How [`Kernel::add_address`] puts an address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressOptions {
    /// Seconds until the kernel removes the address; 0 = permanent.
    pub valid_lifetime: u32,
    /// Seconds until the address becomes deprecated (not chosen as a
    /// source). With a finite `valid_lifetime`, 0 means deprecated at once
    /// (the kernel's meaning). With a permanent address, 0 means "forever"
    /// too (as PureLB's Go code sends it); use `deprecated` for a permanent
    /// deprecated address. Must not exceed a finite `valid_lifetime`.
    pub preferred_lifetime: u32,
    /// `IFA_F_NOPREFIXROUTE`: the kernel installs no connected route.
    pub no_prefix_route: bool,
    /// `IFA_F_NODAD`: skip IPv6 duplicate address detection (ignored by
    /// IPv4).
    pub no_dad: bool,
    /// Forces a preferred lifetime of 0 (the IPv6 local VIP rule).
    pub deprecated: bool,
}

impl AddressOptions {
    /// The (valid, preferred) pair sent in `IFA_CACHEINFO`.
    fn lifetimes(&self) -> (u32, u32) {
        let valid = if self.valid_lifetime == 0 {
            INFINITY_LIFE_TIME
        } else {
            self.valid_lifetime
        };
        let preferred = if self.deprecated {
            0
        } else if self.valid_lifetime == 0 && self.preferred_lifetime == 0 {
            INFINITY_LIFE_TIME
        } else {
            self.preferred_lifetime
        };
        (valid, preferred)
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.no_prefix_route {
            f |= flags::NOPREFIXROUTE;
        }
        if self.no_dad {
            f |= flags::NODAD;
        }
        f
    }
}

/// One address on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ifindex: u32,
    /// The link's name (from a link lookup, or the IPv4 label); `None` when
    /// the link vanished between the two dumps.
    pub ifname: Option<String>,
    pub ip: IpAddr,
    pub prefix_len: u8,
    /// `IFA_F_*` bits, see [`flags`].
    pub flags: u32,
    /// `IFA_PROTO`; 0 when unset. [`PURELB_ADDR_PROTO`] marks ours.
    pub protocol: u8,
    /// Seconds left; `None` = forever.
    pub valid_lifetime: Option<u32>,
    /// Seconds left; `None` = forever.
    pub preferred_lifetime: Option<u32>,
    /// `RT_SCOPE_*` (0 universe/global, 253 link, 254 host).
    pub scope: u8,
}

impl Address {
    /// The network this address sits in (`ip` masked to `prefix_len`).
    pub fn network(&self) -> IpNet {
        let bits = if self.ip.is_ipv4() { 32 } else { 128 };
        match network_of(self.ip, self.prefix_len.min(bits)) {
            Ok(c) => c,
            Err(_) => unreachable!("a prefix length within the family's width is valid"),
        }
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether this is an IPv6 address PureLB ignores when looking for a
    /// link's subnets or for the link a VIP is local to: DADFAILED,
    /// DEPRECATED or TENTATIVE.
    pub fn is_ignored_v6(&self) -> bool {
        self.ip.is_ipv6() && self.has_flag(flags::DADFAILED | flags::DEPRECATED | flags::TENTATIVE)
    }

    /// Whether it carries the agent's protocol marker.
    pub fn is_owned(&self) -> bool {
        self.protocol == PURELB_ADDR_PROTO
    }

    pub(crate) fn from_message(msg: &AddressMessage, ifname: Option<&str>) -> Option<Self> {
        let mut local = None;
        let mut address = None;
        let mut label = None;
        let mut flags = None;
        let mut protocol = 0;
        let mut cache = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                AddressAttribute::Flags(f) => flags = Some(f.bits()),
                AddressAttribute::Protocol(p) => protocol = u8::from(*p),
                AddressAttribute::CacheInfo(c) => cache = Some(*c),
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer
        // on point-to-point links (and the only one on IPv6 broadcast links).
        let ip = local.or(address)?;
        let forever = |v: u32| (v != INFINITY_LIFE_TIME).then_some(v);
        Some(Self {
            ifindex: msg.header.index,
            ifname: ifname.map(str::to_owned).or(label),
            ip,
            prefix_len: msg.header.prefix_len,
            flags: flags.unwrap_or(u32::from(msg.header.flags.bits())),
            protocol,
            valid_lifetime: cache.and_then(|c| forever(c.ifa_valid)),
            preferred_lifetime: cache.and_then(|c| forever(c.ifa_preferred)),
            scope: u8::from(msg.header.scope),
        })
    }
}

/// The subnets PureLB advertises for a link: every IPv4
/// address, and IPv6 addresses that are neither DADFAILED, DEPRECATED,
/// TENTATIVE nor link-local, as networks, deduplicated and sorted.
pub fn subnets_of<'a>(addresses: impl IntoIterator<Item = &'a Address>) -> Vec<IpNet> {
    let set: BTreeSet<IpNet> = addresses
        .into_iter()
        .filter(|a| match a.ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => !a.is_ignored_v6() && !is_link_local_v6(v6),
        })
        .map(Address::network)
        .collect();
    set.into_iter().collect()
}

pub(crate) fn is_link_local_v6(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

fn address_message(ifindex: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    match ip {
        IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(ifindex)
            .address(v4, prefix_len)
            .build(),
        IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(ifindex)
            .address(v6, prefix_len)
            .build(),
    }
}

fn check_prefix(ip: IpAddr, prefix_len: u8) -> Result<(), KernelError> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(KernelError::InvalidAddress {
            ip,
            prefix_len,
            reason: format!("prefix length longer than {max}"),
        });
    }
    if ip.is_multicast() || ip.is_unspecified() {
        return Err(KernelError::InvalidAddress {
            ip,
            prefix_len,
            reason: "not a unicast address".to_owned(),
        });
    }
    Ok(())
}

impl Kernel {
    /// Deletes `ip/prefix_len` from link `ifindex` only. `Ok(false)` when it was not
    /// there (already gone, or the link vanished).
    pub async fn remove_exact_address(
        &self,
        ifindex: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<bool, KernelError> {
        let msg = address_message(ifindex, ip, prefix_len);
        match self.handle().address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = KernelError::from_rtnl(
                    format!("removing {ip}/{prefix_len} from link {ifindex}"),
                    e,
                );
                match e.raw_os_error() {
                    Some(libc::EADDRNOTAVAIL | libc::ENODEV | libc::ENOENT) => Ok(false),
                    _ => Err(e),
                }
            }
        }
    }

    /// Adds `ip/prefix_len` to link `ifindex`, or updates it when the link
    /// already has it (`NLM_F_REPLACE`, like Go's `netlink.AddrReplace`):
    /// lifetimes restart, flags and the protocol marker are set again.
    pub async fn add_address(
        &self,
        ifindex: u32,
        ip: IpAddr,
        prefix_len: u8,
        opts: &AddressOptions,
    ) -> Result<(), KernelError> {
        check_prefix(ip, prefix_len)?;
        let (valid, preferred) = opts.lifetimes();
        if valid != INFINITY_LIFE_TIME && preferred > valid {
            return Err(KernelError::InvalidAddress {
                ip,
                prefix_len,
                reason: format!("preferred lifetime {preferred}s exceeds valid lifetime {valid}s"),
            });
        }
        let mut msg = address_message(ifindex, ip, prefix_len);
        let fl = opts.flags();
        // The header holds the low 8 bits; IFA_FLAGS the full set.
        msg.header.flags = AddressHeaderFlags::from_bits_retain((fl & 0xff) as u8);
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(fl)));
        let mut cache = CacheInfo::default();
        cache.ifa_valid = valid;
        cache.ifa_preferred = preferred;
        msg.attributes.push(AddressAttribute::CacheInfo(cache));
        msg.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                PURELB_ADDR_PROTO,
            )));
        self.ack(
            &format!("adding {ip}/{prefix_len} to link {ifindex}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_REPLACE | NLM_F_CREATE,
        )
        .await
    }

    /// Removes `ip` from every link that carries it, whatever its prefix
    /// length, and returns how many addresses were removed (0 when none
    /// had it). An address that disappears concurrently is not counted.
    pub async fn remove_address(&self, ip: IpAddr) -> Result<usize, KernelError> {
        let matching: Vec<Address> = self
            .list_addresses()
            .await?
            .into_iter()
            .filter(|a| a.ip == ip)
            .collect();
        let mut removed = 0;
        for a in matching {
            let msg = address_message(a.ifindex, a.ip, a.prefix_len);
            match self
                .ack(
                    &format!("removing {}/{} from link {}", a.ip, a.prefix_len, a.ifindex),
                    RouteNetlinkMessage::DelAddress(msg),
                    0,
                )
                .await
            {
                Ok(()) => removed += 1,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EADDRNOTAVAIL | libc::ENODEV | libc::ENOENT)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// One address dump (all links, both families), link names resolved.
    /// `interrupted` tells the caller the result may be partial.
    pub async fn dump_addresses(&self) -> Result<Dump<Address>, KernelError> {
        let links = self
            .dump(
                "listing links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )
            .await?;
        let names: HashMap<u32, String> = links
            .items
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => super::Link::from_message(l),
                _ => None,
            })
            .map(|l| (l.index, l.name))
            .collect();
        // One dump per family: an unspecified-family dump would also return
        // addresses of other families (MCTP, ...) whose attributes the
        // decoder rejects, which ends the netlink connection.
        let mut items = Vec::new();
        let mut interrupted = links.interrupted;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = AddressMessage::default();
            req.header.family = family;
            let dump = self
                .dump("listing addresses", RouteNetlinkMessage::GetAddress(req))
                .await?;
            interrupted |= dump.interrupted;
            items.extend(dump.items.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    Address::from_message(a, names.get(&a.header.index).map(String::as_str))
                }
                _ => None,
            }));
        }
        Ok(Dump { items, interrupted })
    }

    /// Every address on every link. A dump interrupted by concurrent
    /// changes is retried; after three interrupted tries the error is
    /// [`KernelError::DumpInterrupted`] (use [`Kernel::dump_addresses`] to
    /// get partial results instead).
    pub async fn list_addresses(&self) -> Result<Vec<Address>, KernelError> {
        for _ in 0..DUMP_ATTEMPTS {
            let dump = self.dump_addresses().await?;
            if !dump.interrupted {
                return Ok(dump.items);
            }
        }
        Err(KernelError::DumpInterrupted {
            op: "listing addresses".to_owned(),
        })
    }

    /// The addresses of link `ifindex`.
    pub async fn link_addresses(&self, ifindex: u32) -> Result<Vec<Address>, KernelError> {
        Ok(self
            .list_addresses()
            .await?
            .into_iter()
            .filter(|a| a.ifindex == ifindex)
            .collect())
    }

    /// The addresses carrying the agent's protocol marker
    /// ([`PURELB_ADDR_PROTO`]): what an earlier run of the agent added.
    pub async fn owned_addresses(&self) -> Result<Vec<Address>, KernelError> {
        Ok(self
            .list_addresses()
            .await?
            .into_iter()
            .filter(Address::is_owned)
            .collect())
    }

    /// [`subnets_of`] the addresses of link `ifindex`.
    pub async fn link_subnets(&self, ifindex: u32) -> Result<Vec<IpNet>, KernelError> {
        Ok(subnets_of(&self.link_addresses(ifindex).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str, len: u8, flags: u32) -> Address {
        Address {
            ifindex: 2,
            ifname: Some("eth0".into()),
            ip: ip.parse().unwrap(),
            prefix_len: len,
            flags,
            protocol: 0,
            valid_lifetime: None,
            preferred_lifetime: None,
            scope: 0,
        }
    }

    #[test]
    fn lifetimes_follow_the_go_conventions() {
        let o = AddressOptions::default();
        assert_eq!(o.lifetimes(), (u32::MAX, u32::MAX));
        let o = AddressOptions {
            valid_lifetime: 300,
            preferred_lifetime: 300,
            ..Default::default()
        };
        assert_eq!(o.lifetimes(), (300, 300));
        let o = AddressOptions {
            valid_lifetime: 300,
            ..Default::default()
        };
        assert_eq!(o.lifetimes(), (300, 0));
        let o = AddressOptions {
            deprecated: true,
            ..Default::default()
        };
        assert_eq!(o.lifetimes(), (u32::MAX, 0));
        let o = AddressOptions {
            valid_lifetime: 300,
            preferred_lifetime: 300,
            deprecated: true,
            ..Default::default()
        };
        assert_eq!(o.lifetimes(), (300, 0));
        let o = AddressOptions {
            no_prefix_route: true,
            no_dad: true,
            ..Default::default()
        };
        assert_eq!(o.flags(), 0x202);
    }

    #[test]
    fn subnets_follow_spec() {
        let addrs = [
            addr("198.51.100.7", 24, 0),
            addr("198.51.100.9", 24, flags::SECONDARY),
            addr("203.0.113.1", 32, 0),
            addr("2001:db8:1::5", 64, 0),
            addr("2001:db8:2::5", 64, flags::DEPRECATED),
            addr("2001:db8:3::5", 64, flags::TENTATIVE),
            addr("2001:db8:4::5", 64, flags::DADFAILED),
            addr("fe80::1", 64, 0),
            addr("2001:db8:1::6", 64, flags::NODAD),
        ];
        let got: Vec<String> = subnets_of(&addrs).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            got,
            ["198.51.100.0/24", "203.0.113.1/32", "2001:db8:1::/64"]
        );
    }

    #[test]
    fn ignored_v6_flags_do_not_affect_v4() {
        assert!(!addr("198.51.100.7", 24, flags::DEPRECATED).is_ignored_v6());
        assert!(addr("2001:db8::1", 64, flags::DEPRECATED).is_ignored_v6());
        assert!(!addr("2001:db8::1", 64, flags::NODAD).is_ignored_v6());
    }

    #[test]
    fn link_local_detection() {
        assert!(is_link_local_v6("fe80::1".parse().unwrap()));
        assert!(is_link_local_v6("febf::1".parse().unwrap()));
        assert!(!is_link_local_v6("fec0::1".parse().unwrap()));
        assert!(!is_link_local_v6("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_prefix_is_refused() {
        assert!(check_prefix("198.51.100.1".parse().unwrap(), 33).is_err());
        assert!(check_prefix("2001:db8::1".parse().unwrap(), 129).is_err());
        assert!(check_prefix("ff02::1".parse().unwrap(), 128).is_err());
        assert!(check_prefix("2001:db8::1".parse().unwrap(), 128).is_ok());
    }
}
