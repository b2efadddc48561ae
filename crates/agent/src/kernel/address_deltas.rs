//! The addresses on a set of interfaces (chosen by name globs), as an
//! initial dump followed by add/remove deltas. This is what the BGP
//! speaker's `kube-lb0` import runs on.

use super::addr::is_link_local_v6;
use super::{Address, EventGroups, EventStream, KernelError, KernelEvent, glob_match};
use futures::StreamExt;
use purelb_api::pool::{IpNet, network_of};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// An address on a followed interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FollowedAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl FollowedAddress {
    /// The network the address sits in: the connected route the kernel
    /// installs for it (unless it was added with `noprefixroute`).
    pub fn network(&self) -> IpNet {
        let bits = if self.ip.is_ipv4() { 32 } else { 128 };
        match network_of(self.ip, self.prefix_len.min(bits)) {
            Ok(c) => c,
            Err(_) => unreachable!("a prefix length within the family's width is valid"),
        }
    }
}

/// What changed since the previous [`AddressFollower::next`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressDelta {
    /// Sorted.
    pub added: Vec<FollowedAddress>,
    /// Sorted.
    pub removed: Vec<FollowedAddress>,
}

impl AddressDelta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Watches the addresses on every interface whose name matches one of a
/// set of globs ([`glob_match`]: `*`, `?`).
///
/// The followed set is of `(ip, prefix_len)` pairs, across all matching
/// interfaces: a pair on two matching interfaces counts once, and is
/// removed when it is on none. IPv6 link-local addresses are left out.
/// Interfaces that appear later, are renamed into or out of the patterns,
/// or disappear are followed.
///
/// The first [`next`](Self::next) returns the initial dump as `added` (even
/// when it is empty); each later call waits for a change, applies every
/// notification already queued (so a burst comes as one delta), and
/// returns the net change. Changes that cancel out within a batch are not
/// reported. After a receive-buffer overrun the follower re-reads the
/// kernel's state and reports the difference. `next` is cancel-safe.
#[derive(Debug)]
pub struct AddressFollower {
    events: EventStream,
    patterns: Vec<String>,
    /// Every (non-link-local) address on every link, by ifindex.
    all: BTreeSet<(u32, FollowedAddress)>,
    names: HashMap<u32, String>,
    /// The set as last reported.
    reported: BTreeSet<FollowedAddress>,
    resync: bool,
    initial: bool,
}

impl AddressFollower {
    /// Subscribes (in the calling thread's network namespace, on the
    /// current tokio runtime). The initial dump happens in the first
    /// [`next`](Self::next).
    pub async fn open<I, S>(patterns: I) -> Result<Self, KernelError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let events = EventStream::open(EventGroups {
            links: true,
            addresses: true,
            routes: false,
        })
        .await?;
        Ok(Self {
            events,
            patterns: patterns.into_iter().map(Into::into).collect(),
            all: BTreeSet::new(),
            names: HashMap::new(),
            reported: BTreeSet::new(),
            resync: true,
            initial: true,
        })
    }

    /// The followed set as last returned by [`next`](Self::next).
    pub fn current(&self) -> &BTreeSet<FollowedAddress> {
        &self.reported
    }

    /// The name patterns.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Waits for the next change of the followed set (see the type docs).
    pub async fn next(&mut self) -> Result<AddressDelta, KernelError> {
        loop {
            if self.resync {
                self.full_resync().await?;
                self.resync = false;
            } else {
                let ev = self.events.next().await.ok_or_else(closed)?;
                self.apply(ev);
            }
            self.drain()?;
            if self.resync {
                continue;
            }
            let delta = self.diff();
            if !delta.is_empty() || std::mem::take(&mut self.initial) {
                return Ok(delta);
            }
        }
    }

    fn drain(&mut self) -> Result<(), KernelError> {
        loop {
            match self.events.try_next_now() {
                Ok(Some(ev)) => self.apply(ev),
                Ok(None) => return Ok(()),
                Err(()) => return Err(closed()),
            }
        }
    }

    async fn full_resync(&mut self) -> Result<(), KernelError> {
        let links = self.events.reseed_links().await?;
        let kernel = self.events.kernel().clone();
        // A partial dump is still the best evidence; notifications queued
        // meanwhile are applied on top of it.
        let mut dump = kernel.dump_addresses().await?;
        for _ in 1..super::DUMP_ATTEMPTS {
            if !dump.interrupted {
                break;
            }
            dump = kernel.dump_addresses().await?;
        }
        self.names = links.into_iter().map(|l| (l.index, l.name)).collect();
        self.all = dump
            .items
            .iter()
            .filter_map(|a| followed(a).map(|w| (a.ifindex, w)))
            .collect();
        Ok(())
    }

    fn apply(&mut self, ev: KernelEvent) {
        match ev {
            KernelEvent::AddressAdded(a) => {
                if let Some(w) = followed(&a) {
                    self.all.insert((a.ifindex, w));
                }
            }
            KernelEvent::AddressRemoved(a) => {
                if let Some(w) = followed(&a) {
                    self.all.remove(&(a.ifindex, w));
                }
            }
            KernelEvent::LinkChanged { ifindex, name, .. } => {
                self.names.insert(ifindex, name);
            }
            KernelEvent::LinkRemoved { ifindex, .. } => {
                self.names.remove(&ifindex);
                self.all.retain(|(i, _)| *i != ifindex);
            }
            KernelEvent::Overrun => self.resync = true,
            KernelEvent::RouteAdded(_) | KernelEvent::RouteRemoved(_) => {}
        }
    }

    fn diff(&mut self) -> AddressDelta {
        let matching: HashSet<u32> = self
            .names
            .iter()
            .filter(|(_, name)| self.patterns.iter().any(|p| glob_match(p, name)))
            .map(|(i, _)| *i)
            .collect();
        let now: BTreeSet<FollowedAddress> = self
            .all
            .iter()
            .filter(|(i, _)| matching.contains(i))
            .map(|(_, w)| *w)
            .collect();
        let delta = AddressDelta {
            added: now.difference(&self.reported).copied().collect(),
            removed: self.reported.difference(&now).copied().collect(),
        };
        self.reported = now;
        delta
    }
}

fn followed(a: &Address) -> Option<FollowedAddress> {
    if let IpAddr::V6(v6) = a.ip
        && is_link_local_v6(v6)
    {
        return None;
    }
    Some(FollowedAddress {
        ip: a.ip,
        prefix_len: a.prefix_len,
    })
}

fn closed() -> KernelError {
    KernelError::Closed {
        op: "following addresses".to_owned(),
    }
}
