//! Allocation from local and remote groups: status, dual-stack, the allocation
//! flow, rebuild from Services, release, ServiceGroup status and pool changes.

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{
    AddressSource, AnnotationChange, Assignment, EventReason, EventType, Ipam, Metric, PoolType,
    RejectReason, Released, ServiceRequest, SpecificAddresses,
};
use purelb_api::annotations::{ALLOCATED_BY, ALLOCATED_FROM, POOL_TYPE, SKIP_IPV6_DAD};
use purelb_api::pool::IpFamily;
use serde_json::json;

#[test]
fn first_allocation_writes_everything() {
    let mut ipam = default_ipam();
    let out = run(&mut ipam, &svc("ns", "web"));
    assert!(out.is_ok());
    assert_eq!(out.ingress, vec![ip("192.168.1.240")]);
    assert_eq!(
        messages(&out),
        vec![
            "Normal AddressAssigned Assigned {Ingress:[{IP:192.168.1.240 Hostname: IPMode:VIP Ports:[]}]} from pool default"
        ]
    );
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("default"));
    assert_eq!(out.annotation(POOL_TYPE), Some("local"));
    assert_eq!(out.annotation(ALLOCATED_BY), Some("PureLB"));
    assert_eq!(
        out.annotations.get(SKIP_IPV6_DAD),
        Some(&AnnotationChange::Remove)
    );
    assert_eq!(
        out.assigned,
        vec![Assignment {
            ip: ip("192.168.1.240"),
            group: "default".into(),
            pool_type: PoolType::Local
        }]
    );
    assert!(out.metrics.is_empty());
    assert!(out.touched.contains("default"));
    assert_eq!(
        ipam.holdings("ns/web"),
        vec![(ip("192.168.1.240"), "default")]
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn steady_state_is_a_no_op() {
    let mut ipam = default_ipam();
    let (_, s) = step(&mut ipam, &svc("ns", "web"));
    assert!(s.branded);
    let before = ipam.snapshot();
    let out = run(&mut ipam, &s);
    assert!(out.is_ok());
    assert_eq!(out.ingress, s.ingress);
    assert!(out.events.is_empty());
    assert!(out.annotations.is_empty());
    assert_eq!(ipam.snapshot(), before);
    // A changed group annotation is not acted on once addresses exist.
    let moved = ServiceRequest {
        service_group: Some("other".into()),
        ..s.clone()
    };
    let out = run(&mut ipam, &moved);
    assert!(out.is_ok() && out.events.is_empty());
}

#[test]
fn exhaustion_message_and_double_count() {
    let mut ipam = default_ipam();
    for i in 0..8 {
        let out = run(&mut ipam, &svc("ns", &format!("s{i}")));
        assert_eq!(out.ingress, vec![ip(&format!("192.168.1.{}", 240 + i))]);
    }
    let out = run(&mut ipam, &svc("ns", "s8"));
    assert_eq!(
        failure(&out),
        "pool \"default\" exhausted: no available addresses for ns/s8"
    );
    assert_eq!(
        messages(&out),
        vec![
            "Warning AllocationFailed Failed to allocate IP for \"ns/s8\": pool \"default\" exhausted: no available addresses for ns/s8"
        ]
    );
    // Once per pool with the reason, once per request as "other" [quirk kept].
    assert_eq!(
        out.metrics,
        vec![
            Metric::AllocationRejected {
                pool: "default".into(),
                reason: RejectReason::Exhausted
            },
            Metric::AllocationRejected {
                pool: "<none>".into(),
                reason: RejectReason::Other
            },
        ]
    );
    assert!(!out.requeue);
    assert!(out.ingress.is_empty());
    // Release frees the first address, and it is handed out next.
    let rel = ipam.release_service("ns/s2", Some("default"));
    assert_eq!(
        rel.released,
        vec![Released {
            ip: ip("192.168.1.242"),
            group: "default".into(),
            freed: true
        }]
    );
    assert!(rel.external_releases.is_empty());
    assert_eq!(
        run(&mut ipam, &svc("ns", "s8")).ingress,
        vec![ip("192.168.1.242")]
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn dual_stack_follows_ip_families_order() {
    let mut ipam = default_ipam();
    let req = ServiceRequest {
        families: vec![IpFamily::V6, IpFamily::V4],
        ..svc("ns", "d")
    };
    let out = run(&mut ipam, &req);
    assert_eq!(out.ingress, vec![ip("fd00::"), ip("192.168.1.240")]);
    assert_eq!(
        out.events[0].message,
        "Assigned {Ingress:[{IP:fd00:: Hostname: IPMode:VIP Ports:[]} {IP:192.168.1.240 Hostname: IPMode:VIP Ports:[]}]} from pool default"
    );
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("default"));
}

#[test]
fn family_transitions() {
    let mut ipam = default_ipam();
    let (_, single) = step(&mut ipam, &svc("ns", "t"));
    // Single -> dual: the missing family is added, the existing kept.
    let dual_req = ServiceRequest {
        families: vec![IpFamily::V4, IpFamily::V6],
        ..single.clone()
    };
    let (out, dual_svc) = step(&mut ipam, &dual_req);
    assert!(out.is_ok());
    assert_eq!(dual_svc.ingress, vec![ip("192.168.1.240"), ip("fd00::")]);
    assert_eq!(out.assigned.len(), 1);
    // Dual -> single IPv4: the IPv6 address is released.
    let back = ServiceRequest {
        families: vec![IpFamily::V4],
        ..dual_svc.clone()
    };
    let out = run(&mut ipam, &back);
    assert!(out.is_ok());
    assert_eq!(out.ingress, vec![ip("192.168.1.240")]);
    assert_eq!(
        messages(&out),
        vec![
            "Normal AddressReleased Released addresses no longer needed after IP family transition: [fd00::]"
        ]
    );
    assert_eq!(
        out.released,
        vec![Released {
            ip: ip("fd00::"),
            group: "default".into(),
            freed: true
        }]
    );
    assert_eq!(
        ipam.holdings("ns/t"),
        vec![(ip("192.168.1.240"), "default")]
    );
    // Dual -> single IPv6: release v4 and allocate nothing (v6 kept).
    let only6 = ServiceRequest {
        families: vec![IpFamily::V6],
        ..dual_svc
    };
    let mut ipam2 = default_ipam();
    ipam2.notify(&only6);
    let out = run(&mut ipam2, &only6);
    assert_eq!(out.ingress, vec![ip("fd00::")]);
    // Empty ipFamilies counts as IPv4.
    let none = ServiceRequest {
        families: vec![],
        ..svc("ns", "none")
    };
    assert_eq!(run(&mut ipam, &none).ingress, vec![ip("192.168.1.241")]);
    ipam.check_invariants().unwrap();
}

#[test]
fn partial_allocation_is_rolled_back() {
    let mut ipam = ipam(&[local("default", &[("10.0.0.0/30", "10.0.0.0/24")], &[])]);
    let out = run(&mut ipam, &dual("ns", "d"));
    assert_eq!(
        failure(&out),
        "pool \"default\" exhausted: no available addresses for ns/d"
    );
    assert!(out.ingress.is_empty());
    assert!(out.assigned.is_empty());
    assert!(out.annotation(ALLOCATED_BY).is_none());
    assert!(ipam.holdings("ns/d").is_empty());
    assert_eq!(ipam.group_status("default").unwrap().allocated_v4, 0);
    // During a transition the kept address survives the rollback.
    let (_, s) = step(&mut ipam, &svc("ns", "s"));
    let out = run(
        &mut ipam,
        &ServiceRequest {
            families: vec![IpFamily::V4, IpFamily::V6],
            ..s
        },
    );
    assert!(out.error.is_some());
    assert_eq!(out.ingress, vec![ip("10.0.0.0")]);
    assert_eq!(ipam.holdings("ns/s"), vec![(ip("10.0.0.0"), "default")]);
    ipam.check_invariants().unwrap();
}

#[test]
fn skip_ipv6_dad_and_pool_type() {
    let mut ipam = ipam(&[
        group(
            NS,
            "nodad",
            json!({"local": {"skipIPv6DAD": true, "v6pool": {"pool": "fd00::/120", "subnet": "fd00::/64"}}}),
        ),
        remote("bgp", &[("10.1.0.0/24", "10.1.0.0/24")], &[]),
    ]);
    let req = ServiceRequest {
        families: vec![IpFamily::V6],
        service_group: Some("nodad".into()),
        ..svc("ns", "a")
    };
    let out = run(&mut ipam, &req);
    assert_eq!(out.annotation(SKIP_IPV6_DAD), Some("true"));
    assert_eq!(out.annotation(POOL_TYPE), Some("local"));
    let req = ServiceRequest {
        service_group: Some("bgp".into()),
        ..svc("ns", "b")
    };
    let out = run(&mut ipam, &req);
    assert_eq!(
        out.annotations.get(SKIP_IPV6_DAD),
        Some(&AnnotationChange::Remove)
    );
    assert_eq!(out.annotation(POOL_TYPE), Some("remote"));
}

fn pinned(ns: &str, name: &str, value: &str) -> ServiceRequest {
    ServiceRequest {
        addresses: SpecificAddresses::decode(Some(value), None),
        ..svc(ns, name)
    }
}

fn two_groups() -> Ipam {
    ipam(&[
        local(
            "default",
            &[("192.168.1.240/29", "192.168.1.0/24")],
            &[("fd00::/125", "fd00::/64")],
        ),
        remote("v6grp", &[], &[("fd01::/120", "fd01::/64")]),
        group(
            NS,
            "fenced",
            json!({"local": {"v4pool": {"pool": "10.0.1.0/24", "subnet": "10.0.1.0/24"}},
                                   "namespaces": ["tenant"], "enforceNamespaces": true}),
        ),
    ])
}

#[test]
fn specific_addresses() {
    let mut ipam = two_groups();
    let out = run(&mut ipam, &pinned("ns", "a", "192.168.1.243"));
    assert_eq!(out.ingress, vec![ip("192.168.1.243")]);
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("default"));

    // Addresses of several groups, in the order given; pool type from the first.
    let mut req = pinned("ns", "b", "fd01::7,192.168.1.244");
    req.families = vec![IpFamily::V4, IpFamily::V6];
    let out = run(&mut ipam, &req);
    assert_eq!(out.ingress, vec![ip("fd01::7"), ip("192.168.1.244")]);
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("v6grp, default"));
    assert_eq!(out.annotation(POOL_TYPE), Some("remote"));
    assert_eq!(
        messages(&out),
        vec![
            "Normal AddressAssigned Assigned {Ingress:[{IP:fd01::7 Hostname: IPMode:VIP Ports:[]}]} from pool v6grp",
            "Normal AddressAssigned Assigned {Ingress:[{IP:fd01::7 Hostname: IPMode:VIP Ports:[]} {IP:192.168.1.244 Hostname: IPMode:VIP Ports:[]}]} from pool default",
        ]
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn specific_address_errors() {
    let mut ipam = two_groups();
    let out = run(&mut ipam, &pinned("ns", "a", "10.9.9.9"));
    assert_eq!(failure(&out), "\"10.9.9.9\" does not belong to any group");
    assert!(out.events[0].message.contains("10.9.9.9"));
    let out = run(&mut ipam, &pinned("ns", "a", "192.168.1.240, fd00::1"));
    assert_eq!(
        failure(&out),
        "invalid user-specified address: \" fd00::1\""
    );
    let out = run(&mut ipam, &pinned("ns", "a", ""));
    assert!(failure(&out).starts_with("invalid user-specified address:"));
    // Pinning is naming the group: the boundary applies.
    let out = run(&mut ipam, &pinned("ns", "a", "10.0.1.5"));
    assert_eq!(
        failure(&out),
        "10.0.1.5: namespace denied: ServiceGroup \"fenced\" serves a confined namespace and does not serve \"ns\""
    );
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "<none>".into(),
            reason: RejectReason::NamespaceDenied
        }]
    );
    assert!(run(&mut ipam, &pinned("tenant", "a", "10.0.1.5")).is_ok());
}

#[test]
fn specific_address_in_use_and_restore() {
    let mut ipam = two_groups();
    let (_, a) = step(&mut ipam, &pinned("ns", "a", "192.168.1.241"));
    let (_, b) = step(&mut ipam, &svc("ns", "b"));
    assert_eq!(b.ingress, vec![ip("192.168.1.240")]);
    // b (dual-stack now) pins its own v4 plus a's address: refused, and b
    // keeps what it had.
    let mut req = ServiceRequest {
        addresses: SpecificAddresses::decode(Some("192.168.1.240,192.168.1.241"), None),
        families: vec![IpFamily::V4, IpFamily::V6],
        ..b.clone()
    };
    req.families = vec![IpFamily::V4, IpFamily::V6];
    let out = run(&mut ipam, &req);
    assert_eq!(failure(&out), "existing service does not allow sharing");
    assert_eq!(out.ingress, b.ingress);
    assert!(out.released.is_empty());
    assert_eq!(
        ipam.holdings("ns/b"),
        vec![(ip("192.168.1.240"), "default")]
    );
    assert_eq!(
        ipam.holdings("ns/a"),
        vec![(ip("192.168.1.241"), "default")]
    );
    // Releasing a, b may take it; b's old address is released.
    ipam.release_service(&a.key, a.allocated_from.as_deref());
    let req = ServiceRequest {
        addresses: SpecificAddresses::decode(Some("192.168.1.241,fd00::3"), None),
        families: vec![IpFamily::V4, IpFamily::V6],
        ..b
    };
    let out = run(&mut ipam, &req);
    assert!(out.is_ok());
    assert_eq!(out.ingress, vec![ip("192.168.1.241"), ip("fd00::3")]);
    assert_eq!(
        out.released,
        vec![Released {
            ip: ip("192.168.1.240"),
            group: "default".into(),
            freed: true
        }]
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn specific_address_warnings() {
    let mut ipam = two_groups();
    let req = ServiceRequest {
        addresses: SpecificAddresses::decode(None, Some("192.168.1.245")),
        service_group: Some("v6grp".into()),
        ..svc("ns", "old")
    };
    assert_eq!(
        req.addresses.as_ref().unwrap().source,
        AddressSource::LoadBalancerIp
    );
    let out = run(&mut ipam, &req);
    assert_eq!(out.ingress, vec![ip("192.168.1.245")]);
    assert_eq!(out.events[0].type_, EventType::Normal);
    assert_eq!(out.events[0].reason, EventReason::DeprecationWarning);
    assert_eq!(
        out.events[0].message,
        "Service.Spec.LoadBalancerIP is deprecated, please use the \"purelb.io/addresses\" annotation instead"
    );
    assert_eq!(out.events[1].type_, EventType::Normal);
    assert_eq!(out.events[1].reason, EventReason::ConfigurationWarning);
    assert_eq!(
        out.events[1].message,
        "Both the addresses annotation and the service-group annotation were provided. service-group will be ignored."
    );
    // The annotation wins over spec.loadBalancerIP; an empty field is absent.
    let both = SpecificAddresses::decode(Some("192.168.1.246"), Some("192.168.1.247")).unwrap();
    assert_eq!(both.source, AddressSource::Annotation);
    assert!(SpecificAddresses::decode(None, Some("")).is_none());
}

#[test]
fn balance_pools() {
    let mut ipam = ipam(&[group(
        NS,
        "default",
        json!({"local": {"balancePools": true,
                          "v4pools": pools(&[("10.0.0.0/31", "10.0.0.0/24"), ("10.0.1.0/30", "10.0.1.0/24")])}}),
    )]);
    let mut got = Vec::new();
    for i in 0..6 {
        let out = run(&mut ipam, &svc("ns", &format!("s{i}")));
        assert_eq!(
            out.metrics,
            vec![Metric::BalancePoolsAllocation {
                pool: "default".into()
            }]
        );
        got.push(out.ingress[0].to_string());
    }
    // Ties go to the first range; a full range falls through.
    assert_eq!(
        got,
        vec![
            "10.0.0.0", "10.0.1.0", "10.0.0.1", "10.0.1.1", "10.0.1.2", "10.0.1.3"
        ]
    );
    let out = run(&mut ipam, &svc("ns", "s6"));
    assert_eq!(
        failure(&out),
        "no available addresses for service ns/s6 in family IPv4 (balancePools, all ranges exhausted)"
    );
    assert_eq!(
        out.metrics,
        vec![
            Metric::AllocationRejected {
                pool: "default".into(),
                reason: RejectReason::Exhausted
            },
            Metric::AllocationRejected {
                pool: "<none>".into(),
                reason: RejectReason::Other
            },
        ]
    );
    let out = run(
        &mut ipam,
        &ServiceRequest {
            families: vec![IpFamily::V6],
            ..svc("ns", "v6")
        },
    );
    assert_eq!(failure(&out), "no ranges for family IPv6");
    // Least used wins after releases.
    ipam.release_service("ns/s1", None);
    ipam.release_service("ns/s3", None);
    ipam.release_service("ns/s4", None);
    assert_eq!(
        run(&mut ipam, &svc("ns", "n")).ingress,
        vec![ip("10.0.1.0")]
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn balance_pools_with_sharing_key_uses_first_free() {
    let mut ipam = ipam(&[group(
        NS,
        "default",
        json!({"local": {"balancePools": true,
                          "v4pools": pools(&[("10.0.0.0/31", "10.0.0.0/24"), ("10.0.1.0/30", "10.0.1.0/24")])}}),
    )]);
    run(&mut ipam, &svc("ns", "a"));
    let req = ServiceRequest {
        sharing_key: Some("k".into()),
        ..svc("ns", "b")
    };
    let out = run(&mut ipam, &req);
    assert_eq!(out.ingress, vec![ip("10.0.0.1")]);
    assert!(out.metrics.is_empty());
}

#[test]
fn multi_pool_and_balance_pools_are_exclusive() {
    let mut ipam = ipam(&[group(
        NS,
        "default",
        json!({"remote": {"balancePools": true, "multiPool": true,
                           "v4pool": {"pool": "10.0.0.0/30", "subnet": "10.0.0.0/24"}}}),
    )]);
    let out = done(ipam.reconcile(&svc("ns", "a"), Some(&active(&[]))));
    assert_eq!(
        failure(&out),
        "multi-pool and balancePools allocation are mutually exclusive for pool default"
    );
    assert!(out.events[0].message.contains("mutually exclusive"));
}

#[test]
fn rebuild_gives_the_same_state() {
    let groups = [
        local(
            "default",
            &[("192.168.1.240/29", "192.168.1.0/24")],
            &[("fd00::/125", "fd00::/64")],
        ),
        remote("bgp", &[("10.1.0.0/30", "10.1.0.0/24")], &[]),
    ];
    let mut ipam = ipam(&groups);
    let mut services = Vec::new();
    for i in 0..5 {
        let mut req = dual("ns", &format!("s{i}"));
        if i % 2 == 0 {
            req.service_group = Some("bgp".into());
            req.families = vec![IpFamily::V4];
        }
        req.ports = vec![purelb_allocator::ipam::Port::new("TCP", 80)];
        let (_, s) = step(&mut ipam, &req);
        services.push(s);
    }
    ipam.release_service("ns/s1", None);
    services.remove(1);
    let mut rebuilt = Ipam::from_groups(Some(NS), &groups).0.unwrap();
    for s in &services {
        assert!(rebuilt.notify(s).is_empty());
    }
    assert_eq!(rebuilt.snapshot(), ipam.snapshot());
    rebuilt.check_invariants().unwrap();
    // Notify is idempotent.
    for s in &services {
        rebuilt.notify(s);
    }
    assert_eq!(rebuilt.snapshot(), ipam.snapshot());
}

#[test]
fn removed_pools_leave_addresses_unknown() {
    let mut ipam = default_ipam();
    let (_, s) = step(&mut ipam, &dual("ns", "s"));
    // The next generation no longer has the IPv6 range.
    let mut next = ipam_support::ipam(&[local(
        "default",
        &[("192.168.1.240/29", "192.168.1.0/24")],
        &[],
    )]);
    assert_eq!(next.notify(&s), vec![ip("fd00::")]);
    let out = run(&mut next, &s);
    assert!(out.is_ok());
    assert_eq!(out.unknown, vec![ip("fd00::")]);
    assert_eq!(out.ingress, s.ingress);
    assert!(out.events.is_empty());
    // A shrunk range does not revoke the address either.
    let mut shrunk = ipam_support::ipam(&[local(
        "default",
        &[("192.168.1.248/29", "192.168.1.0/24")],
        &[],
    )]);
    let out = run(&mut shrunk, &s);
    assert_eq!(out.ingress, s.ingress);
    assert_eq!(out.unknown, vec![ip("192.168.1.240"), ip("fd00::")]);
    assert_eq!(shrunk.group_of(ip("192.168.1.240")), None);
}

#[test]
fn stale_holdings_are_dropped_and_unbranded_services_adopted() {
    let mut ipam = default_ipam();
    // Allocated, but the status write was lost: the Service has no ingress.
    let out = run(&mut ipam, &svc("ns", "s"));
    assert_eq!(out.ingress, vec![ip("192.168.1.240")]);
    let out = run(&mut ipam, &svc("ns", "s"));
    assert_eq!(out.ingress, vec![ip("192.168.1.240")]);
    assert_eq!(ipam.holdings("ns/s").len(), 1);
    // Status written but the brand was lost: the Service is recognised.
    let unbranded = ServiceRequest {
        ingress: out.ingress.clone(),
        ..svc("ns", "s")
    };
    let out = run(&mut ipam, &unbranded);
    assert_eq!(out.annotation(ALLOCATED_BY), Some("PureLB"));
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("default"));
    assert!(out.events.is_empty());
    // Someone else's address on an unbranded Service is not adopted.
    let foreign = ServiceRequest {
        ingress: vec![ip("192.168.1.247")],
        ..svc("ns", "f")
    };
    let out = run(&mut ipam, &foreign);
    assert!(out.annotations.is_empty());
    ipam.check_invariants().unwrap();
}

#[test]
fn not_a_load_balancer_any_more() {
    let mut ipam = default_ipam();
    let (_, s) = step(&mut ipam, &svc("ns", "s"));
    let out = ipam.release_not_load_balancer(&s, "ClusterIP");
    assert_eq!(
        messages(&out),
        vec!["Normal AddressReleased Service is Type ClusterIP, not LoadBalancer"]
    );
    assert!(out.ingress.is_empty());
    assert_eq!(
        out.annotations.get(ALLOCATED_FROM),
        Some(&AnnotationChange::Remove)
    );
    assert!(!out.annotations.contains_key(ALLOCATED_BY));
    assert!(ipam.holdings("ns/s").is_empty());
    // Without allocated-from nothing is released, the key is still removed.
    let out = ipam.release_not_load_balancer(&svc("ns", "x"), "NodePort");
    assert!(out.events.is_empty());
    assert_eq!(
        out.annotations.get(ALLOCATED_FROM),
        Some(&AnnotationChange::Remove)
    );
}

#[test]
fn status_counts_and_crd() {
    let mut ipam = ipam(&[group(
        NS,
        "default",
        json!({"local": {"v4pool": {"pool": "10.0.0.0/30", "subnet": "10.0.0.0/24"}},
               "namespaces": ["b", "a", "b"]}),
    )]);
    run(&mut ipam, &svc("a", "s"));
    let status = ipam.group_status("default").unwrap();
    assert_eq!(
        (status.allocated_v4, status.size_v4, status.available_v4()),
        (1, Some(4), Some(3))
    );
    assert_eq!(
        (status.allocated_v6, status.size_v6, status.available_v6()),
        (0, Some(0), Some(0))
    );
    assert_eq!(status.size(), 4);
    assert_eq!(status.in_use(), 1);
    let crd = status.to_crd();
    assert_eq!(crd.announce.as_deref(), Some("Local"));
    assert_eq!(crd.ipam.as_deref(), Some("Cluster"));
    assert_eq!(crd.addresses, Some(vec!["10.0.0.0/30".to_owned()]));
    assert_eq!(
        crd.bound_namespaces,
        Some(vec!["b".to_owned(), "a".to_owned(), "b".to_owned()])
    );
    assert_eq!((crd.allocated_ipv4, crd.available_ipv4), (1, Some(3)));
    assert_eq!((crd.allocated_ipv6, crd.available_ipv6), (0, Some(0)));
    assert!(ipam.group_status("nope").is_none());
}
