//! `netlinkExport`: routes received over BGP installed into kernel routing tables.
//! [`plan`] decides which routes should exist (pure); [`exporter`] makes the kernel
//! hold exactly those.

pub mod exporter;
pub mod plan;

pub use crate::kernel::KernelRoute;
pub use exporter::{NetlinkExporter, RESERVED_PROTOCOLS, ReservedProtocol};
pub use plan::*;
