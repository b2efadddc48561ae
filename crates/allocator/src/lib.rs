//! The PureLB allocator: IPAM core and Kubernetes controller.
//!
//! [`ipam`] is the pure allocation core (ServiceGroups and Service values in,
//! decisions out); [`controller`] drives it from the Kubernetes API, [`leader`]
//! elects one writer among replicas, [`external`] and [`netbox`] talk to the
//! address sources outside the cluster. See README.md.

pub mod controller;
pub mod external;
pub mod ipam;
pub mod leader;
pub mod metrics;
pub mod netbox;
