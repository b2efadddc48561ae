//! Huge ranges: an IPv6 /64 and all of IPv6 work without being materialised
//! (the cost is per address in use, not per address in the range).

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{ServiceRequest, SpecificAddresses};
use purelb_api::pool::IpFamily;
use serde_json::json;

fn v6(name: &str) -> ServiceRequest {
    ServiceRequest {
        families: vec![IpFamily::V6],
        ..svc("ns", name)
    }
}

#[test]
fn a_slash_64() {
    let mut ipam = ipam(&[remote(
        "default",
        &[],
        &[("fd00:1:2:3::/64", "fd00:1:2:3::/64")],
    )]);
    let n = 20_000u32;
    for i in 0..n {
        let out = run(&mut ipam, &v6(&format!("s{i}")));
        assert_eq!(out.ingress.len(), 1);
    }
    let status = ipam.group_status("default").unwrap();
    assert_eq!(status.size_v6, Some(1u128 << 64));
    assert_eq!(status.allocated_v6, u128::from(n));
    let crd = status.to_crd();
    assert_eq!(crd.allocated_ipv6, i64::from(n));
    // 2^64 - n does not fit an int64: clamped, never 0 or negative.
    assert_eq!(crd.available_ipv6, Some(i64::MAX));
    assert_eq!(crd.available_ipv4, Some(0));
    // Free every other address; the holes are refilled lowest first.
    for i in (0..n).step_by(2) {
        ipam.release_service(&format!("ns/s{i}"), None);
    }
    let out = run(&mut ipam, &v6("again"));
    assert_eq!(out.ingress, ips(&["fd00:1:2:3::"]));
    let out = run(&mut ipam, &v6("again2"));
    assert_eq!(out.ingress, ips(&["fd00:1:2:3::2"]));
    // The last address of the range can be pinned and released.
    let last = ServiceRequest {
        addresses: SpecificAddresses::decode(Some("fd00:1:2:3:ffff:ffff:ffff:ffff"), None),
        ..v6("last")
    };
    assert!(run(&mut ipam, &last).is_ok());
    let snap_free = &ipam.snapshot().usage["default"].free[0];
    assert_eq!(snap_free.last().unwrap().1, u128::from(u64::MAX) - 1);
    ipam.release_service("ns/last", None);
    ipam.check_invariants().unwrap();
}

#[test]
fn all_of_ipv6() {
    let mut ipam = ipam(&[
        group(
            NS,
            "default",
            json!({"remote": {"v6pool": {"pool": "::/0", "subnet": "::/0"}}}),
        ),
        group(
            NS,
            "v4",
            json!({"remote": {"v4pool": {"pool": "0.0.0.0/0", "subnet": "0.0.0.0/0"}}}),
        ),
    ]);
    for i in 0..5_000 {
        run(&mut ipam, &v6(&format!("s{i}")));
    }
    assert_eq!(ipam.holdings("ns/s0"), vec![(ip("::"), "default")]);
    assert_eq!(ipam.holdings("ns/s4999"), vec![(ip("::1387"), "default")]);
    let status = ipam.group_status("default").unwrap();
    // Every IPv6 address but the IPv4-mapped block.
    assert_eq!(status.size_v6, Some(u128::MAX - (1u128 << 32) + 1));
    assert_eq!(status.to_crd().available_ipv6, Some(i64::MAX));
    // The top address works.
    let top = ServiceRequest {
        addresses: SpecificAddresses::decode(Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), None),
        ..v6("top")
    };
    assert!(run(&mut ipam, &top).is_ok());
    // A mapped address is IPv4: it belongs to the IPv4 group, not to ::/0.
    assert_eq!(ipam.group_of(ip("::ffff:1.2.3.4")), Some("v4"));
    assert_eq!(ipam.group_of(ip("::1")), Some("default"));
    let v4 = ServiceRequest {
        service_group: Some("v4".into()),
        ..svc("ns", "v4")
    };
    assert_eq!(run(&mut ipam, &v4).ingress, ips(&["0.0.0.0"]));
    for i in 0..5_000 {
        ipam.release_service(&format!("ns/s{i}"), None);
    }
    ipam.release_service("ns/top", None);
    assert_eq!(ipam.group_status("default").unwrap().allocated_v6, 0);
    assert_eq!(
        ipam.snapshot().usage["default"].free[0].len(),
        2,
        "free around the mapped block"
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn ipv6_ranges_spanning_the_mapped_block_skip_it() {
    let mut ipam = ipam(&[remote(
        "default",
        &[],
        &[("::fffe:ffff:ffff-::1:0:0:1", "::/64")],
    )]);
    assert_eq!(ipam.group_status("default").unwrap().size_v6, Some(3));
    let mut got = Vec::new();
    for i in 0..3 {
        got.extend(run(&mut ipam, &v6(&format!("s{i}"))).ingress);
    }
    assert_eq!(got, ips(&["::fffe:ffff:ffff", "::1:0:0:0", "::1:0:0:1"]));
    let out = run(&mut ipam, &v6("full"));
    assert_eq!(
        failure(&out),
        "pool \"default\" exhausted: no available addresses for ns/full"
    );
    ipam.check_invariants().unwrap();
}
