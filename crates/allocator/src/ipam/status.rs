//! ServiceGroup usage for `.status` and the pool gauges.
//! Counted in `u128` (an IPv6 `/64` has 2^64 addresses) and clamped to
//! `i64` only for the CRD, so large pools read as "very many", never as 0 or
//! a negative number as upstream's 64-bit arithmetic would give.

use purelb_api::crd::ServiceGroupStatus;
use purelb_api::pool::IpFamily;

use super::outcome::PoolType;
use super::{Ipam, Kind};

/// What a sidecar's `Stats` call answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalStats {
    pub in_use_v4: u64,
    pub in_use_v6: u64,
    pub size_v4: u64,
    pub size_v6: u64,
    pub has_known_capacity: bool,
    pub display_addresses: Vec<String>,
}

impl ExternalStats {
    /// Addresses in use, both families.
    pub fn in_use(&self) -> u64 {
        self.in_use_v4.saturating_add(self.in_use_v6)
    }
}

/// Usage of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub announce: PoolType,
    /// `Cluster`, `Netbox`, or the external provider.
    pub ipam: String,
    /// Local/remote: the `pool` strings, IPv4 ranges first.
    pub addresses: Vec<String>,
    /// `spec.namespaces` as written.
    pub bound_namespaces: Option<Vec<String>>,
    pub allocated_v4: u128,
    pub allocated_v6: u128,
    /// `None` when the capacity is unknown (Netbox, external without it).
    pub size_v4: Option<u128>,
    pub size_v6: Option<u128>,
}

fn clamp(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl GroupStatus {
    pub fn available_v4(&self) -> Option<u128> {
        self.size_v4.map(|s| s.saturating_sub(self.allocated_v4))
    }

    pub fn available_v6(&self) -> Option<u128> {
        self.size_v6.map(|s| s.saturating_sub(self.allocated_v6))
    }

    /// `purelb_address_pool_size`: all addresses, 0 when unknown.
    pub fn size(&self) -> u128 {
        self.size_v4
            .unwrap_or(0)
            .saturating_add(self.size_v6.unwrap_or(0))
    }

    /// `purelb_address_pool_addresses_in_use`.
    pub fn in_use(&self) -> u128 {
        self.allocated_v4.saturating_add(self.allocated_v6)
    }

    /// An external group's status from its sidecar's `Stats`.
    pub fn with_external_stats(mut self, stats: &ExternalStats) -> Self {
        self.allocated_v4 = u128::from(stats.in_use_v4);
        self.allocated_v6 = u128::from(stats.in_use_v6);
        self.addresses = stats.display_addresses.clone();
        if stats.has_known_capacity {
            self.size_v4 = Some(u128::from(stats.size_v4));
            self.size_v6 = Some(u128::from(stats.size_v6));
        } else {
            self.size_v4 = None;
            self.size_v6 = None;
        }
        self
    }

    /// The CRD status, counts clamped to `i64::MAX`; empty lists omitted.
    #[allow(
        clippy::needless_update,
        reason = "the CRD status may carry fields the IPAM does not own"
    )]
    pub fn to_crd(&self) -> ServiceGroupStatus {
        ServiceGroupStatus {
            bound_namespaces: self.bound_namespaces.clone().filter(|n| !n.is_empty()),
            announce: Some(self.announce.capitalized().to_owned()),
            ipam: Some(self.ipam.clone()),
            addresses: Some(self.addresses.clone()).filter(|a| !a.is_empty()),
            allocated_ipv4: clamp(self.allocated_v4),
            allocated_ipv6: clamp(self.allocated_v6),
            available_ipv4: self.available_v4().map(clamp),
            available_ipv6: self.available_v6().map(clamp),
            // Fields the IPAM does not own (e.g. conditions) stay empty.
            ..ServiceGroupStatus::default()
        }
    }
}

impl Ipam {
    /// Usage of the accepted group `name`. For an external group the counts
    /// and addresses are the sidecar's: apply
    /// [`GroupStatus::with_external_stats`].
    pub fn group_status(&self, name: &str) -> Option<GroupStatus> {
        let group = self.group(name)?;
        let mut status = GroupStatus {
            announce: group.pool_type(),
            ipam: "Cluster".to_owned(),
            addresses: Vec::new(),
            bound_namespaces: group.namespaces.clone(),
            allocated_v4: 0,
            allocated_v6: 0,
            size_v4: None,
            size_v6: None,
        };
        match &group.kind {
            Kind::Pool(pool) => {
                status.addresses = pool
                    .v4
                    .iter()
                    .chain(&pool.v6)
                    .map(|&r| pool.ranges[r].spec.pool_spec().to_owned())
                    .collect();
                status.allocated_v4 = pool.allocated(IpFamily::V4);
                status.allocated_v6 = pool.allocated(IpFamily::V6);
                status.size_v4 = Some(pool.capacity(IpFamily::V4));
                status.size_v6 = Some(pool.capacity(IpFamily::V6));
            }
            Kind::Netbox(n) => {
                status.ipam = "Netbox".to_owned();
                status.allocated_v4 = n.book.in_use[0];
                status.allocated_v6 = n.book.in_use[1];
            }
            Kind::External(e) => {
                status.ipam = e.provider.clone();
            }
        }
        Some(status)
    }
}
