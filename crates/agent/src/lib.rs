//! The lbnodeagent: election, announcement and the embedded BGP speaker's glue; see README.md.
//!
//! Three long-running tasks, each the only owner of what it changes:
//!
//! ```text
//!  Leases ──► node::election (Lease task) ── View / Notice ──┐
//!                                                            ▼
//!  Services, EndpointSlices,      announce::controller (one serial queue: Input → Work)
//!  LBNodeAgents, ServiceGroups, ─►  plan::plan_service ─► Announcer::apply ─► outcome::settle
//!  Node, kernel events               (pure)              (kernel: VIPs, GARP)   (pure)
//!                                                            │
//!                              Service patches, Events ◄─────┘
//!
//!  BGPConfigurations, Secrets, Node ─► bgp::runtime ─► purelb_bgp::Speaker ─► peers
//!  kernel address deltas (kube-lb0) ─►   import          received routes ─► export ─► kernel
//!                                        status_writer ─► BGPNodeStatus, BGPConfiguration
//! ```
//!
//! The controller puts VIPs on `kube-lb0`; the BGP runtime learns them only from the kernel,
//! so the two tasks share nothing but the kernel. Pure modules (`announce::plan`,
//! `announce::outcome`, `announce::endpoints`, `announce::announced`, `node::selection`,
//! `node::settings`, `node::links`, `bgp::config`, `bgp::status`, `bgp::import`,
//! `bgp::export::plan`, `parse`) take values and return values; `kernel` is the only module
//! that talks netlink and imports nothing else from this crate.

pub mod announce;
pub mod bgp;
pub mod event;
pub mod kernel;
pub mod metrics;
pub mod node;
pub mod parse;
