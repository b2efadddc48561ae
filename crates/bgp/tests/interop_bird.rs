//! Interop with BIRD 2: BIRD (router namespace, AS 65000) peers with our driver (node namespace,
//! AS 65001) for IPv4 and IPv6 unicast; our routes show `BGP.as_path: 65001` and our next hop, and
//! a withdrawal removes them. Needs root (skipped without it, failing under CI=true).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use purelb_bgp::driver::{LocalRoute, spawn_session};
use purelb_bgp::fsm::{SessionConfig, State};
use purelb_bgp::wire::{Ipv4Prefix, Ipv6Prefix, Prefix};
use testbed::netlab::{Bird, Lab, LinkSpec, require_root, wait_for, wait_until};

const T: Duration = Duration::from_secs(60);

const BIRD_CONF: &str = "router id 198.51.100.1;\n\
protocol device {}\n\
protocol bgp purelb {\n\
  local 198.51.100.1 as 65000;\n\
  neighbor 198.51.100.2 as 65001;\n\
  connect retry time 3;\n\
  ipv4 { import all; export none; };\n\
  ipv6 { import all; export none; };\n\
}\n";

/// `show route <prefix> all`, if BIRD has the route (birdc exits 1 with "Network not found"
/// when it has not).
fn route(bird: &Bird, prefix: &str) -> anyhow::Result<Option<String>> {
    match bird.birdc(&format!("show route {prefix} all")) {
        Ok(out) => Ok(out.contains(prefix).then_some(out)),
        Err(e) if format!("{e:#}").contains("Network not found") => Ok(None),
        Err(e) => Err(e),
    }
}

#[test]
fn driver_peers_with_bird() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
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
    let bird = lab.bird(&router, BIRD_CONF)?;

    let v4 = LocalRoute::new(
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 10), 32).expect("prefix")),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
    );
    let v6 = LocalRoute::new(
        Prefix::V6(Ipv6Prefix::new("2001:db8:ff::10".parse()?, 128).expect("prefix")),
        "2001:db8:1::2".parse()?,
    );

    node.run(|| -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut config = SessionConfig::new(65001, 65000, Ipv4Addr::new(198, 51, 100, 2));
            config.connect_retry = Duration::from_secs(3);
            let (tx, rx) = tokio::sync::watch::channel(vec![v4.clone(), v6.clone()]);
            let peer: SocketAddr = "198.51.100.1:179".parse()?;
            let handle = spawn_session(config, peer, None, rx);

            bird.wait_established("purelb", T)?;
            let mut status = handle.subscribe();
            tokio::time::timeout(T, status.wait_for(|s| s.state == State::Established)).await??;

            let out = wait_for(T, "203.0.113.10/32 in BIRD", || {
                route(&bird, "203.0.113.10/32")
            })?;
            assert!(out.contains("BGP.as_path: 65001"), "{out}");
            assert!(out.contains("BGP.next_hop: 198.51.100.2"), "{out}");

            let out6 = wait_for(T, "2001:db8:ff::10/128 in BIRD", || {
                route(&bird, "2001:db8:ff::10/128")
            })?;
            assert!(out6.contains("BGP.as_path: 65001"), "{out6}");
            assert!(out6.contains("2001:db8:1::2"), "{out6}");

            tx.send(vec![v6.clone()])?;
            wait_until(T, "203.0.113.10/32 withdrawn in BIRD", || {
                Ok(route(&bird, "203.0.113.10/32")?.is_none())
            })?;
            assert!(route(&bird, "2001:db8:ff::10/128")?.is_some());

            handle.stop().await;
            wait_until(T, "BIRD session with 198.51.100.2 down", || {
                Ok(!bird
                    .protocol("purelb")?
                    .is_some_and(|p| p.info.starts_with("Established")))
            })?;
            anyhow::Ok(())
        })
    })??;
    Ok(())
}
