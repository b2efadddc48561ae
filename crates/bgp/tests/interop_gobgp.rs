//! Interop with GoBGP: gobgpd (router namespace, AS 65000) peers with our driver (node
//! namespace, AS 65001) for IPv4 and IPv6 unicast; our routes land in its RIB with AS path
//! [65001] as an AS_SEQUENCE and our next hop, and a withdrawal removes them. Needs root (skipped
//! without it, failing under CI=true).

mod common;

use common::*;

use purelb_bgp::driver::spawn_session;
use purelb_bgp::fsm::State;
use serde_json::Value;
use testbed::netlab::{Gobgp, require_root, wait_for, wait_until};

const GOBGP_CONF: &str = r#"[global.config]
  as = 65000
  router-id = "198.51.100.1"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.51.100.2"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#;

/// The paths gobgpd holds for `prefix` in its global RIB (`None` if it has none).
fn rib_paths(g: &Gobgp, family: &str, prefix: &str) -> anyhow::Result<Option<Value>> {
    let v = g.gobgp_json(&["global", "rib", "-a", family])?;
    Ok(v.get(prefix)
        .filter(|p| p.as_array().is_some_and(|a| !a.is_empty()))
        .cloned())
}

fn attr(path: &Value, code: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(code))
}

#[test]
fn driver_peers_with_gobgp() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let gobgp = lab.gobgp(&router, GOBGP_CONF)?;

    let v4 = v4_route();
    let v6 = v6_route();

    in_node(&node, || async {
        let config = session_config();
        let (tx, rx) =
            tokio::sync::watch::channel(std::sync::Arc::new(vec![v4.clone(), v6.clone()]));
        let handle = spawn_session(config, PEER, None, rx);

        gobgp.wait_established("198.51.100.2", T)?;
        let mut status = handle.subscribe();
        tokio::time::timeout(T, status.wait_for(|s| s.state == State::Established)).await??;

        let paths = wait_for(T, "203.0.113.10/32 in gobgpd", || {
            rib_paths(&gobgp, "ipv4", "203.0.113.10/32")
        })?;
        let p = &paths[0];
        let as_path = attr(p, 2).unwrap_or_else(|| panic!("no AS_PATH in {p}"));
        let seg = &as_path["as_paths"][0];
        assert_eq!(seg["segment_type"], 2, "AS_SEQUENCE expected: {p}");
        assert_eq!(seg["asns"], serde_json::json!([65001]), "{p}");
        let nh = attr(p, 3).unwrap_or_else(|| panic!("no NEXT_HOP in {p}"));
        assert_eq!(nh["nexthop"], "198.51.100.2", "{p}");

        let paths6 = wait_for(T, "2001:db8:ff::10/128 in gobgpd", || {
            rib_paths(&gobgp, "ipv6", "2001:db8:ff::10/128")
        })?;
        assert!(paths6.to_string().contains("2001:db8:1::2"), "{paths6}");

        tx.send(std::sync::Arc::new(vec![v6.clone()]))?;
        wait_until(T, "203.0.113.10/32 withdrawn in gobgpd", || {
            Ok(rib_paths(&gobgp, "ipv4", "203.0.113.10/32")?.is_none())
        })?;
        assert!(rib_paths(&gobgp, "ipv6", "2001:db8:ff::10/128")?.is_some());

        handle.stop().await;
        wait_until(T, "gobgpd session with 198.51.100.2 down", || {
            Ok(gobgp.bgp_state("198.51.100.2")?.as_deref() != Some("established"))
        })?;
        Ok(())
    })
}
