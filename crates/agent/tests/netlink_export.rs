//! netlinkExport against a real kernel: the exporter installs, replaces and removes routes in a
//! netlab node namespace, leaves other protocols' routes alone, and the kernel-backed next-hop
//! filter feeds the pure planner. Needs root (skipped without it, failing under CI=true).

use anyhow::{Context, Result};
use ipnet::IpNet;
use purelb_agent::bgp::config::{ExportRule, ExportSettings};
use purelb_agent::bgp::export::{
    ExportAction, ExportReport, KernelRoute, NetlinkExporter, RTPROT_BGP, plan_export,
};
use purelb_agent::kernel::Kernel;
use purelb_bgp::rib::ReceivedRoute;
use purelb_bgp::wire::{AsPath, Prefix};
use serde_json::Value;
use std::net::IpAddr;
use testbed::netlab::{Lab, LinkSpec, Ns, require_root};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A node namespace with a veth to a router namespace: 198.51.100.2/24 and 2001:db8:1::2/64
/// on the node, .1 / ::1 on the router.
fn node_with_uplink(lab: &Lab) -> Result<Ns> {
    let n1 = lab.node("n1")?;
    let r1 = lab.router("r1")?;
    lab.link(
        &n1,
        &r1,
        LinkSpec::new()
            .v4("198.51.100.2/24", "198.51.100.1/24")
            .v6("2001:db8:1::2/64", "2001:db8:1::1/64"),
    )?;
    Ok(n1)
}

/// One route as `ip -j route` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    dst: String,
    table: String,
    metric: u64,
    gateways: Vec<String>,
}

fn seen(dst: &str, table: &str, metric: u64, gateways: &[&str]) -> Seen {
    Seen {
        dst: dst.to_owned(),
        table: table.to_owned(),
        metric,
        gateways: gateways.iter().map(|g| g.to_string()).collect(),
    }
}

fn parse_routes(json: &str) -> Result<Vec<Seen>> {
    let v: Value = serde_json::from_str(json).context("parsing ip -j route")?;
    let mut out = Vec::new();
    for r in v.as_array().context("ip -j route: not an array")? {
        let mut gateways: Vec<String> = match r["nexthops"].as_array() {
            Some(hops) => hops
                .iter()
                .filter_map(|h| h["gateway"].as_str().map(str::to_owned))
                .collect(),
            None => r["gateway"]
                .as_str()
                .map(str::to_owned)
                .into_iter()
                .collect(),
        };
        gateways.sort();
        out.push(Seen {
            dst: r["dst"].as_str().context("dst")?.to_owned(),
            // iproute2 leaves the table out for main.
            table: r["table"].as_str().unwrap_or("main").to_owned(),
            metric: r["metric"].as_u64().unwrap_or(0),
            gateways,
        });
    }
    out.sort();
    Ok(out)
}

/// Routes with `proto` in every table, both families
/// (`ip -j route show table all proto <p>`, asked per family).
fn routes_with_proto(ns: &Ns, proto: &str) -> Result<Vec<Seen>> {
    let mut all = Vec::new();
    for fam in ["-4", "-6"] {
        let out = ns.ip(&[fam, "-j", "route", "show", "table", "all", "proto", proto])?;
        all.extend(parse_routes(&out)?);
    }
    all.sort();
    Ok(all)
}

fn ours(ns: &Ns) -> Result<Vec<Seen>> {
    routes_with_proto(ns, "186")
}

fn v4(prefix: &str, len: u8, gws: &[&str], table: u32, metric: u32) -> KernelRoute {
    KernelRoute {
        destination: IpNet::new(ip(prefix), len).expect("prefix length"),
        gateways: gws.iter().map(|g| ip(g)).collect(),
        table,
        metric,
        protocol: RTPROT_BGP,
    }
}

fn assert_all_installed(report: &ExportReport) {
    assert!(
        report.routes.iter().all(|r| r.installed) && report.errors.is_empty(),
        "{report:#?}"
    );
}

#[test]
fn sync_installs_replaces_removes_and_clears_only_ours() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = node_with_uplink(&lab)?;
    // Not ours: another protocol on the same prefix (main, other metric) and on another
    // prefix; our protocol in a table no rule names.
    n1.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.1",
        "metric",
        "99",
        "proto",
        "static",
    ])?;
    n1.ip(&[
        "route",
        "add",
        "203.0.113.64/26",
        "via",
        "198.51.100.1",
        "proto",
        "static",
    ])?;
    n1.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.1",
        "table",
        "300",
        "proto",
        "186",
    ])?;
    let statics_before = routes_with_proto(&n1, "static")?;
    assert_eq!(statics_before.len(), 2, "{statics_before:?}");
    let foreign = seen("203.0.113.0/24", "300", 0, &["198.51.100.1"]);

    let v6 = KernelRoute {
        destination: "2001:db8:ff::/48".parse().expect("prefix"),
        gateways: vec![ip("2001:db8:1::1")],
        table: 0,
        metric: 20,
        protocol: RTPROT_BGP,
    };
    let main = v4("203.0.113.0", 24, &["198.51.100.1"], 0, 20);
    let t100 = v4("203.0.113.0", 24, &["198.51.100.1"], 100, 20);

    n1.block_on(|| async {
        let mut ex = NetlinkExporter::new(Kernel::new()?, RTPROT_BGP)?;
        ex.manage_tables([0, 100]);

        // 1. Install: main, table 100, IPv6.
        let report = ex.sync(vec![main.clone(), t100.clone(), v6.clone()]).await;
        assert_all_installed(&report);
        assert_eq!(report.routes.len(), 3);
        assert!(
            report
                .routes
                .iter()
                .all(|r| r.action == ExportAction::Installed)
        );
        assert_eq!(
            ours(&n1)?,
            vec![
                seen("2001:db8:ff::/48", "main", 20, &["2001:db8:1::1"]),
                seen("203.0.113.0/24", "100", 20, &["198.51.100.1"]),
                foreign.clone(),
                seen("203.0.113.0/24", "main", 20, &["198.51.100.1"]),
            ]
        );

        // 2. The same again changes nothing.
        let report = ex.sync(vec![main.clone(), t100.clone(), v6.clone()]).await;
        assert_all_installed(&report);
        assert!(
            report
                .routes
                .iter()
                .all(|r| r.action == ExportAction::Unchanged),
            "{report:#?}"
        );
        assert!(report.removed.is_empty());

        // 3. Metric change in main: the new route replaces the old one (no metric-20 left).
        let main30 = v4("203.0.113.0", 24, &["198.51.100.1"], 0, 30);
        let report = ex
            .sync(vec![main30.clone(), t100.clone(), v6.clone()])
            .await;
        assert_all_installed(&report);
        assert_eq!(report.removed.len(), 1, "{report:#?}");
        let now = ours(&n1)?;
        assert!(
            now.contains(&seen("203.0.113.0/24", "main", 30, &["198.51.100.1"])),
            "{now:?}"
        );
        assert!(
            !now.contains(&seen("203.0.113.0/24", "main", 20, &["198.51.100.1"])),
            "{now:?}"
        );

        // 4. ECMP: two next hops in table 100 (IPv4) and for the IPv6 route.
        let t100_ecmp = v4(
            "203.0.113.0",
            24,
            &["198.51.100.3", "198.51.100.1"],
            100,
            20,
        );
        let v6_ecmp = KernelRoute {
            gateways: vec![ip("2001:db8:1::1"), ip("2001:db8:1::3")],
            ..v6.clone()
        };
        let report = ex
            .sync(vec![main30.clone(), t100_ecmp.clone(), v6_ecmp.clone()])
            .await;
        assert_all_installed(&report);
        let now = ours(&n1)?;
        assert!(
            now.contains(&seen(
                "203.0.113.0/24",
                "100",
                20,
                &["198.51.100.1", "198.51.100.3"]
            )),
            "{now:?}"
        );
        assert!(
            now.contains(&seen(
                "2001:db8:ff::/48",
                "main",
                20,
                &["2001:db8:1::1", "2001:db8:1::3"]
            )),
            "{now:?}"
        );
        assert_eq!(now.len(), 4, "one route per prefix per table: {now:?}");

        // 5. No longer desired: main and IPv6 go, table 100 stays; a route the kernel
        //    refuses (gateway not on-link) is reported, not fatal.
        let far = v4("203.0.113.128", 25, &["203.0.113.1"], 0, 20);
        let report = ex.sync(vec![t100_ecmp.clone(), far.clone()]).await;
        assert_eq!(report.removed.len(), 2, "{report:#?}");
        let refused = report
            .routes
            .iter()
            .find(|r| r.route.key() == far.key())
            .context("the refused route is in the report")?;
        assert!(!refused.installed);
        assert_eq!(refused.action, ExportAction::Failed);
        assert!(
            refused.reason.as_deref().unwrap_or("").contains("refused"),
            "{refused:?}"
        );
        assert!(!report.healthy());
        assert_eq!(
            ours(&n1)?,
            vec![
                seen(
                    "203.0.113.0/24",
                    "100",
                    20,
                    &["198.51.100.1", "198.51.100.3"]
                ),
                foreign.clone(),
            ]
        );

        // 6. clear(): everything of ours goes, nothing else.
        let report = ex.clear().await;
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_eq!(report.removed.len(), 1, "{report:#?}");
        assert_eq!(ours(&n1)?, vec![foreign.clone()]);
        Ok(())
    })?;

    assert_eq!(routes_with_proto(&n1, "static")?, statics_before);
    Ok(())
}

#[test]
fn big_table_ids_and_protocol_change() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = node_with_uplink(&lab)?;
    n1.block_on(|| async {
        let mut ex = NetlinkExporter::new(Kernel::new()?, RTPROT_BGP)?;
        let big = v4("203.0.113.0", 24, &["198.51.100.1"], 1000, 20);
        assert_all_installed(&ex.sync(vec![big.clone()]).await);
        assert_eq!(
            ours(&n1)?,
            vec![seen("203.0.113.0/24", "1000", 20, &["198.51.100.1"])]
        );

        // Switching protocol moves the route to the new one and removes the old.
        ex.set_protocol(200)?;
        let moved = KernelRoute {
            protocol: 200,
            ..big.clone()
        };
        let report = ex.sync(vec![moved]).await;
        assert_all_installed(&report);
        assert!(ours(&n1)?.is_empty(), "{:?}", ours(&n1)?);
        assert_eq!(
            routes_with_proto(&n1, "200")?,
            vec![seen("203.0.113.0/24", "1000", 20, &["198.51.100.1"])]
        );
        ex.clear().await;
        assert!(routes_with_proto(&n1, "200")?.is_empty());
        Ok(())
    })
}

fn received(prefix: &str, next_hop: &str) -> ReceivedRoute {
    let prefix = Prefix::of(prefix.parse().expect("prefix/len"));
    ReceivedRoute::new(prefix, Some(ip(next_hop)), AsPath::sequence(vec![65001]))
}

#[test]
fn planned_from_received_routes_with_kernel_next_hop_validation() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = node_with_uplink(&lab)?;
    let community = (65000u32 << 16) | 100;
    let settings = ExportSettings {
        enabled: true,
        protocol: RTPROT_BGP,
        rules: vec![
            ExportRule {
                name: "to-100".into(),
                communities: vec![community],
                large_communities: vec![],
                table: 100,
                metric: 20,
                validate_next_hop: true,
            },
            ExportRule {
                name: "main".into(),
                communities: vec![],
                large_communities: vec![],
                table: 0,
                metric: 20,
                validate_next_hop: true,
            },
        ],
    };
    let mut tagged = received("203.0.113.0/24", "198.51.100.1");
    tagged.communities = vec![community];
    let received = vec![
        (ip("198.51.100.1"), tagged),
        (
            ip("2001:db8:1::1"),
            received("2001:db8:ff::/48", "2001:db8:1::1"),
        ),
        // Next hop only reachable through a gateway: rejected.
        (
            ip("198.51.100.1"),
            received("203.0.113.128/25", "203.0.113.1"),
        ),
        // Next hop is the node itself: rejected.
        (
            ip("198.51.100.1"),
            received("203.0.113.64/26", "198.51.100.2"),
        ),
    ];
    n1.block_on(|| async {
        let mut ex = NetlinkExporter::new(Kernel::new()?, settings.protocol)?;
        let filter = ex.next_hop_filter().await?;
        let plan = plan_export(&settings, &received, |nh, t| filter.check(nh, t));
        let report = ex.sync_plan(plan).await;
        let summary: Vec<(String, String, bool)> = report
            .routes
            .iter()
            .map(|r| (r.route.cidr(), r.route.table_name(), r.installed))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("203.0.113.0/24".into(), "100".into(), true),
                ("203.0.113.0/24".into(), "main".into(), true),
                ("203.0.113.64/26".into(), "main".into(), false),
                ("203.0.113.128/25".into(), "main".into(), false),
                ("2001:db8:ff::/48".into(), "main".into(), true),
            ],
            "{report:#?}"
        );
        let reasons: Vec<&str> = report
            .routes
            .iter()
            .filter_map(|r| r.reason.as_deref())
            .collect();
        assert!(reasons[0].contains("address of this node"), "{reasons:?}");
        assert!(reasons[1].contains("not reachable"), "{reasons:?}");
        assert_eq!(report.installed_count(), 3);
        assert_eq!(ours(&n1)?.len(), 3, "{:?}", ours(&n1)?);

        // Export disabled: the next plan is empty and sync removes everything of ours.
        let off = ExportSettings {
            enabled: false,
            ..settings.clone()
        };
        let report = ex
            .sync_plan(plan_export(&off, &received, |nh, t| filter.check(nh, t)))
            .await;
        assert_eq!(report.removed.len(), 3, "{report:#?}");
        assert!(ours(&n1)?.is_empty());
        Ok(())
    })
}
