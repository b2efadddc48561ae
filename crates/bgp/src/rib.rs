//! The routes of one speaker: what it originates ([`LocalRoute`], each peer's [`AdjRibOut`]),
//! what its peers sent ([`ReceivedRoute`], each peer's [`ReceivedRib`]), and how received
//! paths to one prefix rank ([`path_rank`]).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::wire::{AsPath, AsSegmentType, LargeCommunity, Prefix};

/// The routes one peer should have, shared between the speaker and the session task.
pub type AdjRibOut = Arc<Vec<LocalRoute>>;

/// LOCAL_PREF sent to iBGP peers when the route sets none (the common default, GoBGP's and FRR's).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// A route this speaker originates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalRoute {
    pub prefix: Prefix,
    /// `None` = next-hop-self: the local address of the session's connection (for an IPv6 route
    /// over an IPv4 session, its IPv4-mapped form, as GoBGP sends). An explicit next hop of the
    /// other family is not sent.
    pub next_hop: Option<IpAddr>,
    /// RFC 1997 communities, `(asn << 16) | value`.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities (global admin, local data 1, local data 2).
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    /// Sent to iBGP peers only ([`DEFAULT_LOCAL_PREF`] when unset).
    pub local_pref: Option<u32>,
    /// ASNs placed after our own ASN in the AS_PATH toward eBGP peers (export-policy prepend).
    pub as_path_prepend: Vec<u32>,
}

impl LocalRoute {
    /// A route with an explicit next hop and no communities, MED or LOCAL_PREF.
    pub fn new(prefix: Prefix, next_hop: IpAddr) -> Self {
        Self {
            next_hop: Some(next_hop),
            ..Self::originated(prefix)
        }
    }

    /// A route with next-hop-self and no other attributes.
    pub fn originated(prefix: Prefix) -> Self {
        Self {
            prefix,
            next_hop: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
            local_pref: None,
            as_path_prepend: Vec::new(),
        }
    }

    /// The family and everything but the prefix: routes with equal keys share one UPDATE.
    pub(crate) fn attribute_key(&self) -> impl Ord + '_ {
        (
            matches!(self.prefix, Prefix::V6(_)),
            self.next_hop,
            &self.communities,
            &self.large_communities,
            self.med,
            self.local_pref,
            &self.as_path_prepend,
        )
    }
}

/// A route learned from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRoute {
    pub prefix: Prefix,
    pub next_hop: Option<IpAddr>,
    pub as_path: AsPath,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// Kept from before a peer restart (RFC 4724), until its End-of-RIB or the restart time.
    pub stale: bool,
}

impl ReceivedRoute {
    /// A route with only its path: no communities, MED or LOCAL_PREF, not stale.
    pub fn new(prefix: Prefix, next_hop: Option<IpAddr>, as_path: AsPath) -> Self {
        Self {
            prefix,
            next_hop,
            as_path,
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
            local_pref: None,
            stale: false,
        }
    }
}

/// The routes learned from one peer, shared between its session task and readers.
pub type ReceivedRib = Arc<Mutex<HashMap<Prefix, ReceivedRoute>>>;

pub(crate) fn lock(rib: &ReceivedRib) -> MutexGuard<'_, HashMap<Prefix, ReceivedRoute>> {
    rib.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// AS_PATH length as in RFC 4271 section 9.1.2.2: an AS_SET counts one, confederation
/// segments none.
pub fn as_path_len(path: &AsPath) -> usize {
    path.segments
        .iter()
        .map(|s| match s.kind {
            AsSegmentType::Sequence => s.asns.len(),
            AsSegmentType::Set => 1,
            AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet => 0,
        })
        .sum()
}

/// How good a received path is, smaller first: higher LOCAL_PREF (absent counts as
/// [`DEFAULT_LOCAL_PREF`]), then shorter AS_PATH. Paths of equal rank are equally good: MED,
/// origin and router ID are not compared, so equal paths from several peers form one ECMP set
/// (like FRR's `bestpath as-path multipath-relax` with `maximum-paths`).
pub fn path_rank(route: &ReceivedRoute) -> (Reverse<u32>, usize) {
    (
        Reverse(route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
        as_path_len(&route.as_path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AsSegment;

    #[test]
    fn as_path_length_counts_sets_once_and_confederations_not() {
        let path = AsPath {
            segments: vec![
                AsSegment {
                    kind: AsSegmentType::Sequence,
                    asns: vec![1, 2],
                },
                AsSegment {
                    kind: AsSegmentType::Set,
                    asns: vec![3, 4, 5],
                },
                AsSegment {
                    kind: AsSegmentType::ConfedSequence,
                    asns: vec![6],
                },
            ],
        };
        assert_eq!(as_path_len(&path), 3);
    }

    #[test]
    fn higher_local_pref_then_shorter_as_path_ranks_first() {
        let route = |local_pref: Option<u32>, asns: Vec<u32>| ReceivedRoute {
            prefix: Prefix::V4(crate::wire::Ipv4Prefix::new([203, 0, 113, 0].into(), 24).unwrap()),
            next_hop: None,
            as_path: AsPath::sequence(asns),
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
            local_pref,
            stale: false,
        };
        let default_short = path_rank(&route(None, vec![1]));
        assert_eq!(
            default_short,
            path_rank(&route(Some(DEFAULT_LOCAL_PREF), vec![2]))
        );
        assert!(path_rank(&route(Some(200), vec![1, 2, 3])) < default_short);
        assert!(default_short < path_rank(&route(None, vec![1, 2])));
        assert!(default_short < path_rank(&route(Some(50), vec![])));
    }
}
