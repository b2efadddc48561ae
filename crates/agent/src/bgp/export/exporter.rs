//! The kernel side of `netlinkExport`: keeps the kernel's routes with the exporter's
//! protocol, in its managed tables, equal to the planned set, and reports per route
//! whether it is installed and why not.
//!
//! # What the exporter owns
//! Routes with its protocol (default 186, `RTPROT_BGP`) in its **managed tables**: the tables
//! its rules name (passed in [`ExportPlan::tables`] or [`NetlinkExporter::manage_tables`])
//! and every table it installed into since it started. Routes of other protocols are never
//! deleted; neither are routes with our protocol in other tables (FRR's zebra also uses 186 —
//! as with gobgp-netlink, give the exporter its own table or protocol on a node that runs
//! another BGP daemon that installs routes into the same table). After a restart, stale routes
//! in a table no current rule names stay until that table is managed again. `add_route` has
//! replace semantics, and the kernel replaces a same-prefix, same-table, same-metric route
//! whatever its protocol.

use std::collections::{BTreeMap, BTreeSet};

use super::next_hop::NextHopFilter;
use super::report::{ExportAction, ExportPlan, ExportReport, ExportResult};
use crate::kernel::{Kernel, KernelError, KernelRoute, RouteKey, normalize_table};

/// Route protocols the exporter refuses: deleting "our" routes by one of these would delete
/// the system's own (unspec, redirect, kernel, boot, static).
pub const RESERVED_PROTOCOLS: [u8; 5] = [0, 1, 2, 3, 4];

/// A route protocol the exporter cannot safely own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "route protocol {0} is reserved for the system's own routes (0-4); the exporter deletes \
     routes by protocol, so it needs its own (default 186)"
)]
pub struct ReservedProtocol(pub u8);

/// Keeps the kernel's routes with the exporter's protocol equal to a desired set.
#[derive(Debug)]
pub struct NetlinkExporter {
    kernel: Kernel,
    protocol: u8,
    /// Protocols used before a [`NetlinkExporter::set_protocol`] whose routes are not all gone.
    retired: BTreeSet<u8>,
    /// Managed tables (normalised).
    tables: BTreeSet<u32>,
}

fn is_absent(e: &KernelError) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::ENOENT))
}

impl NetlinkExporter {
    /// An exporter owning routes with `protocol`, managing no table yet.
    pub fn new(kernel: Kernel, protocol: u8) -> Result<Self, ReservedProtocol> {
        if RESERVED_PROTOCOLS.contains(&protocol) {
            return Err(ReservedProtocol(protocol));
        }
        Ok(Self {
            kernel,
            protocol,
            retired: BTreeSet::new(),
            tables: BTreeSet::new(),
        })
    }

    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Switches protocol; the old one's routes (in managed tables) are removed by the next
    /// [`sync`](Self::sync) or [`clear`](Self::clear).
    pub fn set_protocol(&mut self, protocol: u8) -> Result<(), ReservedProtocol> {
        if RESERVED_PROTOCOLS.contains(&protocol) {
            return Err(ReservedProtocol(protocol));
        }
        if protocol != self.protocol {
            self.retired.insert(self.protocol);
            self.retired.remove(&protocol);
            self.protocol = protocol;
        }
        Ok(())
    }

    /// Adds tables (0 = main) whose routes with our protocol this exporter owns.
    pub fn manage_tables(&mut self, tables: impl IntoIterator<Item = u32>) {
        self.tables.extend(tables.into_iter().map(normalize_table));
    }

    /// The managed tables (normalised).
    pub fn managed_tables(&self) -> &BTreeSet<u32> {
        &self.tables
    }

    /// A snapshot of the kernel's connected routes and local addresses, for
    /// [`plan_export`](super::plan_export)'s `next_hop_ok` (`|nh, t| filter.check(nh, t)`).
    pub async fn next_hop_filter(&self) -> Result<NextHopFilter, KernelError> {
        let (connected, local) = self.kernel.on_link_prefixes().await?;
        Ok(NextHopFilter::new(connected, local))
    }

    /// Routes of ours (owned protocol, managed table, with a gateway), by key.
    async fn ours(&self, report: &mut ExportReport) -> BTreeMap<RouteKey, Vec<KernelRoute>> {
        let mut out: BTreeMap<RouteKey, Vec<KernelRoute>> = BTreeMap::new();
        let protocols = std::iter::once(self.protocol).chain(self.retired.iter().copied());
        for p in protocols {
            match self.kernel.routes_with_protocol(p).await {
                Ok(routes) => {
                    for r in routes {
                        if !r.gateways.is_empty() && self.tables.contains(&r.table_id()) {
                            out.entry(r.key()).or_default().push(r);
                        }
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("listing routes with protocol {p}: {e}")),
            }
        }
        out
    }

    async fn remove(
        &self,
        route: &KernelRoute,
        report: &mut ExportReport,
        failed: &mut BTreeSet<u8>,
    ) {
        match self.kernel.delete_route(route).await {
            Ok(()) => {
                tracing::info!(op = "netlinkExport", prefix = %route.cidr(), table = %route.table_name(),
                    metric = route.metric, protocol = route.protocol, "removed route");
                report.removed.push(route.clone());
            }
            Err(e) if is_absent(&e) => report.removed.push(route.clone()),
            Err(e) => {
                tracing::warn!(op = "netlinkExport", prefix = %route.cidr(), table = %route.table_name(),
                    error = %e, "removing a route failed");
                failed.insert(route.protocol);
                report.errors.push(e.to_string());
            }
        }
    }

    /// Drops retired protocols that have no route left.
    fn forget_retired(&mut self, failed: &BTreeSet<u8>) {
        self.retired.retain(|p| failed.contains(p));
    }

    /// Makes the kernel match `desired`: adds missing routes, replaces changed ones (a new
    /// metric is a new kernel route: it is added first, then the old one deleted), and deletes
    /// routes of ours nobody wants any more. Tables of desired routes become managed. A route
    /// the kernel refuses keeps any older route of ours for the same prefix and table (make
    /// before break). Never fails as a whole: per-route outcomes and other errors are in the
    /// report. A desired route with another protocol than the exporter's, or without a
    /// gateway, or a second one for the same prefix and table, is reported as failed.
    pub async fn sync(&mut self, desired: Vec<KernelRoute>) -> ExportReport {
        let mut report = ExportReport::default();
        let mut wanted: BTreeMap<RouteKey, KernelRoute> = BTreeMap::new();
        for route in desired {
            let route = route.normalized();
            if route.protocol != self.protocol {
                let reason = format!(
                    "protocol {} is not the exporter's ({})",
                    route.protocol, self.protocol
                );
                report
                    .routes
                    .push(ExportResult::not(route, ExportAction::Failed, reason));
            } else if route.gateways.is_empty() {
                report.routes.push(ExportResult::not(
                    route,
                    ExportAction::Failed,
                    "no next hop".to_owned(),
                ));
            } else {
                match wanted.entry(route.key()) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(route);
                    }
                    std::collections::btree_map::Entry::Occupied(_) => {
                        report.routes.push(ExportResult::not(
                            route,
                            ExportAction::Failed,
                            "another route for the same prefix and table is wanted".to_owned(),
                        ));
                    }
                }
            }
        }
        self.tables.extend(wanted.keys().map(|k| k.table));

        let mut existing = self.ours(&mut report).await;
        let mut failed = BTreeSet::new();
        for (key, want) in wanted {
            let have = existing.remove(&key).unwrap_or_default();
            if have.iter().any(|h| h.same_as(&want)) {
                for h in have.iter().filter(|h| !h.same_as(&want)) {
                    self.remove(h, &mut report, &mut failed).await;
                }
                report
                    .routes
                    .push(ExportResult::ok(want, ExportAction::Unchanged));
                continue;
            }
            match self.kernel.add_route(&want).await {
                Ok(()) => {
                    tracing::info!(op = "netlinkExport", prefix = %want.cidr(), table = %want.table_name(),
                        metric = want.metric, gateways = ?want.gateways, "installed route");
                    // The same metric was replaced in place; other metrics are separate routes.
                    for h in have
                        .iter()
                        .filter(|h| h.effective_metric() != want.effective_metric())
                    {
                        self.remove(h, &mut report, &mut failed).await;
                    }
                    report
                        .routes
                        .push(ExportResult::ok(want, ExportAction::Installed));
                }
                Err(e) => {
                    tracing::warn!(op = "netlinkExport", prefix = %want.cidr(), table = %want.table_name(),
                        error = %e, "installing a route failed");
                    let reason = format!("the kernel refused the route: {e}");
                    report
                        .routes
                        .push(ExportResult::not(want, ExportAction::Failed, reason));
                }
            }
        }
        for stale in existing.into_values().flatten() {
            self.remove(&stale, &mut report, &mut failed).await;
        }
        self.forget_retired(&failed);
        report.sort();
        report
    }

    /// [`sync`](Self::sync) of a plan: its tables become managed and its rejected routes are
    /// added to the report.
    pub async fn sync_plan(&mut self, plan: ExportPlan) -> ExportReport {
        self.manage_tables(plan.tables.iter().copied());
        let mut report = self.sync(plan.routes).await;
        report.routes.extend(plan.rejected);
        report.sort();
        report
    }

    /// Removes every route of ours (owned protocols, managed tables): export disabled, or
    /// shutdown. The report lists what was removed and what could not be.
    pub async fn clear(&mut self) -> ExportReport {
        let mut report = ExportReport::default();
        let mut failed = BTreeSet::new();
        let existing = self.ours(&mut report).await;
        for route in existing.into_values().flatten() {
            self.remove(&route, &mut report, &mut failed).await;
        }
        self.forget_retired(&failed);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::export::RTPROT_BGP;

    #[test]
    fn reserved_protocols_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kernel = Kernel::new().unwrap();
            for p in RESERVED_PROTOCOLS {
                assert_eq!(
                    NetlinkExporter::new(kernel.clone(), p).unwrap_err(),
                    ReservedProtocol(p)
                );
            }
            let mut e = NetlinkExporter::new(kernel, RTPROT_BGP).unwrap();
            assert_eq!(e.set_protocol(4), Err(ReservedProtocol(4)));
            e.set_protocol(200).unwrap();
            assert_eq!(e.protocol(), 200);
            assert_eq!(e.retired, BTreeSet::from([RTPROT_BGP]));
            e.set_protocol(RTPROT_BGP).unwrap();
            assert_eq!(e.retired, BTreeSet::from([200]));
            e.manage_tables([0, 100]);
            assert_eq!(e.managed_tables(), &BTreeSet::from([100, 254]));
        });
    }
}
