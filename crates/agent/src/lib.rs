//! The lbnodeagent: election, announcement and the embedded BGP speaker's glue; see README.md.

pub mod announce;
pub mod bgp;
pub mod event;
pub mod kernel;
pub mod metrics;
pub mod node;
pub mod parse;
