//! Gratuitous ARP / unsolicited NA after a local address is added: the configured
//! number of packets, each sent only while this node is healthy and, when asked,
//! still the election winner.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::kernel::garp::{send_garp, send_unsolicited_na};
use crate::metrics::Metrics;
use crate::node::election::View;
use crate::node::settings::GarpSettings;

/// A GARP / unsolicited NA sequence to run after a local add.
#[derive(Debug, Clone)]
pub struct GarpJob {
    pub settings: GarpSettings,
    /// The node-affinity set the election used, re-used for verification.
    pub preferred: Option<BTreeSet<String>>,
}

impl GarpJob {
    pub(super) async fn run(
        self,
        ifindex: u32,
        mac: [u8; 6],
        ip: IpAddr,
        view: watch::Receiver<View>,
        node: String,
        metrics: Arc<Metrics>,
    ) {
        tokio::time::sleep(self.settings.initial_delay).await;
        for i in 0..self.settings.count {
            if i > 0 {
                tokio::time::sleep(self.settings.interval).await;
            }
            {
                let view = view.borrow();
                if !view.healthy {
                    return;
                }
                if self.settings.verify_before_send {
                    let winner = view.winner(ip, self.preferred.as_ref()).map(|(w, _)| w);
                    if winner != Some(node.as_str()) {
                        tracing::debug!(op = "garp", ip = %ip, "no longer the winner; stopping GARP");
                        return;
                    }
                }
            }
            match ip {
                IpAddr::V4(v4) => match send_garp(ifindex, mac, v4) {
                    Ok(()) => {
                        metrics.garp_sent.inc();
                    }
                    Err(error) => {
                        metrics.garp_errors.inc();
                        tracing::warn!(op = "garp", ip = %ip, %error, "sending gratuitous ARP failed");
                    }
                },
                IpAddr::V6(v6) => match send_unsolicited_na(ifindex, mac, v6) {
                    Ok(()) => {
                        metrics.na_sent.inc();
                    }
                    Err(error) => {
                        metrics.na_errors.inc();
                        tracing::warn!(op = "garp", ip = %ip, %error, "sending unsolicited neighbor advertisement failed");
                    }
                },
            }
        }
    }
}
