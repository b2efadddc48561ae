//! The node agent end to end on the real cluster: the lbnodeagent DaemonSet and
//! the allocator Deployment from the project's manifests, on four kubelets (see
//! `on_cluster`). Local addresses land on exactly one node with the right
//! attributes and signals, remote ones on every node, ETP Local follows the
//! endpoints, and the agent fails over, fences, announces with GARP and NA,
//! restarts without a flap, keeps its last good configuration and follows its
//! links. Needs root (fails instead of skipping under CI=true).

mod on_cluster;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use on_cluster::*;
use serde_json::json;
use testbed::cluster::Cluster;
use testbed::netlab::{capture, collect, mac_of};

/// The names of the nodes `nodes` (indices).
fn names(c: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|i| c.nodes[*i].name.clone()).collect()
}

/// The node the election gives `ip` to among `candidates`, as every agent computes it.
fn expected_winner(c: &Cluster, ip: IpAddr, candidates: &[usize]) -> Option<usize> {
    let names = names(c, candidates);
    let winner = purelb_api::election::winner(ip, names.iter().map(String::as_str))?;
    c.nodes.iter().position(|n| n.name == winner)
}

/// That the agent on `node` logged `what` about `ip`.
fn ensure_logged(c: &Cluster, node: &str, what: &str, ip: IpAddr) -> Result<()> {
    let log = agent_log(c, node)?;
    ensure!(
        log.lines()
            .any(|l| l.contains(what) && l.contains(&ip.to_string())),
        "no {what} about {ip} in {node}'s log:\n{}",
        tail(&log, 20)
    );
    Ok(())
}

/// The first address of a pool `first-last`.
fn first_of(pool: &str) -> IpAddr {
    pool.split('-')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("a pool range")
}

#[test]
fn local_vip_lands_on_exactly_one_node() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (c, k, ns, pools) = together("local")?;
    let n = ns.name.as_str();
    k.create_service(n, "web", &pools.local, &["IPv4"], json!({}))?;
    let vip = k.wait_ingress(n, "web", 1)?[0];
    ensure!(
        vip == first_of(&pools.local_v4_pool()),
        "first pool address, got {vip}"
    );
    let (winner, addr) = wait_single_holder(&c, vip)?;
    let winner_name = c.nodes[winner].name.clone();
    let lan_if = lan1_interface(&c, winner)?;
    // On the LAN NIC with the LAN's mask, noprefixroute, finite lifetime.
    ensure!(addr.ifname == lan_if, "{addr:?}");
    ensure!(addr.prefix_len == 24, "{addr:?}");
    ensure!(addr.noprefixroute, "{addr:?}");
    ensure!(!addr.nodad, "{addr:?}");
    let valid = addr.valid_lifetime.unwrap_or(u64::MAX);
    ensure!(
        (250..=300).contains(&valid),
        "valid lifetime {valid}: {addr:?}"
    );
    // The election winner is the lowest SHA-256 of node#ip among the nodes on the LAN.
    ensure!(
        expected_winner(&c, vip, &lan1_nodes(&c)?) == Some(winner),
        "winner {winner_name}"
    );
    // The announcing annotation names it, and the event says so.
    let want = format!("{winner_name},{lan_if},{vip}");
    wait_for(TIMEOUT, "announcing annotation", || {
        let svc = k.service(n, "web")?;
        Ok(
            (annotation(&svc, "purelb.io/announcing-IPv4").as_deref() == Some(want.as_str()))
                .then_some(()),
        )
    })?;
    k.wait_event(
        n,
        "web",
        "AnnouncingLocal",
        &format!("Node {winner_name} announcing {vip}"),
    )?;
    // Nothing on kube-lb0 for a local address; nothing on the losers.
    ensure!(holders(&c, vip)?.len() == 1);
    // Metrics and health of the winner, read from the host as Prometheus would.
    let m = metrics(&c, winner)?;
    ensure!(
        m.contains(&format!(
            "purelb_lbnodeagent_announced{{service=\"{n}/web\",node=\"{winner_name}\",ip=\"{vip}\"}} 1"
        )),
        "{m}"
    );
    ensure!(metric_value(&m, "purelb_election_lease_healthy") == Some(1.0));
    ensure!(
        metric_value(&m, "purelb_election_member_count") == Some(c.nodes.len() as f64),
        "{m}"
    );
    // The lab's LBNodeAgent selects the default-route interface (lan1 on the
    // node with two NICs).
    let subnets = default_route_subnets(&c.nodes[winner].ns)?;
    ensure!(
        metric_value(&m, "purelb_election_local_subnet_count") == Some(subnets.len() as f64),
        "{subnets:?}: {m}"
    );
    ensure!(metric_value(&m, "purelb_lbnodeagent_election_wins_total").unwrap_or(0.0) >= 1.0);
    ensure!(
        metric_line(
            &m,
            "purelb_lbnodeagent_selector_state{state=\"configured\"}"
        ) == Some(1.0),
        "{m}"
    );
    ensure!(agent_http(&c, winner, "/healthz")?.ends_with("ok"));
    // The lease: subnets, instance (the agent pod's uid), owner.
    let lease = k.lease(&winner_name)?.context("lease")?;
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    let advertised: std::collections::BTreeSet<String> = annotations
        .get("purelb.io/subnets")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    ensure!(advertised == subnets, "{annotations:?} vs {subnets:?}");
    let pod = agent_pod_on(&c, &winner_name)?;
    ensure!(
        annotations.get("purelb.io/instance") == Some(&pod_uid(&c, &pod)?),
        "{annotations:?}"
    );
    let owner = &lease.metadata.owner_references.clone().unwrap_or_default()[0];
    ensure!(owner.kind == "Node" && owner.name == winner_name);
    ensure_logged(&c, &winner_name, "electionWon", vip)?;

    // Delete: withdrawn everywhere.
    k.delete_service(n, "web")?;
    wait_holders(&c, vip, &[])?;
    ensure_logged(&c, &winner_name, "withdrawAddress", vip)?;
    Ok(())
}

#[test]
fn dual_stack_and_ipv6_only() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (c, k, ns, pools) = together("dual")?;
    let n = ns.name.as_str();
    // A second local group whose addresses skip DAD.
    let nodad_group = format!("{n}-nodad");
    ns.group(
        &k,
        &nodad_group,
        json!({"local": {"skipIPv6DAD": true, "v6pools": [{
            "pool": format!("2001:db8:250::2:{s:x}00-2001:db8:250::2:{s:x}ff", s = ns.slot),
            "subnet": LAN1_V6}]}}),
    )?;
    k.create_service(n, "dual", &pools.local, &["IPv4", "IPv6"], json!({}))?;
    k.create_service(n, "v6only", &nodad_group, &["IPv6"], json!({}))?;
    let dual = k.wait_ingress(n, "dual", 2)?;
    let (v4, v6) = (dual[0], dual[1]);
    ensure!(v4.is_ipv4() && v6.is_ipv6(), "{dual:?}");
    let (w4, a4) = wait_single_holder(&c, v4)?;
    let (w6, a6) = wait_single_holder(&c, v6)?;
    ensure!(
        a4.prefix_len == 24 && a4.noprefixroute && a4.valid_lifetime.is_some(),
        "{a4:?}"
    );
    // IPv6: the LAN's /64, deprecated (preferred 0), finite, no prefix route, DAD on.
    ensure!(a6.prefix_len == 64, "{a6:?}");
    ensure!(a6.ifname == lan1_interface(&c, w6)?, "{a6:?}");
    ensure!(a6.deprecated && a6.preferred_lifetime == Some(0), "{a6:?}");
    ensure!(a6.valid_lifetime.is_some_and(|v| v <= 300), "{a6:?}");
    ensure!(a6.noprefixroute && !a6.nodad, "{a6:?}");
    // Each family is elected on its own IP, and both annotations name the winners.
    let lan1 = lan1_nodes(&c)?;
    ensure!(expected_winner(&c, v4, &lan1) == Some(w4));
    ensure!(expected_winner(&c, v6, &lan1) == Some(w6));
    let (if4, if6) = (lan1_interface(&c, w4)?, lan1_interface(&c, w6)?);
    wait_for(TIMEOUT, "both announcing annotations", || {
        let svc = k.service(n, "dual")?;
        let a = annotation(&svc, "purelb.io/announcing-IPv4");
        let b = annotation(&svc, "purelb.io/announcing-IPv6");
        Ok((a == Some(format!("{},{if4},{v4}", c.nodes[w4].name))
            && b == Some(format!("{},{if6},{v6}", c.nodes[w6].name)))
        .then_some(()))
    })?;
    // IPv6-only from a skipIPv6DAD group: nodad.
    let only = k.wait_ingress(n, "v6only", 1)?[0];
    let (_, a) = wait_single_holder(&c, only)?;
    ensure!(a.nodad && a.deprecated && a.prefix_len == 64, "{a:?}");
    let svc = k.service(n, "v6only")?;
    ensure!(annotation(&svc, "purelb.io/announcing-IPv4").is_none());
    ensure!(annotation(&svc, "purelb.io/skip-ipv6-dad").as_deref() == Some("true"));
    // Dual to single stack: the address that left the ingress is withdrawn.
    k.patch_service(
        n,
        "dual",
        json!({"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}}),
    )?;
    wait_for(TIMEOUT, "the IPv6 address to leave the ingress", || {
        Ok((ingress(&k.service(n, "dual")?) == [v4]).then_some(()))
    })?;
    wait_holders(&c, v6, &[])?;
    wait_single_holder(&c, v4)?;
    Ok(())
}

#[test]
fn remote_vips_on_every_node_and_etp_local_follows_endpoints() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (c, k, ns, pools) = together("remote")?;
    let n = ns.name.as_str();
    let every_node: Vec<usize> = (0..c.nodes.len()).collect();
    k.create_service(n, "remote", &pools.remote, &["IPv4", "IPv6"], json!({}))?;
    let ips = k.wait_ingress(n, "remote", 2)?;
    for (ip, mask) in [(ips[0], 30u8), (ips[1], 64u8)] {
        let holders = wait_holders(&c, ip, &every_node)?;
        for (_, a) in &holders {
            ensure!(a.ifname == DUMMY, "{a:?}");
            ensure!(a.prefix_len == mask, "aggregation mask: {a:?}");
            ensure!(
                !a.noprefixroute && a.valid_lifetime.is_none(),
                "permanent with a prefix route: {a:?}"
            );
        }
    }
    let svc = k.service(n, "remote")?;
    ensure!(annotation(&svc, "purelb.io/announcing-IPv4").is_none());
    ensure!(annotation(&svc, "purelb.io/announcing-IPv6").is_none());
    k.wait_event(
        n,
        "remote",
        "AnnouncingNonLocal",
        &format!("Announcing {} from node", ips[0]),
    )?;
    // The aggregated prefix route is on kube-lb0 (what BGP advertises).
    let IpAddr::V4(v4) = ips[0] else {
        anyhow::bail!("{ips:?}");
    };
    let net30 = std::net::Ipv4Addr::from(u32::from(v4) & !3);
    let routes = c.nodes[0].ns.ip(&["-4", "route", "show", "dev", DUMMY])?;
    ensure!(routes.contains(&format!("{net30}/30")), "{routes}");

    // externalTrafficPolicy: Local: only nodes with a ready endpoint.
    let node = |i: usize| c.nodes[i].name.as_str();
    k.create_service(
        n,
        "local-etp",
        &pools.remote,
        &["IPv4"],
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )?;
    let vip = k.wait_ingress(n, "local-etp", 1)?[0];
    std::thread::sleep(Duration::from_millis(500));
    wait_holders(&c, vip, &[])?;
    k.set_endpoints(n, "local-etp", &[(node(0), true)])?;
    wait_holders(&c, vip, &[0])?;
    k.set_endpoints(n, "local-etp", &[(node(1), true), (node(2), false)])?;
    wait_holders(&c, vip, &[1])?;
    k.set_endpoints(
        n,
        "local-etp",
        &[(node(1), true), (node(2), true), (node(0), false)],
    )?;
    wait_holders(&c, vip, &[1, 2])?;
    // A remote address never rewrites the policy.
    let svc = k.service(n, "local-etp")?;
    ensure!(
        svc.spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local")
    );

    // A local address with ETP Local is switched to Cluster by the winner.
    k.create_service(
        n,
        "local-to-cluster",
        &pools.local,
        &["IPv4"],
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )?;
    let lvip = k.wait_ingress(n, "local-to-cluster", 1)?[0];
    wait_single_holder(&c, lvip)?;
    wait_for(TIMEOUT, "externalTrafficPolicy Cluster", || {
        let svc = k.service(n, "local-to-cluster")?;
        Ok((svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Cluster"))
        .then_some(()))
    })?;
    k.wait_event(n, "local-to-cluster", "LocalOverride", "setting to Cluster")?;
    Ok(())
}

/// A local IPv4 Service `web` in `ns`; its address once exactly one node
/// holds it, and that node.
fn local_web(c: &Cluster, k: &Kube, ns: &str, pools: &TestPools) -> Result<(IpAddr, usize)> {
    k.create_service(ns, "web", &pools.local, &["IPv4"], json!({}))?;
    let vip = k.wait_ingress(ns, "web", 1)?[0];
    let (holder, _) = wait_single_holder(c, vip)?;
    Ok((vip, holder))
}

/// Waits until exactly one node holds `ip` and it is not `not`; returns it.
fn wait_moved_off(c: &Cluster, ip: IpAddr, not: usize, timeout: Duration) -> Result<usize> {
    wait_for(
        timeout,
        &format!("{ip} on one node other than {not}"),
        || {
            let h = holders(c, ip)?;
            Ok((h.len() == 1 && h[0].0 != not).then(|| h[0].0))
        },
    )
    .with_context(|| agent_logs_about(c, &ip.to_string()))
}

/// Waits until exactly `node` holds `ip` (after its agent is back).
fn wait_back_on(c: &Cluster, ip: IpAddr, node: usize, timeout: Duration) -> Result<()> {
    wait_for(timeout, &format!("{ip} back on node {node} alone"), || {
        let h = holders(c, ip)?;
        Ok((h.len() == 1 && h[0].0 == node).then_some(()))
    })
    .with_context(|| agent_logs_about(c, &ip.to_string()))
}

fn steals(m: &str, from: &str, to: &str) -> f64 {
    metric_line(
        m,
        &format!("purelb_lbnodeagent_announce_slot_steal_total{{from=\"{from}\",to=\"{to}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn failover_on_graceful_stop_and_on_sigkill() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Alone: it stops agents, and counts steals.
    let (c, k, ns, pools) = alone("failover")?;
    let n = ns.name.as_str();
    let (vip, first) = local_web(&c, &k, n, &pools)?;
    let lan1 = lan1_nodes(&c)?;
    let rest: Vec<usize> = lan1.iter().copied().filter(|i| *i != first).collect();
    let next = expected_winner(&c, vip, &rest).context("a next winner")?;
    let (first_name, next_name) = (c.nodes[first].name.clone(), c.nodes[next].name.clone());
    let steals_before = steals(&metrics(&c, next)?, &first_name, &next_name);

    // Graceful: the agent pod is deleted; its agent withdraws the VIP, then
    // deletes its lease; the next winner takes over within a second or so.
    let pod = agent_pod_on(&c, &first_name)?;
    let instance = pod_uid(&c, &pod)?;
    let log = LogFollower::start(&c, &pod)?;
    let started = Instant::now();
    c.kubectl(&["-n", INSTALL_NS, "delete", "pod", &pod, "--wait=false"])?;
    let second = wait_moved_off(&c, vip, first, TIMEOUT)?;
    let graceful = started.elapsed();
    ensure!(second != first);
    // The stopped agent's lease is deleted (or already the replacement's,
    // which the DaemonSet starts at once), not left to expire.
    wait_for(LEASE_DURATION / 2, "the stopped agent's lease gone", || {
        Ok((lease_instance(&c, &first_name)? != instance).then_some(()))
    })?;
    ensure!(
        graceful < Duration::from_secs(5),
        "graceful failover took {graceful:?}"
    );
    ensure!(second == next, "{} took it", c.nodes[second].name);
    wait_for(TIMEOUT, "the annotation to follow", || {
        let a = annotation(&k.service(n, "web")?, "purelb.io/announcing-IPv4");
        Ok(a.is_some_and(|a| a.starts_with(&format!("{next_name},")))
            .then_some(()))
    })?;
    let (_, steal) = k.wait_event(
        n,
        "web",
        "AnnounceSlotSteal",
        &format!("took announcement of {vip} from node {first_name}"),
    )?;
    ensure!(steal.starts_with(&format!("Node {next_name} ")), "{steal}");
    let m = metrics(&c, next)?;
    ensure!(
        steals(&m, &first_name, &next_name) == steals_before + 1.0,
        "{m}"
    );
    let log = log.finish(TIMEOUT);
    ensure!(
        log.contains("withdrawAddress") && log.contains("withdrawAll"),
        "{}",
        tail(&log, 20)
    );
    // The replacement agent joins and, as the hash winner, takes the VIP back.
    wait_agents_rolled_out(&c)?;
    wait_back_on(&c, vip, first, TIMEOUT)?;

    // SIGKILL while the kubelet cannot restart it: nothing is withdrawn; the
    // next winner takes over when the lease expires.
    c.nodes[first].freeze_kubelet(true)?;
    let started = Instant::now();
    let killed = kill_agent(&c, &first_name).and_then(|()| {
        wait_for(
            Duration::from_secs(25),
            "the next winner to take over",
            || {
                let h = holders(&c, vip)?;
                Ok(h.iter().any(|(i, _)| *i == next).then_some(()))
            },
        )
        .with_context(|| agent_logs_about(&c, &vip.to_string()))
    });
    let killed_after = started.elapsed();
    c.nodes[first].freeze_kubelet(false)?;
    killed?;
    ensure!(
        killed_after < Duration::from_secs(12),
        "SIGKILL failover took {killed_after:?}"
    );
    eprintln!("failover: graceful {graceful:?}, SIGKILL {killed_after:?}");
    // Steady again before the next test: the restarted agent holds the VIP.
    wait_agents_rolled_out(&c)?;
    wait_back_on(&c, vip, first, TIMEOUT)?;
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
    let (c, k, ns, pools) = alone("fencing")?;
    let n = ns.name.as_str();
    let (vip, winner) = local_web(&c, &k, n, &pools)?;
    let fenced_before =
        metric_value(&metrics(&c, winner)?, "purelb_election_fenced_total").unwrap_or(0.0);
    let watch = HolderWatch::start(&c, vip);
    // When the lease was last renewed: nobody may take the VIP before it expires.
    let renewed = k
        .lease(&c.nodes[winner].name)?
        .and_then(|l| l.spec?.renew_time)
        .context("the winner's lease renewal time")?
        .0
        .as_microsecond();
    // The node loses the API server (its management link), not the LAN.
    let cut_at = Instant::now();
    c.nodes[winner].mgmt.cut()?;
    let result = (|| -> Result<Duration> {
        // Withdrawn by the fenced node before anyone else may take it ...
        wait_moved_off(&c, vip, winner, Duration::from_secs(20))?;
        let moved = cut_at.elapsed();
        let moved_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros();
        let expired = renewed + LEASE_DURATION.as_micros() as i64;
        ensure!(
            moved_at as i64 >= expired,
            "moved {} ms before the lease expired: it was still live",
            (expired - moved_at as i64) / 1000
        );
        let m = metrics(&c, winner)?;
        ensure!(
            metric_value(&m, "purelb_election_lease_healthy") == Some(0.0),
            "{m}"
        );
        ensure!(
            metric_value(&m, "purelb_election_fenced_total") == Some(fenced_before + 1.0),
            "{m}"
        );
        Ok(moved)
    })();
    c.nodes[winner].mgmt.restore()?;
    let moved = result?;
    // The agent's log, once the API server reaches its node again.
    let log = wait_for(TIMEOUT, "the fenced agent's log", || {
        Ok(agent_log(&c, &c.nodes[winner].name).ok())
    })?;
    ensure!(log.contains("fenced"), "{}", tail(&log, 20));
    // ... and after the link is back, it rejoins and takes the VIP back (it is the
    // hash winner), again without overlap.
    wait_back_on(&c, vip, winner, Duration::from_secs(40))?;
    std::thread::sleep(Duration::from_millis(500));
    let (max, timeline) = watch.finish()?;
    ensure!(max <= 1, "two nodes held {vip} at once: {timeline:?}");
    eprintln!("fencing: moved after {moved:?}; timeline {timeline:?}");
    Ok(())
}

/// Merges `local` into the spec.local of the LBNodeAgent `default` (a JSON
/// merge patch: `null` removes a field).
fn patch_agent_config(c: &Cluster, local: serde_json::Value) -> Result<()> {
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "patch",
        "lbnodeagent",
        "default",
        "--type=merge",
        "-p",
        &json!({"spec": {"local": local}}).to_string(),
    ])?;
    // The agents watch it; give every one of them the change before going on.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

#[test]
fn garp_and_unsolicited_na_on_the_wire() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Alone: it changes the cluster's LBNodeAgent and counts every agent's GARPs.
    let (c, k, ns, pools) = alone("garp")?;
    let n = ns.name.as_str();
    patch_agent_config(
        &c,
        json!({"garpConfig": {"enabled": true, "initialDelay": "50ms", "count": 2, "interval": "100ms"}}),
    )?;
    let result = (|| -> Result<()> {
        let counts = |name: &str| -> Result<Vec<f64>> {
            (0..c.nodes.len())
                .map(|i| Ok(metric_value(&metrics(&c, i)?, name).unwrap_or(0.0)))
                .collect()
        };
        let garps_before = counts("purelb_lbnodeagent_garp_sent_total")?;
        let nas_before = counts("purelb_lbnodeagent_na_sent_total")?;
        let router = c.router()?.ns().clone();
        let sock = capture(&router, "eth1")?;
        k.create_service(n, "web", &pools.local, &["IPv4", "IPv6"], json!({}))?;
        let ips = k.wait_ingress(n, "web", 2)?;
        let (IpAddr::V4(v4), IpAddr::V6(v6)) = (ips[0], ips[1]) else {
            anyhow::bail!("{ips:?}");
        };
        let (w4, _) = wait_single_holder(&c, ips[0])?;
        let (w6, _) = wait_single_holder(&c, ips[1])?;
        let mac4 = mac_of(&c.nodes[w4].ns, &lan1_interface(&c, w4)?)?;
        let mac6 = mac_of(&c.nodes[w6].ns, &lan1_interface(&c, w6)?)?;
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
        ensure!(
            na.len() == 2,
            "2 unsolicited NAs, got {}: {:02x?} (winner {w6}, {mac6:02x?})",
            na.len(),
            na.iter()
                .map(|f| (&f[0..6], &f[6..12], f[58]))
                .collect::<Vec<_>>()
        );
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
        let garps = counts("purelb_lbnodeagent_garp_sent_total")?;
        let nas = counts("purelb_lbnodeagent_na_sent_total")?;
        ensure!(
            garps[w4] - garps_before[w4] == 2.0,
            "GARPs {garps_before:?} -> {garps:?}, winner {w4}"
        );
        ensure!(
            nas[w6] - nas_before[w6] == 2.0,
            "NAs {nas_before:?} -> {nas:?}, winner {w6}"
        );
        // No GARP from the losers, nor for remote addresses.
        for i in (0..c.nodes.len()).filter(|i| *i != w4 && *i != w6) {
            ensure!(
                garps[i] == garps_before[i],
                "node {i}: GARPs {garps_before:?} -> {garps:?}"
            );
        }
        Ok(())
    })();
    patch_agent_config(
        &c,
        json!({"garpConfig": {"enabled": true, "initialDelay": null, "count": null, "interval": null}}),
    )?;
    result
}

#[test]
fn restart_keeps_addresses_without_a_flap() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (c, k, ns, pools) = alone("restart")?;
    let n = ns.name.as_str();
    k.create_service(n, "web", &pools.local, &["IPv4"], json!({}))?;
    k.create_service(n, "remote", &pools.remote, &["IPv4"], json!({}))?;
    let vip = k.wait_ingress(n, "web", 1)?[0];
    let rvip = k.wait_ingress(n, "remote", 1)?[0];
    let (w, _) = wait_single_holder(&c, vip)?;
    wait_holders(&c, rvip, &(0..c.nodes.len()).collect::<Vec<_>>())?;
    let node = c.nodes[w].name.clone();
    let node_ns = c.nodes[w].ns.clone();
    let lan_if = lan1_interface(&c, w)?;
    let monitor = node_ns.spawn("monitor", &["ip", "-o", "monitor", "address"])?;
    std::thread::sleep(Duration::from_millis(300));

    // The agent killed, and kept down by a frozen kubelet while the test
    // adds, on its NIC, an address with the agent's marker that no Service
    // wants (a leftover), and one without it (the admin's). Two addresses of
    // the test's own pool nobody was given.
    let IpAddr::V4(first) = vip else {
        anyhow::bail!("{vip}");
    };
    let leftover = IpAddr::V4((u32::from(first) + 4).into());
    let foreign = IpAddr::V4((u32::from(first) + 5).into());
    c.nodes[w].freeze_kubelet(true)?;
    let down = (|| -> Result<()> {
        kill_agent(&c, &node)?;
        let nic = lan_if.clone();
        node_ns.block_on(|| async move {
            let kernel = purelb_agent::kernel::Kernel::new()?;
            let link = kernel.link_by_name(&nic).await?.context("lan link")?;
            kernel
                .add_address(
                    link.index,
                    leftover,
                    24,
                    &purelb_agent::kernel::AddressOptions {
                        no_prefix_route: true,
                        ..Default::default()
                    },
                )
                .await?;
            anyhow::Ok(())
        })?;
        node_ns.add_addr(&lan_if, &format!("{foreign}/24"))
    })();
    // The kubelet restarts the agent's container.
    c.nodes[w].freeze_kubelet(false)?;
    down?;
    wait_for(TIMEOUT, "the restarted agent to be ready", || {
        Ok(agent_http(&c, w, "/readyz")
            .is_ok_and(|r| r.ends_with("ok"))
            .then_some(()))
    })?;
    // Past the join hold-down and a few reconcile passes.
    std::thread::sleep(Duration::from_secs(2));
    let after = addresses(&node_ns)?;
    let _ = node_ns.ip(&["addr", "del", &format!("{foreign}/24"), "dev", &lan_if]);
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
    ensure!(holders(&c, vip)?.len() == 1, "nobody else took it");
    let log = monitor.log();
    let _ = monitor.kill();
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
    let m = metrics(&c, w)?;
    ensure!(
        metric_value(&m, "purelb_lbnodeagent_address_withdrawals_total") == Some(1.0),
        "{m}"
    );
    wait_agents_rolled_out(&c)?;
    Ok(())
}

#[test]
fn invalid_regex_warns_and_keeps_the_last_good_config() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Alone: it changes the cluster's LBNodeAgent.
    let (c, k, ns, pools) = alone("regex")?;
    let n = ns.name.as_str();
    patch_agent_config(&c, json!({"localInterface": "^eth"}))?;
    let result = (|| -> Result<()> {
        k.create_service(n, "web", &pools.local, &["IPv4"], json!({}))?;
        let vip = k.wait_ingress(n, "web", 1)?[0];
        let (w, _) = wait_single_holder(&c, vip)?;
        patch_agent_config(&c, json!({"localInterface": "eth("}))?;
        let (kind, message) = k.wait_event(
            INSTALL_NS,
            "default",
            "ConfigError",
            "keeps its previous configuration",
        )?;
        ensure!(kind == "Warning", "{kind}: {message}");
        ensure!(message.contains("eth("), "{message}");
        // Still announced, still configured, subnets still advertised.
        std::thread::sleep(Duration::from_secs(2));
        ensure!(
            holders(&c, vip)?
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>()
                == [w]
        );
        for (i, node) in c.nodes.iter().enumerate() {
            let m = metrics(&c, i)?;
            ensure!(
                metric_line(
                    &m,
                    "purelb_lbnodeagent_selector_state{state=\"configured\"}"
                ) == Some(1.0),
                "{m}"
            );
            ensure!(
                metric_value(&m, "purelb_election_local_subnet_count")
                    // `^eth`, the kept configuration, selects every LAN NIC.
                    == Some(node_subnets(&node.ns)?.len() as f64),
                "{m}"
            );
        }
        // A new Service is still announced with the kept configuration.
        k.create_service(n, "web2", &pools.local, &["IPv4"], json!({}))?;
        let vip2 = k.wait_ingress(n, "web2", 1)?[0];
        wait_single_holder(&c, vip2)?;
        Ok(())
    })();
    patch_agent_config(&c, json!({"localInterface": "default"}))?;
    result
}

#[test]
fn link_down_drops_subnets_and_the_vip_moves() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (c, k, ns, pools) = alone("linkdown")?;
    let n = ns.name.as_str();
    let (vip, w) = local_web(&c, &k, n, &pools)?;
    let node = c.nodes[w].name.clone();
    // Carrier loss on the winner's lan1 NIC: the bridge port of its veth goes down.
    let lan_if = lan1_interface(&c, w)?;
    let peer_index = {
        let out = c.nodes[w].ns.ip(&["-j", "link", "show", "dev", &lan_if])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["link_index"].as_u64().context("veth peer index")?
    };
    let lan = c.lans.get("lan1").context("no lan1")?.ns().clone();
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
    let result = (|| -> Result<()> {
        let to = wait_moved_off(&c, vip, w, TIMEOUT)?;
        ensure!(to != w);
        wait_for(TIMEOUT, "the lease to drop lan1's subnets", || {
            let lease = k.lease(&node)?.context("lease")?;
            let subnets = lease
                .metadata
                .annotations
                .unwrap_or_default()
                .get("purelb.io/subnets")
                .cloned()
                .unwrap_or_default();
            Ok((!subnets.split(',').any(|s| s == LAN1_V4 || s == LAN1_V6)).then_some(()))
        })?;
        Ok(())
    })();
    // Carrier back: subnets return and the VIP goes back to the hash winner.
    lan.ip(&["link", "set", &port, "up"])?;
    result?;
    wait_back_on(&c, vip, w, TIMEOUT)?;
    Ok(())
}
