//! Links: lookup, the dummy interface, hardware addresses, state.

use super::{DUMP_ATTEMPTS, Kernel, KernelError};
use futures::TryStreamExt;
use rtnetlink::packet_core::NLM_F_CREATE;
use rtnetlink::packet_core::NLM_F_EXCL;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State as NlState,
};
use rtnetlink::{LinkDummy, LinkMessageBuilder, LinkUnspec};

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;
const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;

/// RFC 2863 operational state (`IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    Other(u8),
}

impl From<NlState> for OperState {
    fn from(s: NlState) -> Self {
        match s {
            NlState::Unknown => Self::Unknown,
            NlState::NotPresent => Self::NotPresent,
            NlState::Down => Self::Down,
            NlState::LowerLayerDown => Self::LowerLayerDown,
            NlState::Testing => Self::Testing,
            NlState::Dormant => Self::Dormant,
            NlState::Up => Self::Up,
            other => Self::Other(u8::from(other)),
        }
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address when it is 6 bytes (Ethernet-like links).
    pub mac: Option<[u8; 6]>,
    /// `IFF_UP`: administratively up.
    pub admin_up: bool,
    /// `IFF_RUNNING`: up and the operational state is `UP` or `UNKNOWN`
    /// (links without carrier reporting, like dummy or ifb, stay `UNKNOWN`).
    pub running: bool,
    /// `IFF_LOWER_UP`: carrier.
    pub lower_up: bool,
    pub loopback: bool,
    pub oper_state: OperState,
    /// The link type (`IFLA_INFO_KIND`: "veth", "dummy", "ifb", ...), absent
    /// for physical devices and loopback.
    pub kind: Option<String>,
    pub mtu: Option<u32>,
}

impl Link {
    /// Usable for traffic: administratively up and running.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.running
    }

    pub(crate) fn from_message(msg: &LinkMessage) -> Option<Self> {
        let mut name = None;
        let mut mac = None;
        let mut oper_state = OperState::Unknown;
        let mut kind = None;
        let mut mtu = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::OperState(s) => oper_state = (*s).into(),
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        let flags = msg.header.flags;
        Some(Self {
            index: msg.header.index,
            name: name?,
            mac,
            admin_up: flags.contains(LinkFlags::Up),
            running: flags.contains(LinkFlags::Running),
            lower_up: flags.contains(LinkFlags::LowerUp),
            loopback: flags.contains(LinkFlags::Loopback),
            oper_state,
            kind,
            mtu,
        })
    }
}

impl Kernel {
    /// Every link, in the kernel's (ifindex) order.
    pub async fn list_links(&self) -> Result<Vec<Link>, KernelError> {
        for _ in 0..DUMP_ATTEMPTS {
            let dump = self
                .dump(
                    "listing links",
                    RouteNetlinkMessage::GetLink(LinkMessage::default()),
                )
                .await?;
            if dump.interrupted {
                continue;
            }
            return Ok(dump
                .items
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => Link::from_message(l),
                    _ => None,
                })
                .collect());
        }
        Err(KernelError::DumpInterrupted {
            op: "listing links".to_owned(),
        })
    }

    /// The link named `name`, or `None` when there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, KernelError> {
        let op = || format!("looking up link {name:?}");
        let mut replies = self.handle.link().get().match_name(name).execute();
        match replies.try_next().await {
            Ok(Some(msg)) => Ok(Link::from_message(&msg)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = KernelError::from_rtnl(op(), e);
                if e.raw_os_error() == Some(ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The link with index `index`, or `None` when there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, KernelError> {
        let mut replies = self.handle.link().get().match_index(index).execute();
        match replies.try_next().await {
            Ok(Some(msg)) => Ok(Link::from_message(&msg)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = KernelError::from_rtnl(format!("looking up link {index}"), e);
                if e.raw_os_error() == Some(ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The 6-byte hardware address of link `index`.
    pub async fn link_mac(&self, index: u32) -> Result<[u8; 6], KernelError> {
        let link = self
            .link_by_index(index)
            .await?
            .ok_or(KernelError::LinkIndexNotFound(index))?;
        link.mac.ok_or(KernelError::NoMac(index))
    }

    /// Sets link `index` administratively up (idempotent).
    pub async fn set_link_up(&self, index: u32) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.ack(
            &format!("setting link {index} up"),
            RouteNetlinkMessage::NewLink(msg),
            0,
        )
        .await
    }

    /// Sets link `index` administratively down (idempotent).
    pub async fn set_link_down(&self, index: u32) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.ack(
            &format!("setting link {index} down"),
            RouteNetlinkMessage::NewLink(msg),
            0,
        )
        .await
    }

    /// The agent's dummy interface: uses an existing link named `name`
    /// whatever its type, otherwise creates a `dummy` link (tolerating a
    /// concurrent creation), and sets it up.
    pub async fn ensure_link(&self, name: &str) -> Result<Link, KernelError> {
        let link = match self.link_by_name(name).await? {
            Some(link) => link,
            None => {
                let msg = LinkMessageBuilder::<LinkDummy>::new(name).build();
                match self
                    .ack(
                        &format!("creating dummy link {name:?}"),
                        RouteNetlinkMessage::NewLink(msg),
                        NLM_F_CREATE | NLM_F_EXCL,
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(EEXIST) => {}
                    Err(KernelError::Os { source, .. })
                        if source.raw_os_error() == Some(EOPNOTSUPP) =>
                    {
                        return Err(KernelError::DummyUnsupported {
                            name: name.to_owned(),
                            source,
                        });
                    }
                    Err(e) => return Err(e),
                }
                self.link_by_name(name)
                    .await?
                    .ok_or_else(|| KernelError::LinkNotFound(name.to_owned()))?
            }
        };
        if link.admin_up {
            return Ok(link);
        }
        self.set_link_up(link.index).await?;
        self.link_by_index(link.index)
            .await?
            .ok_or_else(|| KernelError::LinkNotFound(name.to_owned()))
    }

    /// Deletes the link named `name`. `Ok(false)` when there was none.
    pub async fn delete_link(&self, name: &str) -> Result<bool, KernelError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = KernelError::from_rtnl(format!("deleting link {name:?}"), e);
                if e.raw_os_error() == Some(ENODEV) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}
