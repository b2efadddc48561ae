//! Which received BGP routes `netlinkExport` installs into kernel routing tables (the
//! BGPConfiguration setting, and its report in BGPNodeStatus), as a pure decision.
//!
//! [`plan_export`] (and its shorthand [`desired_routes`]) turns the `netlinkExport` settings
//! and the speaker's received routes into the kernel routes that should exist, plus the
//! matched routes that cannot be exported and why. Next-hop reachability comes in as a
//! closure, so the decision needs no kernel ([`NextHopFilter`](super::NextHopFilter) answers it from a snapshot
//! of the kernel's connected routes).
//! [`NetlinkExporter`](super::NetlinkExporter) then makes the kernel hold exactly those routes
//! among its own (same protocol, managed tables) and reports, per route, whether it is
//! installed and why not: the BGPNodeStatus `exportedRoutes` entries.
//!
//! # Rule semantics (and how they compare with gobgp-netlink v1.1.2, which k8gobgp ran)
//! - A rule **matches** a route that carries at least one of the rule's standard communities
//!   or at least one of its large communities (one OR over both lists). A rule with **no
//!   communities at all matches every route** — gobgp-netlink's `matchesRule` does the same,
//!   so a bare rule is "export everything".
//! - Rules are tried **in order, and the first matching rule wins — per kernel table**. A route
//!   matching rules that name different tables is exported into each of those tables;
//!   gobgp-netlink also exports a path through every matching rule. Where it differs: two
//!   matching rules naming the *same* table give gobgp-netlink two kernel routes (different
//!   metrics); here the earlier rule decides and there is one route per prefix per table.
//!   When every rule names the same table (the usual case) this is plain first-match.
//! - **`validateNexthop`** (default true): a next hop is used only if a connected (on-link,
//!   gateway-less) route in the rule's table or in main covers it and it is not an address of
//!   this node. gobgp-netlink asks the kernel's route lookup instead, which a default route
//!   satisfies, so it accepts next hops that are only reachable through another router; this
//!   is stricter (a BGP next hop behind a gateway would need recursive resolution, which the
//!   kernel does not do for routes it installs). With validation off nothing is checked here;
//!   the kernel still refuses a gateway it cannot reach on-link, and the status shows its
//!   error (gobgp-netlink sets `RTNH_F_ONLINK` then, which needs an interface it rarely sets).
//! - **Several peers, one prefix**: the paths are ranked by LOCAL_PREF (higher first, absent
//!   = 100), then AS_PATH length (RFC 4271 counting: a set counts one, confederation segments
//!   nothing); every path tied with the best on both contributes its next hop to **one ECMP
//!   multipath route** (duplicates merged, next hops sorted, so the result does not depend on
//!   the order peers answered). MED, origin and router ID are not compared: paths that differ
//!   only there are treated as equal (like FRR's `bestpath as-path multipath-relax` with
//!   `maximum-paths`). gobgp-netlink installs only GoBGP's single best path.
//! - IPv6 routes with metric 0 are installed with 1024, which is what the kernel does with
//!   0; the planned route says 1024 so the status and the comparison agree with the kernel.
//! - Next hops that are missing, of the other family (RFC 8950), unspecified, loopback,
//!   multicast or IPv6 link-local (it would need the session's interface) are not used.

use std::collections::BTreeMap;
use std::net::IpAddr;

use purelb_bgp::rib::{ReceivedRoute, path_rank};

use super::report::{ExportAction, ExportPlan, ExportResult};
pub use crate::bgp::config::RTPROT_BGP;
use crate::bgp::config::{ExportRule, ExportSettings};
use crate::kernel::{KernelRoute, RouteKey, effective_metric, normalize_table};

/// Whether `route` carries one of `rule`'s communities or large communities; a rule with
/// neither matches everything.
pub fn rule_matches(rule: &ExportRule, route: &ReceivedRoute) -> bool {
    if rule.communities.is_empty() && rule.large_communities.is_empty() {
        return true;
    }
    rule.communities
        .iter()
        .any(|c| route.communities.contains(c))
        || rule.large_communities.iter().any(|&(ga, l1, l2)| {
            route
                .large_communities
                .iter()
                .any(|lc| lc.global_admin == ga && lc.local_data1 == l1 && lc.local_data2 == l2)
        })
}

/// Why a next hop cannot be used at all (independent of reachability).
fn unusable_next_hop(prefix: IpAddr, nh: IpAddr) -> Option<String> {
    if nh.is_ipv4() != prefix.is_ipv4() {
        return Some(format!(
            "next hop {nh} is of the other address family (not supported)"
        ));
    }
    let bad = match nh {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    bad.then(|| {
        format!("next hop {nh} cannot be used (unspecified, loopback, multicast or link-local)")
    })
}

/// Decides the kernel routes for `received` under `settings` (see the module doc for the
/// rules). `next_hop_ok(next_hop, table)` is asked for rules with `validate_next_hop`; an
/// `Err` carries the reason shown in the status. Export disabled gives an empty plan.
pub fn plan_export<F>(
    settings: &ExportSettings,
    received: &[(IpAddr, ReceivedRoute)],
    next_hop_ok: F,
) -> ExportPlan
where
    F: Fn(IpAddr, u32) -> Result<(), String>,
{
    let mut plan = ExportPlan::default();
    if !settings.enabled {
        return plan;
    }
    plan.tables = settings
        .rules
        .iter()
        .map(|r| normalize_table(r.table))
        .collect();

    struct Candidate<'a> {
        rule: usize,
        peer: IpAddr,
        route: &'a ReceivedRoute,
    }
    let mut groups: BTreeMap<RouteKey, Vec<Candidate<'_>>> = BTreeMap::new();
    for (peer, route) in received {
        let destination = route.prefix.net();
        let mut tables_taken: Vec<u32> = Vec::new();
        for (i, rule) in settings.rules.iter().enumerate() {
            let table = normalize_table(rule.table);
            if tables_taken.contains(&table) || !rule_matches(rule, route) {
                continue;
            }
            tables_taken.push(table);
            groups
                .entry(RouteKey { destination, table })
                .or_default()
                .push(Candidate {
                    rule: i,
                    peer: *peer,
                    route,
                });
        }
    }

    for (key, candidates) in groups {
        let Some(rule_index) = candidates.iter().map(|c| c.rule).min() else {
            continue;
        };
        let rule = &settings.rules[rule_index];
        let mut usable = Vec::new();
        let mut refused_hops = Vec::new();
        let mut reasons = Vec::new();
        let mut in_order: Vec<&Candidate<'_>> =
            candidates.iter().filter(|c| c.rule == rule_index).collect();
        in_order.sort_by_key(|c| c.peer);
        for c in in_order {
            let verdict = match c.route.next_hop {
                None => Err("no next hop".to_owned()),
                Some(nh) => match unusable_next_hop(key.destination.addr(), nh) {
                    Some(reason) => Err(reason),
                    None if rule.validate_next_hop => next_hop_ok(nh, key.table).map(|()| nh),
                    None => Ok(nh),
                },
            };
            match verdict {
                Ok(nh) => usable.push((c, nh)),
                Err(reason) => {
                    refused_hops.extend(c.route.next_hop);
                    reasons.push(format!("from peer {}: {reason}", c.peer));
                }
            }
        }
        let route = |gateways: Vec<IpAddr>| {
            KernelRoute {
                destination: key.destination,
                gateways,
                table: key.table,
                metric: effective_metric(key.destination, rule.metric),
                protocol: settings.protocol,
            }
            .normalized()
        };
        let rank = |c: &Candidate<'_>| path_rank(c.route);
        match usable.iter().map(|(c, _)| rank(c)).min() {
            Some(best) => {
                let gateways = usable
                    .iter()
                    .filter(|(c, _)| rank(c) == best)
                    .map(|(_, nh)| *nh)
                    .collect();
                plan.routes.push(route(gateways));
            }
            None => plan.rejected.push(ExportResult::not(
                route(refused_hops),
                ExportAction::Rejected,
                format!("rule {:?}: {}", rule.name, reasons.join("; ")),
            )),
        }
    }
    plan
}

/// The kernel routes [`plan_export`] wants (its rejected routes dropped).
pub fn desired_routes<F>(
    settings: &ExportSettings,
    received: &[(IpAddr, ReceivedRoute)],
    next_hop_ok: F,
) -> Vec<KernelRoute>
where
    F: Fn(IpAddr, u32) -> Result<(), String>,
{
    plan_export(settings, received, next_hop_ok).routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use ipnet::IpNet;

    use crate::bgp::export::NextHopFilter;
    use crate::kernel::IPV6_DEFAULT_METRIC;
    use purelb_bgp::wire::{AsPath, LargeCommunity, Prefix};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn rule(name: &str, communities: &[u32], large: &[(u32, u32, u32)], table: u32) -> ExportRule {
        ExportRule {
            name: name.to_owned(),
            communities: communities.to_vec(),
            large_communities: large.to_vec(),
            table,
            metric: 20,
            validate_next_hop: true,
        }
    }

    fn settings(rules: Vec<ExportRule>) -> ExportSettings {
        ExportSettings {
            enabled: true,
            protocol: RTPROT_BGP,
            rules,
        }
    }

    fn received(prefix: &str, next_hop: &str) -> ReceivedRoute {
        let prefix = Prefix::of(prefix.parse().unwrap());
        ReceivedRoute::new(prefix, Some(ip(next_hop)), AsPath::sequence(vec![65001]))
    }

    fn with_communities(mut r: ReceivedRoute, c: &[u32]) -> ReceivedRoute {
        r.communities = c.to_vec();
        r
    }

    fn all_ok(_: IpAddr, _: u32) -> Result<(), String> {
        Ok(())
    }

    const C100: u32 = (65000 << 16) | 100;
    const C200: u32 = (65000 << 16) | 200;

    #[test]
    fn a_rule_without_communities_matches_everything() {
        let r = rule("all", &[], &[], 0);
        assert!(rule_matches(
            &r,
            &received("203.0.113.0/24", "198.51.100.1")
        ));
        assert!(rule_matches(
            &r,
            &with_communities(received("203.0.113.0/24", "198.51.100.1"), &[C100])
        ));
    }

    #[test]
    fn any_standard_or_large_community_matches() {
        let r = rule("c", &[C100, C200], &[(65000, 1, 2)], 0);
        let plain = received("203.0.113.0/24", "198.51.100.1");
        assert!(!rule_matches(&r, &plain));
        assert!(rule_matches(
            &r,
            &with_communities(plain.clone(), &[7, C200])
        ));
        let mut large = plain.clone();
        large.large_communities = vec![LargeCommunity {
            global_admin: 65000,
            local_data1: 1,
            local_data2: 2,
        }];
        assert!(rule_matches(&r, &large));
        large.large_communities[0].local_data2 = 3;
        assert!(!rule_matches(&r, &large));
        // Large only: standard communities do not count.
        let large_only = rule("l", &[], &[(65000, 1, 2)], 0);
        assert!(!rule_matches(
            &large_only,
            &with_communities(plain, &[C100])
        ));
    }

    #[test]
    fn first_matching_rule_per_table_wins_and_each_table_gets_one_route() {
        let mut specific = rule("specific", &[C100], &[], 0);
        specific.metric = 5;
        let mut catch_all = rule("all", &[], &[], 0);
        catch_all.metric = 50;
        let mut vrf = rule("t100", &[C100], &[], 100);
        vrf.metric = 7;
        let s = settings(vec![specific, catch_all, vrf]);
        let rx = vec![
            (
                ip("198.51.100.1"),
                with_communities(received("203.0.113.0/24", "198.51.100.1"), &[C100]),
            ),
            (
                ip("198.51.100.1"),
                received("203.0.113.128/25", "198.51.100.1"),
            ),
        ];
        let plan = plan_export(&s, &rx, all_ok);
        assert!(plan.rejected.is_empty());
        let got: Vec<(String, u32, u32)> = plan
            .routes
            .iter()
            .map(|r| (r.cidr(), r.table, r.metric))
            .collect();
        assert_eq!(
            got,
            vec![
                ("203.0.113.0/24".to_owned(), 100, 7),
                ("203.0.113.0/24".to_owned(), 254, 5),
                ("203.0.113.128/25".to_owned(), 254, 50),
            ]
        );
        assert_eq!(plan.tables, BTreeSet::from([100, 254]));
        assert!(plan.routes.iter().all(|r| r.protocol == 186));
    }

    #[test]
    fn unmatched_routes_and_disabled_export_give_nothing() {
        let s = settings(vec![rule("c", &[C100], &[], 0)]);
        let rx = vec![(
            ip("198.51.100.1"),
            received("203.0.113.0/24", "198.51.100.1"),
        )];
        assert_eq!(
            plan_export(&s, &rx, all_ok),
            ExportPlan {
                tables: BTreeSet::from([254]),
                ..ExportPlan::default()
            }
        );
        let mut off = settings(vec![rule("all", &[], &[], 0)]);
        off.enabled = false;
        assert_eq!(plan_export(&off, &rx, all_ok), ExportPlan::default());
    }

    #[test]
    fn equal_paths_from_several_peers_make_one_ecmp_route() {
        let s = settings(vec![rule("all", &[], &[], 0)]);
        let rx = vec![
            (
                ip("198.51.100.3"),
                received("203.0.113.0/24", "198.51.100.3"),
            ),
            (
                ip("198.51.100.1"),
                received("203.0.113.0/24", "198.51.100.1"),
            ),
            // Same next hop from a route server: merged.
            (
                ip("198.51.100.9"),
                received("203.0.113.0/24", "198.51.100.1"),
            ),
        ];
        let routes = desired_routes(&s, &rx, all_ok);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            routes[0].gateways,
            vec![ip("198.51.100.1"), ip("198.51.100.3")]
        );
        // Order of arrival does not matter.
        let mut reversed = rx.clone();
        reversed.reverse();
        assert_eq!(desired_routes(&s, &reversed, all_ok), routes);
    }

    #[test]
    fn unequal_paths_keep_only_the_best() {
        let s = settings(vec![rule("all", &[], &[], 0)]);
        let mut longer = received("203.0.113.0/24", "198.51.100.1");
        longer.as_path = AsPath::sequence(vec![65001, 65002]);
        let shorter = received("203.0.113.0/24", "198.51.100.3");
        let rx = vec![
            (ip("198.51.100.1"), longer.clone()),
            (ip("198.51.100.3"), shorter),
        ];
        assert_eq!(
            desired_routes(&s, &rx, all_ok)[0].gateways,
            vec![ip("198.51.100.3")]
        );

        // LOCAL_PREF before path length.
        let mut preferred = longer;
        preferred.local_pref = Some(200);
        let rx = vec![
            (ip("198.51.100.1"), preferred),
            (
                ip("198.51.100.3"),
                received("203.0.113.0/24", "198.51.100.3"),
            ),
        ];
        assert_eq!(
            desired_routes(&s, &rx, all_ok)[0].gateways,
            vec![ip("198.51.100.1")]
        );
    }

    #[test]
    fn next_hop_validation_rejects_with_a_reason_and_can_be_off() {
        let filter = NextHopFilter::new(
            vec![(net("198.51.100.0/24"), 254), (net("2001:db8:1::/64"), 254)],
            [ip("198.51.100.2")],
        );
        let check = |nh: IpAddr, t: u32| filter.check(nh, t);
        let s = settings(vec![rule("all", &[], &[], 0)]);
        let rx = vec![
            (
                ip("198.51.100.1"),
                received("203.0.113.0/24", "198.51.100.1"),
            ),
            (
                ip("198.51.100.5"),
                received("203.0.113.0/24", "203.0.113.1"),
            ),
            (
                ip("198.51.100.2"),
                received("203.0.113.64/26", "198.51.100.2"),
            ),
        ];
        let plan = plan_export(&s, &rx, check);
        assert_eq!(plan.routes.len(), 1);
        assert_eq!(plan.routes[0].gateways, vec![ip("198.51.100.1")]);
        assert_eq!(plan.rejected.len(), 1);
        let rej = &plan.rejected[0];
        assert_eq!(rej.route.cidr(), "203.0.113.64/26");
        assert!(!rej.installed);
        assert_eq!(rej.action, ExportAction::Rejected);
        assert!(
            rej.reason
                .as_deref()
                .unwrap()
                .contains("address of this node"),
            "{rej:?}"
        );

        let only_far = vec![(
            ip("198.51.100.5"),
            received("203.0.113.0/24", "203.0.113.1"),
        )];
        let plan = plan_export(&s, &only_far, check);
        assert!(plan.routes.is_empty());
        let reason = plan.rejected[0].reason.clone().unwrap();
        assert!(
            reason.contains("not reachable through a connected route"),
            "{reason}"
        );
        assert!(reason.contains("rule \"all\""), "{reason}");
        assert_eq!(plan.rejected[0].route.gateways, vec![ip("203.0.113.1")]);

        let mut trusting = rule("all", &[], &[], 0);
        trusting.validate_next_hop = false;
        let plan = plan_export(&settings(vec![trusting]), &only_far, check);
        assert_eq!(plan.routes[0].gateways, vec![ip("203.0.113.1")]);
    }

    #[test]
    fn unusable_next_hops_are_never_exported() {
        let mut trusting = rule("all", &[], &[], 0);
        trusting.validate_next_hop = false;
        let s = settings(vec![trusting]);
        let mut none = received("203.0.113.0/24", "198.51.100.1");
        none.next_hop = None;
        for (route, want) in [
            (none, "no next hop"),
            (
                received("203.0.113.0/24", "2001:db8:1::1"),
                "other address family",
            ),
            (received("2001:db8:ff::/48", "fe80::1"), "link-local"),
            (received("203.0.113.0/24", "0.0.0.0"), "unspecified"),
        ] {
            let plan = plan_export(&s, &[(ip("198.51.100.1"), route)], all_ok);
            assert!(plan.routes.is_empty());
            let reason = plan.rejected[0].reason.clone().unwrap();
            assert!(reason.contains(want), "{reason}");
        }
    }

    #[test]
    fn ipv6_metric_zero_is_what_the_kernel_keeps() {
        let mut r = rule("all", &[], &[], 0);
        r.metric = 0;
        let s = settings(vec![r]);
        let rx = vec![
            (
                ip("2001:db8:1::1"),
                received("2001:db8:ff::/48", "2001:db8:1::1"),
            ),
            (
                ip("198.51.100.1"),
                received("203.0.113.0/24", "198.51.100.1"),
            ),
        ];
        let routes = desired_routes(&s, &rx, all_ok);
        assert_eq!(routes[0].metric, 0);
        assert_eq!(routes[1].metric, IPV6_DEFAULT_METRIC);
    }
}
