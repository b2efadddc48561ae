//! The PureLB contract shared by the allocator and the node agent: CRD types,
//! Service annotation keys and value codecs, pool parsing, the election hash and
//! the node Lease contract. Nothing here does I/O.

pub mod annotations;
pub mod crd;
pub mod election;
pub mod lease;
pub mod pool;
pub mod service;
