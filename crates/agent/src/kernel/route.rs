//! Routes: what the agent reads of a route message, and the routes it installs itself
//! (`netlinkExport`): add, delete, list by protocol, and the connected prefixes next hops
//! are checked against.

use purelb_api::pool::IpFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{DUMP_ATTEMPTS, Kernel, KernelError, KernelRoute, normalize_table};

/// What the agent needs to know about one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteInfo {
    pub family: IpFamily,
    pub table: u32,
    pub destination: Option<std::net::IpAddr>,
    pub prefix_len: u8,
    /// The output interface (the first next hop's for a multipath route).
    pub oif: Option<u32>,
    pub metric: u32,
    pub kind: RouteType,
    pub cloned: bool,
}

impl RouteInfo {
    pub(crate) fn from_message(msg: &RouteMessage) -> Option<Self> {
        let family = match msg.header.address_family {
            AddressFamily::Inet => IpFamily::V4,
            AddressFamily::Inet6 => IpFamily::V6,
            _ => return None,
        };
        let mut table = u32::from(msg.header.table);
        let mut destination = None;
        let mut oif = None;
        let mut metric = 0;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                    destination = Some((*a).into())
                }
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                    destination = Some((*a).into())
                }
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::MultiPath(hops) if oif.is_none() => {
                    oif = hops.iter().map(|h| h.interface_index).find(|&i| i != 0)
                }
                _ => {}
            }
        }
        Some(Self {
            family,
            table,
            destination,
            prefix_len: msg.header.destination_prefix_length,
            oif,
            metric,
            kind: msg.header.kind,
            cloned: msg.header.flags.contains(RouteFlags::Cloned),
        })
    }

    /// A default route: no destination, or a /0 one.
    pub(crate) fn is_default(&self) -> bool {
        self.destination.is_none() || self.prefix_len == 0
    }
}

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::route::{RouteNextHop, RouteProtocol, RouteScope};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

fn route_family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// The header's 8-bit table field for `table` (0 = main): the table itself up to 255, else
/// `RT_TABLE_UNSPEC` and the kernel reads the `RTA_TABLE` attribute (always sent as well).
fn header_table(table: u32) -> (u8, u32) {
    let table = normalize_table(table);
    (
        u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC),
        table,
    )
}

/// Checks what the kernel would refuse with a bare EINVAL, so the error says why.
fn check_kernel_route(route: &KernelRoute) -> Result<(), KernelError> {
    let invalid = |reason: String| KernelError::InvalidAddress {
        ip: route.destination.addr(),
        prefix_len: route.destination.prefix_len(),
        reason,
    };
    if route.gateways.is_empty() {
        return Err(invalid("no gateway".to_owned()));
    }
    if let Some(gw) = route
        .gateways
        .iter()
        .find(|g| g.is_ipv4() != route.destination.addr().is_ipv4())
    {
        return Err(invalid(format!(
            "gateway {gw} is of the other address family"
        )));
    }
    Ok(())
}

/// `RTM_NEWROUTE` for `route`: unicast, universe scope, its protocol and metric, one
/// `RTA_GATEWAY` or, with several gateways, `RTA_MULTIPATH` (one next hop per gateway, equal
/// weights, interface left to the kernel).
pub(crate) fn new_route_message(route: &KernelRoute) -> RouteMessage {
    let (header_table, table) = header_table(route.table);
    let mut msg = RouteMessage::default();
    msg.header.address_family = route_family(route.destination.addr());
    msg.header.destination_prefix_length = route.destination.prefix_len();
    msg.header.table = header_table;
    msg.header.protocol = RouteProtocol::from(route.protocol);
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(
            route.destination.addr(),
        )));
    msg.attributes.push(RouteAttribute::Table(table));
    msg.attributes.push(RouteAttribute::Priority(route.metric));
    match route.gateways.as_slice() {
        [gw] => msg
            .attributes
            .push(RouteAttribute::Gateway(route_address(*gw))),
        gws => {
            let hops = gws
                .iter()
                .map(|gw| {
                    let mut hop = RouteNextHop::default();
                    hop.attributes
                        .push(RouteAttribute::Gateway(route_address(*gw)));
                    hop
                })
                .collect();
            msg.attributes.push(RouteAttribute::MultiPath(hops));
        }
    }
    msg
}

/// `RTM_DELROUTE` for `route`: matched by prefix, table, metric and protocol (the kernel
/// compares a non-zero protocol), any scope, any type, any next hops — so a multipath route
/// goes as a whole and a route of another protocol is never hit.
pub(crate) fn del_route_message(route: &KernelRoute) -> RouteMessage {
    let (header_table, table) = header_table(route.table);
    let mut msg = RouteMessage::default();
    msg.header.address_family = route_family(route.destination.addr());
    msg.header.destination_prefix_length = route.destination.prefix_len();
    msg.header.table = header_table;
    msg.header.protocol = RouteProtocol::from(route.protocol);
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(
            route.destination.addr(),
        )));
    msg.attributes.push(RouteAttribute::Table(table));
    msg.attributes.push(RouteAttribute::Priority(route.metric));
    msg
}

/// The gateways of a route message: `RTA_GATEWAY`, or those of each `RTA_MULTIPATH` next hop.
/// Sorted, without duplicates.
fn message_gateways(msg: &RouteMessage) -> Vec<IpAddr> {
    let gateway = |attr: &RouteAttribute| match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    };
    let mut gws: Vec<IpAddr> = Vec::new();
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::MultiPath(hops) => gws.extend(
                hops.iter()
                    .flat_map(|h| h.attributes.iter().filter_map(gateway)),
            ),
            other => gws.extend(gateway(other)),
        }
    }
    gws.sort();
    gws.dedup();
    gws
}

fn unspecified(family: IpFamily) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A dumped unicast route as a [`KernelRoute`] (`None` for other types, cached clones and
/// other families). `gateways` is empty for a gateway-less (device) route.
pub(crate) fn kernel_route_of(msg: &RouteMessage) -> Option<KernelRoute> {
    let info = RouteInfo::from_message(msg)?;
    if info.cloned || info.kind != RouteType::Unicast {
        return None;
    }
    let destination = info.destination.unwrap_or_else(|| unspecified(info.family));
    Some(KernelRoute {
        destination: IpNet::new(destination, info.prefix_len).ok()?,
        gateways: message_gateways(msg),
        table: info.table,
        metric: info.metric,
        protocol: u8::from(msg.header.protocol),
    })
}

/// Whether a dumped route is a connected (on-link) one: unicast, no gateway, no `RTA_VIA`,
/// an output interface.
fn is_connected(msg: &RouteMessage, info: &RouteInfo) -> bool {
    !info.cloned
        && info.kind == RouteType::Unicast
        && info.oif.is_some()
        && !msg.attributes.iter().any(|a| {
            matches!(
                a,
                RouteAttribute::Gateway(_) | RouteAttribute::Via(_) | RouteAttribute::MultiPath(_)
            )
        })
}

impl Kernel {
    /// Every route of `family` in every table, as raw messages (an interrupted dump is re-run,
    /// up to three times).
    pub(crate) async fn dump_routes(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<RouteMessage>, KernelError> {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        for _ in 0..DUMP_ATTEMPTS {
            let dump = self
                .dump("listing routes", RouteNetlinkMessage::GetRoute(req.clone()))
                .await?;
            if dump.interrupted {
                continue;
            }
            return Ok(dump
                .items
                .into_iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => Some(r),
                    _ => None,
                })
                .collect());
        }
        Err(KernelError::DumpInterrupted {
            op: "listing routes".to_owned(),
        })
    }

    /// Every route of both families in every table, as raw messages.
    async fn dump_all_routes(&self) -> Result<Vec<RouteMessage>, KernelError> {
        let mut out = self.dump_routes(AddressFamily::Inet).await?;
        out.extend(self.dump_routes(AddressFamily::Inet6).await?);
        Ok(out)
    }

    /// Adds `route`, replacing the route with the same prefix, table and metric if there is
    /// one (`NLM_F_CREATE | NLM_F_REPLACE`, like `ip route replace`; the kernel replaces
    /// whatever protocol that route had). Table 0 is main; tables above 255 go in
    /// `RTA_TABLE`. Several gateways make an ECMP multipath route.
    pub async fn add_route(&self, route: &KernelRoute) -> Result<(), KernelError> {
        check_kernel_route(route)?;
        let op = format!("adding route {} table {}", route.destination, route.table);
        self.ack(
            &op,
            RouteNetlinkMessage::NewRoute(new_route_message(route)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Deletes the route with `route`'s prefix, table, metric and protocol, whatever its next
    /// hops. A route that is not there is an `Os` error with `ESRCH`.
    pub async fn delete_route(&self, route: &KernelRoute) -> Result<(), KernelError> {
        let op = format!("deleting route {} table {}", route.destination, route.table);
        self.ack(
            &op,
            RouteNetlinkMessage::DelRoute(del_route_message(route)),
            0,
        )
        .await
    }

    /// The unicast routes of both families in every table whose protocol is `protocol`
    /// (cached clones left out; gateway-less routes included with no `gateways`).
    pub async fn routes_with_protocol(
        &self,
        protocol: u8,
    ) -> Result<Vec<KernelRoute>, KernelError> {
        Ok(self
            .dump_all_routes()
            .await?
            .iter()
            .filter(|m| u8::from(m.header.protocol) == protocol)
            .filter_map(kernel_route_of)
            .collect())
    }

    /// What next-hop validation needs: the connected (on-link) prefixes as
    /// `(network, table)` — unicast routes with an output interface and no gateway, in any
    /// table — and this node's addresses (the `local` routes).
    pub async fn on_link_prefixes(&self) -> Result<(Vec<(IpNet, u32)>, Vec<IpAddr>), KernelError> {
        let mut connected = Vec::new();
        let mut local = Vec::new();
        for msg in self.dump_all_routes().await? {
            let Some(info) = RouteInfo::from_message(&msg) else {
                continue;
            };
            let dst = info.destination.unwrap_or_else(|| unspecified(info.family));
            if info.kind == RouteType::Local {
                local.push(dst);
            } else if is_connected(&msg, &info)
                && let Ok(network) = IpNet::new(dst, info.prefix_len)
            {
                connected.push((network, info.table));
            }
        }
        Ok((connected, local))
    }
}

#[cfg(test)]
mod export_tests {
    use super::*;

    fn kr(prefix: &str, len: u8, gws: &[&str], table: u32) -> KernelRoute {
        KernelRoute {
            destination: IpNet::new(prefix.parse().unwrap(), len).unwrap(),
            gateways: gws.iter().map(|g| g.parse().unwrap()).collect(),
            table,
            metric: 20,
            protocol: 186,
        }
    }

    #[test]
    fn big_tables_go_in_rta_table() {
        assert_eq!(header_table(0), (254, 254));
        assert_eq!(header_table(100), (100, 100));
        assert_eq!(header_table(1000), (0, 1000));
        let msg = new_route_message(&kr("203.0.113.0", 24, &["198.51.100.1"], 1000));
        assert_eq!(msg.header.table, 0);
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(u8::from(msg.header.protocol), 186);
    }

    #[test]
    fn messages_round_trip_through_the_parser() {
        for r in [
            kr("203.0.113.0", 24, &["198.51.100.1"], 254),
            kr("203.0.113.0", 24, &["198.51.100.1", "198.51.100.3"], 100),
            kr(
                "2001:db8:ff::",
                48,
                &["2001:db8:1::1", "2001:db8:1::3"],
                300,
            ),
        ] {
            let back = kernel_route_of(&new_route_message(&r)).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn delete_matches_by_protocol_not_next_hops() {
        let msg = del_route_message(&kr("203.0.113.0", 24, &["198.51.100.1"], 254));
        assert_eq!(u8::from(msg.header.protocol), 186);
        assert_eq!(msg.header.scope, RouteScope::NoWhere);
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_)))
        );
    }

    #[test]
    fn bad_routes_are_refused_before_the_kernel() {
        // A prefix longer than the family allows cannot be built at all.
        assert!(IpNet::new("203.0.113.0".parse().unwrap(), 33).is_err());
        assert!(check_kernel_route(&kr("203.0.113.0", 24, &[], 0)).is_err());
        assert!(check_kernel_route(&kr("203.0.113.0", 24, &["2001:db8:1::1"], 0)).is_err());
        assert!(check_kernel_route(&kr("203.0.113.0", 24, &["198.51.100.1"], 0)).is_ok());
    }
}
