//! `netlinkExport` as the runtime drives it: the speaker's received routes planned and
//! installed into the kernel.

use super::*;

impl BgpAgent {
    /// Installs the received routes `netlinkExport` selects (removes ours when it is off).
    pub(super) async fn sync_export(
        &mut self,
        mapped: &MappedConfig,
        received: &[(IpAddr, purelb_bgp::rib::ReceivedRoute)],
    ) {
        if !mapped.export.enabled && self.exporter.is_none() {
            return;
        }
        let exporter = match self.exporter.as_mut() {
            Some(e) => e,
            None => match NetlinkExporter::new(self.kernel.clone(), mapped.export.protocol) {
                Ok(e) => self.exporter.insert(e),
                Err(error) => {
                    tracing::error!(op = "netlinkExport", ?error, "unusable route protocol");
                    return;
                }
            },
        };
        if let Err(error) = exporter.set_protocol(mapped.export.protocol) {
            tracing::error!(op = "netlinkExport", ?error, "unusable route protocol");
            return;
        }
        let filter = match exporter.next_hop_filter().await {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(op = "netlinkExport", %error, "cannot read connected routes");
                return;
            }
        };
        let plan = plan_export(&mapped.export, received, |nh, table| {
            filter.check(nh, table)
        });
        self.export_report = exporter.sync_plan(plan).await;
    }
}
