//! The default-route interface per address family.

use super::{DUMP_ATTEMPTS, Kernel, KernelError, Link};
use purelb_api::pool::IpFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

/// `RT_TABLE_MAIN`.
pub(crate) const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

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

/// Among `routes`, the output interface of the lowest-metric unicast
/// default route of `family` in the main table (the first one on a tie,
/// like PureLB's loop).
pub(crate) fn pick_default(routes: &[RouteInfo], family: IpFamily) -> Option<u32> {
    let mut best: Option<(u32, u32)> = None;
    for r in routes {
        if r.family != family
            || r.table != MAIN_TABLE
            || r.cloned
            || r.kind != RouteType::Unicast
            || !r.is_default()
        {
            continue;
        }
        let Some(oif) = r.oif else { continue };
        if best.is_none_or(|(m, _)| r.metric < m) {
            best = Some((r.metric, oif));
        }
    }
    best.map(|(_, oif)| oif)
}

impl Kernel {
    /// The interface index of the default route of `family` with the
    /// lowest metric in the main table; `None` when there is no default
    /// route.
    pub async fn default_route_ifindex(
        &self,
        family: IpFamily,
    ) -> Result<Option<u32>, KernelError> {
        let mut req = RouteMessage::default();
        req.header.address_family = match family {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        };
        for _ in 0..DUMP_ATTEMPTS {
            let dump = self
                .dump("listing routes", RouteNetlinkMessage::GetRoute(req.clone()))
                .await?;
            if dump.interrupted {
                continue;
            }
            let routes: Vec<RouteInfo> = dump
                .items
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => RouteInfo::from_message(r),
                    _ => None,
                })
                .collect();
            return Ok(pick_default(&routes, family));
        }
        Err(KernelError::DumpInterrupted {
            op: "listing routes".to_owned(),
        })
    }

    /// The link of [`Kernel::default_route_ifindex`].
    pub async fn default_route_link(&self, family: IpFamily) -> Result<Option<Link>, KernelError> {
        match self.default_route_ifindex(family).await? {
            Some(index) => self.link_by_index(index).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: Option<&str>, len: u8, oif: u32, metric: u32) -> RouteInfo {
        RouteInfo {
            family: IpFamily::V4,
            table: MAIN_TABLE,
            destination: dst.map(|d| d.parse().unwrap()),
            prefix_len: len,
            oif: Some(oif),
            metric,
            kind: RouteType::Unicast,
            cloned: false,
        }
    }

    #[test]
    fn lowest_metric_default_wins() {
        let routes = [
            route(Some("198.51.100.0"), 24, 9, 0),
            route(None, 0, 3, 200),
            route(Some("0.0.0.0"), 0, 4, 100),
            route(None, 0, 5, 100),
        ];
        assert_eq!(pick_default(&routes, IpFamily::V4), Some(4));
        assert_eq!(pick_default(&routes, IpFamily::V6), None);
    }

    #[test]
    fn other_tables_and_types_are_ignored() {
        let mut other_table = route(None, 0, 3, 0);
        other_table.table = 100;
        let mut unreachable = route(None, 0, 4, 0);
        unreachable.kind = RouteType::Unreachable;
        let mut no_oif = route(None, 0, 5, 0);
        no_oif.oif = None;
        let fallback = route(None, 0, 6, 500);
        assert_eq!(
            pick_default(&[other_table, unreachable, no_oif, fallback], IpFamily::V4),
            Some(6)
        );
        assert_eq!(pick_default(&[], IpFamily::V4), None);
    }
}
