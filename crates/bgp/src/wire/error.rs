use std::net::Ipv4Addr;

use super::{HEADER_LEN, MAX_MESSAGE_LEN, Prefix};

/// NOTIFICATION error codes (RFC 4271 section 4.5, RFC 7313).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 section 6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const MISSING_WELL_KNOWN: u8 = 3;
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Why a received message could not be used, and what to do about it.
///
/// Every variant except [`DecodeError::TreatAsWithdraw`] ends the session with the NOTIFICATION
/// from [`DecodeError::notification`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Marker not all ones (1/1).
    #[error("connection not synchronized: marker is not all ones")]
    NotSynchronized,
    /// Length field outside 19..=4096 or wrong for the type (1/2, data = the length field).
    #[error("bad message length {0}")]
    BadLength(u16),
    /// Unknown message type (1/3, data = the type).
    #[error("bad message type {0}")]
    BadType(u8),
    /// OPEN version other than 4 (2/1, data = highest version we support).
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    /// Peer AS not acceptable (2/2). Decoding rejects AS 0; the session layer raises this for an
    /// AS that does not match configuration.
    #[error("bad peer AS {0}")]
    BadPeerAs(u32),
    /// BGP identifier 0.0.0.0 (2/3); the session layer also raises it for a collision with ours.
    #[error("bad BGP identifier {0}")]
    BadBgpId(Ipv4Addr),
    /// OPEN optional parameter of an unknown type (2/4).
    #[error("unsupported optional parameter type {0}")]
    UnsupportedOptionalParameter(u8),
    /// Hold time 1 or 2 seconds (2/6).
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// OPEN whose parameters or capabilities do not parse (2/0).
    #[error("malformed OPEN: {0}")]
    MalformedOpen(&'static str),
    /// UPDATE error that needs a session reset (RFC 7606 "session reset", 3/subcode).
    #[error("malformed UPDATE (3/{subcode}): {reason}")]
    SessionReset {
        subcode: u8,
        data: Vec<u8>,
        reason: &'static str,
    },
    /// UPDATE error where RFC 7606 says "treat-as-withdraw": keep the session, withdraw every
    /// prefix the message carried (announced or withdrawn), do not send a NOTIFICATION.
    #[error("UPDATE treated as withdraw ({} prefixes): {reason}", prefixes.len())]
    TreatAsWithdraw {
        prefixes: Vec<Prefix>,
        reason: &'static str,
    },
    /// ROUTE-REFRESH of the wrong length (7/1, RFC 7313; data = the message).
    #[error("malformed ROUTE-REFRESH of length {len}")]
    MalformedRouteRefresh { len: u16, message: Vec<u8> },
}

impl DecodeError {
    /// The NOTIFICATION (code, subcode, data) to send before closing, or `None` when the session
    /// stays up (treat-as-withdraw). The data is cut to what fits in a 4096-octet NOTIFICATION.
    pub fn notification(&self) -> Option<(u8, u8, Vec<u8>)> {
        use code::*;
        let (code, subcode, mut data) = match self {
            Self::NotSynchronized => (MESSAGE_HEADER, 1, Vec::new()),
            Self::BadLength(len) => (MESSAGE_HEADER, 2, len.to_be_bytes().to_vec()),
            Self::BadType(t) => (MESSAGE_HEADER, 3, vec![*t]),
            Self::UnsupportedVersion(_) => (OPEN_MESSAGE, 1, 4u16.to_be_bytes().to_vec()),
            Self::BadPeerAs(_) => (OPEN_MESSAGE, 2, Vec::new()),
            Self::BadBgpId(_) => (OPEN_MESSAGE, 3, Vec::new()),
            Self::UnsupportedOptionalParameter(_) => (OPEN_MESSAGE, 4, Vec::new()),
            Self::UnacceptableHoldTime(_) => (OPEN_MESSAGE, 6, Vec::new()),
            Self::MalformedOpen(_) => (OPEN_MESSAGE, 0, Vec::new()),
            Self::SessionReset { subcode, data, .. } => (UPDATE_MESSAGE, *subcode, data.clone()),
            Self::TreatAsWithdraw { .. } => return None,
            Self::MalformedRouteRefresh { message, .. } => {
                (ROUTE_REFRESH_MESSAGE, 1, message.clone())
            }
        };
        // RFC 7313 wants the whole ROUTE-REFRESH echoed, but one of 4076 octets or more would
        // make a NOTIFICATION over 4096 octets, which the peer rejects as a header error (1/2).
        data.truncate(MAX_MESSAGE_LEN - HEADER_LEN - 2);
        Some((code, subcode, data))
    }
}
