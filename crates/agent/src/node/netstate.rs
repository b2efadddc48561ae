//! The node's network state read through the kernel layer, turned into the plain
//! values the pure modules take ([`NodeInterfaces`]), plus the one address call the
//! kernel layer does not offer: deleting one exact address.
//!
//! Addresses carrying the agent's protocol marker (its own VIPs) are left out of
//! [`NodeInterfaces`]: a VIP must never vouch for its own subnet, neither for the
//! local-interface search nor for the lease.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use purelb_api::pool::IpFamily;
use rtnetlink::AddressMessageBuilder;

use crate::kernel::{self, Address, Kernel, KernelError, Link};
use crate::node::links::{AddressFlags, InterfaceInfo, LinkAddress, NodeInterfaces};

/// One read of the node's links, addresses and default routes.
#[derive(Debug, Clone, Default)]
pub struct NetSnapshot {
    pub interfaces: NodeInterfaces,
    pub links: Vec<Link>,
    /// Addresses carrying the agent's protocol marker.
    pub owned: Vec<Address>,
}

impl NetSnapshot {
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Reads links, addresses and the default route of each family.
pub async fn read(kernel: &Kernel) -> Result<NetSnapshot, KernelError> {
    let links = kernel.list_links().await?;
    let dump = kernel.dump_addresses().await?;
    let default_v4 = kernel.default_route_ifindex(IpFamily::V4).await?;
    let default_v6 = kernel.default_route_ifindex(IpFamily::V6).await?;
    let (owned, foreign): (Vec<Address>, Vec<Address>) =
        dump.items.into_iter().partition(Address::is_owned);
    let infos = links
        .iter()
        .map(|l| InterfaceInfo {
            name: l.name.clone(),
            index: l.index,
            up: l.is_up(),
            loopback: l.loopback,
            addresses: foreign
                .iter()
                .filter(|a| a.ifindex == l.index)
                .map(link_address)
                .collect(),
        })
        .collect();
    Ok(NetSnapshot {
        interfaces: NodeInterfaces {
            links: infos,
            default_v4,
            default_v6,
            incomplete: dump.interrupted,
        },
        links,
        owned,
    })
}

fn link_address(a: &Address) -> LinkAddress {
    LinkAddress {
        ip: a.ip,
        prefix_len: a.prefix_len,
        flags: AddressFlags {
            tentative: a.has_flag(kernel::flags::TENTATIVE),
            deprecated: a.has_flag(kernel::flags::DEPRECATED),
            dad_failed: a.has_flag(kernel::flags::DADFAILED),
        },
    }
}

/// Deletes `ip/prefix_len` from link `ifindex` only. `Ok(false)` when it was not
/// there (already gone, or the link vanished).
pub async fn delete_exact(
    kernel: &Kernel,
    ifindex: u32,
    ip: IpAddr,
    prefix_len: u8,
) -> Result<bool, KernelError> {
    let msg = match ip {
        IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(ifindex)
            .address(v4, prefix_len)
            .build(),
        IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(ifindex)
            .address(v6, prefix_len)
            .build(),
    };
    match kernel.handle().address().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = KernelError::from_rtnl(
                format!("removing {ip}/{prefix_len} from link {ifindex}"),
                e,
            );
            match e.raw_os_error() {
                Some(libc::EADDRNOTAVAIL | libc::ENODEV | libc::ENOENT) => Ok(false),
                _ => Err(e),
            }
        }
    }
}
