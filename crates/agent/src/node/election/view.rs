//! The election as this node sees it, published whole on every change ([`View`]), and what
//! the controller hears from the election ([`Notice`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use purelb_api::election::Electorate;
use tokio::time::Instant;

/// The election state every question is answered from; swapped whole.
#[derive(Debug, Clone)]
pub struct View {
    pub node: String,
    pub electorate: Arc<Electorate>,
    /// This node's lease is renewed in time (and was written at least once).
    pub healthy: bool,
    /// Claims of addresses this node does not hold wait until then.
    pub claim_after: Option<Instant>,
}

impl View {
    /// Whether this node may add an address it does not hold yet.
    pub fn may_claim(&self, now: Instant) -> bool {
        self.healthy && self.claim_after.is_none_or(|t| now >= t)
    }

    /// Who wins `ip` as this node sees the election, and whether the node-affinity
    /// preference fell back to every node: nobody while this node is fenced.
    pub fn winner(&self, ip: IpAddr, preferred: Option<&BTreeSet<String>>) -> Option<(&str, bool)> {
        if !self.healthy {
            return None;
        }
        match preferred {
            Some(preferred) => {
                let preferred: Vec<&str> = preferred.iter().map(String::as_str).collect();
                let e = self.electorate.winner_with_preference(ip, &preferred)?;
                Some((e.winner, e.fell_back))
            }
            None => Some((self.electorate.winner(ip)?, false)),
        }
    }
}

/// What the controller hears from the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Members or their subnets changed, or the join hold-down ended: re-run every
    /// Service.
    Changed,
    /// The lease could not be renewed in time: withdraw every local address now.
    Fenced,
    /// Renewed again after being fenced.
    Rejoined,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn claims_wait_for_health_and_hold_down() {
        let now = Instant::now();
        let mut v = View {
            node: "a".into(),
            electorate: Arc::new(Electorate::new()),
            healthy: false,
            claim_after: None,
        };
        assert!(!v.may_claim(now));
        v.healthy = true;
        assert!(v.may_claim(now));
        v.claim_after = Some(now + Duration::from_secs(1));
        assert!(!v.may_claim(now));
        assert!(v.may_claim(now + Duration::from_secs(1)));
    }
}
