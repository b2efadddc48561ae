//! The election: this node's Lease and the electorate of every node's Lease
//! ([`lease`]), and the one oracle that answers who announces an address
//! ([`oracle`]).

pub mod lease;
pub mod oracle;

pub use lease::{ElectionHandle, Identity, Notice, StartError, Timing, View, start};
pub use oracle::{Election, Oracle};
