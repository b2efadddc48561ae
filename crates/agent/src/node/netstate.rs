//! The node's network state read through the kernel layer, turned into the plain
//! values the pure modules take ([`NodeInterfaces`]).
//!
//! Addresses carrying the agent's protocol marker (its own VIPs) are left out of
//! [`NodeInterfaces`]: a VIP must never vouch for its own subnet, neither for the
//! local-interface search nor for the lease.

use purelb_api::pool::IpFamily;

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
