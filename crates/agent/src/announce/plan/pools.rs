//! The address pools of the ServiceGroups, as the planner looks them up: which pool
//! holds an address, and whether it is announced locally or remotely.

use std::collections::BTreeSet;
use std::net::IpAddr;

use purelb_api::crd::ServiceGroup;
use purelb_api::crd::service_group::{AddressPool, ExternalAnnounce};
use purelb_api::pool::PoolRange;

/// Whether a pool is announced on one node's NIC or on every node's dummy link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolKind {
    Local,
    Remote,
}

/// One parsed pool of a ServiceGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPool {
    pub group: String,
    pub kind: PoolKind,
    pub range: PoolRange,
}

/// The pools of the ServiceGroups the agent reads (the caller passes only those in
/// the install namespace): local groups first, then remote, each sorted by group
/// name, each group's ranges in `v4pools`, `v4pool`, `v6pools`, `v6pool` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolTable {
    pools: Vec<GroupPool>,
    external_remote: BTreeSet<String>,
    /// Pools that did not parse: (group, error). The allocator reports them.
    pub invalid: Vec<(String, String)>,
}

impl PoolTable {
    /// Choice: `external` groups with `announce: remote` are remembered, so their
    /// addresses go on the dummy link like any remote pool's (PureLB's agent ignores
    /// them): that is what the user configured.
    pub fn from_groups<'a>(groups: impl IntoIterator<Item = &'a ServiceGroup>) -> Self {
        let mut groups: Vec<&ServiceGroup> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut table = Self::default();
        for kind in [PoolKind::Local, PoolKind::Remote] {
            for group in &groups {
                let name = group.metadata.name.clone().unwrap_or_default();
                let spec = &group.spec;
                let ranges: Vec<&AddressPool> = match kind {
                    PoolKind::Local => spec.local.as_ref().map_or_else(Vec::new, |l| {
                        ordered_pools(&l.v4pools, &l.v4pool, &l.v6pools, &l.v6pool)
                    }),
                    PoolKind::Remote => spec.remote.as_ref().map_or_else(Vec::new, |r| {
                        ordered_pools(&r.v4pools, &r.v4pool, &r.v6pools, &r.v6pool)
                    }),
                };
                for pool in ranges {
                    match PoolRange::parse(&pool.pool, &pool.subnet, pool.aggregation.as_deref()) {
                        Ok(range) => table.pools.push(GroupPool {
                            group: name.clone(),
                            kind,
                            range,
                        }),
                        Err(e) => table.invalid.push((name.clone(), e.to_string())),
                    }
                }
            }
        }
        table.external_remote = groups
            .iter()
            .filter(|g| {
                g.spec
                    .external
                    .as_ref()
                    .is_some_and(|e| e.announce == ExternalAnnounce::Remote)
            })
            .filter_map(|g| g.metadata.name.clone())
            .collect();
        table
    }

    pub fn pools(&self) -> &[GroupPool] {
        &self.pools
    }

    /// The first pool (local groups first) holding `ip`.
    pub fn pool_for(&self, ip: IpAddr) -> Option<&GroupPool> {
        self.pools.iter().find(|p| p.range.contains(ip))
    }

    /// The first remote pool holding `ip`.
    pub fn remote_pool_for(&self, ip: IpAddr) -> Option<&GroupPool> {
        self.pools
            .iter()
            .find(|p| p.kind == PoolKind::Remote && p.range.contains(ip))
    }

    /// Whether `group` is an external group announced remotely.
    pub fn is_external_remote(&self, group: &str) -> bool {
        self.external_remote.contains(group)
    }
}

fn ordered_pools<'a>(
    v4pools: &'a Option<Vec<AddressPool>>,
    v4pool: &'a Option<AddressPool>,
    v6pools: &'a Option<Vec<AddressPool>>,
    v6pool: &'a Option<AddressPool>,
) -> Vec<&'a AddressPool> {
    v4pools
        .iter()
        .flatten()
        .chain(v4pool)
        .chain(v6pools.iter().flatten())
        .chain(v6pool)
        .collect()
}
