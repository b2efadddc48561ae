//! A restarted agent's addresses: the ones an earlier run added (they carry the protocol
//! marker) are adopted, kept while a Service still wants them, and removed after the first
//! full pass otherwise.

use super::*;

impl Announcer {
    /// Takes over the addresses an earlier run left (protocol marker): a decision
    /// that wants one keeps it in place; [`Self::remove_unclaimed`] removes the rest.
    pub fn adopt(&mut self, owned: &[Address]) {
        for a in owned {
            self.adopted.entry(a.ip).or_default().push(a.clone());
        }
        if !owned.is_empty() {
            tracing::info!(
                op = "startup",
                addresses = owned.len(),
                "adopting addresses an earlier run added"
            );
        }
    }

    /// Removes what was adopted but no decision claimed (after the first full pass).
    pub async fn remove_unclaimed(&mut self) {
        for (ip, addresses) in std::mem::take(&mut self.adopted) {
            for a in addresses {
                match self
                    .kernel
                    .remove_exact_address(a.ifindex, a.ip, a.prefix_len)
                    .await
                {
                    Ok(removed) => {
                        self.metrics.address_withdrawals.inc();
                        tracing::info!(op = "withdrawAddress", ip = %ip, interface = a.ifname.as_deref().unwrap_or_default(),
                            reason = "notWanted", removed = u8::from(removed), "withdrawAddress");
                    }
                    Err(error) => {
                        tracing::warn!(op = "withdrawAddress", ip = %ip, %error, "removing a leftover address failed")
                    }
                }
            }
        }
    }
}
