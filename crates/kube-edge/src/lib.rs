//! The Kubernetes plumbing the allocator and the node agent share: reflector-backed watches
//! ([`watch`]), the core/v1 Event recorder ([`events`]), the `/metrics` `/healthz` `/readyz`
//! server ([`http`]), client and logging setup ([`setup`]), and a controller's work queue
//! ([`queue`]) with its per-key retry backoff ([`retry`]) and write-echo suppression
//! ([`echoes`]). No PureLB logic: nothing here
//! knows a Service from a ServiceGroup, and this crate depends on neither component.

pub mod echoes;
pub mod events;
pub mod http;
pub mod queue;
pub mod retry;
pub mod setup;
mod watch;

pub use watch::{Watched, Watches, watch};
