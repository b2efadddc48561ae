//! The IPAM core: ServiceGroups in, per-Service allocation decisions out.
//!
//! Pure: no Kubernetes types and no I/O. The allocator controller builds an
//! [`Ipam`] from the ServiceGroups ([`Ipam::from_groups`]),
//! replays the existing allocations of branded Services into it
//! ([`Ipam::notify`]), then for every handled LoadBalancer Service
//! calls [`Ipam::reconcile`] and writes out the returned
//! [`Outcome`]: the ingress list, annotations, events and metric increments.
//! Addresses of Netbox and external (sidecar) groups come from outside: for
//! those `reconcile` returns the call to make ([`Step::Netbox`],
//! [`Step::External`]) and the controller hands the answer back
//! ([`Ipam::complete_netbox`], [`Ipam::complete_external`]).
//!
//! Cost: assigning or releasing one address is O(log n) in the size of its
//! range (free space is kept as intervals, so `/64` and `::/0` ranges are
//! never materialised); nothing scans all Services or all addresses.
//!
//! A new generation (new ServiceGroups) starts empty and re-learns addresses
//! from the Services; an address no group holds any longer is reported as
//! unknown and left on its Service (deleting or shrinking a pool never
//! revokes anything).

mod book;
mod error;
mod free;
mod intake;
mod namespaces;
mod outcome;
mod pool;
mod reconcile;
mod remote;
mod request;
mod snapshot;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use purelb_api::pool::IpFamily;

use book::{AddressBook, Slot};
use namespaces::Bindings;
use pool::{LocalPool, ip_bits};

pub use error::{IpamError, NoValidPools, Unavailable};
pub use intake::{GroupInput, GroupReport, GroupResult, IntakeReport, Scope};
pub use namespaces::{Resolution, Via};
pub use outcome::{
    AnnotationChange, Assignment, Event, EventReason, EventType, ExternalRelease, Metric, Outcome,
    PoolType, RejectReason, ReleaseTarget, Released,
};
pub use remote::{ExternalAllocate, ExternalPending, NetboxPending, RemoteError};
pub use request::{AddressSource, Port, ServiceRequest, SpecificAddresses};
pub use snapshot::{AddressState, GroupUsage, Snapshot};
pub use status::{ExternalStats, GroupStatus};

/// The name of the group used when nothing else selects one.
pub const DEFAULT_GROUP: &str = "default";

/// What [`Ipam::reconcile`] needs next.
#[derive(Debug)]
pub enum Step {
    /// Finished: write the outcome out.
    Done(Outcome),
    /// Ask the external IPAM sidecar, then call [`Ipam::complete_external`].
    External(ExternalPending),
    /// Ask Netbox, then call [`Ipam::complete_netbox`].
    Netbox(NetboxPending),
}

/// Which kind of pool a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Local,
    Remote,
    Netbox,
    External,
}

impl GroupKind {
    /// The `type` label of `purelb_servicegroups_out_of_scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Netbox => "netbox",
            Self::External => "external",
        }
    }
}

/// A Netbox group: addresses are reserved in Netbox; the IPAM records the
/// ones the controller obtained so sharing and conflicts are checked.
#[derive(Debug, Clone)]
pub(crate) struct NetboxPool {
    pub url: String,
    pub tenant: String,
    pub book: AddressBook,
}

/// An external group: the sidecar owns the addresses.
#[derive(Debug, Clone)]
pub(crate) struct ExternalPool {
    pub provider: String,
    pub socket: String,
    pub announce: PoolType,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Pool(LocalPool),
    Netbox(NetboxPool),
    External(ExternalPool),
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub namespace: String,
    pub name: String,
    /// `spec.namespaces` as written (status echoes it).
    pub namespaces: Option<Vec<String>>,
    /// Deduplicated and sorted; empty means every namespace.
    pub served: Vec<String>,
    pub enforce: bool,
    pub namespace_default: bool,
    pub kind: Kind,
}

impl Group {
    pub(crate) fn pool_type(&self) -> PoolType {
        match &self.kind {
            Kind::Pool(p) => p.pool_type,
            Kind::Netbox(_) => PoolType::Remote,
            Kind::External(e) => e.announce,
        }
    }

    pub(crate) fn skip_ipv6_dad(&self) -> bool {
        matches!(&self.kind, Kind::Pool(p) if p.skip_ipv6_dad)
    }

    pub(crate) fn multi_pool(&self) -> bool {
        matches!(&self.kind, Kind::Pool(p) if p.multi_pool)
    }

    pub(crate) fn balance_pools(&self) -> bool {
        matches!(&self.kind, Kind::Pool(p) if p.balance_pools)
    }

    pub(crate) fn serves(&self, namespace: &str) -> bool {
        self.served.is_empty()
            || self
                .served
                .binary_search_by(|n| n.as_str().cmp(namespace))
                .is_ok()
    }

    pub(crate) fn kind(&self) -> GroupKind {
        match &self.kind {
            Kind::Pool(p) if p.pool_type == PoolType::Local => GroupKind::Local,
            Kind::Pool(_) => GroupKind::Remote,
            Kind::Netbox(_) => GroupKind::Netbox,
            Kind::External(_) => GroupKind::External,
        }
    }

    fn book(&self) -> Option<&AddressBook> {
        match &self.kind {
            Kind::Pool(p) => Some(&p.book),
            Kind::Netbox(n) => Some(&n.book),
            Kind::External(_) => None,
        }
    }
}

/// One address a Service holds, and the group it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holding {
    pub ip: IpAddr,
    pub group: usize,
}

/// One generation of pools and the allocations made from them.
#[derive(Debug, Clone, Default)]
pub struct Ipam {
    groups: Vec<Group>,
    by_name: HashMap<String, usize>,
    /// In-scope groups that were refused (parse error, overlap).
    rejected: BTreeSet<String>,
    bindings: Bindings,
    /// Range start -> (group, range) for local/remote ranges, `[v4, v6]`.
    /// Ranges never overlap, so the last start at or below an address is the
    /// only candidate.
    ranges: [BTreeMap<u128, (usize, usize)>; 2],
    /// Service key -> the addresses it holds, in the order acquired.
    services: HashMap<String, Vec<Holding>>,
}

fn family_slot(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

impl Ipam {
    /// No groups: every allocation fails with `unknown pool "default"`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Names of the accepted groups, sorted by (namespace, name).
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.name.as_str())
    }

    /// The kind of the accepted group `name`.
    pub fn group_kind(&self, name: &str) -> Option<GroupKind> {
        self.group(name).map(Group::kind)
    }

    /// The namespace the accepted group `name` lives in.
    pub fn group_namespace(&self, name: &str) -> Option<&str> {
        self.group(name).map(|g| g.namespace.as_str())
    }

    pub(crate) fn group(&self, name: &str) -> Option<&Group> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    /// The local or remote group whose ranges hold `ip`.
    pub fn group_of(&self, ip: IpAddr) -> Option<&str> {
        self.locate(ip).map(|(g, _)| self.groups[g].name.as_str())
    }

    /// The addresses `service` holds in this generation, with their groups.
    pub fn holdings(&self, service: &str) -> Vec<(IpAddr, &str)> {
        self.services
            .get(service)
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.ip, self.groups[h.group].name.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every Service that holds an address.
    pub fn service_keys(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// The local/remote range holding `ip`: (group, slot).
    pub(crate) fn locate(&self, ip: IpAddr) -> Option<(usize, Slot)> {
        let ip = ip.to_canonical();
        let map = &self.ranges[family_slot(IpFamily::of(ip))];
        let (_, &(g, r)) = map.range(..=ip_bits(ip)).next_back()?;
        let Kind::Pool(pool) = &self.groups[g].kind else {
            return None;
        };
        let range = pool.ranges.get(r)?;
        let offset = range.spec.addresses().offset_of(ip)?;
        // Offsets in the mapped block of an IPv6 range are IPv4 addresses
        // and were canonicalised away above, so any hit here is real.
        Some((g, Slot { range: r, offset }))
    }

    /// The Netbox group that has recorded `ip`, if any.
    pub(crate) fn netbox_holder(&self, ip: IpAddr) -> Option<usize> {
        self.groups.iter().position(|g| match &g.kind {
            Kind::Netbox(n) => n.book.ips.contains_key(&ip),
            _ => false,
        })
    }

    /// Records `service` on `ip` in `group` without checks.
    pub(crate) fn hold(
        &mut self,
        service: &str,
        ip: IpAddr,
        group: usize,
        slot: Option<Slot>,
        key: Option<&str>,
        ports: &[Port],
    ) {
        match &mut self.groups[group].kind {
            Kind::Pool(p) => {
                if p.book.hold(ip, service, key, ports, slot)
                    && let Some(slot) = slot
                {
                    p.take(slot);
                }
            }
            Kind::Netbox(n) => {
                n.book.hold(ip, service, key, ports, None);
            }
            Kind::External(_) => {}
        }
        match self.services.get_mut(service) {
            Some(holdings) => {
                if !holdings.iter().any(|h| h.ip == ip) {
                    holdings.push(Holding { ip, group });
                }
            }
            None => {
                self.services
                    .insert(service.to_owned(), vec![Holding { ip, group }]);
            }
        }
    }

    /// Takes `service` off `ip`; returns the group it was held in and
    /// whether the address is now free (no Service uses it).
    pub(crate) fn unhold(&mut self, service: &str, ip: IpAddr) -> Option<(usize, bool)> {
        let holdings = self.services.get_mut(service)?;
        let pos = holdings.iter().position(|h| h.ip == ip)?;
        let holding = holdings.remove(pos);
        if holdings.is_empty() {
            self.services.remove(service);
        }
        let freed = match &mut self.groups[holding.group].kind {
            Kind::Pool(p) => match p.book.unhold(ip, service) {
                Some(slot) => {
                    if let Some(slot) = slot {
                        p.give(slot);
                    }
                    true
                }
                None => false,
            },
            Kind::Netbox(n) => n.book.unhold(ip, service).is_some(),
            Kind::External(_) => true,
        };
        Some((holding.group, freed))
    }
}
