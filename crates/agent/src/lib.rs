//! The lbnodeagent: election, announcement and BGP glue. Not built yet (issues 5 and 6); see README.md.

pub mod garp;
pub mod kernel;
pub mod config;
pub mod endpoints;
pub mod event;
pub mod go_duration;
pub mod label_selector;
pub mod links;
pub mod plan;
pub mod bgp_config;
pub mod election;
pub mod http;
pub mod metrics;
pub mod netstate;
pub mod recorder;
pub mod netlink_export;
pub mod bgp_status;
pub mod announcer;
pub mod controller;
pub mod bgp_runtime;
