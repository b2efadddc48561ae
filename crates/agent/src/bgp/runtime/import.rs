//! `netlinkImport`: the addresses on the import interfaces, followed as kernel deltas and
//! turned into the speaker's announcements and withdrawals at once.

use super::*;
use crate::bgp::import::route_changes;

impl BgpAgent {
    /// Replaces the address watcher: withdraws what the old one imported, then imports what the
    /// new one finds.
    pub(super) async fn restart_import(&mut self, settings: &ImportSettings) {
        if let Some(old) = self.importer.take()
            && let Some(s) = &self.speaker
        {
            for a in old.current() {
                s.withdraw(Prefix::of(a.network()));
            }
        }
        self.import_settings = Some(settings.clone());
        if !settings.enabled {
            return;
        }
        match AddressFollower::open(settings.interfaces.clone()).await {
            Ok(w) => self.importer = Some(w),
            Err(error) => {
                tracing::error!(op = "netlinkImport", %error, "cannot watch the import interfaces");
            }
        }
    }

    pub(super) async fn imported(&mut self, delta: Result<AddressDelta, KernelError>) {
        let delta = match delta {
            Ok(d) => d,
            Err(error) => {
                tracing::error!(op = "netlinkImport", %error, "address watch failed; reopening");
                self.importer = None;
                if let Some(settings) = self.import_settings.take() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.restart_import(&settings).await;
                }
                return;
            }
        };
        let Some(speaker) = &self.speaker else {
            return;
        };
        let current = self
            .importer
            .as_ref()
            .map(|w| w.current().clone())
            .unwrap_or_default();
        let changes = route_changes(&delta, &current);
        for network in changes.withdraw {
            speaker.withdraw(Prefix::of(network));
            tracing::info!(op = "netlinkImport", prefix = %network, "withdrawn");
        }
        for network in changes.announce {
            speaker.announce(LocalRoute::originated(Prefix::of(network)));
            tracing::info!(op = "netlinkImport", prefix = %network, "announced");
        }
        self.status_due
            .get_or_insert(Instant::now() + STATUS_DEBOUNCE);
    }
}
