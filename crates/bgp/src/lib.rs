//! The BGP speaker embedded in the PureLB node agent (issue 4), as a library with no Kubernetes
//! dependency.
//!
//! What exists today is the wire layer, [`wire`]: our own message types (OPEN with capabilities,
//! UPDATE with the path attributes the speaker uses, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH),
//! `encode`/`decode`, TCP framing, and error classification into NOTIFICATIONs and RFC 7606
//! actions. [`fsm`] is the RFC 4271 session state machine, pure (events in, actions out).
//! [`driver`] runs one active session over TCP in a tokio task (timers, framing, advertising
//! local routes from a `watch` channel, status). [`transport`] sets TCP MD5 (RFC 2385) and the
//! outgoing TTL on the driver's socket. Not built yet: passive/listen mode and collision
//! handling, a shared RIB, policy and the `bgp-speak` binary.
//! See README.md.

pub mod driver;
pub mod fsm;
pub mod fuzzing;
pub mod policy;
pub mod speaker;
pub mod transport;
pub mod wire;
