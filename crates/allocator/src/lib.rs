//! The PureLB allocator: IPAM core and Kubernetes controller.
//!
//! [`ipam`] is the pure allocation core (ServiceGroups and Service values in,
//! decisions out). The Kubernetes controller that drives it is not built yet;
//! see README.md.

pub mod controller;
pub mod external;
pub mod http;
pub mod ipam;
pub mod leader;
pub mod metrics;
pub mod netbox;
