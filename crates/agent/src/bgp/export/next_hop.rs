//! Next-hop validation for `netlinkExport`: a next hop is usable when a connected route in
//! the rule's table or in main covers it and it is not an address of this node.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::kernel::{TABLE_MAIN, normalize_table};

/// Next-hop validation from a snapshot of the kernel: the connected prefixes (per table) and
/// this node's addresses. Pure once built; [`NetlinkExporter::next_hop_filter`](super::NetlinkExporter::next_hop_filter) builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextHopFilter {
    connected: Vec<(IpNet, u32)>,
    local: HashSet<IpAddr>,
}

impl NextHopFilter {
    /// `connected`: (network, table) of on-link routes; `local`: the node's own addresses.
    pub fn new(connected: Vec<(IpNet, u32)>, local: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            connected: connected
                .into_iter()
                .map(|(n, t)| (n, normalize_table(t)))
                .collect(),
            local: local.into_iter().collect(),
        }
    }

    /// `Ok` when `next_hop` is on a connected prefix in `table` or in main and is not one of
    /// this node's addresses.
    pub fn check(&self, next_hop: IpAddr, table: u32) -> Result<(), String> {
        if self.local.contains(&next_hop) {
            return Err(format!("next hop {next_hop} is an address of this node"));
        }
        let table = normalize_table(table);
        if self
            .connected
            .iter()
            .any(|(n, t)| (*t == table || *t == TABLE_MAIN) && n.contains(&next_hop))
        {
            Ok(())
        } else {
            Err(format!(
                "next hop {next_hop} is not reachable through a connected route"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn connected_routes_count_in_their_table_and_in_main() {
        let filter = NextHopFilter::new(
            vec![(net("198.51.100.0/24"), 0), (net("203.0.113.0/25"), 100)],
            [],
        );
        assert!(filter.check(ip("198.51.100.7"), 100).is_ok());
        assert!(filter.check(ip("203.0.113.7"), 100).is_ok());
        assert!(filter.check(ip("203.0.113.7"), 254).is_err());
        assert!(filter.check(ip("203.0.113.200"), 100).is_err());
        assert!(filter.check(ip("2001:db8::1"), 254).is_err());
    }
}
