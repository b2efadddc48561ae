//! Finite address lifetimes, refreshed before they run out (local addresses only while this
//! node is healthy).

use super::*;

impl Announcer {
    /// The next lifetime renewal.
    pub fn next_renewal(&self) -> Option<Instant> {
        self.held.values().filter_map(|h| h.renew_at).min()
    }

    /// Refreshes the lifetimes that are due (`AddrReplace` again).
    pub async fn renew_due(&mut self, now: Instant) {
        let due: Vec<IpAddr> = self
            .held
            .iter()
            .filter(|(_, h)| h.renew_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let Some(held) = self.held.get_mut(&ip) else {
                continue;
            };
            // Rescheduled even on error, as upstream does.
            held.renew_at = held.renew_every.map(|d| now + d);
            if held.kind == Kind::Local && !self.view.borrow().healthy {
                continue;
            }
            let (ifindex, prefix_len, opts) = (held.ifindex, held.prefix_len, held.options);
            match self
                .kernel
                .add_address(ifindex, ip, prefix_len, &opts)
                .await
            {
                Ok(()) => {
                    self.metrics.address_renewals.inc();
                }
                Err(error) => {
                    self.metrics.address_renewal_errors.inc();
                    tracing::warn!(op = "renewAddress", ip = %ip, %error, "renewing an address failed");
                }
            }
        }
    }
}
