//! Reading a Kubernetes Service the way both components do: its key, its
//! annotations, its type, the allocator's brand and its ingress addresses.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use crate::annotations;

/// `spec.type` of the Services PureLB serves.
pub const LOAD_BALANCER: &str = "LoadBalancer";

/// `namespace/name`: the queue key, the `service` metric label and log key.
pub fn key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The value of annotation `key`, if set.
pub fn annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

pub fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some(LOAD_BALANCER)
}

/// Whether the allocator branded the Service (`purelb.io/allocated-by: PureLB`).
///
/// Choice: a Service without annotations is not branded (PureLB's agent lets a
/// missing annotation map through).
pub fn is_branded(service: &Service) -> bool {
    annotation(service, annotations::ALLOCATED_BY) == Some(annotations::BRAND)
}

/// The IPs in `.status.loadBalancer.ingress` as written, in order; hostnames and
/// unparseable entries are not PureLB's and are skipped.
pub fn ingress_ips(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ip.as_deref()?.parse().ok())
        .collect()
}

/// The ingress IPs as addresses to announce: IPv4-mapped IPv6 unmapped, in order,
/// without repeats.
pub fn unique_ingress_ips(service: &Service) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in ingress_ips(service).into_iter().map(|ip| ip.to_canonical()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn ingress_as_written_and_as_announced() {
        let s = service(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.1"}, {"hostname": "lb.example"}, {"ip": "::ffff:192.0.2.1"},
                {"ip": "2001:db8::1"}, {"ip": "192.0.2.1"}, {"ip": "bad"}
            ]}}
        }));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ingress_ips(&s),
            [
                ip("192.0.2.1"),
                ip("::ffff:192.0.2.1"),
                ip("2001:db8::1"),
                ip("192.0.2.1")
            ]
        );
        assert_eq!(unique_ingress_ips(&s), [ip("192.0.2.1"), ip("2001:db8::1")]);
        assert_eq!(key(&s), "ns/web");
    }

    #[test]
    fn brand_and_type() {
        let unbranded =
            service(json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer"}}));
        assert!(is_load_balancer(&unbranded));
        assert!(!is_branded(&unbranded));
        let branded = service(json!({
            "metadata": {"name": "a", "annotations": {"purelb.io/allocated-by": "PureLB"}},
            "spec": {"type": "ClusterIP"}
        }));
        assert!(is_branded(&branded));
        assert!(!is_load_balancer(&branded));
        assert_eq!(
            annotation(&branded, "purelb.io/allocated-by"),
            Some("PureLB")
        );
        assert_eq!(annotation(&unbranded, "purelb.io/allocated-by"), None);
    }
}
