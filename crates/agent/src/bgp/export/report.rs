//! What an export plan and a sync of the kernel's routes come to: per route, installed or
//! not and why (the BGPNodeStatus `exportedRoutes` entries), and the routes removed.

use std::collections::BTreeSet;

use crate::kernel::KernelRoute;

/// What happened to one route in a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportAction {
    /// Already in the kernel as wanted.
    Unchanged,
    /// Added, or replaced one with other next hops or metric.
    Installed,
    /// The kernel refused it (see the reason).
    Failed,
    /// Matched a rule but cannot be exported (next hop unusable or unreachable).
    Rejected,
}

/// One `status.netlinkExport.exportedRoutes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportResult {
    /// The route as wanted, normalised (table 0 reads 254, next hops sorted); for a rejected
    /// one, the next hops that were refused.
    pub route: KernelRoute,
    pub installed: bool,
    /// Why it is not installed; `None` when it is.
    pub reason: Option<String>,
    pub action: ExportAction,
}

impl ExportResult {
    pub(super) fn ok(route: KernelRoute, action: ExportAction) -> Self {
        Self {
            route,
            installed: true,
            reason: None,
            action,
        }
    }

    pub(super) fn not(route: KernelRoute, action: ExportAction, reason: String) -> Self {
        Self {
            route,
            installed: false,
            reason: Some(reason),
            action,
        }
    }
}

/// The outcome of [`NetlinkExporter::sync`](super::NetlinkExporter::sync) or [`NetlinkExporter::clear`](super::NetlinkExporter::clear).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// One entry per desired (or rejected) route, by prefix then table.
    pub routes: Vec<ExportResult>,
    /// Routes of ours deleted because nothing wants them any more.
    pub removed: Vec<KernelRoute>,
    /// Failures that belong to no desired route: listing the kernel's routes, deleting a
    /// stale one.
    pub errors: Vec<String>,
}

impl ExportReport {
    /// How many routes are in the kernel as wanted.
    pub fn installed_count(&self) -> usize {
        self.routes.iter().filter(|r| r.installed).count()
    }

    /// Every wanted route installed and nothing failed (the status's health rule).
    pub fn healthy(&self) -> bool {
        self.errors.is_empty() && self.routes.iter().all(|r| r.installed)
    }

    pub(super) fn sort(&mut self) {
        self.routes.sort_by_key(|r| r.route.key());
    }
}

/// The result of [`plan_export`](super::plan_export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPlan {
    /// The kernel routes that should exist, one per prefix per table, by key.
    pub routes: Vec<KernelRoute>,
    /// Routes a rule matched that cannot be exported, with the reason (installed = false).
    pub rejected: Vec<ExportResult>,
    /// Every table a rule names (normalised), for [`NetlinkExporter::manage_tables`](super::NetlinkExporter::manage_tables).
    pub tables: BTreeSet<u32>,
}
