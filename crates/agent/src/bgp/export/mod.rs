//! `netlinkExport`: routes received over BGP installed into kernel routing tables.

mod plan;

pub use plan::*;
