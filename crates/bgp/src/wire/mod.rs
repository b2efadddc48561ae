//! BGP-4 wire format: our own message types and the codec behind them.
//!
//! Everything above this module (FSM, sessions, RIB, policy) speaks only these types, so the codec
//! underneath can be swapped without touching the speaker. See the crate README for which parts are
//! hand-written and why.
//!
//! Nothing here panics on input from a peer: every read is bounds-checked and every malformed
//! message becomes a [`DecodeError`] that says which NOTIFICATION to send (or, for UPDATE attribute
//! errors, which RFC 7606 action to take).

mod decode;
mod encode;
mod error;
mod frame;

pub use decode::decode;
pub use encode::encode;
pub use error::{DecodeError, code as notification_code, update_subcode};
pub use frame::next_message;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Every message starts with 16 octets of ones.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Marker (16) + length (2) + type (1).
pub const HEADER_LEN: usize = 19;
/// RFC 4271 maximum; extended messages (RFC 8654) are not negotiated.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 6793: placed in 2-octet AS fields when the real ASN does not fit.
pub const AS_TRANS: u16 = 23456;

/// Message type codes (RFC 4271 section 4.1, RFC 2918).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Path attribute type codes we know about.
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// What the session negotiated that changes how bytes are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireContext {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet ASNs. When false,
    /// AS_PATH carries 2-octet ASNs (AS_TRANS for large ones) and AS4_PATH carries the real path.
    pub four_octet_as: bool,
    /// The peer is internal (same ASN). A malformed LOCAL_PREF is treat-as-withdraw from an
    /// internal peer and simply discarded from an external one (RFC 7606 section 7.5).
    pub ibgp: bool,
}

/// Address family + subsequent address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    pub afi: u16,
    pub safi: u8,
}

impl AfiSafi {
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: 2, safi: 1 };
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(AfiSafi),
}

/// OPEN (RFC 4271 section 4.2) with the capabilities the speaker uses (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The real ASN. On the wire the 2-octet field holds it when it fits, else AS_TRANS; with
    /// `capabilities.four_octet_as` the 4-octet AS capability carries it in full.
    pub my_asn: u32,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Multiprotocol extensions (code 1, RFC 4760), one entry per family.
    pub multiprotocol: Vec<AfiSafi>,
    /// Route refresh (code 2, RFC 2918).
    pub route_refresh: bool,
    /// 4-octet AS number (code 65, RFC 6793); the value sent is `Open::my_asn`.
    pub four_octet_as: bool,
    /// Graceful restart (code 64, RFC 4724).
    pub graceful_restart: Option<GracefulRestart>,
    /// Anything else, kept as received.
    pub unknown: Vec<RawCapability>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestart {
    /// Upper 4 bits of the first octet: 0x8 = Restart State (R), 0x4 = Notification (N, RFC 8538).
    pub flags: u8,
    /// Restart time in seconds (12 bits, 0..=4095).
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

impl GracefulRestart {
    pub const RESTART_STATE: u8 = 0x8;
    pub const NOTIFICATION: u8 = 0x4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi_safi: AfiSafi,
    /// Forwarding state was preserved for this family across the restart.
    pub forwarding_preserved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCapability {
    pub code: u8,
    pub value: Vec<u8>,
}

/// NOTIFICATION (RFC 4271 section 4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// An IPv4 prefix with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// `None` when `len > 32`. Host bits are cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Some(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn len(&self) -> u8 {
        self.len
    }
    /// True for the default route 0.0.0.0/0 (a prefix length of zero).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An IPv6 prefix with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv6Prefix {
    /// `None` when `len > 128`. Host bits are cleared.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        if len > 128 {
            return None;
        }
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Some(Self {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            len,
        })
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    pub fn len(&self) -> u8 {
        self.len
    }
    /// True for the default route ::/0 (a prefix length of zero).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Either family, for treat-as-withdraw results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

impl Prefix {
    /// The prefix of `net`'s network (host bits cleared).
    pub fn of(net: IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => Self::V4(Ipv4Prefix {
                addr: n.addr(),
                len: n.prefix_len(),
            }),
            IpNet::V6(n) => Self::V6(Ipv6Prefix {
                addr: n.addr(),
                len: n.prefix_len(),
            }),
        }
    }

    /// The prefix as the shared network type (its length is always in range, so this
    /// cannot fail).
    pub fn net(&self) -> IpNet {
        match self {
            Self::V4(p) => IpNet::V4(Ipv4Net::new_assert(p.addr, p.len)),
            Self::V6(p) => IpNet::V6(Ipv6Net::new_assert(p.addr, p.len)),
        }
    }
}

/// UPDATE (RFC 4271 section 4.3). IPv6 unicast travels in `attributes.mp_reach` / `mp_unreach`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Prefix>,
    pub attributes: PathAttributes,
    pub nlri: Vec<Ipv4Prefix>,
    /// Type codes of attributes dropped on receipt under RFC 7606 "attribute discard".
    /// Never encoded; empty on anything we build.
    pub discarded_attributes: Vec<u8>,
}

impl Update {
    /// End-of-RIB for IPv4 unicast: an UPDATE with nothing in it (RFC 4724 section 2).
    pub fn end_of_rib_ipv4() -> Self {
        Self::default()
    }

    /// End-of-RIB for IPv6 unicast: only an empty MP_UNREACH_NLRI.
    pub fn end_of_rib_ipv6() -> Self {
        Self {
            attributes: PathAttributes {
                mp_unreach: Some(Vec::new()),
                ..PathAttributes::default()
            },
            ..Self::default()
        }
    }

    /// The family whose End-of-RIB this is, if it is one.
    pub fn end_of_rib(&self) -> Option<AfiSafi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let empty_rest = PathAttributes {
            mp_unreach: self.attributes.mp_unreach.clone(),
            ..PathAttributes::default()
        };
        if self.attributes != empty_rest {
            return None;
        }
        match &self.attributes.mp_unreach {
            None => Some(AfiSafi::IPV4_UNICAST),
            Some(w) if w.is_empty() => Some(AfiSafi::IPV6_UNICAST),
            Some(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsSegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: AsSegmentType,
    pub asns: Vec<u32>,
}

/// AS_PATH as segments of 4-octet ASNs (2-octet peers are handled by the codec).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path that is one AS_SEQUENCE, the way a speaker originates or prepends.
    /// An empty list gives the empty path (iBGP origination).
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: AsSegmentType::Sequence,
                asns,
            }],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

/// IPv6 unicast reachability (RFC 4760 + RFC 2545 next hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReachIpv6 {
    pub next_hop: Ipv6Addr,
    pub link_local_next_hop: Option<Ipv6Addr>,
    pub nlri: Vec<Ipv6Prefix>,
}

/// An attribute we carry but do not interpret (ATOMIC_AGGREGATE, AGGREGATOR, unknown optional
/// attributes, MP attributes of other families). `flags` never has the extended-length bit; the
/// encoder sets it from the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttribute {
    pub flags: u8,
    pub code: u8,
    pub value: Vec<u8>,
}

/// Attribute flag bits.
pub mod attr_flags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// RFC 1997; empty = attribute absent.
    pub communities: Vec<u32>,
    /// RFC 8092; empty = attribute absent.
    pub large_communities: Vec<LargeCommunity>,
    pub mp_reach: Option<MpReachIpv6>,
    /// IPv6 unicast withdrawals; `Some(vec![])` is the IPv6 End-of-RIB.
    pub mp_unreach: Option<Vec<Ipv6Prefix>>,
    pub other: Vec<RawAttribute>,
}
