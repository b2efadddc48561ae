//! Who announces an address: the one place the election is asked.
//!
//! [`Election`] is the question the planner asks. [`Electorate`] answers it with the
//! pure rendezvous hash; [`Oracle`] answers it for the running agent, from the live
//! [`View`]: nobody while this node is fenced, and during the join hold-down this
//! node does not claim addresses it does not hold yet.

use std::collections::BTreeSet;
use std::net::IpAddr;

use purelb_api::election::Electorate;
use tokio::time::Instant;

use super::View;
use crate::metrics::{Metrics, ServiceLabels};

/// Who announces an address: the winner of the per-IP election. Callers implement it
/// with the live lease state (and return `None` while their own lease is unhealthy).
pub trait Election {
    /// The winning node for `ip`, or `None` when no node is eligible. `preferred` is
    /// the node-affinity set (nodes with a healthy endpoint), when requested.
    fn winner(&self, ip: IpAddr, preferred: Option<&BTreeSet<String>>) -> Option<String>;
}

impl<F> Election for F
where
    F: Fn(IpAddr, Option<&BTreeSet<String>>) -> Option<String>,
{
    fn winner(&self, ip: IpAddr, preferred: Option<&BTreeSet<String>>) -> Option<String> {
        self(ip, preferred)
    }
}

/// The rendezvous election over live leases. The affinity fallback is not reported
/// here; a caller that counts `purelb_election_affinity_fallback_total` uses
/// [`Electorate::winner_with_preference`] directly.
impl Election for Electorate {
    fn winner(&self, ip: IpAddr, preferred: Option<&BTreeSet<String>>) -> Option<String> {
        match preferred {
            Some(preferred) => {
                let preferred: Vec<&str> = preferred.iter().map(String::as_str).collect();
                self.winner_with_preference(ip, &preferred)
                    .map(|e| e.winner.to_owned())
            }
            None => Electorate::winner(self, ip).map(str::to_owned),
        }
    }
}

/// The election as the planner asks it: no winner while this node is unhealthy,
/// and during the join hold-down this node does not claim addresses it does not
/// hold yet. Counts the node-affinity fallback.
pub struct Oracle<'a> {
    pub view: &'a View,
    pub now: Instant,
    /// Whether this node already holds an address ([`Announcer::holds`](crate::announce::announcer::Announcer::holds)).
    pub holds: &'a dyn Fn(IpAddr) -> bool,
    pub metrics: &'a Metrics,
}

impl Election for Oracle<'_> {
    fn winner(&self, ip: IpAddr, preferred: Option<&BTreeSet<String>>) -> Option<String> {
        let (winner, fell_back) = self.view.winner(ip, preferred)?;
        if fell_back {
            self.metrics
                .affinity_fallback
                .get_or_create(&ServiceLabels {
                    service: ip.to_string(),
                })
                .inc();
        }
        if winner == self.view.node && !self.view.may_claim(self.now) && !(self.holds)(ip) {
            return None;
        }
        Some(winner.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use purelb_api::pool::parse_cidr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn electorate_is_an_election() {
        let cidr = |s: &str| parse_cidr(s).unwrap();
        let e: Electorate = [
            ("node-a", vec![cidr("192.168.1.0/24")]),
            ("node-b", vec![cidr("192.168.1.0/24")]),
            ("node-c", vec![cidr("192.168.1.0/24")]),
        ]
        .into_iter()
        .collect();
        let v4 = ip("192.168.1.1");
        // Known hashes (see purelb_api::election): node-b wins overall.
        assert_eq!(Election::winner(&e, v4, None).as_deref(), Some("node-b"));
        let preferred: BTreeSet<String> = ["node-a".to_owned(), "node-c".to_owned()].into();
        assert_eq!(
            Election::winner(&e, v4, Some(&preferred)).as_deref(),
            Some("node-c")
        );
        assert_eq!(
            Election::winner(&e, v4, Some(&BTreeSet::new())).as_deref(),
            Some("node-b")
        );
        assert_eq!(Election::winner(&e, ip("10.0.0.1"), None), None);
    }

    fn view(healthy: bool, claim_after: Option<Instant>) -> View {
        let cidr = parse_cidr("198.51.100.0/28").unwrap();
        View {
            node: "a".into(),
            electorate: Arc::new(
                [("a", vec![cidr]), ("b", vec![cidr]), ("c", vec![cidr])]
                    .into_iter()
                    .collect(),
            ),
            healthy,
            claim_after,
        }
    }

    /// An address of the /28 that node `a` wins.
    fn won_by_a(v: &View) -> IpAddr {
        (1..15u8)
            .map(|i| IpAddr::from([198, 51, 100, i]))
            .find(|ip| v.electorate.winner(*ip) == Some("a"))
            .unwrap()
    }

    #[test]
    fn oracle_health_and_hold_down() {
        let metrics = Metrics::new();
        let now = Instant::now();
        let never = |_: IpAddr| false;
        let always = |_: IpAddr| true;
        let healthy = view(true, None);
        let ip = won_by_a(&healthy);
        let o = Oracle {
            view: &healthy,
            now,
            holds: &never,
            metrics: &metrics,
        };
        assert_eq!(o.winner(ip, None).as_deref(), Some("a"));
        // Unhealthy (fenced): nobody wins, so local addresses are withdrawn.
        let fenced = view(false, None);
        let o = Oracle {
            view: &fenced,
            now,
            holds: &always,
            metrics: &metrics,
        };
        assert_eq!(o.winner(ip, None), None);
        // Hold-down: no new claims, but what is held stays.
        let joining = view(true, Some(now + Duration::from_secs(1)));
        let o = Oracle {
            view: &joining,
            now,
            holds: &never,
            metrics: &metrics,
        };
        assert_eq!(o.winner(ip, None), None);
        let o = Oracle {
            view: &joining,
            now,
            holds: &always,
            metrics: &metrics,
        };
        assert_eq!(o.winner(ip, None).as_deref(), Some("a"));
        // Another node's win is reported as such during the hold-down.
        let other = (1..15u8)
            .map(|i| IpAddr::from([198, 51, 100, i]))
            .find(|ip| joining.electorate.winner(*ip) != Some("a"))
            .unwrap();
        let o = Oracle {
            view: &joining,
            now,
            holds: &never,
            metrics: &metrics,
        };
        assert!(o.winner(other, None).is_some_and(|w| w != "a"));
    }

    #[test]
    fn oracle_counts_affinity_fallback() {
        let metrics = Metrics::new();
        let v = view(true, None);
        let ip = won_by_a(&v);
        let never = |_: IpAddr| false;
        let o = Oracle {
            view: &v,
            now: Instant::now(),
            holds: &never,
            metrics: &metrics,
        };
        let preferred: BTreeSet<String> = ["b".to_owned()].into();
        assert_eq!(o.winner(ip, Some(&preferred)).as_deref(), Some("b"));
        let elsewhere: BTreeSet<String> = ["z".to_owned()].into();
        assert_eq!(o.winner(ip, Some(&elsewhere)).as_deref(), Some("a"));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(&format!(
                "purelb_election_affinity_fallback_total{{service=\"{ip}\"}} 1"
            )),
            "{text}"
        );
    }
}
