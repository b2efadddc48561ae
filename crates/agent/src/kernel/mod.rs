//! The kernel edge of the agent: addresses, links, default routes and
//! change events over rtnetlink.
//!
//! A [`Kernel`] wraps one netlink socket. The socket belongs to the network
//! namespace of the thread that opens it (netlink sockets are bound to the
//! creator's namespace), and its driver task runs on the tokio runtime that
//! is current when [`Kernel::new`] is called.
//!
//! Addresses the agent adds carry an address protocol marker
//! ([`PURELB_ADDR_PROTO`], netlink `IFA_PROTO`, Linux >= 5.18) so that a
//! restarted agent can tell its own addresses ([`Kernel::owned_addresses`])
//! from those an administrator or another program put on the same links.
//!
//! Events: [`EventStream`] yields typed link, address and route changes;
//! [`AddressFollower`] turns them into add/remove deltas of the addresses on
//! interfaces whose names match glob patterns (the BGP speaker's
//! `kube-lb0` import).

mod addr;
mod address_deltas;
mod default_route;
mod events;
pub mod garp;
mod glob;
mod kernel_route;
mod link;
mod route;

pub use addr::{Address, AddressOptions, PURELB_ADDR_PROTO, flags, subnets_of};
pub use address_deltas::{AddressDelta, AddressFollower, FollowedAddress};
pub use events::{EventGroups, EventStream, KernelEvent, RouteChange};
pub use glob::glob_match;
pub use kernel_route::{
    IPV6_DEFAULT_METRIC, KernelRoute, RouteKey, TABLE_DEFAULT, TABLE_LOCAL, TABLE_MAIN,
    effective_metric, normalize_table, table_name,
};
pub use link::{Link, OperState};

use futures::StreamExt;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The netlink socket could not be opened or bound.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// [`Kernel::new`] (or a subscription) was called outside a tokio runtime.
    #[error("no tokio runtime to drive the netlink socket")]
    NoRuntime,
    /// The kernel refused a request; `source` carries the errno.
    #[error("{op}: {source}")]
    Os {
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// The netlink connection is gone (its driver task ended).
    #[error("{op}: the netlink connection is closed")]
    Closed { op: String },
    /// The kernel answered something this code does not understand.
    #[error("{op}: unexpected netlink reply: {detail}")]
    Protocol { op: String, detail: String },
    /// A dump was interrupted by concurrent changes three times in a row.
    #[error("{op}: netlink dump interrupted by concurrent changes (retried)")]
    DumpInterrupted { op: String },
    #[error("no link named {0:?}")]
    LinkNotFound(String),
    #[error("no link with index {0}")]
    LinkIndexNotFound(u32),
    /// `ensure_link` had to create a `dummy` link and the kernel has no such
    /// link type (`CONFIG_DUMMY` off or the module missing).
    #[error(
        "cannot create link {name:?}: this kernel has no \"dummy\" link type ({source}); \
         create a link of that name by other means"
    )]
    DummyUnsupported {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("link {0} has no 6-byte (Ethernet) hardware address")]
    NoMac(u32),
    #[error("invalid address {ip}/{prefix_len}: {reason}")]
    InvalidAddress {
        ip: std::net::IpAddr,
        prefix_len: u8,
        reason: String,
    },
}

impl KernelError {
    /// The errno the kernel answered with, if this is a refusal.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Os { source, .. } | Self::DummyUnsupported { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn from_rtnl(op: impl Into<String>, e: rtnetlink::Error) -> Self {
        let op = op.into();
        match e {
            rtnetlink::Error::NetlinkError(msg) if msg.code.is_some() => Self::Os {
                op,
                source: msg.to_io(),
            },
            rtnetlink::Error::RequestFailed => Self::Closed { op },
            other => Self::Protocol {
                op,
                detail: other.to_string(),
            },
        }
    }
}

/// The result of one netlink dump: what was read, and whether the kernel
/// flagged the dump as interrupted (`NLM_F_DUMP_INTR`: the table changed
/// while it was being read, so entries may be missing or stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump<T> {
    pub items: Vec<T>,
    pub interrupted: bool,
}

/// How often a list call re-runs an interrupted dump before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// A netlink (rtnetlink) connection in the network namespace of the thread
/// that created it. Cheap to clone; the connection closes when the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct Kernel {
    handle: rtnetlink::Handle,
}

impl Kernel {
    /// Opens a netlink socket in the calling thread's network namespace and
    /// spawns its driver on the current tokio runtime.
    pub fn new() -> Result<Self, KernelError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| KernelError::NoRuntime)?;
        let (conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(KernelError::Socket)?;
        rt.spawn(conn);
        Ok(Self { handle })
    }

    /// The underlying rtnetlink handle, for requests this module lacks.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Sends a dump request and collects the inner messages.
    pub(crate) async fn dump(
        &self,
        op: &str,
        request: RouteNetlinkMessage,
    ) -> Result<Dump<RouteNetlinkMessage>, KernelError> {
        dump_with(&self.handle, op, request).await
    }

    /// Sends a request that expects an ACK (or an error).
    pub(crate) async fn ack(
        &self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<(), KernelError> {
        let mut msg = NetlinkMessage::from(request);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        let mut handle = self.handle.clone();
        let mut responses = handle
            .request(msg)
            .map_err(|_| KernelError::Closed { op: op.to_owned() })?;
        while let Some(reply) = responses.next().await {
            if let NetlinkPayload::Error(e) = reply.payload
                && e.code.is_some()
            {
                return Err(KernelError::Os {
                    op: op.to_owned(),
                    source: e.to_io(),
                });
            }
        }
        Ok(())
    }
}

pub(crate) async fn dump_with(
    handle: &rtnetlink::Handle,
    op: &str,
    request: RouteNetlinkMessage,
) -> Result<Dump<RouteNetlinkMessage>, KernelError> {
    let mut msg = NetlinkMessage::from(request);
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut handle = handle.clone();
    let mut responses = handle
        .request(msg)
        .map_err(|_| KernelError::Closed { op: op.to_owned() })?;
    let mut items = Vec::new();
    let mut interrupted = false;
    while let Some(reply) = responses.next().await {
        if reply.header.flags & NLM_F_DUMP_INTR != 0 {
            interrupted = true;
        }
        match reply.payload {
            NetlinkPayload::InnerMessage(m) => items.push(m),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(KernelError::Os {
                    op: op.to_owned(),
                    source: e.to_io(),
                });
            }
            NetlinkPayload::Overrun(_) => {
                return Err(KernelError::Protocol {
                    op: op.to_owned(),
                    detail: "receive buffer overrun during dump".to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(Dump { items, interrupted })
}
