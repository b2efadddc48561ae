//! An observable, order-independent picture of the allocation state, for
//! comparing two `Ipam`s (a rebuild must equal the state it was rebuilt
//! from) and checking internal consistency in tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use purelb_api::pool::IpFamily;

use super::request::Port;
use super::{Ipam, Kind};

/// One address in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressState {
    pub group: String,
    pub services: BTreeSet<String>,
    pub sharing_key: Option<String>,
    pub ports: BTreeMap<Port, String>,
}

/// Usage of one group: per family, and the free intervals of each range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupUsage {
    pub allocated_v4: u128,
    pub allocated_v6: u128,
    pub free: Vec<Vec<(u128, u128)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Addresses of local, remote and Netbox groups in use.
    pub addresses: BTreeMap<IpAddr, AddressState>,
    /// Every Service's holdings (external ones included).
    pub services: BTreeMap<String, BTreeSet<(IpAddr, String)>>,
    /// (group, sharing key, family) -> bound address.
    pub sharing: BTreeMap<(String, String, IpFamily), IpAddr>,
    pub usage: BTreeMap<String, GroupUsage>,
}

impl Ipam {
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for group in &self.groups {
            let Some(book) = group.book() else {
                continue;
            };
            for (ip, state) in &book.ips {
                snap.addresses.insert(
                    *ip,
                    AddressState {
                        group: group.name.clone(),
                        services: state.services.clone(),
                        sharing_key: state.sharing_key.clone(),
                        ports: state.ports.clone(),
                    },
                );
            }
            for (key, slots) in &book.by_key {
                for (family, ip) in [IpFamily::V4, IpFamily::V6].into_iter().zip(slots) {
                    if let Some(ip) = ip {
                        snap.sharing
                            .insert((group.name.clone(), key.clone(), family), *ip);
                    }
                }
            }
            let free = match &group.kind {
                Kind::Pool(p) => p
                    .ranges
                    .iter()
                    .map(|r| r.free.intervals().collect())
                    .collect(),
                _ => Vec::new(),
            };
            snap.usage.insert(
                group.name.clone(),
                GroupUsage {
                    allocated_v4: book.in_use[0],
                    allocated_v6: book.in_use[1],
                    free,
                },
            );
        }
        for (service, holdings) in &self.services {
            snap.services.insert(
                service.clone(),
                holdings
                    .iter()
                    .map(|h| (h.ip, self.groups[h.group].name.clone()))
                    .collect(),
            );
        }
        snap
    }

    /// Checks that every index agrees with every other: range usage with the
    /// address books, free space with the addresses in use, the sharing
    /// index with the addresses' keys, Services with the addresses' users.
    /// O(state); for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (g, group) in self.groups.iter().enumerate() {
            if let Kind::Pool(pool) = &group.kind {
                let mut per_range = vec![0u128; pool.ranges.len()];
                for (ip, state) in &pool.book.ips {
                    let slot = state
                        .slot
                        .ok_or_else(|| format!("{ip} in {} has no slot", group.name))?;
                    let range = &pool.ranges[slot.range];
                    if range.spec.addresses().nth(slot.offset) != Some(*ip) {
                        return Err(format!("{ip}: slot {slot:?} is another address"));
                    }
                    if range.free.is_free(slot.offset) {
                        return Err(format!("{ip} in use but free"));
                    }
                    if self.locate(*ip) != Some((g, slot)) {
                        return Err(format!("{ip}: range index disagrees"));
                    }
                    per_range[slot.range] += 1;
                }
                for (r, range) in pool.ranges.iter().enumerate() {
                    if range.used != per_range[r] {
                        return Err(format!(
                            "{} range {r}: used {} but {} addresses",
                            group.name, range.used, per_range[r]
                        ));
                    }
                    let free = range.free.count();
                    if free.saturating_add(range.used) != range.capacity {
                        return Err(format!(
                            "{} range {r}: free {free} + used {} != capacity {}",
                            group.name, range.used, range.capacity
                        ));
                    }
                    let mut last_end: Option<u128> = None;
                    for (s, e) in range.free.intervals() {
                        if s > e || last_end.is_some_and(|l| l.saturating_add(1) >= s) {
                            return Err(format!("{} range {r}: bad free intervals", group.name));
                        }
                        last_end = Some(e);
                    }
                }
            }
            let Some(book) = group.book() else {
                continue;
            };
            let mut counts = [0u128; 2];
            for (ip, state) in &book.ips {
                counts[usize::from(IpFamily::of(*ip) == IpFamily::V6)] += 1;
                if state.services.is_empty() {
                    return Err(format!("{ip} in use by nobody"));
                }
                for s in &state.services {
                    let held = self
                        .services
                        .get(s)
                        .is_some_and(|hs| hs.iter().any(|h| h.ip == *ip && h.group == g));
                    if !held {
                        return Err(format!("{ip} lists {s}, which does not hold it"));
                    }
                }
                for user in state.ports.values() {
                    if !state.services.contains(user) {
                        return Err(format!("{ip}: port held by {user}, not a user"));
                    }
                }
                if let Some(key) = &state.sharing_key
                    && book.bound(key, IpFamily::of(*ip)).is_none()
                {
                    return Err(format!("{ip}: key {key} not in the sharing index"));
                }
            }
            if counts != book.in_use {
                return Err(format!(
                    "{}: in-use counters {:?} != {counts:?}",
                    group.name, book.in_use
                ));
            }
            for (key, slots) in &book.by_key {
                for ip in slots.iter().flatten() {
                    let ok = book
                        .ips
                        .get(ip)
                        .is_some_and(|s| s.sharing_key.as_deref() == Some(key.as_str()));
                    if !ok {
                        return Err(format!("sharing index {key} -> {ip} is stale"));
                    }
                }
            }
        }
        for (service, holdings) in &self.services {
            for h in holdings {
                if let Some(book) = self.groups[h.group].book() {
                    let listed = book
                        .ips
                        .get(&h.ip)
                        .is_some_and(|s| s.services.contains(service));
                    if !listed {
                        return Err(format!("{service} holds {} but is not listed", h.ip));
                    }
                }
            }
        }
        Ok(())
    }
}
