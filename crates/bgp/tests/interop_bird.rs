//! Interop with BIRD 2: BIRD (router namespace, AS 65000) peers with our driver (node namespace,
//! AS 65001) for IPv4 and IPv6 unicast; our routes show `BGP.as_path: 65001` and our next hop, and
//! a withdrawal removes them. Needs root (skipped without it, failing under CI=true).

mod common;

use common::*;

use purelb_bgp::driver::spawn_session;
use purelb_bgp::fsm::State;
use testbed::netlab::{Bird, require_root, wait_for, wait_until};

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
    let PeerLab { lab, router, node } = peer_lab()?;
    let bird = lab.bird(&router, BIRD_CONF)?;

    let v4 = v4_route();
    let v6 = v6_route();

    in_node(&node, || async {
        let config = session_config();
        let (tx, rx) =
            tokio::sync::watch::channel(std::sync::Arc::new(vec![v4.clone(), v6.clone()]));
        let handle = spawn_session(config, PEER, None, rx);

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

        tx.send(std::sync::Arc::new(vec![v6.clone()]))?;
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
        Ok(())
    })
}
