//! Per-address bookkeeping of one group: who uses an address, its sharing
//! key, its ports, and the reverse index `(sharing key, family) -> address`.
//! Every operation touches one address: O(1) expected, plus the
//! Service's own ports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use purelb_api::pool::IpFamily;

use super::error::Unavailable;
use super::request::Port;

/// Where a group-owned address lives: range index and offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub range: usize,
    pub offset: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpState {
    pub services: BTreeSet<String>,
    pub sharing_key: Option<String>,
    pub ports: BTreeMap<Port, String>,
    /// `None` for addresses that come from outside (Netbox).
    pub slot: Option<Slot>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct AddressBook {
    pub ips: HashMap<IpAddr, IpState>,
    /// sharing key -> bound address per family (`[v4, v6]`).
    pub by_key: HashMap<String, [Option<IpAddr>; 2]>,
    /// Addresses in use per family (`[v4, v6]`).
    pub in_use: [u128; 2],
}

fn family_index(ip: IpAddr) -> usize {
    match IpFamily::of(ip) {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

fn sharing_ok(existing: Option<&str>, new: Option<&str>) -> Result<(), Unavailable> {
    let Some(existing) = existing else {
        return Err(Unavailable::ExistingNotShared);
    };
    let Some(new) = new else {
        return Err(Unavailable::NewNotShared);
    };
    if existing != new {
        return Err(Unavailable::KeyMismatch {
            new: new.to_owned(),
            existing: existing.to_owned(),
        });
    }
    Ok(())
}

impl AddressBook {
    /// The address `key` is bound to in `family`.
    pub(crate) fn bound(&self, key: &str, family: IpFamily) -> Option<IpAddr> {
        let i = match family {
            IpFamily::V4 => 0,
            IpFamily::V6 => 1,
        };
        self.by_key.get(key).and_then(|slots| slots[i])
    }

    /// Whether `ip` may be given to `service`:
    /// 1. a sharing key already bound to another address of the family
    ///    refuses every other address;
    /// 2. an address in use needs equal non-empty keys, unless the Service
    ///    is its only user (then the key changes in place);
    /// 3. none of the Service's ports may be held by another Service there.
    pub(crate) fn available(
        &self,
        ip: IpAddr,
        service: &str,
        key: Option<&str>,
        ports: &[Port],
    ) -> Result<(), Unavailable> {
        if let Some(key) = key
            && let Some(bound) = self.bound(key, IpFamily::of(ip))
            && bound != ip
        {
            return Err(Unavailable::KeyBound {
                key: key.to_owned(),
                bound,
                ip,
            });
        }
        let Some(state) = self.ips.get(&ip) else {
            return Ok(());
        };
        if let Err(refusal) = sharing_ok(state.sharing_key.as_deref(), key) {
            let others: Vec<String> = state
                .services
                .iter()
                .filter(|s| s.as_str() != service)
                .cloned()
                .collect();
            if !others.is_empty() {
                // Upstream always says "can't change sharing key" here; that
                // only describes a Service already on the address, so a
                // newcomer gets the reason itself.
                if state.services.contains(service) {
                    return Err(Unavailable::KeyInUse {
                        service: service.to_owned(),
                        others,
                    });
                }
                return Err(refusal);
            }
        }
        for port in ports {
            if let Some(user) = state.ports.get(port)
                && user != service
            {
                return Err(Unavailable::PortInUse {
                    port: port.clone(),
                    ip,
                    service: user.clone(),
                });
            }
        }
        Ok(())
    }

    /// Records `service` on `ip` without checks (also the rebuild path): the
    /// address takes the Service's sharing key, the Service's ports on it are
    /// replaced. Returns true if the address was free before.
    pub(crate) fn hold(
        &mut self,
        ip: IpAddr,
        service: &str,
        key: Option<&str>,
        ports: &[Port],
        slot: Option<Slot>,
    ) -> bool {
        let fi = family_index(ip);
        let mut fresh = false;
        let state = self.ips.entry(ip).or_insert_with(|| {
            fresh = true;
            IpState {
                services: BTreeSet::new(),
                sharing_key: None,
                ports: BTreeMap::new(),
                slot,
            }
        });
        if fresh {
            self.in_use[fi] += 1;
        }
        if !state.services.contains(service) {
            state.services.insert(service.to_owned());
        }
        if state.sharing_key.as_deref() != key {
            if let Some(old) = state.sharing_key.take() {
                Self::unbind(&mut self.by_key, &old, fi, ip);
            }
            state.sharing_key = key.map(str::to_owned);
        }
        if let Some(key) = key {
            match self.by_key.get_mut(key) {
                Some(slots) => slots[fi] = Some(ip),
                None => {
                    let mut slots = [None, None];
                    slots[fi] = Some(ip);
                    self.by_key.insert(key.to_owned(), slots);
                }
            }
        }
        if !state.ports.is_empty() {
            state.ports.retain(|_, user| user != service);
        }
        for port in ports {
            state.ports.insert(port.clone(), service.to_owned());
        }
        fresh
    }

    fn unbind(by_key: &mut HashMap<String, [Option<IpAddr>; 2]>, key: &str, fi: usize, ip: IpAddr) {
        if let Some(slots) = by_key.get_mut(key)
            && slots[fi] == Some(ip)
        {
            slots[fi] = None;
            if slots.iter().all(Option::is_none) {
                by_key.remove(key);
            }
        }
    }

    /// Takes `service` off `ip` (its ports too). When the last user leaves
    /// the address is free again: returns `Some(slot)`.
    pub(crate) fn unhold(&mut self, ip: IpAddr, service: &str) -> Option<Option<Slot>> {
        let state = self.ips.get_mut(&ip)?;
        if !state.services.remove(service) {
            return None;
        }
        if !state.services.is_empty() {
            state.ports.retain(|_, user| user != service);
            return None;
        }
        let state = self.ips.remove(&ip)?;
        self.in_use[family_index(ip)] -= 1;
        if let Some(key) = state.sharing_key {
            Self::unbind(&mut self.by_key, &key, family_index(ip), ip);
        }
        Some(state.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_only_user_may_change_its_key_in_place() {
        let mut book = AddressBook::default();
        let a = ip("10.0.0.1");
        book.hold(a, "ns/s", Some("k1"), &[], None);
        assert_eq!(book.available(a, "ns/s", Some("k2"), &[]), Ok(()));
        assert_eq!(book.available(a, "ns/s", None, &[]), Ok(()));
        book.hold(a, "ns/s", Some("k2"), &[], None);
        assert_eq!(book.bound("k1", IpFamily::V4), None);
        assert_eq!(book.bound("k2", IpFamily::V4), Some(a));
        assert_eq!(book.ips[&a].sharing_key.as_deref(), Some("k2"));
    }

    #[test]
    fn a_user_among_others_cannot_change_its_key() {
        let mut book = AddressBook::default();
        let a = ip("10.0.0.1");
        book.hold(a, "ns/s", Some("k"), &[], None);
        book.hold(a, "ns/t", Some("k"), &[], None);
        book.hold(a, "ns/u", Some("k"), &[], None);
        let err = book.available(a, "ns/s", Some("k2"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "can't change sharing key for \"ns/s\", address also in use by ns/t,ns/u"
        );
        assert_eq!(
            book.available(a, "ns/s", None, &[])
                .unwrap_err()
                .to_string(),
            "can't change sharing key for \"ns/s\", address also in use by ns/t,ns/u"
        );
    }

    #[test]
    fn own_ports_never_conflict_and_are_replaced() {
        let mut book = AddressBook::default();
        let a = ip("fd00::1");
        let p80 = Port::new("TCP", 80);
        let p81 = Port::new("TCP", 81);
        book.hold(a, "ns/s", Some("k"), std::slice::from_ref(&p80), None);
        assert_eq!(
            book.available(a, "ns/s", Some("k"), std::slice::from_ref(&p80)),
            Ok(())
        );
        assert!(
            book.available(a, "ns/t", Some("k"), std::slice::from_ref(&p80))
                .is_err()
        );
        // Re-holding replaces the Service's ports.
        book.hold(a, "ns/s", Some("k"), std::slice::from_ref(&p81), None);
        assert_eq!(
            book.available(a, "ns/t", Some("k"), std::slice::from_ref(&p80)),
            Ok(())
        );
        assert_eq!(book.in_use, [0, 1]);
        assert_eq!(book.unhold(a, "ns/t"), None);
        assert_eq!(book.unhold(a, "ns/s"), Some(None));
        assert_eq!(book.in_use, [0, 0]);
        assert!(book.by_key.is_empty());
    }
}
