//! What this node does with one ingress address, why it withdraws one, and the
//! events and annotation-slot change that follow the decision.

use std::net::IpAddr;

use crate::event::{self, Event};
use crate::node::settings::AddressSettings;

/// Why this node does not (or no longer) announce an address. [`Self::as_str`] is the
/// `reason` of the `withdrawAddress` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WithdrawReason {
    /// The agent has no configuration.
    NoConfig,
    /// Another node won the election.
    LostElection,
    /// No node advertises a subnet holding the address.
    NoEligibleNodes,
    /// `externalTrafficPolicy: Local`, remote address, no healthy endpoint here.
    NoEndpoints,
    /// No local link holds the address and no remote pool does.
    NoLocalInterface,
    /// The Service is no longer of type LoadBalancer.
    NotLoadBalancer,
    /// The address left the Service's ingress list (e.g. dual- to single-stack).
    RemovedFromIngress,
    /// The Service lost the `purelb.io/allocated-by` brand.
    NotBranded,
    /// The Service was deleted.
    ServiceDeleted,
    /// The agent is shutting down.
    Shutdown,
}

impl WithdrawReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoConfig => "noConfig",
            Self::LostElection => "lostElection",
            Self::NoEligibleNodes => "noEligibleNodes",
            Self::NoEndpoints => "noEndpoints",
            Self::NoLocalInterface => "noLocalInterface",
            Self::NotLoadBalancer => "notLoadBalancer",
            Self::RemovedFromIngress => "removedFromIngress",
            Self::NotBranded => "notBranded",
            Self::ServiceDeleted => "serviceDeleted",
            Self::Shutdown => "withdrawAll",
        }
    }

    /// Whether this node also drops its own announcing-annotation slot. It keeps it
    /// after an election loss or when no node is eligible: the next winner overwrites
    /// it, and clearing it would make nodes contend over the annotation.
    pub fn releases_slot(self) -> bool {
        !matches!(self, Self::LostElection | Self::NoEligibleNodes)
    }
}

/// What to do with one ingress address on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Won the election: add `ip/prefix_len` to `interface` (with `AddrReplace`).
    Local {
        ip: IpAddr,
        interface: String,
        /// The mask of the node address that contains the VIP.
        prefix_len: u8,
        /// Local options; for IPv6 the preferred lifetime is already 0.
        options: AddressSettings,
        /// Add with IFA_F_NODAD (IPv6 with `purelb.io/skip-ipv6-dad: "true"`).
        nodad: bool,
        /// Run the GARP/NA sequence after the add.
        garp: bool,
    },
    /// Add `ip/prefix_len` to the dummy link (the pool's aggregation mask).
    Remote {
        ip: IpAddr,
        interface: String,
        prefix_len: u8,
        options: AddressSettings,
    },
    /// Remove the address (subject to the shared-IP rule, [`AnnouncedAddresses`](crate::announce::announced::AnnouncedAddresses)).
    Withdraw { ip: IpAddr, reason: WithdrawReason },
    /// The evidence is incomplete (interrupted netlink dump): change nothing now.
    Skip { ip: IpAddr },
    /// Cannot decide (no default route, unusable aggregation): change nothing and
    /// requeue the Service.
    Retry { ip: IpAddr, message: String },
}

/// What this node does with its slot in the announcing annotation for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAction {
    Claim { interface: String },
    Release,
    Keep,
}

impl Decision {
    pub fn ip(&self) -> IpAddr {
        match self {
            Self::Local { ip, .. }
            | Self::Remote { ip, .. }
            | Self::Withdraw { ip, .. }
            | Self::Skip { ip }
            | Self::Retry { ip, .. } => *ip,
        }
    }

    /// The annotation slot change if the decision is carried out successfully.
    ///
    /// Choice: a remote announcement releases this node's slot (remote addresses carry
    /// no announcing annotation; a slot left from an earlier local announcement would
    /// otherwise stay forever).
    pub fn slot_action(&self) -> SlotAction {
        match self {
            Self::Local { interface, .. } => SlotAction::Claim {
                interface: interface.clone(),
            },
            Self::Remote { .. } => SlotAction::Release,
            Self::Withdraw { reason, .. } if reason.releases_slot() => SlotAction::Release,
            Self::Withdraw { .. } | Self::Skip { .. } | Self::Retry { .. } => SlotAction::Keep,
        }
    }

    /// The event after the address was added: `AnnouncingLocal` / `AnnouncingNonLocal`.
    pub fn success_event(&self, node: &str) -> Option<Event> {
        match self {
            Self::Local { ip, interface, .. } => Some(Event::normal(
                event::ANNOUNCING_LOCAL,
                format!("Node {node} announcing {ip} on interface {interface}"),
            )),
            Self::Remote { ip, interface, .. } => Some(Event::normal(
                event::ANNOUNCING_NON_LOCAL,
                format!("Announcing {ip} from node {node} interface {interface}"),
            )),
            _ => None,
        }
    }

    /// The event when adding the address failed: Warning `AnnouncementFailed`.
    pub fn failure_event(&self, node: &str, error: &str) -> Option<Event> {
        match self {
            Self::Local { ip, interface, .. } | Self::Remote { ip, interface, .. } => {
                Some(announcement_failed(node, *ip, interface, error))
            }
            _ => None,
        }
    }
}

pub(super) fn announcement_failed(node: &str, ip: IpAddr, interface: &str, error: &str) -> Event {
    Event::warning(
        event::ANNOUNCEMENT_FAILED,
        format!("Node {node} could not announce {ip} on interface {interface}: {error}"),
    )
}
