//! What the IPAM hands back: the Service's new ingress list and annotations,
//! the events and metric increments to emit, and the calls to make to
//! external IPAMs. All data; the controller only writes it out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use super::error::IpamError;

/// `local` or `remote`: where agents announce the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolType {
    Local,
    Remote,
}

impl PoolType {
    /// The `purelb.io/pool-type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => purelb_api::annotations::POOL_TYPE_LOCAL,
            Self::Remote => purelb_api::annotations::POOL_TYPE_REMOTE,
        }
    }

    /// The ServiceGroup `status.announce` value.
    pub fn capitalized(self) -> &'static str {
        match self {
            Self::Local => "Local",
            Self::Remote => "Remote",
        }
    }
}

impl fmt::Display for PoolType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kubernetes event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Event reasons of the allocator, the same as PureLB's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    AddressAssigned,
    AddressReleased,
    AllocationFailed,
    ReleaseFailed,
    ConfigurationWarning,
    DeprecationWarning,
    Parsed,
    ParseFailed,
    ServiceGroupOutOfScope,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AddressAssigned => "AddressAssigned",
            Self::AddressReleased => "AddressReleased",
            Self::AllocationFailed => "AllocationFailed",
            Self::ReleaseFailed => "ReleaseFailed",
            Self::ConfigurationWarning => "ConfigurationWarning",
            Self::DeprecationWarning => "DeprecationWarning",
            Self::Parsed => "Parsed",
            Self::ParseFailed => "ParseFailed",
            Self::ServiceGroupOutOfScope => "ServiceGroupOutOfScope",
        }
    }
}

/// One event to record on the Service (or, from intake, on the ServiceGroup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: EventReason,
    pub message: String,
}

impl Event {
    pub(crate) fn normal(reason: EventReason, message: String) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            message,
        }
    }

    pub(crate) fn warning(reason: EventReason, message: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            message,
        }
    }

    /// The `ReleaseFailed` event for an external release that failed during
    /// an IP family transition (the controller makes that call).
    pub fn release_failed(error: &str) -> Self {
        Self::warning(
            EventReason::ReleaseFailed,
            format!("Failed to release addresses after IP family transition: {error}"),
        )
    }
}

/// `reason` label of `purelb_address_pool_allocation_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    Exhausted,
    PortConflict,
    SharingKeyConflict,
    NamespaceDenied,
    AmbiguousNamespaceDefault,
    NoUsablePool,
    UnknownPool,
    Other,
    MultipoolRefused,
    MultipoolPoolMismatch,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::PortConflict => "port_conflict",
            Self::SharingKeyConflict => "sharing_key_conflict",
            Self::NamespaceDenied => "namespace_denied",
            Self::AmbiguousNamespaceDefault => "ambiguous_namespace_default",
            Self::NoUsablePool => "no_usable_pool",
            Self::UnknownPool => "unknown_pool",
            Self::Other => "other",
            Self::MultipoolRefused => "multipool_refused",
            Self::MultipoolPoolMismatch => "multipool_pool_mismatch",
        }
    }
}

/// A counter increment; gauges come from [`super::GroupStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// `purelb_address_pool_allocation_rejected_total{pool, reason}`.
    AllocationRejected { pool: String, reason: RejectReason },
    /// `purelb_address_pool_multipool_allocations_total{pool}`.
    MultipoolAllocation { pool: String },
    /// `purelb_address_pool_multipool_partial_total{pool}`.
    MultipoolPartial { pool: String },
    /// `purelb_address_pool_balance_pools_allocations_total{pool}`.
    BalancePoolsAllocation { pool: String },
}

/// A change to one Service annotation (keys are `purelb_api::annotations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationChange {
    Set(String),
    Remove,
}

/// What an external-IPAM `Release` call should free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseTarget {
    All,
    Ip(IpAddr),
}

/// A `Release` RPC for the controller to make to an external IPAM sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRelease {
    /// ServiceGroup name, the RPC's `pool`.
    pub group: String,
    pub socket: String,
    /// `namespace/name`.
    pub service: String,
    pub target: ReleaseTarget,
}

/// An address this call gave the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub ip: IpAddr,
    pub group: String,
    pub pool_type: PoolType,
}

/// An address this call took from the Service in the IPAM's books. A freed
/// Netbox address goes back to Netbox (`reserved`); that call is the
/// controller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub ip: IpAddr,
    pub group: String,
    /// No Service uses the address any more.
    pub freed: bool,
}

/// The result of one call for one Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `.status.loadBalancer.ingress` after this call (write if it differs;
    /// every entry gets `ipMode: VIP`).
    pub ingress: Vec<IpAddr>,
    /// Annotation writes, by key.
    pub annotations: BTreeMap<&'static str, AnnotationChange>,
    pub events: Vec<Event>,
    pub metrics: Vec<Metric>,
    pub assigned: Vec<Assignment>,
    pub released: Vec<Released>,
    /// Sidecar `Release` calls to make.
    pub external_releases: Vec<ExternalRelease>,
    /// Ingress IPs that lie in no pool (log "unknown LoadBalancer IP: no pool
    /// found"); they stay on the Service.
    pub unknown: Vec<IpAddr>,
    /// ServiceGroups whose usage changed (publish their status).
    pub touched: BTreeSet<String>,
    /// The failure, if the call failed (already turned into an event).
    pub error: Option<IpamError>,
    /// Requeue the Service with rate limiting (external IPAM unreachable).
    pub requeue: bool,
}

impl Outcome {
    pub(crate) fn new(ingress: Vec<IpAddr>) -> Self {
        Self {
            ingress,
            ..Self::default()
        }
    }

    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.annotations
            .insert(key, AnnotationChange::Set(value.into()));
    }

    pub(crate) fn remove(&mut self, key: &'static str) {
        self.annotations.insert(key, AnnotationChange::Remove);
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// The value this outcome sets for `key`, if any.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        match self.annotations.get(key) {
            Some(AnnotationChange::Set(v)) => Some(v),
            _ => None,
        }
    }
}

/// Go's `%+v` of the Service's `LoadBalancerStatus`, as in upstream's
/// `AddressAssigned` text (with `ipMode` printed as its value, not a pointer).
pub(crate) fn lb_status(ingress: &[IpAddr]) -> String {
    let entries: Vec<String> = ingress
        .iter()
        .map(|ip| format!("{{IP:{ip} Hostname: IPMode:VIP Ports:[]}}"))
        .collect();
    format!("{{Ingress:[{}]}}", entries.join(" "))
}
