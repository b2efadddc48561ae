//! Property tests: random sequences of allocations, pins, releases and
//! rebuilds over small pools with IPv4 and IPv6 ranges. After every step:
//! the internal indexes agree; no two Services share an address unless they
//! have the same sharing key and disjoint ports; every address lies in its
//! group's ranges; each Service holds exactly its ingress addresses. A
//! release followed by the same request succeeds again, and rebuilding from
//! the Services (as after a restart) gives the same state.

mod ipam_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipam_support::*;
use proptest::prelude::*;
use purelb_allocator::ipam::{GroupInput, Ipam, Port, ServiceRequest, SpecificAddresses};
use purelb_api::pool::IpFamily;

const SERVICES: usize = 8;

fn groups() -> Vec<GroupInput> {
    vec![
        local(
            "default",
            &[
                ("10.0.0.0/30", "10.0.0.0/24"),
                ("10.0.1.0/31", "10.0.1.0/24"),
            ],
            &[("fd00::/126", "fd00::/64"), ("fd00:1::/127", "fd00:1::/64")],
        ),
        remote(
            "bgp",
            &[("10.1.0.0/31", "10.1.0.0/24")],
            &[("fd01::/127", "fd01::/64")],
        ),
    ]
}

const PINS: [&str; 6] = [
    "10.0.0.1",
    "10.0.0.1,fd00::1",
    "fd00:1::1",
    "10.1.0.1,fd01::",
    "10.0.1.0",
    "10.9.9.9",
];

const KEYS: [Option<&str>; 3] = [None, Some("a"), Some("b")];

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        svc: usize,
        families: usize,
        bgp: bool,
        key: usize,
        ports: u8,
    },
    Pin {
        svc: usize,
        pin: usize,
        key: usize,
        ports: u8,
    },
    Release {
        svc: usize,
    },
    Reconcile {
        svc: usize,
    },
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SERVICES, 0..4usize, any::<bool>(), 0..3usize, 0..8u8).prop_map(
            |(svc, families, bgp, key, ports)| Op::Allocate { svc, families, bgp, key, ports }
        ),
        2 => (0..SERVICES, 0..PINS.len(), 0..3usize, 0..8u8)
            .prop_map(|(svc, pin, key, ports)| Op::Pin { svc, pin, key, ports }),
        3 => (0..SERVICES).prop_map(|svc| Op::Release { svc }),
        1 => (0..SERVICES).prop_map(|svc| Op::Reconcile { svc }),
        1 => Just(Op::Rebuild),
    ]
}

fn families(choice: usize) -> Vec<IpFamily> {
    match choice {
        0 => vec![IpFamily::V4],
        1 => vec![IpFamily::V6],
        2 => vec![IpFamily::V4, IpFamily::V6],
        _ => vec![IpFamily::V6, IpFamily::V4],
    }
}

fn ports(mask: u8) -> Vec<Port> {
    [("TCP", 80), ("TCP", 443), ("UDP", 53)]
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, (p, n))| Port::new(*p, *n))
        .collect()
}

fn fresh(svc: usize, key: usize, mask: u8) -> ServiceRequest {
    ServiceRequest {
        sharing_key: KEYS[key].map(str::to_owned),
        ports: ports(mask),
        ..ServiceRequest::new("ns", &format!("s{svc}"))
    }
}

/// Branded, with an address of every family asked for and of no other (a
/// pinned address of another family is released on the next reconcile).
fn complete(req: &ServiceRequest) -> bool {
    req.branded
        && req
            .families
            .iter()
            .all(|f| req.ingress.iter().any(|ip| IpFamily::of(*ip) == *f))
        && req
            .ingress
            .iter()
            .all(|ip| req.families.contains(&IpFamily::of(*ip)))
}

fn rebuild(model: &[Option<ServiceRequest>]) -> Ipam {
    let mut ipam = Ipam::from_groups(Some(NS), &groups()).0.unwrap();
    for req in model.iter().flatten() {
        if req.branded && !req.ingress.is_empty() {
            assert!(ipam.notify(req).is_empty());
        }
    }
    ipam
}

fn check(ipam: &Ipam, model: &[Option<ServiceRequest>]) -> Result<(), TestCaseError> {
    ipam.check_invariants().map_err(TestCaseError::fail)?;
    let by_key: BTreeMap<String, &ServiceRequest> =
        model.iter().flatten().map(|r| (r.key.clone(), r)).collect();
    let snap = ipam.snapshot();
    for (ip, state) in &snap.addresses {
        // Inside the group it is booked under.
        prop_assert_eq!(ipam.group_of(*ip), Some(state.group.as_str()), "{}", ip);
        if state.services.len() > 1 {
            let users: Vec<&ServiceRequest> = state
                .services
                .iter()
                .map(|s| by_key.get(s).copied().ok_or(s))
                .collect::<Result<_, _>>()
                .map_err(|s| TestCaseError::fail(format!("{s} holds {ip} but is gone")))?;
            let key = users[0].sharing_key.clone();
            prop_assert!(key.is_some(), "{} shared without a key", ip);
            let mut seen: BTreeSet<&Port> = BTreeSet::new();
            for u in &users {
                prop_assert_eq!(&u.sharing_key, &key, "{} shared across keys", ip);
                for p in &u.ports {
                    prop_assert!(seen.insert(p), "{} port {} used twice", ip, p);
                }
            }
        }
    }
    // Each Service holds exactly its ingress addresses.
    for req in model.iter().flatten() {
        let held: BTreeSet<IpAddr> = ipam
            .holdings(&req.key)
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        let ingress: BTreeSet<IpAddr> = req.ingress.iter().copied().collect();
        prop_assert_eq!(held, ingress, "{}", req.key);
    }
    Ok(())
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut ipam = rebuild(&[]);
    let mut model: Vec<Option<ServiceRequest>> = vec![None; SERVICES];
    for op in ops {
        match op {
            Op::Allocate {
                svc,
                families: f,
                bgp,
                key,
                ports,
            } => {
                let mut req = match &model[svc] {
                    Some(r) if !r.ingress.is_empty() => r.clone(),
                    _ => {
                        let mut r = fresh(svc, key, ports);
                        r.service_group = bgp.then(|| "bgp".to_owned());
                        r
                    }
                };
                req.families = families(f);
                let out = run(&mut ipam, &req);
                let next = apply(&req, &out);
                if out.is_ok() && next.addresses.is_none() {
                    prop_assert!(complete(&next), "{:?} -> {:?}", req, out);
                }
                model[svc] = Some(next);
            }
            Op::Pin {
                svc,
                pin,
                key,
                ports,
            } => {
                if model[svc].as_ref().is_some_and(|r| !r.ingress.is_empty()) {
                    continue;
                }
                let mut req = fresh(svc, key, ports);
                req.addresses = SpecificAddresses::decode(Some(PINS[pin]), None);
                req.families = if PINS[pin].contains(',') {
                    families(2)
                } else {
                    vec![IpFamily::of(PINS[pin].parse().unwrap())]
                };
                let out = run(&mut ipam, &req);
                if out.is_ok() {
                    let want: Vec<IpAddr> =
                        PINS[pin].split(',').map(|s| s.parse().unwrap()).collect();
                    prop_assert_eq!(&out.ingress, &want);
                } else {
                    prop_assert!(out.ingress.is_empty());
                }
                model[svc] = Some(apply(&req, &out));
            }
            Op::Release { svc } => {
                let Some(req) = model[svc].take() else {
                    continue;
                };
                let out = ipam.release_service(&req.key, req.allocated_from.as_deref());
                let snap = ipam.snapshot();
                for r in &out.released {
                    let gone = !snap.addresses.contains_key(&r.ip);
                    prop_assert_eq!(r.freed, gone, "{:?}", r);
                    if let Some(state) = snap.addresses.get(&r.ip) {
                        prop_assert!(!state.services.contains(&req.key));
                    }
                }
                check(&ipam, &model)?;
                // Pins the Service did not hold may be someone else's now.
                let pins_held = match &req.addresses {
                    Some(SpecificAddresses {
                        addresses: Ok(pins),
                        ..
                    }) => pins.iter().all(|p| req.ingress.contains(p)),
                    _ => true,
                };
                if complete(&req) && pins_held {
                    // The same request again must succeed: what it held is
                    // free again, or still shared compatibly.
                    let again = ServiceRequest {
                        ingress: Vec::new(),
                        branded: false,
                        allocated_from: None,
                        ..req
                    };
                    let out = run(&mut ipam, &again);
                    prop_assert!(out.is_ok(), "{:?} -> {:?}", again, out.error);
                    model[svc] = Some(apply(&again, &out));
                }
            }
            Op::Reconcile { svc } => {
                let Some(req) = model[svc].clone() else {
                    continue;
                };
                let before = ipam.snapshot();
                let out = run(&mut ipam, &req);
                if complete(&req) {
                    prop_assert!(out.events.is_empty(), "{:?}", out.events);
                    prop_assert_eq!(&out.ingress, &req.ingress);
                    prop_assert_eq!(ipam.snapshot(), before);
                }
                model[svc] = Some(apply(&req, &out));
            }
            Op::Rebuild => {
                let rebuilt = rebuild(&model);
                prop_assert_eq!(rebuilt.snapshot(), ipam.snapshot());
                ipam = rebuilt;
            }
        }
        check(&ipam, &model)?;
    }
    prop_assert_eq!(rebuild(&model).snapshot(), ipam.snapshot());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_every_rule(ops in prop::collection::vec(op(), 1..60)) {
        run_ops(ops)?;
    }
}
