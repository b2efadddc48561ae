//! `netlinkExport`: routes received over BGP installed into kernel routing tables.
//! [`plan`] decides which routes should exist (pure) with [`next_hop`] validation;
//! [`exporter`] makes the kernel hold exactly those; [`report`] says what came of each.

pub mod exporter;
pub mod next_hop;
pub mod plan;
pub mod report;

pub use crate::kernel::KernelRoute;
pub use exporter::{NetlinkExporter, RESERVED_PROTOCOLS, ReservedProtocol};
pub use next_hop::NextHopFilter;
pub use plan::*;
pub use report::{ExportAction, ExportPlan, ExportReport, ExportResult};
