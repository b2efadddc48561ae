//! The BGP speaker embedded in the PureLB node agent, as a library with no Kubernetes
//! dependency: [`wire`] (the message codec and RFC 7606 error classes), [`fsm`] (the RFC 4271
//! session state machine, pure), [`driver`] (one session over TCP: connect or accept, collisions,
//! timers, received routes, graceful-restart retention, the Adj-RIB-Out diff), [`speaker`] (every
//! session of one instance from a configuration value, listeners, dynamic neighbours, diffed
//! apply, status), [`rib`] (originated and received routes, path ranking), [`policy`] (export
//! policy, pure) and [`transport`] (TCP MD5, TTL, interface).
//! [`fuzzing`] is the receive path the fuzz target runs. See README.md.

pub mod driver;
pub mod fsm;
pub mod fuzzing;
pub mod policy;
pub mod rib;
pub mod speaker;
pub mod transport;
pub mod wire;
