//! What the controller tells the IPAM about one Service: plain values decoded
//! from the Service object, no Kubernetes types.

use std::fmt;
use std::net::IpAddr;

use purelb_api::annotations::{self, InvalidAddress};
use purelb_api::pool::IpFamily;

/// One `(protocol, port)` of a Service (`spec.ports[].protocol`, `.port`).
/// Only the port number counts for sharing, never nodePort or targetPort.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// `TCP`, `UDP` or `SCTP`, as in the Service.
    pub protocol: String,
    pub port: i32,
}

impl Port {
    pub fn new(protocol: impl Into<String>, port: i32) -> Self {
        Self {
            protocol: protocol.into(),
            port,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// Where specific addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// `purelb.io/addresses`.
    Annotation,
    /// The deprecated `spec.loadBalancerIP` (a `DeprecationWarning` event).
    LoadBalancerIp,
}

/// Specific addresses a Service asks for, parsed strictly (no trimming, no ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecificAddresses {
    pub source: AddressSource,
    /// The parse result; an error fails the allocation with its text.
    pub addresses: Result<Vec<IpAddr>, InvalidAddress>,
}

impl SpecificAddresses {
    /// `purelb.io/addresses` if present (even empty, which is an error),
    /// else a non-empty `spec.loadBalancerIP`, else nothing.
    pub fn decode(annotation: Option<&str>, load_balancer_ip: Option<&str>) -> Option<Self> {
        if let Some(value) = annotation {
            return Some(Self {
                source: AddressSource::Annotation,
                addresses: annotations::parse_addresses(value),
            });
        }
        load_balancer_ip
            .filter(|v| !v.is_empty())
            .map(|value| Self {
                source: AddressSource::LoadBalancerIp,
                addresses: annotations::parse_addresses(value),
            })
    }
}

/// One LoadBalancer Service as the IPAM sees it. The controller fills it from
/// the Service object; the IPAM never sees the object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    /// `namespace/name`, the identity used everywhere (ports, events, sidecar).
    pub key: String,
    pub namespace: String,
    /// `spec.ipFamilies` in order; empty is treated as `[IPv4]`.
    pub families: Vec<IpFamily>,
    /// `purelb.io/allow-shared-ip`; an empty value means no sharing.
    pub sharing_key: Option<String>,
    /// `spec.ports` as (protocol, port).
    pub ports: Vec<Port>,
    /// `purelb.io/service-group` when present (even if empty).
    pub service_group: Option<String>,
    /// `purelb.io/addresses`, else `spec.loadBalancerIP`.
    pub addresses: Option<SpecificAddresses>,
    /// `purelb.io/multi-pool` when present (raw value: only `"true"` enables).
    pub multi_pool: Option<String>,
    /// The IPs in `.status.loadBalancer.ingress`, in order.
    pub ingress: Vec<IpAddr>,
    /// `purelb.io/allocated-by` is `PureLB`.
    pub branded: bool,
    /// `purelb.io/allocated-from` when present.
    pub allocated_from: Option<String>,
}

impl ServiceRequest {
    /// A single-stack IPv4 Service with nothing else set.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            key: format!("{namespace}/{name}"),
            namespace: namespace.to_owned(),
            families: vec![IpFamily::V4],
            sharing_key: None,
            ports: Vec::new(),
            service_group: None,
            addresses: None,
            multi_pool: None,
            ingress: Vec::new(),
            branded: false,
            allocated_from: None,
        }
    }

    /// The sharing key, `None` when absent or empty.
    pub(crate) fn key_for_sharing(&self) -> Option<&str> {
        annotations::sharing_key(self.sharing_key.as_deref())
    }

    /// Requested families in order, without repeats; `[IPv4]` when empty.
    pub(crate) fn requested_families(&self) -> Vec<IpFamily> {
        let mut out: Vec<IpFamily> = Vec::with_capacity(2);
        for f in &self.families {
            if !out.contains(f) {
                out.push(*f);
            }
        }
        if out.is_empty() {
            out.push(IpFamily::V4);
        }
        out
    }
}
