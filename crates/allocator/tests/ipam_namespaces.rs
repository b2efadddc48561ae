//! Namespace binding and group resolution.

mod ipam_support;

use ipam_support::*;
use purelb_allocator::ipam::{
    EventReason, EventType, Ipam, Metric, RejectReason, ServiceRequest, Via,
};
use serde_json::json;

fn sg(name: &str, net: &str, extra: serde_json::Value) -> purelb_allocator::ipam::GroupInput {
    let mut spec = json!({"local": {"v4pool": {"pool": net, "subnet": net}}});
    if let (Some(obj), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    group(NS, name, spec)
}

#[test]
fn resolution_order() {
    let ipam = ipam(&[
        sg("default", "10.0.0.0/24", json!({})),
        sg("team-a", "10.0.1.0/24", json!({"namespaces": ["a"]})),
        sg("bgp", "10.0.2.0/24", json!({})),
    ]);
    // The annotation wins.
    let r = ipam.resolve("a", Some("bgp")).unwrap();
    assert_eq!((r.group.as_str(), r.via), ("bgp", Via::Annotation));
    // A namespace served by one group defaults to it.
    let r = ipam.resolve("a", None).unwrap();
    assert_eq!((r.group.as_str(), r.via), ("team-a", Via::Namespace));
    // Unbound namespaces get `default`.
    let r = ipam.resolve("b", None).unwrap();
    assert_eq!(
        (r.group.as_str(), r.via, r.warning),
        ("default", Via::Default, None)
    );
    assert_eq!(
        ipam.resolve("b", Some("nope")).unwrap_err().to_string(),
        "unknown pool \"nope\""
    );
    assert_eq!(
        ipam.resolve("b", Some("")).unwrap_err().to_string(),
        "unknown pool \"\""
    );
}

#[test]
fn default_selection_among_several_groups() {
    let ipam = ipam(&[
        sg("default", "10.0.0.0/24", json!({})),
        sg(
            "l2",
            "10.0.1.0/24",
            json!({"namespaces": ["a", "b", "c", "a"], "namespaceDefault": true}),
        ),
        sg("bgp", "10.0.2.0/24", json!({"namespaces": ["a", "b", "c"]})),
        sg(
            "bgp2",
            "10.0.3.0/24",
            json!({"namespaces": ["b"], "namespaceDefault": true}),
        ),
        sg("x", "10.0.4.0/24", json!({"namespaces": ["c"]})),
        sg(
            "y",
            "10.0.5.0/24",
            json!({"namespaces": ["c"], "namespaceDefault": true}),
        ),
    ]);
    // Exactly one marked default (the duplicate "a" entry does not count twice).
    assert_eq!(ipam.resolve("a", None).unwrap().group, "l2");
    // Two marked: ambiguous, not enforcing => default with a warning.
    let r = ipam.resolve("b", None).unwrap();
    assert_eq!(
        (r.group.as_str(), r.via),
        ("default", Via::AmbiguousDefault)
    );
    assert_eq!(
        r.warning.as_deref(),
        Some(
            "namespace \"b\": [bgp2 l2] all set namespaceDefault; exactly one must; allocated from \"default\" instead"
        )
    );
    // "c": l2 and y both marked.
    let r = ipam.resolve("c", None).unwrap();
    assert!(
        r.warning
            .unwrap()
            .starts_with("namespace \"c\": [l2 y] all set")
    );
}

#[test]
fn none_marked_default() {
    let ipam = ipam(&[
        sg("default", "10.0.0.0/24", json!({})),
        sg("l2", "10.0.1.0/24", json!({"namespaces": ["a"]})),
        sg("bgp", "10.0.2.0/24", json!({"namespaces": ["a"]})),
    ]);
    let r = ipam.resolve("a", None).unwrap();
    assert_eq!(
        r.warning.as_deref(),
        Some(
            "namespace \"a\" is served by [bgp l2] and none sets namespaceDefault; exactly one must; allocated from \"default\" instead"
        )
    );
    // The allocation proceeds from default, with a Warning event first.
    let mut ipam = ipam;
    let out = run(&mut ipam, &svc("a", "s"));
    assert!(out.is_ok());
    assert_eq!(out.ingress, vec![ip("10.0.0.0")]);
    assert_eq!(out.events[0].type_, EventType::Warning);
    assert_eq!(out.events[0].reason, EventReason::ConfigurationWarning);
    assert!(out.events[0].message.contains("none sets namespaceDefault"));
}

#[test]
fn enforcement() {
    let mut ipam = ipam(&[
        sg("default", "10.0.0.0/24", json!({})),
        sg(
            "l2",
            "10.0.1.0/24",
            json!({"namespaces": ["a"], "enforceNamespaces": true}),
        ),
        sg("bgp", "10.0.2.0/24", json!({"namespaces": ["a"]})),
        sg("shared", "10.0.3.0/24", json!({"namespaces": ["b"]})),
        sg(
            "l2b",
            "10.0.4.0/24",
            json!({"namespaces": ["e"], "enforceNamespaces": true}),
        ),
        sg(
            "bgpe",
            "10.0.5.0/24",
            json!({"namespaces": ["e"], "namespaceDefault": true}),
        ),
    ]);
    // Enforcing namespace with two groups and no default: denied.
    assert_eq!(
        ipam.resolve("a", None).unwrap_err().to_string(),
        "ambiguous namespace default: namespace \"a\" is served by [bgp l2] and none sets namespaceDefault; exactly one must"
    );
    // Enforcing namespace may only use its groups.
    assert_eq!(
        ipam.resolve("a", Some("default")).unwrap_err().to_string(),
        "namespace denied: namespace \"a\" may only use [bgp l2], not ServiceGroup \"default\""
    );
    assert!(ipam.resolve("a", Some("bgp")).is_ok());
    // Confined groups (every group serving an enforcing namespace, even one
    // without the flag itself) refuse other namespaces.
    assert_eq!(
        ipam.resolve("b", Some("bgp")).unwrap_err().to_string(),
        "namespace denied: ServiceGroup \"bgp\" serves a confined namespace and does not serve \"b\""
    );
    assert!(ipam.resolve("b", Some("shared")).is_ok());
    // An enforcing namespace with one marked default.
    assert_eq!(ipam.resolve("e", None).unwrap().group, "bgpe");

    // As allocation failures: event text and metric reasons.
    let out = run(&mut ipam, &svc("a", "s"));
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].type_, EventType::Warning);
    assert_eq!(out.events[0].reason, EventReason::AllocationFailed);
    assert_eq!(
        out.events[0].message,
        "Failed to allocate IP for \"a/s\": ambiguous namespace default: namespace \"a\" is served by [bgp l2] and none sets namespaceDefault; exactly one must"
    );
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "<none>".into(),
            reason: RejectReason::AmbiguousNamespaceDefault
        }]
    );
    assert!(!out.requeue);
    assert!(out.ingress.is_empty());
    assert!(out.annotations.is_empty());

    let req = ServiceRequest {
        service_group: Some("bgp".into()),
        ..svc("b", "s")
    };
    let out = run(&mut ipam, &req);
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "bgp".into(),
            reason: RejectReason::NamespaceDenied
        }]
    );
    let req = ServiceRequest {
        service_group: Some("gone".into()),
        ..svc("b", "s")
    };
    let out = run(&mut ipam, &req);
    assert_eq!(failure(&out), "unknown pool \"gone\"");
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "gone".into(),
            reason: RejectReason::UnknownPool
        }]
    );
}

#[test]
fn no_default_group() {
    let mut ipam = ipam(&[sg("only", "10.0.0.0/24", json!({}))]);
    let out = run(&mut ipam, &svc("a", "s"));
    assert_eq!(failure(&out), "unknown pool \"default\"");
    let mut empty = Ipam::empty();
    let out = run(&mut empty, &svc("a", "s"));
    assert_eq!(failure(&out), "unknown pool \"default\"");
    assert_eq!(
        out.metrics,
        vec![Metric::AllocationRejected {
            pool: "<none>".into(),
            reason: RejectReason::UnknownPool
        }]
    );
}

#[test]
fn enforcement_is_not_retroactive() {
    let groups = [sg("default", "10.0.0.0/24", json!({}))];
    let mut first = ipam(&groups);
    let (_, s) = step(&mut first, &svc("a", "s"));
    assert_eq!(s.ingress, vec![ip("10.0.0.0")]);
    // Now "a" is confined to another group: the existing address stays.
    let mut second = ipam(&[
        sg("default", "10.0.0.0/24", json!({})),
        sg(
            "l2",
            "10.0.1.0/24",
            json!({"namespaces": ["a"], "enforceNamespaces": true}),
        ),
    ]);
    assert!(second.notify(&s).is_empty());
    let out = run(&mut second, &s);
    assert!(out.is_ok());
    assert_eq!(out.ingress, s.ingress);
}
