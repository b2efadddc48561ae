//! The kernel changed under the announcer: addresses that disappeared are forgotten so their
//! Services are planned again, and local addresses on links that went down are found.

use super::*;

impl Announcer {
    /// Reconciles `held` with the kernel after a change there: an address of ours
    /// that disappeared (link deleted, IPv6 flushed on link down, removed by hand)
    /// is forgotten, and the Services that announced it are returned to be run again.
    pub fn forget_vanished(&mut self, net: &NetSnapshot) -> BTreeSet<String> {
        let present: HashMap<(IpAddr, u32), u8> = net
            .owned
            .iter()
            .map(|a| ((a.ip, a.ifindex), a.prefix_len))
            .collect();
        let vanished: Vec<IpAddr> = self
            .held
            .iter()
            .filter(|(ip, h)| present.get(&(**ip, h.ifindex)) != Some(&h.prefix_len))
            .map(|(ip, _)| *ip)
            .collect();
        let mut services = BTreeSet::new();
        for ip in vanished {
            if let Some(h) = self.held.remove(&ip)
                && let Some(task) = h.garp
            {
                task.abort();
            }
            let owners = self.forget_owners(ip);
            tracing::info!(op = "announce", ip = %ip, "an announced address disappeared from the kernel; re-evaluating");
            services.extend(owners);
        }
        services
    }

    /// The local addresses held on links that are gone or down.
    pub fn local_on_down_links(&self, net: &NetSnapshot) -> Vec<IpAddr> {
        self.held_local()
            .filter(|(_, h)| net.link(h.ifindex).is_none_or(|l| !l.is_up()))
            .map(|(ip, _)| *ip)
            .collect()
    }
}
