//! The default-route interface per address family.

use purelb_api::pool::IpFamily;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::RouteType;

use super::route::RouteInfo;
use super::{Kernel, KernelError, Link, TABLE_MAIN};

/// Among `routes`, the output interface of the lowest-metric unicast
/// default route of `family` in the main table (the first one on a tie,
/// like PureLB's loop).
pub(crate) fn pick_default(routes: &[RouteInfo], family: IpFamily) -> Option<u32> {
    let mut best: Option<(u32, u32)> = None;
    for r in routes {
        if r.family != family
            || r.table != TABLE_MAIN
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
        let family_code = match family {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        };
        let routes: Vec<RouteInfo> = self
            .dump_routes(family_code)
            .await?
            .iter()
            .filter_map(RouteInfo::from_message)
            .collect();
        Ok(pick_default(&routes, family))
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
            table: TABLE_MAIN,
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
