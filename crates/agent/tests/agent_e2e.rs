//! The node agent end to end: three node namespaces on one LAN, each running the
//! `lbnodeagent` binary against the real test control plane, with the allocator,
//! as issue 5 lists. Needs root (fails instead of skipping under CI=true).
//!
//! Each test builds its own cluster (install namespace, address slot, lab); see
//! `agent_lab/mod.rs`.

mod agent_lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use agent_lab::*;
use anyhow::{Context, Result, ensure};
use serde_json::json;
use testbed::netlab::require_root;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn local_vip_lands_on_exactly_one_node() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    ensure!(
        vip == ip(&c.slot.node_v4(3)),
        "first pool address, got {vip}"
    );
    let (winner, addr) = c.wait_single_holder(vip)?;
    // On the LAN NIC with the node's subnet mask, noprefixroute, finite lifetime.
    ensure!(addr.ifname == c.nodes[winner].lan_if, "{addr:?}");
    ensure!(addr.prefix_len == 28, "{addr:?}");
    ensure!(addr.noprefixroute, "{addr:?}");
    ensure!(!addr.nodad, "{addr:?}");
    let valid = addr.valid_lifetime.unwrap_or(u64::MAX);
    ensure!(
        (250..=300).contains(&valid),
        "valid lifetime {valid}: {addr:?}"
    );
    // The election winner is the lowest SHA-256 of node#ip.
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    let expected = purelb_api::election::winner(vip, names.iter().copied());
    ensure!(
        expected == Some(c.nodes[winner].name.as_str()),
        "winner {expected:?} vs node {winner}"
    );
    // The announcing annotation names it, and the event says so.
    let want = format!("{},{},{vip}", c.nodes[winner].name, c.nodes[winner].lan_if);
    wait_for(TIMEOUT, "announcing annotation", || {
        let svc = c.service("web")?;
        Ok(
            (annotation(&svc, "purelb.io/announcing-IPv4").as_deref() == Some(want.as_str()))
                .then_some(()),
        )
    })?;
    c.wait_event(
        "web",
        "AnnouncingLocal",
        &format!("Node {} announcing {vip}", c.nodes[winner].name),
    )?;
    // Nothing on kube-lb0 for a local address; nothing on the losers.
    ensure!(c.holders(vip)?.len() == 1);
    // Metrics and health of the winner.
    let m = c.metrics(winner)?;
    ensure!(
        m.contains(&format!(
            "purelb_lbnodeagent_announced{{service=\"{}/web\",node=\"{}\",ip=\"{vip}\"}} 1",
            c.ns(),
            c.nodes[winner].name
        )),
        "{m}"
    );
    ensure!(metric_value(&m, "purelb_election_lease_healthy") == Some(1.0));
    ensure!(metric_value(&m, "purelb_election_member_count") == Some(3.0));
    ensure!(
        metric_value(&m, "purelb_election_local_subnet_count") == Some(2.0),
        "{m}"
    );
    ensure!(metric_value(&m, "purelb_lbnodeagent_election_wins_total").unwrap_or(0.0) >= 1.0);
    ensure!(
        metric_line(
            &m,
            "purelb_lbnodeagent_selector_state{state=\"configured\"}"
        ) == Some(1.0),
        "{m}"
    );
    ensure!(c.http_get(winner, "/healthz")?.ends_with("ok"));
    // The lease: subnets, instance, owner.
    let lease = c.lease(winner)?.expect("lease");
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        annotations.get("purelb.io/subnets").map(String::as_str)
            == Some(format!("{},{}", c.slot.lan_v4(), c.slot.lan_v6()).as_str()),
        "{annotations:?}"
    );
    ensure!(
        annotations
            .get("purelb.io/instance")
            .is_some_and(|v| v.ends_with("-uid-1"))
    );
    let owner = &lease.metadata.owner_references.clone().unwrap_or_default()[0];
    ensure!(owner.kind == "Node" && owner.name == c.nodes[winner].name);
    ensure!(c.agent(winner).log().contains("electionWon"));

    // Delete: withdrawn everywhere.
    c.delete_service("web")?;
    c.wait_holders(vip, &[])?;
    ensure!(c.agent(winner).log().contains("withdrawAddress"));
    Ok(())
}

#[test]
fn dual_stack_and_ipv6_only() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    let s = c.slot;
    // A second local group whose addresses skip DAD.
    let nodad_group = format!("{}-nodad", c.ns());
    c.apply_group(
        &nodad_group,
        json!({"local": {"skipIPv6DAD": true, "v6pools": [{
            "pool": format!("{}-{}", s.node_v6(0).replace("::1", "::200"), s.node_v6(0).replace("::1", "::2ff")),
            "subnet": s.lan_v6()}]}}),
    )?;
    c.create_service("dual", &c.local_group(), &["IPv4", "IPv6"], json!({}))?;
    c.create_service("v6only", &nodad_group, &["IPv6"], json!({}))?;
    let dual = c.wait_ingress("dual", 2)?;
    let (v4, v6) = (dual[0], dual[1]);
    ensure!(v4.is_ipv4() && v6.is_ipv6(), "{dual:?}");
    let (w4, a4) = c.wait_single_holder(v4)?;
    let (w6, a6) = c.wait_single_holder(v6)?;
    ensure!(
        a4.prefix_len == 28 && a4.noprefixroute && a4.valid_lifetime.is_some(),
        "{a4:?}"
    );
    // IPv6: the node's /64, deprecated (preferred 0), finite, no prefix route, DAD on.
    ensure!(a6.prefix_len == 64, "{a6:?}");
    ensure!(a6.ifname == c.nodes[w6].lan_if, "{a6:?}");
    ensure!(a6.deprecated && a6.preferred_lifetime == Some(0), "{a6:?}");
    ensure!(a6.valid_lifetime.is_some_and(|v| v <= 300), "{a6:?}");
    ensure!(a6.noprefixroute && !a6.nodad, "{a6:?}");
    // Each family is elected on its own IP, and both annotations name the winners.
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    ensure!(purelb_api::election::winner(v4, names.iter().copied()) == Some(names[w4]));
    ensure!(purelb_api::election::winner(v6, names.iter().copied()) == Some(names[w6]));
    wait_for(TIMEOUT, "both announcing annotations", || {
        let svc = c.service("dual")?;
        let a = annotation(&svc, "purelb.io/announcing-IPv4");
        let b = annotation(&svc, "purelb.io/announcing-IPv6");
        Ok(
            (a == Some(format!("{},{},{v4}", names[w4], c.nodes[w4].lan_if))
                && b == Some(format!("{},{},{v6}", names[w6], c.nodes[w6].lan_if)))
            .then_some(()),
        )
    })?;
    // IPv6-only from a skipIPv6DAD group: nodad.
    let only = c.wait_ingress("v6only", 1)?[0];
    let (_, a) = c.wait_single_holder(only)?;
    ensure!(a.nodad && a.deprecated && a.prefix_len == 64, "{a:?}");
    let svc = c.service("v6only")?;
    ensure!(annotation(&svc, "purelb.io/announcing-IPv4").is_none());
    ensure!(annotation(&svc, "purelb.io/skip-ipv6-dad").as_deref() == Some("true"));
    // Dual to single stack: the address that left the ingress is withdrawn.
    c.patch_service(
        "dual",
        json!({"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}}),
    )?;
    wait_for(TIMEOUT, "the IPv6 address to leave the ingress", || {
        Ok((ingress(&c.service("dual")?) == [v4]).then_some(()))
    })?;
    c.wait_holders(v6, &[])?;
    c.wait_single_holder(v4)?;
    Ok(())
}

#[test]
fn remote_vips_on_every_node_and_etp_local_follows_endpoints() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    c.create_service("remote", &c.remote_group(), &["IPv4", "IPv6"], json!({}))?;
    let ips = c.wait_ingress("remote", 2)?;
    for (ip, mask) in [(ips[0], 30u8), (ips[1], 64u8)] {
        let holders = c.wait_holders(ip, &[0, 1, 2])?;
        for (_, a) in &holders {
            ensure!(a.ifname == DUMMY, "{a:?}");
            ensure!(a.prefix_len == mask, "aggregation mask: {a:?}");
            ensure!(
                !a.noprefixroute && a.valid_lifetime.is_none(),
                "permanent with a prefix route: {a:?}"
            );
        }
    }
    let svc = c.service("remote")?;
    ensure!(annotation(&svc, "purelb.io/announcing-IPv4").is_none());
    ensure!(annotation(&svc, "purelb.io/announcing-IPv6").is_none());
    c.wait_event(
        "remote",
        "AnnouncingNonLocal",
        &format!("Announcing {} from node", ips[0]),
    )?;
    // The aggregated prefix route is on kube-lb0 (what BGP advertises).
    let routes = c.nodes[0].ns.ip(&["-4", "route", "show", "dev", DUMMY])?;
    ensure!(routes.contains("/30"), "{routes}");

    // externalTrafficPolicy: Local: only nodes with a ready endpoint.
    c.create_service(
        "local-etp",
        &c.remote_group(),
        &["IPv4"],
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )?;
    let vip = c.wait_ingress("local-etp", 1)?[0];
    std::thread::sleep(Duration::from_millis(500));
    c.wait_holders(vip, &[])?;
    c.set_endpoints("local-etp", &[(0, true)])?;
    c.wait_holders(vip, &[0])?;
    c.set_endpoints("local-etp", &[(1, true), (2, false)])?;
    c.wait_holders(vip, &[1])?;
    c.set_endpoints("local-etp", &[(1, true), (2, true), (0, false)])?;
    c.wait_holders(vip, &[1, 2])?;
    // A remote address never rewrites the policy.
    let svc = c.service("local-etp")?;
    ensure!(
        svc.spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local")
    );

    // A local address with ETP Local is switched to Cluster by the winner.
    c.create_service(
        "local-to-cluster",
        &c.local_group(),
        &["IPv4"],
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )?;
    let lvip = c.wait_ingress("local-to-cluster", 1)?[0];
    c.wait_single_holder(lvip)?;
    wait_for(TIMEOUT, "externalTrafficPolicy Cluster", || {
        let svc = c.service("local-to-cluster")?;
        Ok((svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Cluster"))
        .then_some(()))
    })?;
    c.wait_event("local-to-cluster", "LocalOverride", "setting to Cluster")?;
    Ok(())
}

#[test]
fn failover_on_graceful_stop_and_on_sigkill() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut c = Cluster::new(Options::default())?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    let (first, _) = c.wait_single_holder(vip)?;

    // Graceful: the VIP is withdrawn, then the lease deleted; the next winner takes
    // over within a second or so.
    let started = Instant::now();
    c.stop_agent(first)?;
    let (second, _) = c.wait_single_holder(vip)?;
    let graceful = started.elapsed();
    ensure!(second != first);
    ensure!(
        c.lease(first)?.is_none(),
        "the stopped agent's lease is deleted"
    );
    let log = c.nodes[first].ns.dir().join("agent-1.log");
    let log = std::fs::read_to_string(log)?;
    ensure!(
        log.contains("withdrawAddress") && log.contains("withdrawAll"),
        "{}",
        tail(&log, 20)
    );
    ensure!(
        graceful < Duration::from_secs(5),
        "graceful failover took {graceful:?}"
    );
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    let rest: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, n)| *n)
        .collect();
    ensure!(purelb_api::election::winner(vip, rest.iter().copied()) == Some(names[second]));
    wait_for(TIMEOUT, "the annotation to follow", || {
        let a = annotation(&c.service("web")?, "purelb.io/announcing-IPv4");
        Ok(
            a.is_some_and(|a| a.starts_with(&format!("{},", names[second])))
                .then_some(()),
        )
    })?;
    let (_, steal) = c.wait_event(
        "web",
        "AnnounceSlotSteal",
        &format!("took announcement of {vip} from node {}", names[first]),
    )?;
    ensure!(
        steal.starts_with(&format!("Node {} ", names[second])),
        "{steal}"
    );
    let m = c.metrics(second)?;
    let steals = format!(
        "purelb_lbnodeagent_announce_slot_steal_total{{from=\"{}\",to=\"{}\"}}",
        names[first], names[second]
    );
    ensure!(metric_line(&m, &steals) == Some(1.0), "{m}");

    // SIGKILL: nothing is withdrawn; the last node takes over when the lease expires.
    let third = (0..3)
        .find(|i| *i != first && *i != second)
        .expect("a third node");
    let started = Instant::now();
    c.kill_agent(second)?;
    wait_for(
        Duration::from_secs(25),
        "the third node to take over",
        || {
            let h = c.holders(vip)?;
            Ok(h.iter().any(|(i, _)| *i == third).then_some(()))
        },
    )
    .with_context(|| c.logs())?;
    let killed = started.elapsed();
    ensure!(
        killed < Duration::from_secs(12),
        "SIGKILL failover took {killed:?}"
    );
    eprintln!("failover: graceful {graceful:?}, SIGKILL {killed:?}");
    Ok(())
}

/// Polls every node for `ip` until stopped; returns the largest number of nodes
/// seen holding it at once, and when.
struct HolderWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Watched>>>,
}

/// The most nodes seen holding the address at once, and the changes seen.
type Watched = (usize, Vec<String>);

impl HolderWatch {
    fn start(c: &Cluster, ip: IpAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let nss: Vec<testbed::netlab::Ns> = c.nodes.iter().map(|n| n.ns.clone()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || -> Result<Watched> {
            let mut max = 0;
            let mut timeline = Vec::new();
            let mut last = Vec::new();
            let t0 = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let mut now = Vec::new();
                for (i, ns) in nss.iter().enumerate() {
                    if addresses(ns)?.iter().any(|a| a.ip == ip) {
                        now.push(i);
                    }
                }
                max = max.max(now.len());
                if now != last {
                    timeline.push(format!("{:?}: {now:?}", t0.elapsed()));
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((max, timeline))
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Result<Watched> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => anyhow::bail!("holder watch panicked"),
        }
    }
}

#[test]
fn fencing_withdraws_before_another_node_takes_over() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    let (winner, _) = c.wait_single_holder(vip)?;
    let watch = HolderWatch::start(&c, vip);
    let cut_at = Instant::now();
    c.nodes[winner].mgmt.cut()?;
    // Withdrawn by the fenced node before anyone else may take it ...
    wait_for(
        Duration::from_secs(20),
        "another node to take the VIP",
        || {
            let h = c.holders(vip)?;
            Ok((h.len() == 1 && h[0].0 != winner).then_some(()))
        },
    )
    .with_context(|| c.logs())?;
    let moved = cut_at.elapsed();
    let m = c.metrics(winner)?;
    ensure!(
        metric_value(&m, "purelb_election_lease_healthy") == Some(0.0),
        "{m}"
    );
    ensure!(
        metric_value(&m, "purelb_election_fenced_total") == Some(1.0),
        "{m}"
    );
    ensure!(c.agent(winner).log().contains("fenced"));
    // ... and after the link is back, it rejoins and takes the VIP back (it is the
    // hash winner), again without overlap.
    c.nodes[winner].mgmt.restore()?;
    wait_for(
        Duration::from_secs(40),
        "the original winner to hold the VIP again",
        || {
            let h = c.holders(vip)?;
            Ok((h.len() == 1 && h[0].0 == winner).then_some(()))
        },
    )
    .with_context(|| c.logs())?;
    std::thread::sleep(Duration::from_millis(500));
    let (max, timeline) = watch.finish()?;
    ensure!(
        max <= 1,
        "two nodes held {vip} at once: {timeline:?}\n{}",
        c.logs()
    );
    eprintln!("fencing: moved after {moved:?}; timeline {timeline:?}");
    ensure!(
        moved >= Duration::from_secs(7),
        "moved too early ({moved:?}): the lease was still live"
    );
    Ok(())
}

#[test]
fn garp_and_unsolicited_na_on_the_wire() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options {
        local: json!({"localInterface": "default", "dummyInterface": DUMMY,
            "garpConfig": {"enabled": true, "initialDelay": "50ms", "count": 2, "interval": "100ms"}}),
        ..Options::default()
    })?;
    let sock = capture(&c.peer, &c.peer_if)?;
    c.create_service("web", &c.local_group(), &["IPv4", "IPv6"], json!({}))?;
    let ips = c.wait_ingress("web", 2)?;
    let (IpAddr::V4(v4), IpAddr::V6(v6)) = (ips[0], ips[1]) else {
        anyhow::bail!("{ips:?}");
    };
    let (w4, _) = c.wait_single_holder(ips[0])?;
    let (w6, _) = c.wait_single_holder(ips[1])?;
    let mac4 = mac_of(&c.nodes[w4].ns, &c.nodes[w4].lan_if)?;
    let mac6 = mac_of(&c.nodes[w6].ns, &c.nodes[w6].lan_if)?;
    let mut arp = Vec::new();
    let mut na = Vec::new();
    collect(
        &sock,
        Duration::from_secs(5),
        |f| {
            if f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[28..32] == v4.octets()
                && f[38..42] == v4.octets()
            {
                arp.push(f.to_vec());
            } else if f.len() >= 78
                && f[12..14] == [0x86, 0xdd]
                && f[20] == 58
                && f[54] == 136
                && f[62..78] == v6.octets()
            {
                na.push(f.to_vec());
            }
            arp.len() >= 4 && na.len() >= 2
        },
        1,
    );
    ensure!(
        arp.len() == 4,
        "2 GARPs = 2 requests + 2 replies, got {}",
        arp.len()
    );
    for f in &arp {
        ensure!(f[0..6] == [0xff; 6], "broadcast");
        ensure!(
            f[6..12] == mac4 && f[22..28] == mac4,
            "from the winner's MAC"
        );
    }
    let ops: Vec<u8> = arp.iter().map(|f| f[21]).collect();
    ensure!(
        ops.iter().filter(|o| **o == 1).count() == 2
            && ops.iter().filter(|o| **o == 2).count() == 2,
        "{ops:?}"
    );
    ensure!(na.len() == 2, "2 unsolicited NAs, got {}", na.len());
    for f in &na {
        ensure!(f[0..6] == [0x33, 0x33, 0, 0, 0, 1], "to ff02::1");
        ensure!(f[6..12] == mac6, "from the winner's MAC");
        ensure!(f[21] == 255, "hop limit 255");
        ensure!(f[38..54] == std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
        ensure!(
            f[58] & 0xe0 == 0x20,
            "override set, solicited and router clear"
        );
        ensure!(
            f[78..80] == [2, 1] && f[80..86] == mac6,
            "target link-layer address option"
        );
    }
    let m4 = c.metrics(w4)?;
    ensure!(
        metric_value(&m4, "purelb_lbnodeagent_garp_sent_total") == Some(2.0),
        "{m4}"
    );
    let m6 = c.metrics(w6)?;
    ensure!(
        metric_value(&m6, "purelb_lbnodeagent_na_sent_total") == Some(2.0),
        "{m6}"
    );
    // No GARP from the losers, nor for remote addresses.
    for (i, _) in c
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != w4 && *i != w6)
    {
        let m = c.metrics(i)?;
        ensure!(
            metric_value(&m, "purelb_lbnodeagent_garp_sent_total") == Some(0.0),
            "{m}"
        );
    }
    Ok(())
}

#[test]
fn restart_keeps_addresses_without_a_flap() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut c = Cluster::new(Options::default())?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    c.create_service("remote", &c.remote_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    let rvip = c.wait_ingress("remote", 1)?[0];
    let (w, _) = c.wait_single_holder(vip)?;
    c.wait_holders(rvip, &[0, 1, 2])?;
    let ns = c.nodes[w].ns.clone();
    let lan_if = c.nodes[w].lan_if.clone();
    let monitor = ns.spawn("monitor", &["ip", "-o", "monitor", "address"])?;
    std::thread::sleep(Duration::from_millis(300));

    c.kill_agent(w)?;
    // While the agent is down: an address with the agent's marker that no Service
    // wants (a leftover), and one without it (the admin's).
    let leftover: IpAddr = c.slot.node_v4(9).parse()?; // .10
    let foreign: IpAddr = c.slot.node_v4(10).parse()?; // .11
    {
        let lan_if = lan_if.clone();
        ns.run(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let k = purelb_agent::kernel::Kernel::new()?;
                let link = k.link_by_name(&lan_if).await?.context("lan link")?;
                k.add_address(
                    link.index,
                    leftover,
                    28,
                    &purelb_agent::kernel::AddressOptions {
                        no_prefix_route: true,
                        ..Default::default()
                    },
                )
                .await?;
                anyhow::Ok(())
            })
        })??;
    }
    ns.add_addr(&lan_if, &format!("{foreign}/28"))?;
    c.start_agent(w)?;
    wait_for(TIMEOUT, "the restarted agent to be ready", || {
        c.ensure_agents_running()?;
        Ok(c.http_get(w, "/readyz")?.ends_with("ok").then_some(()))
    })?;
    // Past the join hold-down and a few reconcile passes.
    std::thread::sleep(Duration::from_secs(2));
    let after = addresses(&ns)?;
    ensure!(
        after.iter().any(|a| a.ip == vip && a.ifname == lan_if),
        "local VIP kept: {after:?}"
    );
    ensure!(
        after.iter().any(|a| a.ip == rvip && a.ifname == DUMMY),
        "remote VIP kept: {after:?}"
    );
    ensure!(
        !after.iter().any(|a| a.ip == leftover),
        "unwanted leftover removed: {after:?}"
    );
    ensure!(
        after.iter().any(|a| a.ip == foreign),
        "foreign address untouched: {after:?}"
    );
    ensure!(c.holders(vip)?.len() == 1, "nobody else took it");
    let log = monitor.log();
    for ip in [vip, rvip] {
        let pattern = format!(" {ip}/");
        let deleted: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("Deleted") && l.contains(&pattern))
            .collect();
        ensure!(
            deleted.is_empty(),
            "{ip} was deleted during the restart: {deleted:?}\n{log}"
        );
    }
    ensure!(
        log.lines()
            .any(|l| l.starts_with("Deleted") && l.contains(&format!(" {leftover}/"))),
        "{log}"
    );
    let m = c.metrics(w)?;
    ensure!(
        metric_value(&m, "purelb_lbnodeagent_address_withdrawals_total") == Some(1.0),
        "{m}"
    );
    Ok(())
}

#[test]
fn invalid_regex_warns_and_keeps_the_last_good_config() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options {
        local: json!({"localInterface": "^eth", "dummyInterface": DUMMY}),
        ..Options::default()
    })?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    let (w, _) = c.wait_single_holder(vip)?;
    c.apply_agent(
        "default",
        json!({"localInterface": "eth(", "dummyInterface": DUMMY}),
    )?;
    let (kind, message) =
        c.wait_event("default", "ConfigError", "keeps its previous configuration")?;
    ensure!(kind == "Warning", "{kind}: {message}");
    ensure!(message.contains("eth("), "{message}");
    // Still announced, still configured, subnets still advertised.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(c.holders(vip)?.iter().map(|(i, _)| *i).collect::<Vec<_>>() == [w]);
    for i in 0..3 {
        let m = c.metrics(i)?;
        ensure!(
            metric_line(
                &m,
                "purelb_lbnodeagent_selector_state{state=\"configured\"}"
            ) == Some(1.0),
            "{m}"
        );
        ensure!(
            metric_value(&m, "purelb_election_local_subnet_count") == Some(2.0),
            "{m}"
        );
    }
    // A new Service is still announced with the kept configuration.
    c.create_service("web2", &c.local_group(), &["IPv4"], json!({}))?;
    let vip2 = c.wait_ingress("web2", 1)?[0];
    c.wait_single_holder(vip2)?;
    Ok(())
}

#[test]
fn link_down_drops_subnets_and_the_vip_moves() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    let (w, _) = c.wait_single_holder(vip)?;
    // Carrier loss on the winner's NIC: the bridge port of its veth goes down.
    let peer_index = {
        let out = c.nodes[w]
            .ns
            .ip(&["-j", "link", "show", "dev", &c.nodes[w].lan_if])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["link_index"].as_u64().context("veth peer index")?
    };
    let lan = c.lan.ns().clone();
    let out = lan.ip(&["-j", "link", "show"])?;
    let links: serde_json::Value = serde_json::from_str(&out)?;
    let port = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifindex"].as_u64() == Some(peer_index))
        .and_then(|l| l["ifname"].as_str())
        .context("bridge port")?
        .to_owned();
    lan.ip(&["link", "set", &port, "down"])?;
    let (to, _) = c.wait_single_holder(vip)?;
    let (to, _) = if to == w {
        // Still the old holder for a moment: wait for the move.
        wait_for(TIMEOUT, "the VIP to move", || {
            let h = c.holders(vip)?;
            Ok((h.len() == 1 && h[0].0 != w).then(|| h[0].clone()))
        })
        .with_context(|| c.logs())?
    } else {
        (to, c.holders(vip)?[0].1.clone())
    };
    ensure!(to != w);
    wait_for(TIMEOUT, "the lease to drop the subnets", || {
        let lease = c.lease(w)?.context("lease")?;
        let subnets = lease
            .metadata
            .annotations
            .unwrap_or_default()
            .get("purelb.io/subnets")
            .cloned();
        Ok((subnets.as_deref() == Some("")).then_some(()))
    })?;
    // Carrier back: subnets return and the VIP goes back to the hash winner.
    lan.ip(&["link", "set", &port, "up"])?;
    wait_for(TIMEOUT, "the VIP back on the original winner", || {
        let h = c.holders(vip)?;
        Ok((h.len() == 1 && h[0].0 == w).then_some(()))
    })
    .with_context(|| c.logs())?;
    Ok(())
}
