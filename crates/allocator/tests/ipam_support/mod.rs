//! Shared helpers for the IPAM tests: building ServiceGroups, Services, and
//! playing the controller's part (writing an outcome back to the Service).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use purelb_allocator::ipam::{AnnotationChange, GroupInput, Ipam, Outcome, ServiceRequest, Step};
use purelb_api::annotations::{ALLOCATED_BY, ALLOCATED_FROM, BRAND};
use purelb_api::pool::IpFamily;
use serde_json::{Value, json};

pub const NS: &str = "purelb-system";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// A ServiceGroup from its spec as JSON (the form users write).
pub fn group(namespace: &str, name: &str, spec: Value) -> GroupInput {
    GroupInput {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        spec: serde_json::from_value(spec).unwrap(),
    }
}

/// `AddressPool` entries from (pool, subnet) pairs.
pub fn pools(list: &[(&str, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(pool, subnet)| json!({"pool": pool, "subnet": subnet}))
            .collect(),
    )
}

/// A local group in the install namespace with `v4pools`/`v6pools`.
pub fn local(name: &str, v4: &[(&str, &str)], v6: &[(&str, &str)]) -> GroupInput {
    group(
        NS,
        name,
        json!({"local": {"v4pools": pools(v4), "v6pools": pools(v6)}}),
    )
}

pub fn remote(name: &str, v4: &[(&str, &str)], v6: &[(&str, &str)]) -> GroupInput {
    group(
        NS,
        name,
        json!({"remote": {"v4pools": pools(v4), "v6pools": pools(v6)}}),
    )
}

/// An IPAM from groups that must all parse.
pub fn ipam(groups: &[GroupInput]) -> Ipam {
    let (ipam, report) = Ipam::from_groups(Some(NS), groups);
    for g in &report.groups {
        assert_eq!(
            g.result,
            purelb_allocator::ipam::GroupResult::Parsed,
            "{}: {}",
            g.name,
            g.event.message
        );
    }
    ipam.unwrap()
}

/// The usual `default` group: `192.168.1.240/29` and `fd00::/125`.
pub fn default_ipam() -> Ipam {
    ipam(&[local(
        "default",
        &[("192.168.1.240/29", "192.168.1.0/24")],
        &[("fd00::/125", "fd00::/64")],
    )])
}

pub fn svc(namespace: &str, name: &str) -> ServiceRequest {
    ServiceRequest::new(namespace, name)
}

pub fn dual(namespace: &str, name: &str) -> ServiceRequest {
    ServiceRequest {
        families: vec![IpFamily::V4, IpFamily::V6],
        ..ServiceRequest::new(namespace, name)
    }
}

pub fn done(step: Step) -> Outcome {
    match step {
        Step::Done(out) => out,
        other => panic!("expected Done, got {other:?}"),
    }
}

/// Reconcile without active subnets.
pub fn run(ipam: &mut Ipam, req: &ServiceRequest) -> Outcome {
    done(ipam.reconcile(req, None))
}

pub fn active(subnets: &[&str]) -> BTreeSet<String> {
    subnets.iter().map(|s| (*s).to_owned()).collect()
}

/// What the controller does with an outcome: the Service as written back.
pub fn apply(req: &ServiceRequest, out: &Outcome) -> ServiceRequest {
    let mut next = req.clone();
    next.ingress = out.ingress.clone();
    for (key, change) in &out.annotations {
        match (*key, change) {
            (k, AnnotationChange::Set(v)) if k == ALLOCATED_BY => next.branded = v == BRAND,
            (k, AnnotationChange::Remove) if k == ALLOCATED_BY => next.branded = false,
            (k, AnnotationChange::Set(v)) if k == ALLOCATED_FROM => {
                next.allocated_from = Some(v.clone())
            }
            (k, AnnotationChange::Remove) if k == ALLOCATED_FROM => next.allocated_from = None,
            _ => {}
        }
    }
    next
}

/// Reconcile and write back; returns (outcome, new Service).
pub fn step(ipam: &mut Ipam, req: &ServiceRequest) -> (Outcome, ServiceRequest) {
    let out = run(ipam, req);
    let next = apply(req, &out);
    (out, next)
}

pub fn messages(out: &Outcome) -> Vec<String> {
    out.events
        .iter()
        .map(|e| format!("{} {} {}", e.type_.as_str(), e.reason.as_str(), e.message))
        .collect()
}

pub fn failure(out: &Outcome) -> String {
    out.error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| panic!("expected failure, got {out:?}"))
}
