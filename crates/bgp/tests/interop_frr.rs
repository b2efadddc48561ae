//! Interop with FRR: our driver (in a node namespace, AS 65001) peers with FRR (router namespace,
//! AS 65000), advertises an IPv4 and an IPv6 route, withdraws one, and stops. Needs root (skipped
//! without it, failing under CI=true).

mod common;

use common::*;

use purelb_bgp::driver::spawn_session;
use purelb_bgp::rib::LocalRoute;
use testbed::netlab::{require_root, wait_until};

const FRR_CONF: &str = "frr defaults traditional\n\
hostname as65000\n\
router bgp 65000\n\
 bgp router-id 198.51.100.1\n\
 no bgp ebgp-requires-policy\n\
 neighbor 198.51.100.2 remote-as 65001\n\
 neighbor 198.51.100.2 timers connect 5\n\
 neighbor 198.51.100.2 advertisement-interval 0\n\
 address-family ipv4 unicast\n\
  neighbor 198.51.100.2 activate\n\
 exit-address-family\n\
 address-family ipv6 unicast\n\
  neighbor 198.51.100.2 activate\n\
 exit-address-family\n";

fn best(paths: &serde_json::Value) -> &serde_json::Value {
    paths
        .as_array()
        .and_then(|a| a.iter().find(|p| p["bestpath"] == true).or(a.first()))
        .expect("route has paths")
}

#[test]
fn driver_peers_with_frr_and_advertises_routes() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let frr = lab.frr(&router, FRR_CONF)?;

    let v4 = LocalRoute {
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![(65001, 1, 2)],
        ..v4_route()
    };
    let v6 = v6_route();

    in_node(&node, || async {
        let config = session_config();
        let (tx, rx) =
            tokio::sync::watch::channel(std::sync::Arc::new(vec![v4.clone(), v6.clone()]));
        let handle = spawn_session(config, PEER, None, rx);

        frr.wait_established("198.51.100.2", T)?;

        // IPv4: AS path a sequence, next hop, communities.
        let paths = frr.wait_route("203.0.113.10/32", T)?;
        let b = best(&paths);
        assert_eq!(b["path"], "65001", "AS path of {b}");
        assert_eq!(b["nexthops"][0]["ip"], "198.51.100.2", "{b}");
        let table = frr.vtysh_json("show bgp ipv4 unicast json")?;
        assert!(table["routes"]["203.0.113.10/32"].is_array(), "{table}");
        let detail = frr.vtysh_json("show bgp ipv4 unicast 203.0.113.10/32 json")?;
        let p = &detail["paths"][0];
        assert_eq!(p["aspath"]["string"], "65001", "{detail}");
        assert_eq!(
            p["aspath"]["segments"][0]["type"], "as-sequence",
            "{detail}"
        );
        assert_eq!(p["community"]["string"], "65001:100", "{detail}");
        assert_eq!(p["largeCommunity"]["string"], "65001:1:2", "{detail}");

        // IPv6 via MP_REACH.
        let table6 = frr.vtysh_json("show bgp ipv6 unicast json")?;
        let paths6 = frr.wait_route("2001:db8:ff::10/128", T)?;
        let b6 = best(&paths6);
        assert_eq!(b6["path"], "65001", "{b6} {table6}");

        assert_eq!(handle.state().prefixes_sent, 2);

        // Withdraw the IPv4 route.
        tx.send(std::sync::Arc::new(vec![v6.clone()]))?;
        wait_until(T, "203.0.113.10/32 withdrawn in FRR", || {
            Ok(frr.bgp_route("203.0.113.10/32")?.is_none())
        })?;
        assert!(frr.bgp_route("2001:db8:ff::10/128")?.is_some());

        // Stop: FRR sees the session go down.
        handle.stop().await;
        wait_until(T, "FRR session with 198.51.100.2 down", || {
            Ok(frr.bgp_state("198.51.100.2")?.as_deref() != Some("Established"))
        })?;
        assert!(frr.bgp_route("2001:db8:ff::10/128")?.is_none());
        Ok(())
    })
}
