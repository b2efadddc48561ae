//! The address pool of a local or remote ServiceGroup: its ranges in
//! declaration order, the free space of each, and the address book.

use std::net::IpAddr;

use purelb_api::pool::{IpFamily, PoolRange};

use super::book::{AddressBook, Slot};
use super::free::FreeSpace;
use super::outcome::PoolType;

/// IPv4-mapped IPv6 (`::ffff:0:0/96`): `AddressRange` counts it inside IPv6
/// ranges that span it, but those are IPv4 addresses; never hand them out
/// as IPv6.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

#[derive(Debug, Clone)]
pub(crate) struct RangeState {
    pub spec: PoolRange,
    pub free: FreeSpace,
    /// Addresses that can be handed out (the range less the mapped block).
    pub capacity: u128,
    /// Distinct addresses in use.
    pub used: u128,
}

impl RangeState {
    pub(crate) fn new(spec: PoolRange) -> Self {
        let max = spec.addresses().max_offset();
        let mut free = FreeSpace::new(max);
        // `max + 1` addresses; only `::/0` would overflow, and it spans the
        // mapped block, so it always takes the carved branch.
        let mut capacity = max.saturating_add(1);
        if let IpAddr::V6(first) = spec.addresses().first() {
            let first = u128::from(first);
            let last = first.saturating_add(max);
            if first <= MAPPED_LAST && last >= MAPPED_FIRST {
                let lo = MAPPED_FIRST.max(first) - first;
                let hi = MAPPED_LAST.min(last) - first;
                free.take_span(lo, hi);
                capacity = max - (hi - lo);
            }
        }
        Self {
            spec,
            free,
            capacity,
            used: 0,
        }
    }

    pub(crate) fn first_free(&self) -> Option<(u128, IpAddr)> {
        let offset = self.free.first()?;
        self.spec.addresses().nth(offset).map(|ip| (offset, ip))
    }

    pub(crate) fn family(&self) -> IpFamily {
        self.spec.family()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LocalPool {
    pub pool_type: PoolType,
    pub skip_ipv6_dad: bool,
    pub multi_pool: bool,
    pub balance_pools: bool,
    pub ranges: Vec<RangeState>,
    /// Indices into `ranges`, per family, in scanning order.
    pub v4: Vec<usize>,
    pub v6: Vec<usize>,
    pub book: AddressBook,
}

impl LocalPool {
    pub(crate) fn family(&self, family: IpFamily) -> &[usize] {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }

    /// Marks a fresh address used in its range.
    pub(crate) fn take(&mut self, slot: Slot) {
        if let Some(range) = self.ranges.get_mut(slot.range)
            && range.free.take(slot.offset)
        {
            range.used += 1;
        }
    }

    /// Gives a no-longer-used address back to its range.
    pub(crate) fn give(&mut self, slot: Slot) {
        if let Some(range) = self.ranges.get_mut(slot.range)
            && range.free.give(slot.offset)
        {
            range.used -= 1;
        }
    }

    /// The lowest free address over `ranges` in order.
    pub(crate) fn first_free_in(&self, ranges: &[usize]) -> Option<(Slot, IpAddr)> {
        ranges.iter().find_map(|&r| {
            self.ranges[r]
                .first_free()
                .map(|(offset, ip)| (Slot { range: r, offset }, ip))
        })
    }

    /// The last address of the last range of `family` (what upstream's scan
    /// saw last), if any.
    pub(crate) fn last_address(&self, family: IpFamily) -> Option<IpAddr> {
        self.family(family)
            .last()
            .map(|&r| self.ranges[r].spec.addresses().last())
    }

    pub(crate) fn allocated(&self, family: IpFamily) -> u128 {
        self.family(family)
            .iter()
            .map(|&r| self.ranges[r].used)
            .fold(0, u128::saturating_add)
    }

    pub(crate) fn capacity(&self, family: IpFamily) -> u128 {
        self.family(family)
            .iter()
            .map(|&r| self.ranges[r].capacity)
            .fold(0, u128::saturating_add)
    }
}

/// An address as a number, for ordering ranges of one family.
pub(crate) fn ip_bits(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}
