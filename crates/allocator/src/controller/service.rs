//! Between a Kubernetes Service and the IPAM: which Services are ours,
//! the request the IPAM sees, and the patches that write an outcome back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use purelb_api::annotations as keys;
use purelb_api::pool::IpFamily;
use purelb_api::service::{annotation, ingress_ips, is_branded, key};
use serde_json::{Value, json};

use crate::ipam::{AnnotationChange, Outcome, Port, ServiceRequest, SpecificAddresses};

/// Services the allocator never touches, as upstream's shared client skips them.
const SKIPPED: [(&str, &str); 4] = [
    ("default", "kubernetes"),
    ("kube-system", "kube-dns"),
    ("kube-system", "kube-controller-manager"),
    ("kube-system", "kube-scheduler"),
];

/// What to do with one Service.
#[derive(Debug, PartialEq, Eq)]
pub enum Handling {
    /// Not ours: another class, class-less while we are not the default, a
    /// system Service, or a headless one.
    Ignore,
    /// Ours, but no longer `type: LoadBalancer` (carries the type).
    NotLoadBalancer(String),
    /// A LoadBalancer Service to allocate for.
    Allocate,
}

pub fn handling(service: &Service, default_announcer: bool) -> Handling {
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    if SKIPPED.contains(&(namespace, name)) {
        return Handling::Ignore;
    }
    let Some(spec) = &service.spec else {
        return Handling::Ignore;
    };
    match spec.load_balancer_class.as_deref() {
        Some(keys::LOAD_BALANCER_CLASS) => {}
        Some(_) => return Handling::Ignore,
        None if default_announcer => {}
        None => return Handling::Ignore,
    }
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type != purelb_api::service::LOAD_BALANCER {
        return Handling::NotLoadBalancer(service_type.to_owned());
    }
    let cluster_ip_parses = spec
        .cluster_ip
        .as_deref()
        .is_some_and(|ip| ip.parse::<IpAddr>().is_ok());
    if !cluster_ip_parses {
        return Handling::Ignore;
    }
    Handling::Allocate
}

/// The IPAM's view of a Service.
pub fn request(service: &Service) -> ServiceRequest {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let spec = service.spec.clone().unwrap_or_default();
    let families = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|family| match family.as_str() {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        })
        .collect();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            Port::new(
                p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                p.port,
            )
        })
        .collect();
    ServiceRequest {
        key: key(service),
        namespace,
        families,
        sharing_key: annotation(service, keys::ALLOW_SHARED_IP).map(str::to_owned),
        ports,
        service_group: annotation(service, keys::SERVICE_GROUP).map(str::to_owned),
        addresses: SpecificAddresses::decode(
            annotation(service, keys::ADDRESSES),
            spec.load_balancer_ip.as_deref(),
        ),
        multi_pool: annotation(service, keys::MULTI_POOL).map(str::to_owned),
        ingress: ingress_ips(service),
        branded: is_branded(service),
        allocated_from: annotation(service, keys::ALLOCATED_FROM).map(str::to_owned),
    }
}

/// Whether the one-shot `purelb.io/re-evaluate: "true"` is set (the controller deletes it).
pub fn wants_re_evaluation(service: &Service) -> bool {
    annotation(service, keys::RE_EVALUATE) == Some(keys::TRUE)
}

/// The merge patch for the annotation changes that actually change something,
/// or `None`. Carries the resourceVersion so a stale decision is refused.
pub fn annotation_patch(
    service: &Service,
    changes: &BTreeMap<&'static str, AnnotationChange>,
) -> Option<Value> {
    let mut patch = serde_json::Map::new();
    for (key, change) in changes {
        let current = annotation(service, key);
        match change {
            AnnotationChange::Set(value) if current != Some(value.as_str()) => {
                patch.insert((*key).to_owned(), Value::String(value.clone()));
            }
            AnnotationChange::Remove if current.is_some() => {
                patch.insert((*key).to_owned(), Value::Null);
            }
            _ => {}
        }
    }
    (!patch.is_empty()).then(|| {
        json!({"metadata": {"resourceVersion": service.metadata.resource_version, "annotations": patch}})
    })
}

/// The status merge patch when the ingress list changes, or `None`.
pub fn status_patch(
    service: &Service,
    outcome: &Outcome,
    resource_version: Option<&str>,
) -> Option<Value> {
    if ingress_ips(service) == outcome.ingress {
        return None;
    }
    let ingress: Vec<Value> = outcome
        .ingress
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    Some(json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {"loadBalancer": {"ingress": ingress}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, spec: Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"namespace": namespace, "name": name}, "spec": spec}),
        )
        .expect("a Service")
    }

    fn lb(class: Option<&str>) -> Service {
        let mut spec = json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10"});
        if let Some(class) = class {
            spec["loadBalancerClass"] = json!(class);
        }
        service("ns", "web", spec)
    }

    #[test]
    fn our_class_is_always_handled_and_other_classes_never() {
        assert_eq!(
            handling(&lb(Some("purelb.io/purelbv2")), false),
            Handling::Allocate
        );
        assert_eq!(
            handling(&lb(Some("purelb.io/purelbv2")), true),
            Handling::Allocate
        );
        assert_eq!(
            handling(&lb(Some("purelb.io/purelb")), true),
            Handling::Ignore
        );
        assert_eq!(
            handling(&lb(Some("example.com/lb")), true),
            Handling::Ignore
        );
    }

    #[test]
    fn classless_services_need_the_default_announcer() {
        assert_eq!(handling(&lb(None), true), Handling::Allocate);
        assert_eq!(handling(&lb(None), false), Handling::Ignore);
    }

    #[test]
    fn other_types_are_released_and_headless_or_system_services_skipped() {
        let cluster_ip = service(
            "ns",
            "web",
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10"}),
        );
        assert_eq!(
            handling(&cluster_ip, true),
            Handling::NotLoadBalancer("ClusterIP".to_owned())
        );
        let headless = service(
            "ns",
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "None"}),
        );
        assert_eq!(handling(&headless, true), Handling::Ignore);
        let dns = service(
            "kube-system",
            "kube-dns",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10"}),
        );
        assert_eq!(handling(&dns, true), Handling::Ignore);
    }

    #[test]
    fn only_changed_annotations_are_patched() {
        let mut svc = lb(None);
        svc.metadata.annotations =
            Some([("purelb.io/allocated-by".to_owned(), "PureLB".to_owned())].into());
        svc.metadata.resource_version = Some("7".to_owned());
        let mut changes = BTreeMap::new();
        changes.insert(
            keys::ALLOCATED_BY,
            AnnotationChange::Set("PureLB".to_owned()),
        );
        assert_eq!(annotation_patch(&svc, &changes), None);
        changes.insert(
            keys::ALLOCATED_FROM,
            AnnotationChange::Set("default".to_owned()),
        );
        changes.insert(keys::POOL_TYPE, AnnotationChange::Remove);
        assert_eq!(
            annotation_patch(&svc, &changes),
            Some(
                json!({"metadata": {"resourceVersion": "7", "annotations": {"purelb.io/allocated-from": "default"}}})
            )
        );
    }
}
