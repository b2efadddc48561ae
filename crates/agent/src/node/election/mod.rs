//! The election: its [`timing`], this node's Lease task and the electorate of every node's
//! Lease ([`lease`]), the [`view`] it publishes, and the one oracle that answers who
//! announces an address ([`oracle`]).

pub mod lease;
pub mod oracle;
pub mod timing;
pub mod view;

pub use lease::{ElectionHandle, Identity, StartError, start};
pub use oracle::{Election, Oracle};
pub use timing::Timing;
pub use view::{Notice, View};
