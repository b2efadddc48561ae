//! Groups whose addresses come from outside: external IPAM sidecars
//! and Netbox. No sidecar or Netbox here: these tests play the
//! controller and answer in its place.

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{
    ExternalRelease, Ipam, Metric, NetboxPending, Outcome, RejectReason, ReleaseTarget, Released,
    RemoteError, ServiceRequest, Step,
};
use purelb_api::annotations::{ALLOCATED_BY, ALLOCATED_FROM, POOL_TYPE};
use purelb_api::pool::IpFamily;
use serde_json::json;

fn setup() -> Ipam {
    ipam(&[
        local("default", &[("192.168.1.240/29", "192.168.1.0/24")], &[]),
        group(
            NS,
            "ext",
            json!({"external": {"provider": "infoblox", "announce": "local"}}),
        ),
        group(
            NS,
            "ext2",
            json!({"external": {"provider": "p2", "socket": "/run/x.sock", "announce": "remote"}}),
        ),
        group(
            NS,
            "nb",
            json!({"netbox": {"url": "https://netbox.example", "tenant": "lb"}}),
        ),
    ])
}

fn ext(name: &str) -> ServiceRequest {
    ServiceRequest {
        service_group: Some("ext".into()),
        ..svc("ns", name)
    }
}

fn nb(name: &str) -> ServiceRequest {
    ServiceRequest {
        service_group: Some("nb".into()),
        ..svc("ns", name)
    }
}

fn answer(list: &[&str]) -> Result<Vec<std::net::IpAddr>, RemoteError> {
    Ok(ips(list))
}

fn external(
    ipam: &mut Ipam,
    req: &ServiceRequest,
    reply: Result<Vec<std::net::IpAddr>, RemoteError>,
) -> Outcome {
    match ipam.reconcile(req, None) {
        Step::External(pending) => ipam.complete_external(pending, reply),
        other => panic!("expected External, got {other:?}"),
    }
}

#[test]
fn external_allocation() {
    let mut ipam = setup();
    let Step::External(pending) = ipam.reconcile(&ext("s"), None) else {
        panic!("expected External");
    };
    assert_eq!(pending.allocate.group, "ext");
    assert_eq!(pending.allocate.socket, "/var/run/purelb/ipam.sock");
    assert_eq!(pending.allocate.provider, "infoblox");
    assert_eq!(pending.allocate.service, "ns/s");
    assert_eq!(pending.allocate.sharing_key, "");
    assert!(pending.allocate.want_ipv4 && !pending.allocate.want_ipv6);
    assert!(pending.releases_first().is_empty());
    let out = ipam.complete_external(pending, answer(&["10.5.0.1"]));
    assert!(out.is_ok());
    assert_eq!(out.ingress, ips(&["10.5.0.1"]));
    assert_eq!(
        messages(&out),
        vec![
            "Normal AddressAssigned Assigned {Ingress:[{IP:10.5.0.1 Hostname: IPMode:VIP Ports:[]}]} from pool ext"
        ]
    );
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("ext"));
    assert_eq!(out.annotation(POOL_TYPE), Some("local"));
    assert_eq!(out.annotation(ALLOCATED_BY), Some("PureLB"));
    assert!(out.touched.contains("ext"));
    assert_eq!(ipam.holdings("ns/s"), vec![(ip("10.5.0.1"), "ext")]);
}

#[test]
fn external_errors() {
    let mut ipam = setup();
    let out = external(
        &mut ipam,
        &ext("s"),
        Err(RemoteError {
            message: "rpc error: code = Unavailable".into(),
            retryable: true,
        }),
    );
    assert!(out.requeue);
    assert_eq!(
        messages(&out),
        vec![
            "Warning AllocationFailed Failed to allocate IP for \"ns/s\": rpc error: code = Unavailable"
        ]
    );
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "ext".into(),
            reason: RejectReason::Other
        }]
    );
    let out = external(
        &mut ipam,
        &ext("s"),
        Err(RemoteError {
            message: "exhausted".into(),
            retryable: false,
        }),
    );
    assert!(!out.requeue);
    let out = external(&mut ipam, &ext("s"), answer(&[]));
    assert_eq!(
        failure(&out),
        "sidecar infoblox returned no IPs and no error"
    );
    let out = external(&mut ipam, &ext("s"), answer(&[]));
    assert!(out.ingress.is_empty());
    assert!(ipam.holdings("ns/s").is_empty());
}

#[test]
fn external_family_transitions() {
    let mut ipam = setup();
    let out = external(&mut ipam, &ext("s"), answer(&["10.5.0.1"]));
    let s = apply(&ext("s"), &out);
    // Single -> dual asks for the missing family only; an answer repeating
    // the existing address (idempotent sidecar) does not duplicate it.
    let dual = ServiceRequest {
        families: vec![IpFamily::V4, IpFamily::V6],
        ..s
    };
    let Step::External(pending) = ipam.reconcile(&dual, None) else {
        panic!()
    };
    assert!(!pending.allocate.want_ipv4 && pending.allocate.want_ipv6);
    let out = ipam.complete_external(pending, answer(&["10.5.0.1", "fd05::1"]));
    assert_eq!(out.ingress, ips(&["10.5.0.1", "fd05::1"]));
    let d = apply(&dual, &out);
    // Dual -> single: the IPv6 address is released at the sidecar.
    let single = ServiceRequest {
        families: vec![IpFamily::V4],
        ..d
    };
    let out = run(&mut ipam, &single);
    assert_eq!(out.ingress, ips(&["10.5.0.1"]));
    assert_eq!(
        out.external_releases,
        vec![ExternalRelease {
            group: "ext".into(),
            socket: "/var/run/purelb/ipam.sock".into(),
            service: "ns/s".into(),
            target: ReleaseTarget::Ip(ip("fd05::1")),
        }]
    );
    // After a restart (nothing recorded) the release goes by allocated-from.
    assert_eq!(single.ingress, ips(&["10.5.0.1", "fd05::1"]));
    let mut fresh = setup();
    let out = run(
        &mut fresh,
        &ServiceRequest {
            branded: false,
            ..single
        },
    );
    assert_eq!(
        out.external_releases[0].target,
        ReleaseTarget::Ip(ip("fd05::1"))
    );
}

#[test]
fn external_release_routing() {
    let mut ipam = setup();
    let out = external(&mut ipam, &ext("s"), answer(&["10.5.0.1"]));
    assert!(out.is_ok());
    let groups = |out: &Outcome| -> Vec<String> {
        out.external_releases
            .iter()
            .map(|r| r.group.clone())
            .collect()
    };
    // Known holdings and the named group.
    let out = ipam.release_service("ns/s", Some("ext"));
    assert_eq!(groups(&out), vec!["ext"]);
    assert_eq!(out.external_releases[0].target, ReleaseTarget::All);
    // Unknown allocated-from: every external group is asked, as upstream.
    let out = ipam.release_service("ns/t", None);
    assert_eq!(groups(&out), vec!["ext", "ext2"]);
    assert_eq!(out.external_releases[1].socket, "/run/x.sock");
    // Named local group: no sidecar is asked.
    let out = ipam.release_service("ns/t", Some("default"));
    assert!(out.external_releases.is_empty());
    // A fresh allocation for a Service that names an external group releases
    // there first.
    let req = ServiceRequest {
        allocated_from: Some("ext".into()),
        ..ext("u")
    };
    let Step::External(pending) = ipam.reconcile(&req, None) else {
        panic!()
    };
    assert_eq!(pending.releases_first().len(), 1);
}

#[test]
fn external_rebuild() {
    let mut ipam = setup();
    let s = ServiceRequest {
        ingress: ips(&["10.5.0.1"]),
        branded: true,
        allocated_from: Some("ext".into()),
        ..ext("s")
    };
    assert!(ipam.notify(&s).is_empty());
    assert_eq!(ipam.holdings("ns/s"), vec![(ip("10.5.0.1"), "ext")]);
    // Incremental multi-pool on an external address is refused, as such.
    let mp = ServiceRequest {
        multi_pool: Some("true".into()),
        ..s
    };
    let out = done(ipam.reconcile(&mp, Some(&active(&[]))));
    assert_eq!(
        failure(&out),
        "multi-pool allocation is not supported for external pool \"ext\""
    );
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "ext".into(),
            reason: RejectReason::MultipoolRefused
        }]
    );
}

fn netbox_pending(ipam: &mut Ipam, req: &ServiceRequest) -> NetboxPending {
    match ipam.reconcile(req, None) {
        Step::Netbox(pending) => pending,
        other => panic!("expected Netbox, got {other:?}"),
    }
}

#[test]
fn netbox_allocation_and_status() {
    let mut ipam = setup();
    let pending = netbox_pending(
        &mut ipam,
        &ServiceRequest {
            families: vec![IpFamily::V6, IpFamily::V4],
            ..nb("s")
        },
    );
    assert_eq!(
        (
            pending.group.as_str(),
            pending.url.as_str(),
            pending.tenant.as_str()
        ),
        ("nb", "https://netbox.example", "lb")
    );
    assert_eq!(pending.families, vec![IpFamily::V6, IpFamily::V4]);
    assert_eq!(pending.service, "ns/s");
    let out = ipam.complete_netbox(pending, Ok(ips(&["fd07::1", "10.7.0.1"])));
    assert!(out.is_ok());
    assert_eq!(out.ingress, ips(&["fd07::1", "10.7.0.1"]));
    assert_eq!(out.annotation(POOL_TYPE), Some("remote"));
    assert_eq!(out.annotation(ALLOCATED_FROM), Some("nb"));
    let status = ipam.group_status("nb").unwrap();
    assert_eq!(
        (
            status.ipam.as_str(),
            status.allocated_v4,
            status.allocated_v6
        ),
        ("Netbox", 1, 1)
    );
    assert_eq!(status.size_v4, None);
    let rel = ipam.release_service("ns/s", Some("nb"));
    assert_eq!(rel.released.len(), 2);
    assert!(rel.released.iter().all(|r| r.freed && r.group == "nb"));
    ipam.check_invariants().unwrap();
}

#[test]
fn netbox_answers_are_checked() {
    let mut ipam = setup();
    run(&mut ipam, &svc("ns", "local"));
    let pending = netbox_pending(&mut ipam, &nb("a"));
    let out = ipam.complete_netbox(pending, Ok(ips(&["192.168.1.240"])));
    assert_eq!(
        failure(&out),
        "address 192.168.1.240 from Netbox is inside ServiceGroup \"default\""
    );
    // The unused address goes back to Netbox.
    assert_eq!(
        out.released,
        vec![Released {
            ip: ip("192.168.1.240"),
            group: "nb".into(),
            freed: true
        }]
    );
    let pending = netbox_pending(&mut ipam, &nb("a"));
    let out = ipam.complete_netbox(pending, Ok(ips(&["10.7.0.1", "fd07::1"])));
    assert_eq!(
        failure(&out),
        "Netbox returned fd07::1, which the Service did not ask for"
    );
    assert!(out.ingress.is_empty());
    assert!(ipam.holdings("ns/a").is_empty());
    assert_eq!(out.released.len(), 2);
    let pending = netbox_pending(
        &mut ipam,
        &ServiceRequest {
            families: vec![IpFamily::V4, IpFamily::V6],
            ..nb("a")
        },
    );
    let out = ipam.complete_netbox(pending, Ok(ips(&["10.7.0.1"])));
    assert_eq!(failure(&out), "Netbox returned no IPv6 address");
    let pending = netbox_pending(&mut ipam, &nb("a"));
    let out = ipam.complete_netbox(
        pending,
        Err(RemoteError {
            message: "netbox: connect: refused".into(),
            retryable: true,
        }),
    );
    assert!(out.requeue);
    ipam.check_invariants().unwrap();
}

#[test]
fn netbox_sharing() {
    let mut ipam = setup();
    let keyed = |name: &str, port: i32| ServiceRequest {
        sharing_key: Some("k".into()),
        ports: vec![purelb_allocator::ipam::Port::new("TCP", port)],
        ..nb(name)
    };
    let pending = netbox_pending(&mut ipam, &keyed("a", 80));
    let out = ipam.complete_netbox(pending, Ok(ips(&["10.7.0.1"])));
    assert!(out.is_ok());
    // Same key: the bound address, without asking Netbox.
    let out = run(&mut ipam, &keyed("b", 443));
    assert_eq!(out.ingress, ips(&["10.7.0.1"]));
    let out = run(&mut ipam, &keyed("c", 80));
    assert_eq!(
        failure(&out),
        "port TCP/80 on \"10.7.0.1\" is already in use by ns/a"
    );
    // Netbox handing out a used address to a Service without the key.
    let pending = netbox_pending(&mut ipam, &nb("d"));
    let out = ipam.complete_netbox(pending, Ok(ips(&["10.7.0.1"])));
    assert_eq!(failure(&out), "new service does not allow sharing");
    assert!(out.released.is_empty(), "still in use: never handed back");
    let rel = ipam.release_service("ns/a", None);
    assert!(rel.released.iter().any(|r| r.group == "nb" && !r.freed));
    // Multi-pool is not for Netbox groups.
    let out = run(
        &mut ipam,
        &ServiceRequest {
            multi_pool: Some("true".into()),
            ..nb("e")
        },
    );
    assert_eq!(
        failure(&out),
        "multi-pool allocation is not supported for Netbox pools"
    );
    ipam.check_invariants().unwrap();
}
