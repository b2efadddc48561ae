//! Which Services announce which addresses on this node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Which Services announce which addresses on this node: the reference count of the
/// shared-IP rule. Only successful adds are recorded, so a Service that
/// lost an election never holds an address on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncedAddresses {
    by_ip: BTreeMap<IpAddr, BTreeSet<String>>,
}

/// What to do with the kernel address after a Service stops announcing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRemoval {
    /// No other Service announces it: delete it from every link that carries it.
    Remove,
    /// Another Service on this node still announces it: keep it.
    KeepShared { other: String },
}

impl AnnouncedAddresses {
    /// Records that `service` announces `ip` (after a successful add).
    pub fn record(&mut self, service: &str, ip: IpAddr) {
        self.by_ip
            .entry(ip.to_canonical())
            .or_default()
            .insert(service.to_owned());
    }

    /// Drops `service`'s record for `ip` and says whether the address may go.
    pub fn withdraw(&mut self, service: &str, ip: IpAddr) -> AddressRemoval {
        let ip = ip.to_canonical();
        let Some(services) = self.by_ip.get_mut(&ip) else {
            return AddressRemoval::Remove;
        };
        services.remove(service);
        match services.iter().next() {
            Some(other) => AddressRemoval::KeepShared {
                other: other.clone(),
            },
            None => {
                self.by_ip.remove(&ip);
                AddressRemoval::Remove
            }
        }
    }

    pub fn is_announced(&self, service: &str, ip: IpAddr) -> bool {
        self.by_ip
            .get(&ip.to_canonical())
            .is_some_and(|s| s.contains(service))
    }

    /// Every (service, address) pair, by address.
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpAddr)> {
        self.by_ip
            .iter()
            .flat_map(|(ip, services)| services.iter().map(move |s| (s.as_str(), *ip)))
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn shared_addresses_stay_while_another_service_announces_them() {
        let mut a = AnnouncedAddresses::default();
        let shared = ip("192.168.1.240");
        a.record("ns/web", shared);
        a.record("ns/api", ip("::ffff:192.168.1.240"));
        assert!(a.is_announced("ns/api", shared));
        assert_eq!(
            a.withdraw("ns/web", shared),
            AddressRemoval::KeepShared {
                other: "ns/api".into()
            }
        );
        assert!(!a.is_announced("ns/web", shared));
        // Withdrawing again changes nothing.
        assert_eq!(
            a.withdraw("ns/web", shared),
            AddressRemoval::KeepShared {
                other: "ns/api".into()
            }
        );
        assert_eq!(a.withdraw("ns/api", shared), AddressRemoval::Remove);
        assert!(a.is_empty());
        // Never announced here: the kernel address (if any) can go.
        assert_eq!(a.withdraw("ns/x", ip("10.0.0.1")), AddressRemoval::Remove);
        a.record("ns/a", ip("10.0.0.1"));
        a.record("ns/b", ip("10.0.0.2"));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![("ns/a", ip("10.0.0.1")), ("ns/b", ip("10.0.0.2"))]
        );
    }
}
