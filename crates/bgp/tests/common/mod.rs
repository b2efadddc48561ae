//! The lab every interop test uses: a router namespace (198.51.100.1, 2001:db8:1::1) that
//! runs the peer daemon, linked to a node namespace (198.51.100.2, 2001:db8:1::2) where our
//! session runs, and the two routes it announces.

#![allow(
    dead_code,
    reason = "each interop test uses a different part of this module"
)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use purelb_bgp::fsm::SessionConfig;
use purelb_bgp::rib::LocalRoute;
use purelb_bgp::wire::{Ipv4Prefix, Ipv6Prefix, Prefix};
use testbed::netlab::{Lab, LinkSpec, Ns};

pub const T: Duration = Duration::from_secs(60);

/// Where the peer daemon listens.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 179);

pub struct PeerLab {
    pub lab: Lab,
    pub router: Ns,
    pub node: Ns,
}

/// A router and a node joined by one link with both families.
pub fn peer_lab() -> anyhow::Result<PeerLab> {
    let lab = Lab::new()?;
    let router = lab.router("r1")?;
    let node = lab.node("n1")?;
    lab.link(
        &router,
        &node,
        LinkSpec::new()
            .v4("198.51.100.1/24", "198.51.100.2/24")
            .v6("2001:db8:1::1/64", "2001:db8:1::2/64"),
    )?;
    Ok(PeerLab { lab, router, node })
}

/// Our side: AS 65001 toward the peer's AS 65000, retrying connects every 3 s.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new(65001, 65000, Ipv4Addr::new(198, 51, 100, 2));
    config.connect_retry = Duration::from_secs(3);
    config
}

/// 203.0.113.10/32 via 198.51.100.2.
pub fn v4_route() -> LocalRoute {
    LocalRoute::new(
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 10), 32).expect("a valid prefix")),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
    )
}

/// 2001:db8:ff::10/128 via 2001:db8:1::2.
pub fn v6_route() -> LocalRoute {
    let address = "2001:db8:ff::10".parse().expect("an IPv6 address");
    LocalRoute::new(
        Prefix::V6(Ipv6Prefix::new(address, 128).expect("a valid prefix")),
        "2001:db8:1::2".parse().expect("an IPv6 address"),
    )
}

/// Runs `body` on a tokio runtime whose threads live in `node`'s namespace, so the
/// sockets our session opens are the node's.
pub fn in_node<F, Fut>(node: &Ns, body: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = anyhow::Result<()>>,
{
    node.run(|| -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(body())
    })?
}
