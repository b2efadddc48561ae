//! The local-announcement election: among live nodes advertising
//! a subnet that contains the IP, the node with the smallest
//! SHA-256(`node + "#" + ip`) wins. Identical to PureLB's, so old and new
//! agents agree during a rolling upgrade.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::pool::{IpNet, Network};

/// The string hashed with each node name: the IP as Go's `net.IP.String()`
/// prints it. Rust's `Display` agrees once a mapped address is unmapped
/// (dotted quad for IPv4, RFC 5952 for IPv6).
pub fn election_key(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// The node that announces `ip` among `candidates`, or `None` if there are
/// none. Byte-wise smallest SHA-256 of `node#ip` wins; a (never expected) hash
/// tie goes to the smaller name so the result does not depend on order.
pub fn winner<'a>(ip: IpAddr, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = election_key(ip);
    candidates
        .into_iter()
        .map(|node| (rank(node, &key), node))
        .min()
        .map(|(_, node)| node)
}

fn rank(node: &str, key: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(node.as_bytes());
    hasher.update(b"#");
    hasher.update(key.as_bytes());
    hasher.finalize().into()
}

/// Outcome of an election biased toward preferred nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityElection<'a> {
    pub winner: &'a str,
    /// Preferred nodes were given but none was a candidate, so the election
    /// ran over all candidates (counted by `purelb_election_affinity_fallback_total`).
    pub fell_back: bool,
}

/// Like [`winner`], but if any candidate is in `preferred` only those run.
/// An empty `preferred` is no preference, not a fallback.
pub fn winner_with_preference<'a, P: AsRef<str>>(
    ip: IpAddr,
    candidates: &[&'a str],
    preferred: &[P],
) -> Option<AffinityElection<'a>> {
    let is_preferred = |node: &&str| preferred.iter().any(|p| p.as_ref() == *node);
    if let Some(winner) = winner(ip, candidates.iter().copied().filter(is_preferred)) {
        return Some(AffinityElection {
            winner,
            fell_back: false,
        });
    }
    winner(ip, candidates.iter().copied()).map(|winner| AffinityElection {
        winner,
        fell_back: !preferred.is_empty(),
    })
}

/// The nodes holding a live lease and the subnets each advertises: the
/// snapshot every election question is answered from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Electorate {
    nodes: BTreeMap<String, BTreeSet<IpNet>>,
}

impl Electorate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a live node (a node without subnets is live but never a candidate
    /// for an IP). Repeated nodes merge their subnets.
    pub fn insert(&mut self, node: impl Into<String>, subnets: impl IntoIterator<Item = IpNet>) {
        self.nodes.entry(node.into()).or_default().extend(subnets);
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `node` advertises a subnet containing `ip`.
    pub fn covers(&self, node: &str, ip: IpAddr) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|subnets| subnets.iter().any(|s| s.holds(ip)))
    }

    /// Live nodes with any advertised subnet containing `ip`, sorted. No
    /// longest-prefix match: overlapping subnets all qualify.
    pub fn candidates(&self, ip: IpAddr) -> Vec<&str> {
        self.nodes
            .keys()
            .map(String::as_str)
            .filter(|node| self.covers(node, ip))
            .collect()
    }

    /// The node that announces `ip`, if any node is a candidate.
    pub fn winner(&self, ip: IpAddr) -> Option<&str> {
        winner(ip, self.candidates(ip))
    }

    /// [`winner_with_preference`] over this electorate's candidates.
    pub fn winner_with_preference<P: AsRef<str>>(
        &self,
        ip: IpAddr,
        preferred: &[P],
    ) -> Option<AffinityElection<'_>> {
        winner_with_preference(ip, &self.candidates(ip), preferred)
    }
}

impl<N: Into<String>, S: IntoIterator<Item = IpNet>> FromIterator<(N, S)> for Electorate {
    fn from_iter<I: IntoIterator<Item = (N, S)>>(iter: I) -> Self {
        let mut electorate = Self::new();
        for (node, subnets) in iter {
            electorate.insert(node, subnets);
        }
        electorate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::parse_cidr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_cidr(s).unwrap()).collect()
    }

    // printf 'node-a#192.168.1.1' | sha256sum  -> e8c94782...
    // printf 'node-b#192.168.1.1' | sha256sum  -> 6d2f923b...
    // printf 'node-c#192.168.1.1' | sha256sum  -> c32adde6...
    // printf 'node-a#fd00::1' | sha256sum      -> f6360562...
    // printf 'node-b#fd00::1' | sha256sum      -> b319cdaf...
    // printf 'node-c#fd00::1' | sha256sum      -> 42a5d2fb...
    #[test]
    fn known_hashes() {
        assert_eq!(rank("node-a", "192.168.1.1")[..4], [0xe8, 0xc9, 0x47, 0x82]);
        assert_eq!(rank("node-c", "fd00::1")[..4], [0x42, 0xa5, 0xd2, 0xfb]);
        let v4 = ip("192.168.1.1");
        assert_eq!(winner(v4, ["node-a", "node-b", "node-c"]), Some("node-b"));
        assert_eq!(winner(v4, ["node-c", "node-a"]), Some("node-c"));
        assert_eq!(winner(v4, ["node-a"]), Some("node-a"));
        assert_eq!(winner(v4, []), None);
        let v6 = ip("fd00::1");
        assert_eq!(winner(v6, ["node-a", "node-b", "node-c"]), Some("node-c"));
        assert_eq!(winner(v6, ["node-b", "node-a"]), Some("node-b"));
    }

    #[test]
    fn key_matches_go_formatting() {
        assert_eq!(election_key(ip("192.168.1.1")), "192.168.1.1");
        assert_eq!(election_key(ip("::ffff:192.168.1.1")), "192.168.1.1");
        assert_eq!(election_key(ip("FD00:0:0:0:0:0:0:1")), "fd00::1");
        assert_eq!(election_key(ip("1:0:2:3:4:5:6:7")), "1:0:2:3:4:5:6:7");
        assert_eq!(election_key(ip("1:0:0:2:0:0:0:3")), "1:0:0:2::3");
        assert_eq!(election_key(ip("1:0:0:2:3:0:0:4")), "1::2:3:0:0:4");
        assert_eq!(election_key(ip("::1.2.3.4")), "::102:304");
        assert_eq!(election_key(ip("::")), "::");
        // A mapped address elects exactly like its IPv4 form.
        assert_eq!(
            winner(ip("::ffff:192.168.1.1"), ["node-a", "node-b", "node-c"]),
            Some("node-b")
        );
    }

    #[test]
    fn candidates_need_a_containing_subnet() {
        let e: Electorate = [
            ("node-a", cidrs(&["192.168.1.0/24", "fd00::/64"])),
            ("node-b", cidrs(&["192.168.0.0/16"])),
            ("node-c", cidrs(&["10.0.0.0/8"])),
            ("node-d", cidrs(&[])),
        ]
        .into_iter()
        .collect();
        assert_eq!(e.len(), 4);
        // Overlapping subnets all qualify; no longest-prefix match.
        assert_eq!(e.candidates(ip("192.168.1.1")), vec!["node-a", "node-b"]);
        assert_eq!(e.winner(ip("192.168.1.1")), Some("node-b"));
        assert_eq!(
            e.candidates(ip("::ffff:192.168.1.1")),
            vec!["node-a", "node-b"]
        );
        assert_eq!(e.candidates(ip("fd00::1")), vec!["node-a"]);
        assert_eq!(e.winner(ip("fd00::1")), Some("node-a"));
        assert!(e.candidates(ip("172.16.0.1")).is_empty());
        assert_eq!(e.winner(ip("172.16.0.1")), None);
        assert!(e.covers("node-c", ip("10.1.1.1")));
        assert!(!e.covers("node-d", ip("10.1.1.1")));
        assert!(!e.covers("node-z", ip("10.1.1.1")));
        assert_eq!(Electorate::new().winner(ip("10.0.0.1")), None);
        assert!(Electorate::new().is_empty());
    }

    #[test]
    fn repeated_nodes_and_subnets_dedupe() {
        let mut e = Electorate::new();
        e.insert("node-a", cidrs(&["192.168.1.0/24"]));
        e.insert("node-a", cidrs(&["192.168.1.0/24", "192.168.1.7/24"]));
        e.insert("node-c", cidrs(&["192.168.1.0/24"]));
        assert_eq!(e.len(), 2);
        assert_eq!(e.candidates(ip("192.168.1.1")), vec!["node-a", "node-c"]);
        assert_eq!(e.winner(ip("192.168.1.1")), Some("node-c"));
    }

    #[test]
    fn preference() {
        let e: Electorate = ["node-a", "node-b", "node-c"]
            .into_iter()
            .map(|n| (n, cidrs(&["192.168.1.0/24"])))
            .collect();
        let v4 = ip("192.168.1.1");
        let none: [&str; 0] = [];
        assert_eq!(
            e.winner_with_preference(v4, &none),
            Some(AffinityElection {
                winner: "node-b",
                fell_back: false
            })
        );
        assert_eq!(
            e.winner_with_preference(v4, &["node-a", "node-c", "node-x"]),
            Some(AffinityElection {
                winner: "node-c",
                fell_back: false
            })
        );
        assert_eq!(
            e.winner_with_preference(v4, &[String::from("node-a")]),
            Some(AffinityElection {
                winner: "node-a",
                fell_back: false
            })
        );
        assert_eq!(
            e.winner_with_preference(v4, &["node-x"]),
            Some(AffinityElection {
                winner: "node-b",
                fell_back: true
            })
        );
        // No candidates at all: no winner and no fallback to count.
        assert_eq!(e.winner_with_preference(ip("10.0.0.1"), &["node-a"]), None);
    }
}
