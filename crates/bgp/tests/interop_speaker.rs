//! The speaker (listeners, dynamic neighbours, TTL, hold timer, reconnects, graceful restart,
//! diffed configuration) against real FRR and GoBGP in the network lab. Needs root (failing
//! under CI=true without it).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use purelb_bgp::fsm::{GracefulRestartConfig, State};
use purelb_bgp::policy::{
    Actions, CommunityAction, CommunityOp, Conditions, ExportPolicy, RouteAction, Statement,
    parse_prefix,
};
use purelb_bgp::rib::LocalRoute;
use purelb_bgp::speaker::{DynamicNeighbors, NeighborConfig, PeerStatus, Speaker, SpeakerConfig};
use purelb_bgp::wire::{Ipv4Prefix, Prefix};
use testbed::netlab::{Frr, LinkSpec, Ns, require_root, wait_until};

const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

fn frr_conf(neighbor_lines: &str) -> String {
    format!(
        "frr defaults traditional\n\
         hostname as65000\n\
         router bgp 65000\n\
         \x20bgp router-id 198.51.100.1\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20neighbor 198.51.100.2 remote-as 65001\n\
         \x20neighbor 198.51.100.2 timers connect 2\n\
         \x20neighbor 198.51.100.2 advertisement-interval 0\n\
         {neighbor_lines}\
         \x20address-family ipv4 unicast\n\
         \x20 neighbor 198.51.100.2 activate\n\
         \x20exit-address-family\n"
    )
}

fn v4(last: u8) -> Prefix {
    Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, last), 32).expect("a prefix"))
}

/// Our speaker: AS 65001, router ID 198.51.100.2, listening on 179.
fn speaker_config() -> SpeakerConfig {
    SpeakerConfig::new(65001, NODE)
}

/// FRR at 198.51.100.1 as an active neighbour that retries every second.
fn frr_neighbor() -> NeighborConfig {
    NeighborConfig {
        connect_retry: Duration::from_secs(1),
        families: vec![purelb_bgp::wire::AfiSafi::IPV4_UNICAST],
        ..NeighborConfig::new(ROUTER, 65000)
    }
}

fn peer(s: &Speaker, ip: IpAddr) -> Option<PeerStatus> {
    s.status().peers.into_iter().find(|p| p.address == ip)
}

async fn wait_state(
    s: &Speaker,
    ip: IpAddr,
    what: &str,
    f: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let deadline = Instant::now() + T;
    loop {
        if let Some(p) = peer(s, ip)
            && f(&p)
        {
            return p;
        }
        assert!(Instant::now() < deadline, "{what}: {:#?}", s.status().peers);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn established(p: &PeerStatus) -> bool {
    p.state == State::Established
}

fn frr_path(frr: &Frr, prefix: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let detail = frr.vtysh_json(&format!("show bgp ipv4 unicast {prefix} json"))?;
    Ok(detail["paths"].as_array().and_then(|a| a.first()).cloned())
}

/// FRR opens the session to us; we accept it through a dynamic-neighbour range and advertise
/// with next-hop-self. An address outside the range gets no session.
#[test]
fn frr_connects_to_a_dynamic_neighbour_range() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let frr = lab.frr(&router, &frr_conf(""))?;
    in_node(&node, || async {
        let mut config = speaker_config();
        config.dynamic_neighbors.push(DynamicNeighbors {
            prefix: parse_prefix("198.51.100.0/28")?,
            template: NeighborConfig::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 65000),
        });
        let speaker = Speaker::start(config).await?;
        speaker.announce(LocalRoute::originated(v4(10)));
        frr.wait_established("198.51.100.2", T)?;
        let p = wait_state(&speaker, ROUTER, "dynamic peer", established).await;
        assert!(p.dynamic);
        let paths = frr.wait_route("203.0.113.10/32", T)?;
        assert_eq!(paths[0]["nexthops"][0]["ip"], "198.51.100.2", "{paths}");
        assert_eq!(paths[0]["path"], "65001", "{paths}");

        // Narrow the range so FRR's address is outside it: the dynamic peer goes.
        let mut narrow = speaker_config();
        narrow.dynamic_neighbors.push(DynamicNeighbors {
            prefix: parse_prefix("198.51.100.8/29")?,
            template: NeighborConfig::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 65000),
        });
        let mut speaker = speaker;
        let report = speaker.apply(narrow).await?;
        assert_eq!(report.removed, vec![ROUTER]);
        wait_until(T, "FRR loses the session", || {
            Ok(frr.bgp_state("198.51.100.2")?.as_deref() != Some("Established"))
        })?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            peer(&speaker, ROUTER).is_none(),
            "refused connections make no peer"
        );
        assert_ne!(
            frr.bgp_state("198.51.100.2")?.as_deref(),
            Some("Established")
        );
        speaker.stop().await;
        Ok(())
    })
}

/// Node — r1 (forwarding) — r2 (FRR, passive, ebgp-multihop 2): TTL 1 (the eBGP default) dies at
/// r1; multihop TTL 2 reaches FRR.
#[test]
fn ebgp_multihop_through_a_router() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = testbed::netlab::Lab::new()?;
    let node = lab.node("n1")?;
    let r1 = lab.router("r1")?;
    let r2 = lab.router("r2")?;
    lab.link(
        &node,
        &r1,
        LinkSpec::new().v4("198.51.100.2/25", "198.51.100.1/25"),
    )?;
    lab.link(
        &r1,
        &r2,
        LinkSpec::new().v4("198.51.100.129/25", "198.51.100.130/25"),
    )?;
    node.add_route("198.51.100.128/25", "198.51.100.1")?;
    r2.add_route("198.51.100.0/25", "198.51.100.129")?;
    r1.sysctl("net.ipv4.ip_forward", "1")?;
    let frr = lab.frr(
        &r2,
        "frr defaults traditional\n\
         router bgp 65000\n\
         \x20bgp router-id 198.51.100.130\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20neighbor 198.51.100.2 remote-as 65001\n\
         \x20neighbor 198.51.100.2 passive\n\
         \x20neighbor 198.51.100.2 ebgp-multihop 2\n\
         \x20neighbor 198.51.100.2 advertisement-interval 0\n",
    )?;
    let far: IpAddr = "198.51.100.130".parse()?;
    in_node(&node, || async {
        let mut config = speaker_config();
        config.listen_port = None;
        config.neighbors.push(NeighborConfig {
            families: vec![purelb_bgp::wire::AfiSafi::IPV4_UNICAST],
            connect_retry: Duration::from_secs(1),
            ..NeighborConfig::new(far, 65000)
        });
        let mut speaker = Speaker::start(config.clone()).await?;
        speaker.announce(LocalRoute::originated(v4(10)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_ne!(
            peer(&speaker, far).map(|p| p.state),
            Some(State::Established)
        );
        assert!(frr.bgp_route("203.0.113.10/32")?.is_none());

        config.neighbors[0].ttl = Some(2);
        let report = speaker.apply(config).await?;
        assert_eq!(report.reset, vec![far]);
        wait_state(&speaker, far, "multihop session", established).await;
        let paths = frr.wait_route("203.0.113.10/32", T)?;
        assert_eq!(paths[0]["nexthops"][0]["ip"], "198.51.100.2", "{paths}");
        speaker.stop().await;
        Ok(())
    })
}

fn nft(ns: &Ns, rules: &str) -> anyhow::Result<()> {
    let path = ns.dir().join("drop.nft");
    std::fs::write(&path, rules)?;
    ns.exec(&["nft", "-f", path.to_str().unwrap_or_default()])?;
    Ok(())
}

/// With every BGP packet dropped (nftables in the node namespace), the 3 s hold timer expires
/// on our side; once packets flow again the session comes back.
#[test]
fn hold_timer_expires_when_packets_are_dropped() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let frr = lab.frr(&router, &frr_conf(" neighbor 198.51.100.2 timers 1 3\n"))?;
    in_node(&node, || async {
        let mut config = speaker_config();
        config.neighbors.push(NeighborConfig {
            hold_time: 3,
            ..frr_neighbor()
        });
        let speaker = Speaker::start(config).await?;
        speaker.announce(LocalRoute::originated(v4(10)));
        let first = wait_state(&speaker, ROUTER, "up", established).await;
        frr.wait_route("203.0.113.10/32", T)?;

        nft(
            &node,
            "table inet bgpdrop {\n\
             chain input { type filter hook input priority -300; policy accept; tcp sport 179 drop; tcp dport 179 drop; }\n\
             chain output { type filter hook output priority -300; policy accept; tcp sport 179 drop; tcp dport 179 drop; }\n\
             }\n",
        )?;
        let cut = Instant::now();
        let down = wait_state(&speaker, ROUTER, "hold timer expiry", |p| !established(p)).await;
        let took = cut.elapsed();
        assert!(
            down.last_error
                .as_deref()
                .is_some_and(|e| e.contains("HoldTimerExpired")),
            "{down:?}"
        );
        assert!(
            took >= Duration::from_secs(2),
            "went down after {took:?}, before the hold time"
        );

        nft(&node, "delete table inet bgpdrop\n")?;
        let again = wait_state(&speaker, ROUTER, "back up", established).await;
        assert_ne!(again.established_at, first.established_at);
        frr.wait_route("203.0.113.10/32", T)?;
        speaker.stop().await;
        Ok(())
    })
}

/// FRR stops and starts again: the speaker reconnects and sends its routes again.
#[test]
fn peer_restart_reconnects_and_readvertises() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let conf = frr_conf("");
    let frr = lab.frr(&router, &conf)?;
    in_node(&node, || async {
        let mut config = speaker_config();
        config.neighbors.push(frr_neighbor());
        let speaker = Speaker::start(config).await?;
        speaker.set_routes([
            LocalRoute::originated(v4(10)),
            LocalRoute::originated(v4(11)),
        ]);
        wait_state(&speaker, ROUTER, "up", established).await;
        frr.wait_route("203.0.113.11/32", T)?;

        frr.stop()?;
        wait_state(&speaker, ROUTER, "down with FRR", |p| !established(p)).await;
        let frr = lab.frr(&router, &conf)?;
        wait_state(&speaker, ROUTER, "reconnected", established).await;
        frr.wait_route("203.0.113.10/32", T)?;
        frr.wait_route("203.0.113.11/32", T)?;
        speaker.stop().await;
        Ok(())
    })
}

/// Graceful restart, our side restarting: the speaker's process dies without a NOTIFICATION;
/// FRR (helper) keeps its routes, marked stale. The restarted speaker (R bit) advertises only
/// 203.0.113.10; its End-of-RIB makes FRR drop the stale 203.0.113.11.
#[test]
fn graceful_restart_keeps_routes_at_frr_until_end_of_rib() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let frr = lab.frr(&router, &frr_conf(" bgp graceful-restart\n"))?;
    let config = |restarting: bool| {
        let mut config = speaker_config();
        config.neighbors.push(NeighborConfig {
            graceful_restart: Some(GracefulRestartConfig {
                restart_time: 120,
                restarting,
                forwarding_preserved: true,
            }),
            ..frr_neighbor()
        });
        config
    };

    // First life: two routes, then a crash (the runtime is torn down, no Cease is sent).
    node.run(|| -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let speaker = runtime.block_on(async {
            let speaker = Speaker::start(config(false)).await?;
            speaker.set_routes([
                LocalRoute::originated(v4(10)),
                LocalRoute::originated(v4(11)),
            ]);
            wait_state(&speaker, ROUTER, "up", established).await;
            anyhow::Ok(speaker)
        })?;
        frr.wait_route("203.0.113.11/32", T)?;
        runtime.shutdown_background();
        drop(speaker);
        Ok(())
    })??;
    wait_until(T, "FRR sees the session drop", || {
        Ok(frr.bgp_state("198.51.100.2")?.as_deref() != Some("Established"))
    })?;
    let kept = frr_path(&frr, "203.0.113.11/32")?;
    assert!(
        kept.as_ref().is_some_and(|p| p["stale"] == true),
        "FRR should keep the route as stale: {kept:?}"
    );

    // Second life: one route; End-of-RIB clears the other.
    in_node(&node, || async {
        let speaker = Speaker::start(config(true)).await?;
        speaker.set_routes([LocalRoute::originated(v4(10))]);
        wait_state(&speaker, ROUTER, "up again", established).await;
        wait_until(T, "stale 203.0.113.11/32 removed after End-of-RIB", || {
            Ok(frr.bgp_route("203.0.113.11/32")?.is_none())
        })?;
        let fresh = frr_path(&frr, "203.0.113.10/32")?;
        assert!(
            fresh.as_ref().is_some_and(|p| p["stale"] != true),
            "{fresh:?}"
        );
        speaker.stop().await;
        Ok(())
    })
}

const GOBGP_CONF: &str = r#"[global.config]
  as = 65002
  router-id = "198.51.100.3"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.51.100.2"
    peer-as = 65001
"#;

/// Peered with FRR and GoBGP at once: an export-policy change for FRR re-sends UPDATEs with no
/// reset anywhere; a hold-time change for FRR resets FRR's session only. GoBGP's session uptime
/// (as GoBGP reports it and as we do) never changes.
#[test]
fn a_change_to_one_neighbour_leaves_the_others_up() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = testbed::netlab::Lab::new()?;
    let node = lab.node("n1")?;
    let r1 = lab.router("r1")?;
    let r2 = lab.router("r2")?;
    let lan = lab.lan("lan")?;
    lan.attach(&node, &["198.51.100.2/24"])?;
    lan.attach(&r1, &["198.51.100.1/24"])?;
    lan.attach(&r2, &["198.51.100.3/24"])?;
    let frr = lab.frr(&r1, &frr_conf(""))?;
    let gobgp = lab.gobgp(&r2, GOBGP_CONF)?;
    let gobgp_ip: IpAddr = "198.51.100.3".parse()?;
    let gobgp_uptime = || -> anyhow::Result<serde_json::Value> {
        let v = gobgp.gobgp_json(&["neighbor", "198.51.100.2"])?;
        let uptime = v["timers"]["state"]["uptime"].clone();
        anyhow::ensure!(!uptime.is_null(), "no uptime in {v}");
        Ok(uptime)
    };
    in_node(&node, || async {
        let mut config = speaker_config();
        config.neighbors.push(frr_neighbor());
        config.neighbors.push(NeighborConfig {
            connect_retry: Duration::from_secs(1),
            families: vec![purelb_bgp::wire::AfiSafi::IPV4_UNICAST],
            ..NeighborConfig::new(gobgp_ip, 65002)
        });
        let mut speaker = Speaker::start(config.clone()).await?;
        speaker.announce(LocalRoute::originated(v4(10)));
        let frr_up = wait_state(&speaker, ROUTER, "FRR up", established)
            .await
            .established_at;
        let gobgp_up = wait_state(&speaker, gobgp_ip, "GoBGP up", established)
            .await
            .established_at;
        frr.wait_route("203.0.113.10/32", T)?;
        gobgp.wait_established("198.51.100.2", T)?;
        let gobgp_since = gobgp_uptime()?;

        // Export policy for FRR only: tag with 65001:777.
        let mut tagged = config.clone();
        tagged.policy.policies.insert(
            "tag".into(),
            vec![Statement {
                name: "all".into(),
                conditions: Conditions::default(),
                actions: Actions {
                    route: RouteAction::Accept,
                    community: Some(CommunityAction {
                        op: CommunityOp::Add,
                        communities: vec![(65001 << 16) | 777],
                        large_communities: Vec::new(),
                    }),
                    ..Actions::default()
                },
            }],
        );
        tagged.neighbors[0].export = ExportPolicy {
            policies: vec!["tag".into()],
            default_action: RouteAction::Accept,
        };
        let report = speaker.apply(tagged.clone()).await?;
        assert_eq!(report.updated, vec![ROUTER]);
        assert!(report.reset.is_empty());
        wait_until(T, "FRR sees the community", || {
            Ok(frr_path(&frr, "203.0.113.10/32")?
                .is_some_and(|p| p["community"]["string"] == "65001:777"))
        })?;
        let frr_now = peer(&speaker, ROUTER).and_then(|p| p.established_at);
        assert_eq!(frr_now, frr_up, "a policy change reset FRR's session");

        // Identity change for FRR only.
        let mut hold = tagged;
        hold.neighbors[0].hold_time = 30;
        let report = speaker.apply(hold).await?;
        assert_eq!(report.reset, vec![ROUTER]);
        let again = wait_state(&speaker, ROUTER, "FRR back", established).await;
        assert_ne!(again.established_at, frr_up);
        assert_eq!(
            peer(&speaker, gobgp_ip).and_then(|p| p.established_at),
            gobgp_up
        );
        assert_eq!(gobgp_uptime()?, gobgp_since, "GoBGP's session was reset");
        assert_eq!(
            gobgp.bgp_state("198.51.100.2")?.as_deref(),
            Some("established")
        );
        speaker.stop().await;
        Ok(())
    })
}

/// Graceful restart, FRR restarting and us the helper: FRR's bgpd is killed; we keep its route,
/// marked stale. The restarted FRR advertises a different prefix; its End-of-RIB removes the
/// stale one.
#[test]
fn helper_keeps_a_restarting_peers_routes_until_its_end_of_rib() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let before = frr_conf(
        " bgp graceful-restart\n\
         \x20address-family ipv4 unicast\n\
         \x20 network 198.51.100.0/24\n\
         \x20exit-address-family\n",
    );
    let after = format!(
        "ip route 203.0.113.128/25 blackhole\n{}",
        frr_conf(
            " bgp graceful-restart\n\
             \x20address-family ipv4 unicast\n\
             \x20 network 203.0.113.128/25\n\
             \x20exit-address-family\n",
        )
    );
    let frr = lab.frr(&router, &before)?;
    let old: Prefix =
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(198, 51, 100, 0), 24).expect("prefix"));
    let new: Prefix =
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 128), 25).expect("prefix"));
    in_node(&node, || async {
        let mut config = speaker_config();
        config.neighbors.push(NeighborConfig {
            graceful_restart: Some(GracefulRestartConfig::default()),
            ..frr_neighbor()
        });
        let speaker = Speaker::start(config).await?;
        wait_state(&speaker, ROUTER, "up", established).await;
        let received = |s: &Speaker| -> Vec<(Prefix, bool)> {
            s.received_routes()
                .into_iter()
                .map(|(_, r)| (r.prefix, r.stale))
                .collect()
        };
        let deadline = Instant::now() + T;
        while received(&speaker) != vec![(old, false)] {
            assert!(Instant::now() < deadline, "{:?}", received(&speaker));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        for p in frr.procs().iter().rev() {
            p.kill()?;
        }
        wait_state(&speaker, ROUTER, "down", |p| !established(p)).await;
        assert_eq!(received(&speaker), vec![(old, true)], "kept, stale");

        let frr = lab.frr(&router, &after)?;
        frr.wait_established("198.51.100.2", T)?;
        let deadline = Instant::now() + T;
        while received(&speaker) != vec![(new, false)] {
            assert!(Instant::now() < deadline, "{:?}", received(&speaker));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        speaker.stop().await;
        Ok(())
    })
}

/// FRR connects over IPv6 to a passive neighbour protected by TCP MD5 (the key sits on our
/// listener), the session carries an IPv4 route (explicit IPv4 next hop) and an IPv6 route
/// (next-hop-self), and a route refresh from FRR is answered with the routes again.
#[test]
fn passive_md5_over_ipv6_with_both_families_and_route_refresh() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let PeerLab { lab, router, node } = peer_lab()?;
    let frr = lab.frr(
        &router,
        "frr defaults traditional\n\
         router bgp 65000\n\
         \x20bgp router-id 198.51.100.1\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20neighbor 2001:db8:1::2 remote-as 65001\n\
         \x20neighbor 2001:db8:1::2 password s3cret\n\
         \x20neighbor 2001:db8:1::2 timers connect 2\n\
         \x20neighbor 2001:db8:1::2 advertisement-interval 0\n\
         \x20address-family ipv4 unicast\n\
         \x20 neighbor 2001:db8:1::2 activate\n\
         \x20exit-address-family\n\
         \x20address-family ipv6 unicast\n\
         \x20 neighbor 2001:db8:1::2 activate\n\
         \x20exit-address-family\n",
    )?;
    let frr_v6: IpAddr = "2001:db8:1::1".parse()?;
    in_node(&node, || async {
        let mut config = speaker_config();
        config.neighbors.push(NeighborConfig {
            passive: true,
            md5_password: Some("s3cret".into()),
            ..NeighborConfig::new(frr_v6, 65000)
        });
        let speaker = Speaker::start(config).await?;
        let mut v4_route = LocalRoute::originated(v4(10));
        v4_route.next_hop = Some(IpAddr::V4(NODE));
        speaker.set_routes([v4_route, v6_route()]);
        frr.wait_established("2001:db8:1::2", T)?;
        wait_state(&speaker, frr_v6, "up over IPv6", established).await;
        let v4_paths = frr.wait_route("203.0.113.10/32", T)?;
        assert_eq!(
            v4_paths[0]["nexthops"][0]["ip"], "198.51.100.2",
            "{v4_paths}"
        );
        let v6_paths = frr.wait_route("2001:db8:ff::10/128", T)?;
        assert_eq!(v6_paths[0]["path"], "65001", "{v6_paths}");

        let updates = |frr: &Frr| -> anyhow::Result<u64> {
            let n = frr.vtysh_json("show bgp neighbors 2001:db8:1::2 json")?;
            Ok(n["2001:db8:1::2"]["messageStats"]["updatesRecv"]
                .as_u64()
                .unwrap_or(0))
        };
        let before = updates(&frr)?;
        frr.vtysh("clear bgp ipv4 unicast 2001:db8:1::2 soft in")?;
        wait_until(
            T,
            "FRR receives the routes again after its ROUTE-REFRESH",
            || Ok(updates(&frr)? > before),
        )?;
        let n = frr.vtysh_json("show bgp neighbors 2001:db8:1::2 json")?;
        assert!(
            n["2001:db8:1::2"]["messageStats"]["routeRefreshSent"]
                .as_u64()
                .unwrap_or(0)
                >= 1,
            "{n}"
        );
        assert_eq!(
            frr.bgp_state("2001:db8:1::2")?.as_deref(),
            Some("Established")
        );
        speaker.stop().await;
        Ok(())
    })
}
