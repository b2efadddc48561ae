//! The embedded BGP speaker's glue: the BGPConfiguration mapped for this node,
//! the statuses written back, received routes exported into the kernel, and the
//! runtime task that owns the speaker.

pub mod config;
pub mod export;
pub mod import;
pub mod runtime;
pub mod status;
