//! Shared addresses: sharing keys and port rules.

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{Ipam, Metric, Port, RejectReason, ServiceRequest, SpecificAddresses};
use purelb_api::pool::IpFamily;

fn shared(name: &str, key: Option<&str>, ports: &[(&str, i32)]) -> ServiceRequest {
    ServiceRequest {
        sharing_key: key.map(str::to_owned),
        ports: ports.iter().map(|(p, n)| Port::new(*p, *n)).collect(),
        ..svc("ns", name)
    }
}

fn small() -> Ipam {
    ipam(&[local(
        "default",
        &[("192.168.1.240/31", "192.168.1.0/24")],
        &[("fd00::/127", "fd00::/64")],
    )])
}

#[test]
fn same_key_disjoint_ports_share_one_address_per_family() {
    let mut ipam = small();
    let a = run(
        &mut ipam,
        &ServiceRequest {
            families: vec![IpFamily::V4, IpFamily::V6],
            ..shared("a", Some("k"), &[("TCP", 80)])
        },
    );
    let b = run(
        &mut ipam,
        &ServiceRequest {
            families: vec![IpFamily::V6, IpFamily::V4],
            ..shared("b", Some("k"), &[("TCP", 443)])
        },
    );
    assert_eq!(a.ingress, ips(&["192.168.1.240", "fd00::"]));
    assert_eq!(b.ingress, ips(&["fd00::", "192.168.1.240"]));
    // Same number, other protocol: no clash.
    let c = run(&mut ipam, &shared("c", Some("k"), &[("UDP", 80)]));
    assert_eq!(c.ingress, ips(&["192.168.1.240"]));
    // A Service without a key gets its own address.
    let d = run(&mut ipam, &shared("d", None, &[("TCP", 80)]));
    assert_eq!(d.ingress, ips(&["192.168.1.241"]));
    let status = ipam.group_status("default").unwrap();
    assert_eq!((status.allocated_v4, status.allocated_v6), (2, 1));
    ipam.check_invariants().unwrap();
}

#[test]
fn port_conflict_on_the_bound_address() {
    let mut ipam = small();
    run(
        &mut ipam,
        &shared("a", Some("k"), &[("TCP", 80), ("TCP", 8080)]),
    );
    let out = run(
        &mut ipam,
        &shared("b", Some("k"), &[("TCP", 443), ("TCP", 8080)]),
    );
    assert_eq!(
        failure(&out),
        "port TCP/8080 on \"192.168.1.240\" is already in use by ns/a"
    );
    assert_eq!(
        out.metrics,
        vec![
            Metric::AllocationRejected {
                pool: "default".into(),
                reason: RejectReason::PortConflict
            },
            Metric::AllocationRejected {
                pool: "<none>".into(),
                reason: RejectReason::Other
            },
        ]
    );
    // The key stays bound: no other address is tried even though one is free.
    assert!(ipam.holdings("ns/b").is_empty());
}

#[test]
fn key_binding_ends_with_the_last_user() {
    let mut ipam = small();
    run(&mut ipam, &shared("x", None, &[]));
    run(&mut ipam, &shared("a", Some("k"), &[("TCP", 80)]));
    run(&mut ipam, &shared("b", Some("k"), &[("TCP", 81)]));
    assert_eq!(
        ipam.holdings("ns/b"),
        vec![(ip("192.168.1.241"), "default")]
    );
    ipam.release_service("ns/a", None);
    let out = run(&mut ipam, &shared("c", Some("k"), &[("TCP", 80)]));
    assert_eq!(out.ingress, ips(&["192.168.1.241"]));
    let rel = ipam.release_service("ns/b", None);
    assert!(!rel.released[0].freed);
    let rel = ipam.release_service("ns/c", None);
    assert!(rel.released[0].freed);
    ipam.release_service("ns/x", None);
    // Unbound again: first free.
    let out = run(&mut ipam, &shared("d", Some("k"), &[]));
    assert_eq!(out.ingress, ips(&["192.168.1.240"]));
    ipam.check_invariants().unwrap();
}

#[test]
fn keyed_service_in_a_full_pool_reports_the_last_refusal() {
    let mut ipam = small();
    run(&mut ipam, &shared("a", None, &[]));
    run(&mut ipam, &shared("b", Some("other"), &[]));
    let out = run(&mut ipam, &shared("c", Some("k"), &[]));
    assert_eq!(
        failure(&out),
        "sharing key \"k\" does not match existing sharing key \"other\""
    );
    assert_eq!(
        out.metrics[0],
        Metric::AllocationRejected {
            pool: "default".into(),
            reason: RejectReason::SharingKeyConflict
        }
    );
    // Without a key it is plain exhaustion.
    let out = run(&mut ipam, &shared("d", None, &[]));
    assert_eq!(
        failure(&out),
        "pool \"default\" exhausted: no available addresses for ns/d"
    );
}

fn pin(mut req: ServiceRequest, value: &str) -> ServiceRequest {
    req.addresses = SpecificAddresses::decode(Some(value), None);
    req
}

#[test]
fn pinned_addresses_follow_the_same_rules() {
    let mut ipam = small();
    run(&mut ipam, &shared("keyed", Some("k1"), &[("TCP", 80)]));
    run(&mut ipam, &shared("plain", None, &[]));
    let out = run(&mut ipam, &pin(shared("a", None, &[]), "192.168.1.240"));
    assert_eq!(failure(&out), "new service does not allow sharing");
    let out = run(
        &mut ipam,
        &pin(shared("a", Some("k1"), &[]), "192.168.1.241"),
    );
    assert_eq!(
        failure(&out),
        "sharing key \"k1\" is bound to 192.168.1.240, cannot use 192.168.1.241"
    );
    let out = run(
        &mut ipam,
        &pin(shared("a", Some("k2"), &[]), "192.168.1.241"),
    );
    assert_eq!(failure(&out), "existing service does not allow sharing");
    let out = run(
        &mut ipam,
        &pin(shared("a", Some("k2"), &[]), "192.168.1.240"),
    );
    assert_eq!(
        failure(&out),
        "sharing key \"k2\" does not match existing sharing key \"k1\""
    );
    let out = run(
        &mut ipam,
        &pin(shared("a", Some("k1"), &[("TCP", 80)]), "192.168.1.240"),
    );
    assert_eq!(
        failure(&out),
        "port TCP/80 on \"192.168.1.240\" is already in use by ns/keyed"
    );
    let out = run(
        &mut ipam,
        &pin(shared("a", Some("k1"), &[("TCP", 81)]), "192.168.1.240"),
    );
    assert!(out.is_ok());
    ipam.check_invariants().unwrap();
}

#[test]
fn repinning_with_another_key_rebinds_the_address() {
    let mut ipam = small();
    let (_, a) = step(
        &mut ipam,
        &pin(shared("a", Some("k1"), &[]), "192.168.1.240"),
    );
    // Re-pinning with another key while alone on the address.
    let again = ServiceRequest {
        ingress: vec![],
        sharing_key: Some("k2".into()),
        ..a
    };
    let out = run(&mut ipam, &again);
    assert!(out.is_ok(), "{:?}", out.error);
    let snap = ipam.snapshot();
    assert_eq!(
        snap.addresses[&ip("192.168.1.240")].sharing_key.as_deref(),
        Some("k2")
    );
    assert!(!snap.sharing.keys().any(|(_, k, _)| k == "k1"));
    ipam.check_invariants().unwrap();
}

#[test]
fn keys_are_bound_per_group() {
    let mut ipam = ipam(&[
        local("default", &[("10.0.0.0/30", "10.0.0.0/24")], &[]),
        remote("bgp", &[("10.1.0.0/30", "10.1.0.0/24")], &[]),
    ]);
    run(&mut ipam, &shared("x", None, &[]));
    let a = run(&mut ipam, &shared("a", Some("k"), &[]));
    let b = run(
        &mut ipam,
        &ServiceRequest {
            service_group: Some("bgp".into()),
            ..shared("b", Some("k"), &[])
        },
    );
    assert_eq!(a.ingress, ips(&["10.0.0.1"]));
    assert_eq!(b.ingress, ips(&["10.1.0.0"]));
}
