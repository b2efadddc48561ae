//! The lbnodeagent: election, announcement and the embedded BGP speaker's glue; see README.md.

pub mod announcer;
pub mod bgp_config;
pub mod bgp_runtime;
pub mod bgp_status;
pub mod config;
pub mod controller;
pub mod election;
pub mod endpoints;
pub mod event;
pub mod garp;
pub mod go_duration;
pub mod kernel;
pub mod label_selector;
pub mod links;
pub mod metrics;
pub mod netlink_export;
pub mod netstate;
pub mod plan;
