//! A kernel route as a plain value: the route the BGP exporter installs, and what a
//! route dump reads back, compared the way the kernel stores them.

use std::net::IpAddr;

use ipnet::IpNet;

/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RT_TABLE_DEFAULT`.
pub const TABLE_DEFAULT: u32 = 253;
/// `RT_TABLE_LOCAL`.
pub const TABLE_LOCAL: u32 = 255;
/// What the kernel makes of an IPv6 route metric of 0 (`IP6_RT_PRIO_USER`).
pub const IPV6_DEFAULT_METRIC: u32 = 1024;

/// One kernel route the exporter installs or found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelRoute {
    /// The destination network (host bits clear).
    pub destination: IpNet,
    /// Next hops, sorted and without duplicates; more than one is an ECMP multipath route.
    /// Empty only for a gateway-less route found in the kernel (never installed by us).
    pub gateways: Vec<IpAddr>,
    /// Routing table; 0 and 254 are main.
    pub table: u32,
    pub metric: u32,
    pub protocol: u8,
}

/// What identifies a route for the exporter: one route per prefix per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub destination: IpNet,
    /// Normalised: main is 254.
    pub table: u32,
}

impl KernelRoute {
    /// A single-next-hop route.
    pub fn new(destination: IpNet, gateway: IpAddr, table: u32, metric: u32, protocol: u8) -> Self {
        Self {
            destination,
            gateways: vec![gateway],
            table,
            metric,
            protocol,
        }
    }

    /// The table with 0 read as main (254).
    pub fn table_id(&self) -> u32 {
        normalize_table(self.table)
    }

    /// The metric the kernel keeps (IPv6 0 is 1024).
    pub fn effective_metric(&self) -> u32 {
        effective_metric(self.destination, self.metric)
    }

    pub fn key(&self) -> RouteKey {
        RouteKey {
            destination: self.destination,
            table: self.table_id(),
        }
    }

    /// `203.0.113.0/24`, `2001:db8::/32` (the status's `prefix`).
    pub fn cidr(&self) -> String {
        self.destination.to_string()
    }

    /// `main`, `default`, `local` or the number (the status's `table`).
    pub fn table_name(&self) -> String {
        table_name(self.table)
    }

    /// Same table (normalised), metric (effective), protocol and next-hop set.
    pub fn same_as(&self, other: &KernelRoute) -> bool {
        self.key() == other.key()
            && self.effective_metric() == other.effective_metric()
            && self.protocol == other.protocol
            && sorted(&self.gateways) == sorted(&other.gateways)
    }

    pub fn normalized(mut self) -> Self {
        self.table = self.table_id();
        self.gateways.sort();
        self.gateways.dedup();
        self
    }
}

fn sorted(v: &[IpAddr]) -> Vec<IpAddr> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// 0 (what a rule's `tableId` defaults to) is main.
pub fn normalize_table(table: u32) -> u32 {
    if table == 0 { TABLE_MAIN } else { table }
}

pub fn effective_metric(destination: IpNet, metric: u32) -> u32 {
    if matches!(destination, IpNet::V6(_)) && metric == 0 {
        IPV6_DEFAULT_METRIC
    } else {
        metric
    }
}

/// The status's table name: `main` (0 or 254), `default` (253), `local` (255), else the id.
pub fn table_name(table: u32) -> String {
    match normalize_table(table) {
        TABLE_MAIN => "main".to_owned(),
        TABLE_DEFAULT => "default".to_owned(),
        TABLE_LOCAL => "local".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn table_names_for_the_status() {
        assert_eq!(table_name(0), "main");
        assert_eq!(table_name(254), "main");
        assert_eq!(table_name(253), "default");
        assert_eq!(table_name(255), "local");
        assert_eq!(table_name(100), "100");
    }

    #[test]
    fn same_as_ignores_gateway_order_and_main_spelling() {
        let a = KernelRoute {
            destination: "203.0.113.0/24".parse().unwrap(),
            gateways: vec![ip("198.51.100.3"), ip("198.51.100.1")],
            table: 0,
            metric: 20,
            protocol: 186,
        };
        let mut b = a.clone().normalized();
        assert!(a.same_as(&b));
        b.metric = 21;
        assert!(!a.same_as(&b));
    }
}
