//! ServiceGroup intake.

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{
    EventReason, EventType, GroupKind, GroupResult, Ipam, NoValidPools, PoolType, Scope,
};
use serde_json::json;

fn results(report: &purelb_allocator::ipam::IntakeReport) -> Vec<(String, String, GroupResult)> {
    report
        .groups
        .iter()
        .map(|g| (g.namespace.clone(), g.name.clone(), g.result.clone()))
        .collect()
}

#[test]
fn groups_are_taken_in_namespace_name_order_and_parsed_events_emitted() {
    let groups = [
        local("b", &[("10.0.1.0/24", "10.0.1.0/24")], &[]),
        local("a", &[("10.0.0.0/24", "10.0.0.0/24")], &[]),
    ];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    let ipam = ipam.unwrap();
    assert_eq!(report.scope, Scope::Scoped(NS.into()));
    assert_eq!(
        results(&report),
        vec![
            (NS.into(), "a".into(), GroupResult::Parsed),
            (NS.into(), "b".into(), GroupResult::Parsed)
        ]
    );
    for g in &report.groups {
        assert_eq!(g.event.type_, EventType::Normal);
        assert_eq!(g.event.reason, EventReason::Parsed);
        assert_eq!(g.event.message, "ServiceGroup parsed successfully");
    }
    assert_eq!(ipam.group_names().collect::<Vec<_>>(), vec!["a", "b"]);
}

#[test]
fn only_the_install_namespace_is_used() {
    let groups = [
        local("default", &[("10.0.0.0/24", "10.0.0.0/24")], &[]),
        group(
            "tenant",
            "stray",
            json!({"remote": {"v4pool": {"pool": "10.9.0.0/24", "subnet": "10.9.0.0/16"}}}),
        ),
        group(
            "other",
            "ext",
            json!({"external": {"provider": "x", "announce": "local"}}),
        ),
    ];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    let ipam = ipam.unwrap();
    assert_eq!(ipam.group_names().collect::<Vec<_>>(), vec!["default"]);
    let out: Vec<_> = report.out_of_scope().collect();
    assert_eq!(out.len(), 2);
    assert_eq!(
        (
            out[0].namespace.as_str(),
            out[0].name.as_str(),
            out[0].kind.as_str()
        ),
        ("other", "ext", "external")
    );
    assert_eq!(
        (out[1].namespace.as_str(), out[1].name.as_str(), out[1].kind),
        ("tenant", "stray", GroupKind::Remote)
    );
    assert_eq!(out[1].event.type_, EventType::Warning);
    assert_eq!(out[1].event.reason, EventReason::ServiceGroupOutOfScope);
    assert_eq!(
        out[1].event.message,
        "Ignored: ServiceGroups are read only from the PureLB install namespace, and tenant is not it. \
         This group is remote, so addresses allocated from it are withdrawn from every node. \
         Move it: kubectl get servicegroup stray -n tenant -o yaml | \
         sed 's/namespace: tenant/namespace: purelb-system/' | kubectl apply -f -"
    );
    assert!(
        out[0]
            .event
            .message
            .contains("This group is external, so its pool is not allocatable.")
    );
    // A group whose namespace is not the install namespace is unknown, even
    // if its name is asked for.
    assert_eq!(
        ipam.check("x", "stray").unwrap_err().to_string(),
        "unknown pool \"stray\""
    );
}

#[test]
fn scoping_fails_open() {
    let groups = [
        group(
            "a",
            "default",
            json!({"local": {"v4pool": {"pool": "10.0.0.0/24", "subnet": "10.0.0.0/24"}}}),
        ),
        group(
            "b",
            "other",
            json!({"local": {"v4pool": {"pool": "10.0.1.0/24", "subnet": "10.0.1.0/24"}}}),
        ),
    ];
    // Install namespace unknown: everything is used.
    let (ipam, report) = Ipam::from_groups(None, &groups);
    assert_eq!(report.scope, Scope::Unscoped);
    assert_eq!(ipam.unwrap().group_names().count(), 2);
    let (ipam, report) = Ipam::from_groups(Some(""), &groups);
    assert_eq!(report.scope, Scope::Unscoped);
    assert_eq!(ipam.unwrap().group_names().count(), 2);
    // Every group would be dropped: suspect, so everything is used.
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    assert_eq!(report.scope, Scope::FailOpen(NS.into()));
    assert_eq!(report.out_of_scope().count(), 0);
    assert_eq!(ipam.unwrap().group_names().count(), 2);
    // No groups at all: an empty, valid generation.
    let (ipam, report) = Ipam::from_groups(Some(NS), &[]);
    assert_eq!(report.scope, Scope::Scoped(NS.into()));
    assert!(ipam.is_ok());
}

#[test]
fn parse_errors_are_reported_with_upstream_texts() {
    let groups = [
        local(
            "a-bad",
            &[("192.168.1.250-192.168.2.5", "192.168.1.0/24")],
            &[],
        ),
        group(NS, "b-empty", json!({"local": {}})),
        group(NS, "c-none", json!({})),
        group(
            NS,
            "d-two",
            json!({"local": {"v4pool": {"pool": "10.0.0.0/24", "subnet": "10.0.0.0/24"}},
                   "remote": {"v4pool": {"pool": "10.0.1.0/24", "subnet": "10.0.1.0/24"}}}),
        ),
        local("e-cidr", &[("10.0.0.0/24", "nonsense")], &[]),
        local(
            "f-v6",
            &[("bad", "10.0.0.0/8")],
            &[("fd00::/120", "fd01::/64")],
        ),
        local("g-ok", &[("10.0.0.0/24", "10.0.0.0/24")], &[]),
    ];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    let ipam = ipam.unwrap();
    let texts: Vec<(String, String)> = report
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.event.message.clone()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("a-bad".into(), "Failed to parse: IPV4 range (192.168.1.250 - 192.168.2.5) not contained by network 192.168.1.0/24".into()),
            ("b-empty".into(), "Failed to parse: no valid address range found".into()),
            ("c-none".into(), "Failed to parse: Pool must specify local, remote, netbox, or external".into()),
            ("d-two".into(), "Failed to parse: Pool must specify only one of local, remote, netbox, or external".into()),
            ("e-cidr".into(), "Failed to parse: invalid CIDR \"nonsense\"".into()),
            // IPv6 ranges are parsed first, as upstream, so their error wins.
            ("f-v6".into(), "Failed to parse: IPV6 range (fd00:: - fd00::ff) not contained by network fd01::/64".into()),
            ("g-ok".into(), "ServiceGroup parsed successfully".into()),
        ]
    );
    for g in &report.groups[..6] {
        assert_eq!(g.event.type_, EventType::Warning);
        assert_eq!(g.event.reason, EventReason::ParseFailed);
        assert!(matches!(g.result, GroupResult::ParseFailed(_)));
    }
    // A refused group is reported as such when named, not as unknown.
    assert_eq!(
        ipam.check("x", "a-bad").unwrap_err().to_string(),
        "no usable pool: ServiceGroup \"a-bad\" failed to parse"
    );
}

#[test]
fn no_valid_pools_keeps_the_previous_generation() {
    let groups = [group(NS, "default", json!({"local": {}}))];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    assert_eq!(ipam.unwrap_err(), NoValidPools);
    assert_eq!(NoValidPools.to_string(), "No valid pools found");
    assert_eq!(report.groups.len(), 1);
}

#[test]
fn duplicate_names_keep_the_first_accepted() {
    let groups = [
        group(
            "a",
            "dup",
            json!({"local": {"v4pool": {"pool": "10.0.0.0/24", "subnet": "10.0.0.0/24"}}}),
        ),
        group(
            "b",
            "dup",
            json!({"local": {"v4pool": {"pool": "10.0.1.0/24", "subnet": "10.0.1.0/24"}}}),
        ),
        // A first definition that fails does not block a later good one.
        group("c", "late", json!({"local": {}})),
        group(
            "d",
            "late",
            json!({"local": {"v4pool": {"pool": "10.0.2.0/24", "subnet": "10.0.2.0/24"}}}),
        ),
    ];
    let (ipam, report) = Ipam::from_groups(None, &groups);
    let ipam = ipam.unwrap();
    assert_eq!(report.groups[1].result, GroupResult::Duplicate);
    assert_eq!(
        report.groups[1].event.message,
        "Duplicate definition of pool dup"
    );
    assert_eq!(report.groups[1].event.reason, EventReason::ParseFailed);
    assert_eq!(report.groups[3].result, GroupResult::Parsed);
    assert_eq!(ipam.group_namespace("dup"), Some("a"));
    assert_eq!(ipam.group_namespace("late"), Some("d"));
}

#[test]
fn overlaps_are_detected_completely() {
    let groups = [
        local(
            "a",
            &[("10.0.0.0/24", "10.0.0.0/16")],
            &[("fd00::/64", "fd00::/48")],
        ),
        // Strictly inside an earlier range: upstream misses this one.
        local("b-inside", &[("10.0.0.10-10.0.0.20", "10.0.0.0/16")], &[]),
        // Covers an earlier range.
        local("c-around", &[("10.0.0.0/23", "10.0.0.0/16")], &[]),
        // Touches the last address.
        local("d-edge", &[("10.0.0.255-10.0.1.5", "10.0.0.0/16")], &[]),
        // IPv6 inside.
        remote("e-v6", &[], &[("fd00::5-fd00::9", "fd00::/48")]),
        // Adjacent is fine.
        local("f-next", &[("10.0.1.0/24", "10.0.0.0/16")], &[]),
        // Overlaps both a and f: the first by name is named.
        local("g-both", &[("10.0.0.128-10.0.1.10", "10.0.0.0/16")], &[]),
        // Same family only: an IPv4 range never overlaps an IPv6 one.
        local(
            "h-other",
            &[("10.1.0.0/24", "10.1.0.0/16")],
            &[("fd01::/64", "fd01::/48")],
        ),
        // External groups have no addresses to overlap.
        group(
            NS,
            "i-ext",
            json!({"external": {"provider": "p", "announce": "remote"}}),
        ),
    ];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    let ipam = ipam.unwrap();
    let got: Vec<(String, GroupResult)> = report
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.result.clone()))
        .collect();
    let overlaps = |w: &str| GroupResult::Overlaps(w.into());
    assert_eq!(
        got,
        vec![
            ("a".into(), GroupResult::Parsed),
            ("b-inside".into(), overlaps("a")),
            ("c-around".into(), overlaps("a")),
            ("d-edge".into(), overlaps("a")),
            ("e-v6".into(), overlaps("a")),
            ("f-next".into(), GroupResult::Parsed),
            ("g-both".into(), overlaps("a")),
            ("h-other".into(), GroupResult::Parsed),
            ("i-ext".into(), GroupResult::Parsed),
        ]
    );
    assert_eq!(
        report.groups[1].event.message,
        "Pool overlaps with already defined pool \"a\""
    );
    assert_eq!(report.groups[1].event.reason, EventReason::ParseFailed);
    assert_eq!(
        ipam.check("x", "b-inside").unwrap_err().to_string(),
        "no usable pool: ServiceGroup \"b-inside\" failed to parse"
    );
}

#[test]
fn ranges_of_one_group_must_not_overlap() {
    let groups = [
        local(
            "a",
            &[
                ("10.0.0.0/24", "10.0.0.0/16"),
                ("10.0.0.10-10.0.0.12", "10.0.0.0/16"),
            ],
            &[],
        ),
        group(
            NS,
            "b",
            json!({"local": {"v6pools": pools(&[("fd00::/120", "fd00::/64")]),
                             "v6pool": {"pool": "fd00::ff-fd00::1ff", "subnet": "fd00::/64"}}}),
        ),
    ];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    assert!(ipam.is_err());
    assert_eq!(
        report.groups[0].event.message,
        "Failed to parse: IPV4 range (10.0.0.0 - 10.0.0.255) overlaps IPV4 range (10.0.0.10 - 10.0.0.12) in the same ServiceGroup"
    );
    assert_eq!(
        report.groups[1].event.message,
        "Failed to parse: IPV6 range (fd00:: - fd00::ff) overlaps IPV6 range (fd00::ff - fd00::1ff) in the same ServiceGroup"
    );
}

#[test]
fn range_order_and_status_addresses() {
    // v4pools then v4pool, v6pools then v6pool; a range written in the
    // other family's list is filed under its own family.
    let g = group(
        NS,
        "default",
        json!({"remote": {
            "v4pool": {"pool": "10.0.9.0/30", "subnet": "10.0.9.0/24"},
            "v4pools": pools(&[("10.0.1.0/30", "10.0.1.0/24"), ("fd00:9::/126", "fd00:9::/64")]),
            "v6pool": {"pool": "fd00:2::/126", "subnet": "fd00:2::/64"},
            "v6pools": pools(&[("fd00:1::/126", "fd00:1::/64")]),
        }}),
    );
    let mut ipam = ipam(&[g]);
    let status = ipam.group_status("default").unwrap();
    assert_eq!(status.announce, PoolType::Remote);
    assert_eq!(status.ipam, "Cluster");
    assert_eq!(
        status.addresses,
        vec![
            "10.0.1.0/30",
            "10.0.9.0/30",
            "fd00:9::/126",
            "fd00:1::/126",
            "fd00:2::/126"
        ]
    );
    assert_eq!(status.size_v4, Some(8));
    assert_eq!(status.size_v6, Some(12));
    // First free in declaration order: 10.0.1.0..3, then 10.0.9.0.
    let mut got = Vec::new();
    for i in 0..5 {
        let out = run(&mut ipam, &svc("ns", &format!("s{i}")));
        got.push(out.ingress[0].to_string());
    }
    assert_eq!(
        got,
        vec!["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.9.0"]
    );
    let out = run(
        &mut ipam,
        &ServiceRequest {
            families: vec![purelb_api::pool::IpFamily::V6],
            ..svc("ns", "v6")
        },
    );
    assert_eq!(out.ingress, vec![ip("fd00:9::")]);
}

use purelb_allocator::ipam::ServiceRequest;

#[test]
fn external_and_netbox_groups() {
    let groups = [
        group(
            NS,
            "ext",
            json!({"external": {"provider": "infoblox", "announce": "remote"}}),
        ),
        group(
            NS,
            "ext2",
            json!({"external": {"provider": "p", "socket": "", "announce": "local"}}),
        ),
        group(
            NS,
            "nb",
            json!({"netbox": {"url": "https://netbox.example.com", "tenant": "lb"}}),
        ),
        group(
            NS,
            "nb-bad",
            json!({"netbox": {"url": "netbox.example.com", "tenant": "lb"}}),
        ),
    ];
    let (ipam, report) = Ipam::from_groups(Some(NS), &groups);
    let ipam = ipam.unwrap();
    assert_eq!(
        report.groups[3].event.message,
        "Failed to parse: Netbox URL \"netbox.example.com\" invalid: want http://host or https://host"
    );
    assert_eq!(ipam.group_kind("ext"), Some(GroupKind::External));
    assert_eq!(ipam.group_kind("nb"), Some(GroupKind::Netbox));
    let s = ipam.group_status("ext").unwrap();
    assert_eq!(
        (s.announce, s.ipam.as_str()),
        (PoolType::Remote, "infoblox")
    );
    assert_eq!(s.size_v4, None);
    let s = ipam.group_status("nb").unwrap();
    assert_eq!((s.announce, s.ipam.as_str()), (PoolType::Remote, "Netbox"));
    let s = ipam.group_status("ext2").unwrap().to_crd();
    assert_eq!(s.announce.as_deref(), Some("Local"));
    assert_eq!(s.available_ipv4, None);
}
