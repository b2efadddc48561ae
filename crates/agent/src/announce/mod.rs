//! Announcing Service addresses on this node: the controller loop, the pure
//! per-Service plan, and the announcer that carries the plan out on the kernel.

pub mod announced;
pub mod announcer;
pub mod controller;
pub mod endpoints;
pub mod garp;
pub mod outcome;
pub mod plan;
