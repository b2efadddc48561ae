//! Typed rtnetlink change events (what `ip monitor` shows).

use super::route::RouteInfo;
use super::{Address, Kernel, KernelError, Link};
use futures::Stream;
use futures::channel::mpsc::{TryRecvError, UnboundedReceiver};
use purelb_api::pool::{IpFamily, IpNet, network_of};
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::sys::SocketAddr;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Which kernel notifications an [`EventStream`] subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventGroups {
    /// `RTNLGRP_LINK`.
    pub links: bool,
    /// `RTNLGRP_IPV4_IFADDR` and `RTNLGRP_IPV6_IFADDR`.
    pub addresses: bool,
    /// `RTNLGRP_IPV4_ROUTE` and `RTNLGRP_IPV6_ROUTE`.
    pub routes: bool,
}

impl Default for EventGroups {
    /// Links and addresses, no routes.
    fn default() -> Self {
        Self {
            links: true,
            addresses: true,
            routes: false,
        }
    }
}

impl EventGroups {
    pub fn all() -> Self {
        Self {
            links: true,
            addresses: true,
            routes: true,
        }
    }
}

/// A route that appeared or went away (any table; routes the kernel
/// clones into its cache are not reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub family: IpFamily,
    pub table: u32,
    pub destination: IpNet,
    /// Output interface (first next hop's for multipath routes).
    pub ifindex: Option<u32>,
    pub metric: u32,
    /// `true` for ordinary (unicast) routes; `false` for local, broadcast,
    /// unreachable, blackhole and the like.
    pub unicast: bool,
}

/// One change reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// `RTM_NEWADDR`: an address was added — or an existing one changed
    /// (lifetimes refreshed by a replace, flags such as TENTATIVE cleared).
    AddressAdded(Address),
    /// `RTM_DELADDR`.
    AddressRemoved(Address),
    /// A link appeared, or its name or up/down state changed
    /// (`up` = administratively up and running, see [`Link::is_up`]).
    LinkChanged {
        ifindex: u32,
        name: String,
        up: bool,
        admin_up: bool,
    },
    /// `RTM_DELLINK`.
    LinkRemoved { ifindex: u32, name: String },
    /// `RTM_NEWROUTE` (only with [`EventGroups::routes`]).
    RouteAdded(RouteChange),
    /// `RTM_DELROUTE` (only with [`EventGroups::routes`]).
    RouteRemoved(RouteChange),
    /// The socket's receive buffer overflowed and notifications were lost:
    /// state derived from events must be rebuilt from a fresh dump.
    Overrun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkState {
    name: String,
    up: bool,
    admin_up: bool,
}

type Unsolicited = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A subscription to kernel notifications, as a [`Stream`] of
/// [`KernelEvent`]s. Its socket lives in the network namespace of the
/// thread that opened it. The stream ends if the socket fails.
///
/// Link events are deduplicated: `LinkChanged` comes only when a link is
/// new to the stream or its name or up/down state changed (the kernel
/// sends `RTM_NEWLINK` for many other reasons). Address events carry the
/// link name when the stream knows it (links it has seen, seeded with a
/// dump at open).
pub struct EventStream {
    rx: Unsolicited,
    /// A second socket for dumps. Requests must not go out on the
    /// subscribed socket: netlink-proto matches replies by sequence number
    /// and sender port (0 for the kernel), and a notification caused by
    /// another socket's request carries that request's sequence number, so
    /// it could be taken for a reply to ours and lost as an event.
    kernel: Kernel,
    links: HashMap<u32, LinkState>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("links", &self.links.len())
            .finish()
    }
}

impl EventStream {
    /// Subscribes to `groups` in the calling thread's network namespace
    /// (needs a tokio runtime) and seeds link names with a link dump.
    pub async fn open(groups: EventGroups) -> Result<Self, KernelError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| KernelError::NoRuntime)?;
        let mut g = Vec::new();
        if groups.links {
            g.push(MulticastGroup::Link);
        }
        if groups.addresses {
            g.extend([MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr]);
        }
        if groups.routes {
            g.extend([MulticastGroup::Ipv4Route, MulticastGroup::Ipv6Route]);
        }
        let (conn, _handle, rx) =
            rtnetlink::new_multicast_connection(&g).map_err(KernelError::Socket)?;
        rt.spawn(conn);
        let mut stream = Self {
            rx,
            kernel: Kernel::new()?,
            links: HashMap::new(),
        };
        stream.reseed_links().await?;
        Ok(stream)
    }

    /// A request socket in the same network namespace as the
    /// subscription (for the dumps that go with the events).
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Re-reads every link (after an [`KernelEvent::Overrun`]), returning
    /// them; the stream's name cache is replaced.
    pub async fn reseed_links(&mut self) -> Result<Vec<Link>, KernelError> {
        let dump = self
            .kernel
            .dump(
                "listing links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )
            .await?;
        let links: Vec<Link> = dump
            .items
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Link::from_message(l),
                _ => None,
            })
            .collect();
        self.links = links
            .iter()
            .map(|l| {
                (
                    l.index,
                    LinkState {
                        name: l.name.clone(),
                        up: l.is_up(),
                        admin_up: l.admin_up,
                    },
                )
            })
            .collect();
        Ok(links)
    }

    /// The name of link `ifindex` as last seen by this stream.
    pub fn link_name(&self, ifindex: u32) -> Option<&str> {
        self.links.get(&ifindex).map(|l| l.name.as_str())
    }

    /// The next event if one is already queued, without waiting:
    /// `Ok(Some(ev))`, `Ok(None)` when nothing is queued, `Err(())` when the
    /// stream has ended.
    #[allow(clippy::result_unit_err)]
    pub fn try_next_now(&mut self) -> Result<Option<KernelEvent>, ()> {
        loop {
            match self.rx.try_recv() {
                Ok((msg, _)) => {
                    if let Some(ev) = self.convert(msg) {
                        return Ok(Some(ev));
                    }
                }
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Closed) => return Err(()),
            }
        }
    }

    fn convert(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
        match msg.payload {
            NetlinkPayload::Overrun(_) => Some(KernelEvent::Overrun),
            NetlinkPayload::InnerMessage(inner) => self.convert_inner(inner),
            _ => None,
        }
    }

    fn convert_inner(&mut self, msg: RouteNetlinkMessage) -> Option<KernelEvent> {
        match msg {
            RouteNetlinkMessage::NewAddress(a) => {
                let name = self.link_name(a.header.index);
                Address::from_message(&a, name).map(KernelEvent::AddressAdded)
            }
            RouteNetlinkMessage::DelAddress(a) => {
                let name = self.link_name(a.header.index);
                Address::from_message(&a, name).map(KernelEvent::AddressRemoved)
            }
            RouteNetlinkMessage::NewLink(l) => {
                let link = Link::from_message(&l)?;
                let state = LinkState {
                    name: link.name.clone(),
                    up: link.is_up(),
                    admin_up: link.admin_up,
                };
                if self.links.get(&link.index) == Some(&state) {
                    return None;
                }
                self.links.insert(link.index, state);
                let up = link.is_up();
                Some(KernelEvent::LinkChanged {
                    ifindex: link.index,
                    name: link.name,
                    up,
                    admin_up: link.admin_up,
                })
            }
            RouteNetlinkMessage::DelLink(l) => {
                let index = l.header.index;
                let known = self.links.remove(&index).map(|s| s.name);
                let name = Link::from_message(&l).map(|l| l.name).or(known)?;
                Some(KernelEvent::LinkRemoved {
                    ifindex: index,
                    name,
                })
            }
            RouteNetlinkMessage::NewRoute(r) => route_change(&r).map(KernelEvent::RouteAdded),
            RouteNetlinkMessage::DelRoute(r) => route_change(&r).map(KernelEvent::RouteRemoved),
            _ => None,
        }
    }
}

fn route_change(msg: &rtnetlink::packet_route::route::RouteMessage) -> Option<RouteChange> {
    let r = RouteInfo::from_message(msg)?;
    if r.cloned {
        return None;
    }
    let dst = r.destination.unwrap_or(match r.family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    Some(RouteChange {
        family: r.family,
        table: r.table,
        destination: network_of(dst, r.prefix_len).ok()?,
        ifindex: r.oif,
        metric: r.metric,
        unicast: r.kind == RouteType::Unicast,
    })
}

impl Stream for EventStream {
    type Item = KernelEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<KernelEvent>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.rx).poll_next(cx) {
                Poll::Ready(Some((msg, _))) => {
                    if let Some(ev) = this.convert(msg) {
                        return Poll::Ready(Some(ev));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
