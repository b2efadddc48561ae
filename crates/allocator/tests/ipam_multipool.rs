//! Multi-pool allocation.

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{Ipam, Metric, RejectReason, ServiceRequest, Step};
use purelb_api::annotations::{ALLOCATED_BY, ALLOCATED_FROM};
use purelb_api::pool::IpFamily;
use serde_json::json;

fn mp(kind: &str) -> Ipam {
    ipam(&[
        group(
            NS,
            "mp",
            json!({kind: {"multiPool": true,
                "v4pools": pools(&[("10.0.1.0/31", "10.0.1.0/24"), ("10.0.2.0/31", "10.0.2.0/24"), ("10.0.3.0/31", "10.0.3.0/24")]),
                "v6pools": pools(&[("fd00:1::/127", "fd00:1::/64"), ("fd00:2::/127", "fd00:2::/64")])}}),
        ),
        local("default", &[("10.9.0.0/24", "10.9.0.0/24")], &[]),
        group(
            NS,
            "ext",
            json!({"external": {"provider": "p", "announce": "remote"}}),
        ),
    ])
}

fn mpsvc(name: &str) -> ServiceRequest {
    ServiceRequest {
        service_group: Some("mp".into()),
        ..svc("ns", name)
    }
}

fn reconcile(
    ipam: &mut Ipam,
    req: &ServiceRequest,
    subnets: &[&str],
) -> purelb_allocator::ipam::Outcome {
    done(ipam.reconcile(req, Some(&active(subnets))))
}

#[test]
fn local_groups_use_ranges_with_live_nodes() {
    let mut ipam = mp("local");
    // Exact string match: "10.0.2.0/24" is active, "10.0.3.0/25" is not "10.0.3.0/24".
    let out = reconcile(
        &mut ipam,
        &mpsvc("s"),
        &["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/25"],
    );
    assert!(out.is_ok());
    assert_eq!(out.ingress, ips(&["10.0.1.0", "10.0.2.0"]));
    assert_eq!(
        messages(&out),
        vec!["Normal AddressAssigned Multi-pool: assigned 2 IPs from pool mp"]
    );
    assert_eq!(
        out.metrics,
        vec![Metric::MultipoolAllocation { pool: "mp".into() }]
    );
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("mp"));
    assert_eq!(out.annotation(ALLOCATED_BY), Some("PureLB"));
    ipam.check_invariants().unwrap();
}

#[test]
fn remote_groups_use_every_range_family_by_range() {
    let mut ipam = mp("remote");
    let req = ServiceRequest {
        families: vec![IpFamily::V6, IpFamily::V4],
        ..mpsvc("s")
    };
    let out = reconcile(&mut ipam, &req, &[]);
    assert_eq!(
        out.ingress,
        ips(&["fd00:1::", "fd00:2::", "10.0.1.0", "10.0.2.0", "10.0.3.0"])
    );
}

#[test]
fn partial_and_empty_results() {
    let mut ipam = mp("local");
    let active2 = ["10.0.1.0/24", "10.0.2.0/24"];
    for name in ["a", "b"] {
        reconcile(&mut ipam, &mpsvc(name), &["10.0.1.0/24"]);
    }
    // 10.0.1.0/31 is full now.
    let out = reconcile(&mut ipam, &mpsvc("c"), &active2);
    assert_eq!(out.ingress, ips(&["10.0.2.0"]));
    assert_eq!(
        out.metrics,
        vec![
            Metric::AllocationRejected {
                pool: "mp".into(),
                reason: RejectReason::Exhausted
            },
            Metric::MultipoolPartial { pool: "mp".into() },
            Metric::MultipoolAllocation { pool: "mp".into() },
        ]
    );
    let out = reconcile(&mut ipam, &mpsvc("d"), &[]);
    assert_eq!(
        failure(&out),
        "no IPs allocated for service ns/d: 3 ranges skipped (no active nodes)"
    );
    assert!(out.ingress.is_empty());
}

#[test]
fn refusals() {
    let mut ipam = mp("local");
    let keyed = ServiceRequest {
        sharing_key: Some("k".into()),
        ..mpsvc("s")
    };
    let out = reconcile(&mut ipam, &keyed, &["10.0.1.0/24"]);
    assert_eq!(
        failure(&out),
        "multi-pool allocation cannot be combined with IP sharing (annotation purelb.io/allow-shared-ip)"
    );
    let out = done(ipam.reconcile(&mpsvc("s"), None));
    assert_eq!(
        failure(&out),
        "multi-pool allocation requires ActiveSubnets to be configured"
    );
    let ext = ServiceRequest {
        service_group: Some("ext".into()),
        multi_pool: Some("true".into()),
        ..svc("ns", "e")
    };
    let out = reconcile(&mut ipam, &ext, &[]);
    assert_eq!(
        failure(&out),
        "multi-pool allocation is not supported for external pool \"ext\""
    );
    assert_eq!(
        out.metrics[0],
        Metric::AllocationRejected {
            pool: "ext".into(),
            reason: RejectReason::MultipoolRefused
        }
    );
}

#[test]
fn annotation_overrides_the_group_both_ways() {
    let mut ipam = mp("remote");
    let off = ServiceRequest {
        multi_pool: Some("false".into()),
        ..mpsvc("a")
    };
    assert_eq!(reconcile(&mut ipam, &off, &[]).ingress, ips(&["10.0.1.0"]));
    let odd = ServiceRequest {
        multi_pool: Some("True".into()),
        ..mpsvc("b")
    };
    assert_eq!(reconcile(&mut ipam, &odd, &[]).ingress, ips(&["10.0.1.1"]));
    let on = ServiceRequest {
        multi_pool: Some("true".into()),
        ..svc("ns", "c")
    };
    let out = reconcile(&mut ipam, &on, &["10.9.0.0/24"]);
    assert_eq!(out.ingress, ips(&["10.9.0.0"]), "default has one range");
    assert_eq!(
        messages(&out),
        vec!["Normal AddressAssigned Multi-pool: assigned 1 IPs from pool default"]
    );
}

#[test]
fn incremental_allocation() {
    let mut ipam = mp("local");
    let out = reconcile(&mut ipam, &mpsvc("s"), &["10.0.1.0/24"]);
    let s = apply(&mpsvc("s"), &out);
    // Steady state: nothing new.
    let out = reconcile(&mut ipam, &s, &["10.0.1.0/24"]);
    assert!(out.is_ok() && out.events.is_empty() && out.metrics.is_empty());
    assert_eq!(out.ingress, s.ingress);
    // A subnet gains nodes.
    let out = reconcile(&mut ipam, &s, &["10.0.1.0/24", "10.0.3.0/24"]);
    assert_eq!(out.ingress, ips(&["10.0.1.0", "10.0.3.0"]));
    assert_eq!(
        messages(&out),
        vec!["Normal AddressAssigned Incremental multi-pool: added 1 IPs (total 2) from pool mp"]
    );
    assert_eq!(
        out.metrics,
        vec![Metric::MultipoolAllocation { pool: "mp".into() }]
    );
    let s = apply(&s, &out);
    // A subnet loses its nodes: nothing is taken away.
    let out = reconcile(&mut ipam, &s, &["10.0.3.0/24"]);
    assert_eq!(out.ingress, s.ingress);
    assert!(out.events.is_empty());
    // Incremental without a subnet source.
    let out = done(ipam.reconcile(&s, None));
    assert_eq!(
        messages(&out),
        vec![
            "Warning AllocationFailed Incremental multi-pool allocation refused for \"ns/s\": activeSubnets not configured"
        ]
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn incremental_takes_the_group_from_the_addresses() {
    let mut ipam = mp("remote");
    let out = reconcile(&mut ipam, &mpsvc("s"), &[]);
    let s = apply(&mpsvc("s"), &out);
    // A tampered allocated-from is rewritten.
    let tampered = ServiceRequest {
        allocated_from: Some("default".into()),
        ..s.clone()
    };
    let out = reconcile(&mut ipam, &tampered, &[]);
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("mp"));
    assert!(out.is_ok());
    // An address of another group.
    let mut spans = s.clone();
    spans.ingress.push(ip("10.9.0.7"));
    let out = reconcile(&mut ipam, &spans, &[]);
    assert_eq!(
        messages(&out),
        vec![
            "Warning AllocationFailed Incremental multi-pool allocation refused for \"ns/s\": addresses span more than one pool (mp, default)"
        ]
    );
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "<unknown>".into(),
            reason: RejectReason::MultipoolPoolMismatch
        }]
    );
    let mut stray = s;
    stray.ingress = ips(&["192.0.2.1"]);
    let out = reconcile(&mut ipam, &stray, &[]);
    assert_eq!(
        failure(&out),
        "address 192.0.2.1 does not belong to any pool"
    );
    assert_eq!(out.unknown, ips(&["192.0.2.1"]));
}

#[test]
fn multi_pool_services_release_everything_on_fresh_allocation() {
    let mut ipam = mp("remote");
    // Not branded, holding a stale address: fresh allocation releases it.
    let out = reconcile(&mut ipam, &mpsvc("s"), &[]);
    assert_eq!(out.ingress.len(), 3);
    let again = reconcile(&mut ipam, &mpsvc("s"), &[]);
    assert_eq!(again.ingress, out.ingress);
    assert_eq!(again.released.len(), 3);
    assert_eq!(ipam.holdings("ns/s").len(), 3);
    ipam.check_invariants().unwrap();
    assert!(matches!(
        ipam.reconcile(&mpsvc("t"), Some(&active(&[]))),
        Step::Done(_)
    ));
}
