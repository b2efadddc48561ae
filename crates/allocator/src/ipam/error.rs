//! Why an allocation failed. The texts are exactly PureLB's:
//! they surface in `AllocationFailed` events, which users and the e2e suite
//! read.

use std::net::IpAddr;

use purelb_api::annotations::InvalidAddress;
use purelb_api::pool::IpFamily;

use super::outcome::RejectReason;
use super::request::Port;

/// Go's `%v` of a `[]string`: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Why one address cannot be given to a Service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Every Service with one sharing key gets the same address per family.
    #[error("sharing key {key:?} is bound to {bound}, cannot use {ip}")]
    KeyBound {
        key: String,
        bound: IpAddr,
        ip: IpAddr,
    },
    #[error("existing service does not allow sharing")]
    ExistingNotShared,
    #[error("new service does not allow sharing")]
    NewNotShared,
    #[error("sharing key {new:?} does not match existing sharing key {existing:?}")]
    KeyMismatch { new: String, existing: String },
    /// The Service already uses the address with others and its key changed.
    #[error("can't change sharing key for {service:?}, address also in use by {}", .others.join(","))]
    KeyInUse {
        service: String,
        others: Vec<String>,
    },
    #[error("port {port} on \"{ip}\" is already in use by {service}")]
    PortInUse {
        port: Port,
        ip: IpAddr,
        service: String,
    },
}

impl Unavailable {
    /// The per-pool `allocation_rejected_total` reason.
    pub(crate) fn reason(&self) -> RejectReason {
        match self {
            Self::PortInUse { .. } => RejectReason::PortConflict,
            _ => RejectReason::SharingKeyConflict,
        }
    }
}

/// An allocation, release or rebuild refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    /// The group exists but was not accepted (parse error or overlap).
    #[error("no usable pool: ServiceGroup {0:?} failed to parse")]
    NoUsablePool(String),
    #[error(
        "namespace denied: ServiceGroup {group:?} serves a confined namespace and does not serve {namespace:?}"
    )]
    GroupConfined { group: String, namespace: String },
    #[error("namespace denied: namespace {namespace:?} may only use {}, not ServiceGroup {group:?}", go_list(.eligible))]
    NamespaceConfined {
        namespace: String,
        eligible: Vec<String>,
        group: String,
    },
    #[error("ambiguous namespace default: {0}")]
    AmbiguousDefault(String),
    #[error(transparent)]
    InvalidAddress(#[from] InvalidAddress),
    #[error("\"{0}\" does not belong to any group")]
    NotInAnyGroup(IpAddr),
    /// A specific address whose group the Service may not use.
    #[error("{ip}: {source}")]
    AddressDenied { ip: IpAddr, source: Box<IpamError> },
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("pool {pool:?} exhausted: no available addresses for {service}")]
    Exhausted { pool: String, service: String },
    #[error(
        "no available addresses for service {service} in family {family} (balancePools, all ranges exhausted)"
    )]
    BalanceExhausted { service: String, family: IpFamily },
    #[error("no ranges for family {0}")]
    NoRangesForFamily(IpFamily),
    #[error("multi-pool and balancePools allocation are mutually exclusive for pool {0}")]
    MultiPoolAndBalance(String),
    #[error(
        "multi-pool allocation cannot be combined with IP sharing (annotation purelb.io/allow-shared-ip)"
    )]
    MultiPoolSharing,
    #[error("multi-pool allocation requires ActiveSubnets to be configured")]
    MultiPoolNoSubnets,
    #[error("activeSubnets not configured")]
    IncrementalNoSubnets,
    #[error("no IPs allocated for service {service}: {skipped} ranges skipped (no active nodes)")]
    MultiPoolNothing { service: String, skipped: usize },
    #[error("service has no ingress addresses")]
    NoIngress,
    #[error("address {0} does not belong to any pool")]
    NotInAnyPool(IpAddr),
    #[error("addresses span more than one pool ({0}, {1})")]
    SpansPools(String, String),
    #[error("multi-pool allocation is not supported for external pool {0:?}")]
    MultiPoolExternal(String),
    #[error("multi-pool allocation is not supported for Netbox pools")]
    MultiPoolNetbox,
    #[error("sidecar {provider} returned no IPs and no error")]
    SidecarNoIps { provider: String },
    #[error("Netbox returned {0}, which the Service did not ask for")]
    NetboxUnrequested(IpAddr),
    #[error("Netbox returned no {0} address")]
    NetboxMissing(IpFamily),
    #[error("address {ip} from Netbox is inside ServiceGroup {group:?}")]
    NetboxInPool { ip: IpAddr, group: String },
    /// An error reported by the sidecar or Netbox call itself.
    #[error("{message}")]
    Remote { message: String, retryable: bool },
}

impl IpamError {
    /// The `allocation_rejected_total{pool=<requested group>}` reason.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::UnknownPool(_) => RejectReason::UnknownPool,
            Self::NoUsablePool(_) => RejectReason::NoUsablePool,
            Self::GroupConfined { .. } | Self::NamespaceConfined { .. } => {
                RejectReason::NamespaceDenied
            }
            Self::AmbiguousDefault(_) => RejectReason::AmbiguousNamespaceDefault,
            Self::AddressDenied { source, .. } => source.reason(),
            _ => RejectReason::Other,
        }
    }

    /// Whether trying again later can succeed: only trouble reaching an
    /// external IPAM, never a decision of the IPAM itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Remote {
                retryable: true,
                ..
            }
        )
    }
}

/// Every kept ServiceGroup failed; the previous generation stays live.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("No valid pools found")]
pub struct NoValidPools;
