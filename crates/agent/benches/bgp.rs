//! Scenario benchmarks of the node agent's embedded BGP speaker on the real control
//! plane and network lab: three node namespaces running `lbnodeagent`, the allocator
//! in-process, FRR on the lab's peer namespace as the nodes' router (eBGP, ECMP).
//! Needs root. Prints one JSON object, then a human summary on stderr.
//!
//! `cargo bench -p purelb-agent --bench bgp [-- latency stop scale]` (all three
//! without a filter):
//! * `latency`: Service create → its /128 in FRR's RIB with next hops from all three
//!   nodes, p50/p99/max over `BGP_BENCH_SERVICES` (100) remote IPv6 Services created
//!   one after another (aggregation /128: one route per Service; the IPv4 remote
//!   slot is only a /28);
//! * `stop`: an agent stopped gracefully (SIGTERM) → its next hop gone from FRR's
//!   RIB, median and max over `BGP_BENCH_RUNS` (10) runs, and restart → back;
//! * `scale`: `BGP_BENCH_SCALE` (1,000) remote IPv6 Services with two routers (FRR on
//!   the peer namespace and a second FRR on another LAN namespace), each agent with
//!   two Established IPv6 sessions: time until both routers hold every route from
//!   every node, then each agent's RSS, peak RSS and CPU seconds.

#[path = "../tests/agent_lab/mod.rs"]
mod agent_lab;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_lab::*;
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use testbed::netlab::{Frr, Ns};

const ROUTER_AS: u32 = 65001;
const NODE_AS: u32 = 65000;
/// How often the RIB is polled in the latency scenarios.
const POLL: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the BGP benchmarks need root");
        return Ok(());
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let mut out = serde_json::Map::new();
    let started = Instant::now();
    if wanted("latency") {
        out.insert(
            "create_to_rib".into(),
            create_to_rib(env_number("BGP_BENCH_SERVICES", 100))?,
        );
    }
    if wanted("stop") {
        out.insert(
            "graceful_stop_to_withdraw".into(),
            graceful_stop(env_number("BGP_BENCH_RUNS", 10))?,
        );
    }
    if wanted("scale") {
        out.insert("scale".into(), scale(env_number("BGP_BENCH_SCALE", 1000))?);
    }
    out.insert(
        "bench_wall_s".into(),
        json!(started.elapsed().as_secs_f64()),
    );
    let out = Value::Object(out);
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!("{}", human_summary(&out));
    Ok(())
}

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn summary(mut samples: Vec<Duration>, keep_samples: bool) -> Value {
    samples.sort();
    let n = samples.len();
    let at = |q: f64| {
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        millis(samples[i])
    };
    let median = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        millis(samples[n / 2])
    } else {
        millis((samples[n / 2 - 1] + samples[n / 2]) / 2)
    };
    let mean = if n == 0 {
        0.0
    } else {
        millis(samples.iter().sum::<Duration>() / n as u32)
    };
    let mut v = json!({
        "runs": n,
        "median_ms": median,
        "mean_ms": mean,
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "max_ms": millis(*samples.last().unwrap_or(&Duration::ZERO)),
        "min_ms": millis(*samples.first().unwrap_or(&Duration::ZERO)),
    });
    if keep_samples {
        v["samples_ms"] = json!(samples.iter().map(|d| millis(*d)).collect::<Vec<_>>());
    }
    v
}

// ------------------------------------------------------------------ lab setup ---

/// The large remote IPv6 pool of `Options::large_v6_pool` (agent_lab's `create_groups`).
fn remote_v6_pool(c: &Cluster) -> String {
    format!("2001:db8:2:{:x}::1:0/112", c.slot.0)
}

/// The remote group with IPv6 only and aggregation /128: one route per Service.
fn remote_group_per_service(c: &Cluster) -> Result<()> {
    c.apply_group(
        &c.remote_group(),
        json!({"remote": {"v6pools": [{
            "pool": remote_v6_pool(c),
            "subnet": c.slot.remote_v6_subnet(),
            "aggregation": "/128",
        }]}}),
    )
}

/// An FRR config: router `router_id`, eBGP to the nodes over IPv4 (if `v4`) and IPv6,
/// ECMP over up to 8 paths in both families.
fn frr_conf(c: &Cluster, router_id: &str, v4: bool) -> String {
    let mut neighbors = String::new();
    let mut v4_af = String::new();
    let mut v6_af = String::new();
    for i in 0..3 {
        let mut addrs = vec![(c.slot.node_v6(i), false)];
        if v4 {
            addrs.push((c.slot.node_v4(i), true));
        }
        for (n, is_v4) in addrs {
            neighbors.push_str(&format!(
                " neighbor {n} remote-as {NODE_AS}\n neighbor {n} timers connect 1\n neighbor {n} advertisement-interval 0\n"
            ));
            if is_v4 {
                v4_af.push_str(&format!("  neighbor {n} activate\n"));
            } else {
                v6_af.push_str(&format!("  neighbor {n} activate\n"));
            }
        }
    }
    format!(
        "frr defaults traditional\n\
         router bgp {ROUTER_AS}\n\
         \x20bgp router-id {router_id}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20bgp log-neighbor-changes\n\
         \x20no bgp default ipv4-unicast\n\
         {neighbors}\
         \x20address-family ipv4 unicast\n\
         {v4_af}\
         \x20 maximum-paths 8\n\
         \x20exit-address-family\n\
         \x20address-family ipv6 unicast\n\
         {v6_af}\
         \x20 maximum-paths 8\n\
         \x20exit-address-family\n"
    )
}

/// The BGPConfiguration: one neighbor per (address, family).
fn apply_bgp_config(c: &Cluster, neighbors: &[(String, &str)]) -> Result<()> {
    let api: Api<purelb_api::crd::BGPConfiguration> = Api::namespaced(c.client.clone(), c.ns());
    let neighbors: Vec<Value> = neighbors
        .iter()
        .map(|(addr, family)| {
            json!({
                "config": {"neighborAddress": addr, "peerAsn": ROUTER_AS},
                "afiSafis": [{"family": family, "enabled": true}],
                "timers": {"config": {"connectRetry": 1}},
            })
        })
        .collect();
    let body = json!({
        "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {
            "global": {"asn": NODE_AS, "routerID": ""},
            "netlinkImport": {"enabled": true, "interfaceList": [DUMMY]},
            "neighbors": neighbors,
        },
    });
    c.rt.block_on(api.patch(
        "default",
        &PatchParams::apply("bgp-bench").force(),
        &Patch::Apply(&body),
    ))?;
    Ok(())
}

/// A cluster with FRR on its peer namespace peered with every node.
struct BgpLab {
    c: Cluster,
    frr: Frr,
    /// Node index of every address a next hop may name (global and link-local).
    hop_owner: HashMap<String, usize>,
}

impl BgpLab {
    /// `v4`: also an IPv4 session per node (ipv4-unicast only) besides the IPv6 one.
    fn new(v4: bool) -> Result<Self> {
        let c = Cluster::new(Options {
            large_v6_pool: true,
            ..Options::default()
        })?;
        remote_group_per_service(&c)?;
        let frr = c.lab.frr(&c.peer, &frr_conf(&c, &c.slot.peer_v4(), v4))?;
        let mut neighbors = vec![(c.slot.peer_v6(), "ipv6-unicast")];
        if v4 {
            neighbors.push((c.slot.peer_v4(), "ipv4-unicast"));
        }
        apply_bgp_config(&c, &neighbors)?;
        for i in 0..3 {
            frr.wait_established(&c.slot.node_v6(i), TIMEOUT)
                .with_context(|| c.logs())?;
            if v4 {
                frr.wait_established(&c.slot.node_v4(i), TIMEOUT)
                    .with_context(|| c.logs())?;
            }
        }
        let mut hop_owner = HashMap::new();
        for (i, n) in c.nodes.iter().enumerate() {
            hop_owner.insert(c.slot.node_v6(i), i);
            hop_owner.insert(c.slot.node_v4(i), i);
            for a in addresses(&n.ns)? {
                if a.ifname == n.lan_if {
                    hop_owner.insert(a.ip.to_string(), i);
                }
            }
        }
        Ok(Self { c, frr, hop_owner })
    }
}

/// A persistent connection to one FRR daemon's vty socket, speaking vtysh's protocol (a
/// command ended by NUL; the answer ended by three NULs and a status byte). `vtysh -c`
/// starts a process and connects to every daemon on each call, which costs tens of
/// milliseconds: too coarse for the latency polls.
struct Vty {
    stream: std::os::unix::net::UnixStream,
    buf: Vec<u8>,
}

impl Vty {
    fn connect(frr: &Frr, daemon: &str) -> Result<Self> {
        let path = frr.dir().join(format!("{daemon}.vty"));
        let stream = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            stream,
            buf: vec![0; 64 * 1024],
        })
    }

    fn cmd(&mut self, command: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut line = command.as_bytes().to_vec();
        line.push(0);
        self.stream.write_all(&line)?;
        let mut out = Vec::new();
        loop {
            let n = self.stream.read(&mut self.buf)?;
            if n == 0 {
                bail!("vty closed during `{command}`");
            }
            out.extend_from_slice(&self.buf[..n]);
            let len = out.len();
            if len >= 4 && out[len - 4..len - 1] == [0, 0, 0] {
                let status = out[len - 1];
                out.truncate(len - 4);
                let text = String::from_utf8_lossy(&out).into_owned();
                // 1 is CMD_WARNING: what a `show` of a missing route answers.
                if status > 1 {
                    bail!("`{command}` failed ({status}): {text}");
                }
                return Ok(text);
            }
        }
    }

    fn json(&mut self, command: &str) -> Result<Value> {
        let text = self.cmd(command)?;
        serde_json::from_str(&text).with_context(|| format!("`{command}` printed {text}"))
    }
}

/// The next hops zebra installed for IPv6 `prefix`, as sorted node indices (a hop that is
/// no node's address counts as `usize::MAX`).
fn rib_nodes(zebra: &mut Vty, owners: &HashMap<String, usize>, prefix: &str) -> Result<Vec<usize>> {
    let v = zebra.json(&format!("show ipv6 route {prefix} json"))?;
    let mut nodes: Vec<usize> = testbed::netlab::rib_next_hops(&v, prefix)
        .iter()
        .map(|ip| *owners.get(ip).unwrap_or(&usize::MAX))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Polls zebra's RIB every `POLL` until `prefix` has exactly the next hops `want`;
/// returns when the poll that saw it ended, and the number of polls.
fn poll_rib(
    zebra: &mut Vty,
    owners: &HashMap<String, usize>,
    prefix: &str,
    want: &[usize],
    timeout: Duration,
) -> Result<(Instant, usize)> {
    let deadline = Instant::now() + timeout;
    let mut polls = 0;
    loop {
        polls += 1;
        if rib_nodes(zebra, owners, prefix)? == want {
            return Ok((Instant::now(), polls));
        }
        if Instant::now() > deadline {
            bail!(
                "{prefix} not via nodes {want:?} within {timeout:?}; RIB: {}",
                zebra
                    .cmd(&format!("show ipv6 route {prefix}"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The nodes (indices) bgpd has a path for IPv6 `prefix` from.
fn bgp_nodes(bgpd: &mut Vty, owners: &HashMap<String, usize>, prefix: &str) -> Result<Vec<usize>> {
    let v = bgpd.json(&format!("show bgp ipv6 unicast {prefix} json"))?;
    let mut nodes: Vec<usize> = v["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["peer"]["peerId"].as_str())
        .map(|ip| *owners.get(ip).unwrap_or(&usize::MAX))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Polls bgpd and zebra every `POLL` until zebra's RIB has `prefix` with exactly the next
/// hops `want`; returns when bgpd first had exactly those paths, when zebra did, and the
/// number of polls.
fn poll_bgp_and_rib(
    bgpd: &mut Vty,
    zebra: &mut Vty,
    owners: &HashMap<String, usize>,
    prefix: &str,
    want: &[usize],
    timeout: Duration,
) -> Result<(Instant, Instant, usize)> {
    let deadline = Instant::now() + timeout;
    let mut polls = 0;
    let mut bgp_at = None;
    loop {
        polls += 1;
        if bgp_at.is_none() && bgp_nodes(bgpd, owners, prefix)? == want {
            bgp_at = Some(Instant::now());
        }
        if rib_nodes(zebra, owners, prefix)? == want {
            let at = Instant::now();
            return Ok((bgp_at.unwrap_or(at), at, polls));
        }
        if Instant::now() > deadline {
            bail!(
                "{prefix} not via nodes {want:?} within {timeout:?}; RIB: {}",
                zebra
                    .cmd(&format!("show ipv6 route {prefix}"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// bgpd's neighbor up/down lines (log-neighbor-changes), without addresses and times,
/// counted: how the sessions ended (NOTIFICATION Cease, or the TCP connection dropping).
fn neighbor_changes(frr: &Frr) -> Value {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in frr.procs() {
        for line in p.log().lines() {
            if !(line.contains("NOTIFICATION") || line.contains("Down") || line.contains(" Up ")) {
                continue;
            }
            // Drop the timestamp and [ID] prefix and the neighbor's address.
            let text = line.split_once("] ").map_or(line, |(_, r)| r);
            let text: String = text
                .split_whitespace()
                .map(|w| {
                    if w.contains("2001:db8") || w.contains("198.51.100") {
                        "<node>"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            *counts.entry(text).or_default() += 1;
        }
    }
    json!(counts)
}

/// Warnings and errors in every agent's log (JSON lines), counted by level, target and
/// message; and how often the BGP configuration was applied.
fn log_findings(c: &Cluster) -> Value {
    let mut out = serde_json::Map::new();
    for n in &c.nodes {
        let Some(p) = &n.agent else { continue };
        let log = p.log();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut applied = 0;
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                if line.contains("panicked") {
                    *counts.entry(line.chars().take(200).collect()).or_default() += 1;
                }
                continue;
            };
            let level = v["level"].as_str().unwrap_or_default();
            let message = v["fields"]["message"].as_str().unwrap_or_default();
            if message == "configuration applied" {
                applied += 1;
            }
            if level == "WARN" || level == "ERROR" {
                // The other fields but the log.* ones (an error, a resource), shortened.
                let detail: Vec<String> = v["fields"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| *k != "message" && !k.starts_with("log."))
                    .map(|(k, v)| {
                        format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned))
                    })
                    .collect();
                let key = format!(
                    "{level} {}: {} {}",
                    v["target"].as_str().unwrap_or_default(),
                    message,
                    detail.join(" ")
                );
                let key: String = key.trim_end().chars().take(240).collect();
                *counts.entry(key).or_default() += 1;
            }
        }
        out.insert(
            n.name.clone(),
            json!({"warn_error": counts, "bgp_configuration_applied": applied}),
        );
    }
    Value::Object(out)
}

// ---------------------------------------------------------------- scenarios ---

fn create_to_rib(count: usize) -> Result<Value> {
    let lab = BgpLab::new(true)?;
    let c = &lab.c;
    let mut zebra = Vty::connect(&lab.frr, "zebra")?;
    let mut bgpd = Vty::connect(&lab.frr, "bgpd")?;
    // Past the agents' join hold-down and the sessions' first exchange: steady state.
    std::thread::sleep(Duration::from_millis(1500));
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.client.clone(), c.ns());
    let mut from_return = Vec::new();
    let mut from_call = Vec::new();
    let mut to_ingress = Vec::new();
    let mut create_calls = Vec::new();
    let mut to_last_agent = Vec::new();
    let mut agent_to_bgpd = Vec::new();
    let mut bgpd_to_rib = Vec::new();
    let mut polls = 0;
    for i in 0..count {
        let name = format!("svc-{i}");
        let t0 = Instant::now();
        c.create_service(&name, &c.remote_group(), &["IPv6"], json!({}))?;
        let t1 = Instant::now();
        let t1_wall = std::time::SystemTime::now();
        // The allocator writes the address before any agent can announce it.
        let vip = loop {
            let ips = ingress(&c.rt.block_on(api.get(&name))?);
            if let Some(ip) = ips.first() {
                break *ip;
            }
            if t1.elapsed() > TIMEOUT {
                bail!("no address on {name}");
            }
            std::thread::sleep(POLL);
        };
        let t2 = Instant::now();
        let (bgp_at, at, n) = poll_bgp_and_rib(
            &mut bgpd,
            &mut zebra,
            &lab.hop_owner,
            &format!("{vip}/128"),
            &[0, 1, 2],
            TIMEOUT,
        )
        .with_context(|| c.logs())?;
        polls += n;
        from_return.push(at - t1);
        from_call.push(at - t0);
        to_ingress.push(t2 - t1);
        create_calls.push(t1 - t0);
        bgpd_to_rib.push(at - bgp_at);
        // The last node's "announcingNonLocal" (its log's wall clock), if every node logged it.
        let key = format!("{}/{name}", c.ns());
        let logged: Vec<_> = c
            .nodes
            .iter()
            .filter_map(|n| n.agent.as_ref())
            .filter_map(|p| announce_time(&p.log(), &key))
            .collect();
        if logged.len() == 3
            && let Some(last) = logged.iter().max()
            && let Ok(d) = last.duration_since(t1_wall)
        {
            to_last_agent.push(d);
            agent_to_bgpd.push((bgp_at - t1).saturating_sub(d));
        }
    }
    // One query's own cost, measured on its own.
    let t = Instant::now();
    for _ in 0..100 {
        rib_nodes(&mut zebra, &lab.hop_owner, "2001:db8:ffff::/128")?;
    }
    let query_ms = millis(t.elapsed() / 100);
    Ok(json!({
        "family": "IPv6 remote, aggregation /128, three next hops (ECMP)",
        "services": count,
        "from_create_returned": summary(from_return, false),
        "from_before_create_call": summary(from_call, false),
        "breakdown": {
            "create_call": summary(create_calls, false),
            "create_returned_to_ingress_seen_by_bench": summary(to_ingress, false),
            "create_returned_to_last_agent_logged_announcingNonLocal": summary(to_last_agent, false),
            "last_agent_logged_to_bgpd_has_3_paths": summary(agent_to_bgpd, false),
            "bgpd_has_3_paths_to_zebra_rib_3_hops": summary(bgpd_to_rib, false),
        },
        "poll_interval_ms": millis(POLL),
        "mean_polls_per_service": polls as f64 / count.max(1) as f64,
        "rib_query_ms": query_ms,
        "rib_query": "`show ipv6 route <vip>/128 json` on zebra's vty socket, `show bgp ipv6 unicast <vip>/128 json` on bgpd's (persistent connections)",
        "agent_logs": log_findings(c),
    }))
}

/// When the agent log `log` first says it announces Service `key` (`ns/name`) as remote.
fn announce_time(log: &str, key: &str) -> Option<std::time::SystemTime> {
    let service = format!(r#""service":"{key}""#);
    let line = log
        .lines()
        .find(|l| l.contains(r#""message":"announcingNonLocal""#) && l.contains(&service))?;
    let v: Value = serde_json::from_str(line).ok()?;
    parse_rfc3339_utc(v["timestamp"].as_str()?)
}

/// `2026-11-26T16:37:47.389528Z` as a SystemTime.
fn parse_rfc3339_utc(s: &str) -> Option<std::time::SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

fn graceful_stop(runs: usize) -> Result<Value> {
    let mut lab = BgpLab::new(true)?;
    lab.c
        .create_service("web", &lab.c.remote_group(), &["IPv6"], json!({}))?;
    let vip = lab.c.wait_ingress("web", 1)?[0];
    let prefix = format!("{vip}/128");
    let mut zebra = Vty::connect(&lab.frr, "zebra")?;
    poll_rib(&mut zebra, &lab.hop_owner, &prefix, &[0, 1, 2], TIMEOUT)
        .with_context(|| lab.c.logs())?;
    let mut withdrawn = Vec::new();
    let mut bgp_gone = Vec::new();
    let mut exited = Vec::new();
    let mut back = Vec::new();
    for run in 0..runs {
        let node = run % 3;
        let others: Vec<usize> = (0..3).filter(|i| *i != node).collect();
        // Let keepalives and renewals settle into a different phase each run.
        std::thread::sleep(Duration::from_millis(300 + 373 * run as u64 % 1500));
        // The RIB is polled from another thread: `stop_agent` returns only once the
        // process is reaped, and the withdrawal may come before that.
        let started = Arc::new(AtomicBool::new(false));
        let poller = {
            let mut zebra = Vty::connect(&lab.frr, "zebra")?;
            let mut bgpd = Vty::connect(&lab.frr, "bgpd")?;
            let (owners, prefix, others, started) = (
                lab.hop_owner.clone(),
                prefix.clone(),
                others.clone(),
                started.clone(),
            );
            std::thread::spawn(move || {
                while !started.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                poll_bgp_and_rib(&mut bgpd, &mut zebra, &owners, &prefix, &others, TIMEOUT)
            })
        };
        let t0 = Instant::now();
        started.store(true, Ordering::Release);
        lab.c.stop_agent(node)?;
        let gone = Instant::now();
        let (bgp_at, at, _) = poller
            .join()
            .map_err(|_| anyhow::anyhow!("poller panicked"))?
            .with_context(|| lab.c.logs())?;
        let took = at.saturating_duration_since(t0);
        eprintln!(
            "graceful stop run {run} (node {node}): path gone from bgpd after {:?}, next hop gone from the RIB after {took:?}, agent exited after {:?}",
            bgp_at.saturating_duration_since(t0),
            gone - t0
        );
        withdrawn.push(took);
        bgp_gone.push(bgp_at.saturating_duration_since(t0));
        exited.push(gone - t0);
        let t1 = Instant::now();
        lab.c.start_agent(node)?;
        let (at, _) = poll_rib(&mut zebra, &lab.hop_owner, &prefix, &[0, 1, 2], TIMEOUT)
            .with_context(|| lab.c.logs())?;
        back.push(at - t1);
        lab.c.wait_members(3)?;
    }
    Ok(json!({
        "family": "IPv6 remote /128 (the node also has an IPv4 session)",
        "sigterm_to_next_hop_gone": summary(withdrawn, true),
        "sigterm_to_path_gone_from_bgpd": summary(bgp_gone, false),
        "sigterm_to_agent_exited": summary(exited, false),
        "router_saw": neighbor_changes(&lab.frr),
        "restart_to_next_hop_back": summary(back, false),
        "poll_interval_ms": millis(POLL),
        "agent_logs": log_findings(&lab.c),
    }))
}

/// Prefixes received from each node's IPv6 session (`pfxRcd`), by node index.
fn received(bgpd: &mut Vty, c: &Cluster) -> Result<Vec<u64>> {
    let v = bgpd.json("show bgp ipv6 unicast summary json")?;
    Ok((0..3)
        .map(|i| {
            v["peers"][c.slot.node_v6(i)]["pfxRcd"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect())
}

/// IPv6 routes in the RIB under the remote pool with next hops from all three nodes.
fn rib_routes_with_three_hops(zebra: &mut Vty, owners: &HashMap<String, usize>) -> Result<usize> {
    let v = zebra.json("show ipv6 route bgp json")?;
    let mut n = 0;
    for prefix in v.as_object().into_iter().flatten().map(|(p, _)| p) {
        let mut nodes: Vec<usize> = testbed::netlab::rib_next_hops(&v, prefix)
            .iter()
            .filter_map(|ip| owners.get(ip).copied())
            .collect();
        nodes.sort();
        nodes.dedup();
        if nodes == [0, 1, 2] {
            n += 1;
        }
    }
    Ok(n)
}

fn scale(count: usize) -> Result<Value> {
    let lab = BgpLab::new(false)?;
    let c = &lab.c;
    // The second router: FRR in a namespace of its own on the LAN (.13 and ::b of the
    // slot are free).
    let peer2: Ns = c.lab.node("peer2")?;
    let v4_2 = format!("198.51.100.{}", c.slot.0 * 16 + 13);
    let v6_2 = c.slot.peer_v6().replacen("::a", "::b", 1);
    if !v6_2.ends_with("::b") {
        bail!("unexpected peer address {}", c.slot.peer_v6());
    }
    c.lan
        .attach(&peer2, &[&format!("{v4_2}/28"), &format!("{v6_2}/64")])?;
    let frr2 = c.lab.frr(&peer2, &frr_conf(c, &v4_2, false))?;
    apply_bgp_config(
        c,
        &[
            (c.slot.peer_v6(), "ipv6-unicast"),
            (v6_2.clone(), "ipv6-unicast"),
        ],
    )?;
    for r in [&lab.frr, &frr2] {
        for i in 0..3 {
            r.wait_established(&c.slot.node_v6(i), TIMEOUT)
                .with_context(|| c.logs())?;
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let before: Vec<(u64, u64, f64)> = (0..3)
        .map(|i| usage(c.agent(i).pid()))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    // Created 16 at a time, as fast as the API server takes them.
    let names: Vec<String> = (0..count).map(|i| format!("svc-{i}")).collect();
    let group = c.remote_group();
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.client.clone(), c.ns());
    c.rt.block_on(async {
        futures::stream::iter(names.iter())
            .map(|name| {
                let (api, group) = (api.clone(), group.clone());
                async move {
                    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
                        "metadata": {"name": name, "annotations": {"purelb.io/service-group": group}},
                        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                                 "allocateLoadBalancerNodePorts": false,
                                 "ports": [{"name": "tcp-80", "protocol": "TCP", "port": 80}]},
                    }))?;
                    api.create(&Default::default(), &svc).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
    })?;
    let created = t0.elapsed();
    let (mut bgpd1, mut bgpd2) = (
        Vty::connect(&lab.frr, "bgpd")?,
        Vty::connect(&frr2, "bgpd")?,
    );
    let (mut zebra1, mut zebra2) = (
        Vty::connect(&lab.frr, "zebra")?,
        Vty::connect(&frr2, "zebra")?,
    );
    // Every router has every route from every node (bgpd's Adj-RIB-In counts).
    let mut first_router_done = None;
    let mut last_seen = (Vec::new(), Vec::new());
    let all_received = wait_for(
        Duration::from_secs(300),
        "all routes in both routers",
        || {
            c.ensure_agents_running()?;
            let a = received(&mut bgpd1, c)?;
            let b = received(&mut bgpd2, c)?;
            let done_a = a.iter().all(|n| *n as usize == count);
            let done_b = b.iter().all(|n| *n as usize == count);
            if (done_a || done_b) && first_router_done.is_none() {
                first_router_done = Some(t0.elapsed());
            }
            last_seen = (a, b);
            Ok((done_a && done_b).then(|| t0.elapsed()))
        },
    )
    .with_context(|| format!("last pfxRcd: {last_seen:?}\n{}", c.logs()))?;
    // And zebra installed them with three next hops each.
    let in_rib = wait_for(Duration::from_secs(120), "all routes in both RIBs", || {
        let a = rib_routes_with_three_hops(&mut zebra1, &lab.hop_owner)?;
        // The second router is on the same LAN: the same next-hop addresses.
        let b = rib_routes_with_three_hops(&mut zebra2, &lab.hop_owner)?;
        Ok((a == count && b == count).then(|| t0.elapsed()))
    })?;
    let at_done: Vec<(u64, u64, f64)> = (0..3)
        .map(|i| usage(c.agent(i).pid()))
        .collect::<Result<_>>()?;
    let idle = Duration::from_secs(20);
    std::thread::sleep(idle);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (rss, hwm, cpu) = usage(c.agent(i).pid())?;
        let m = c.metrics(i)?;
        let announced = m
            .lines()
            .filter(|l| l.starts_with("purelb_lbnodeagent_announced{"))
            .count();
        let threads = std::fs::read_to_string(format!("/proc/{}/status", c.agent(i).pid()))?
            .lines()
            .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_owned()))
            .unwrap_or_default();
        nodes.push(json!({
            "node": c.nodes[i].name,
            "pid": c.agent(i).pid(),
            "rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
            "peak_rss_mib": (hwm as f64 / 1024.0 * 10.0).round() / 10.0,
            "rss_before_services_mib": (before[i].0 as f64 / 1024.0 * 10.0).round() / 10.0,
            "rss_at_all_announced_mib": (at_done[i].0 as f64 / 1024.0 * 10.0).round() / 10.0,
            "cpu_s_total": cpu,
            "cpu_s_to_announce_all": at_done[i].2 - before[i].2,
            "cpu_s_idle_20s": cpu - at_done[i].2,
            "threads": threads,
            "announced_metric_lines": announced,
        }));
    }
    let peak = nodes
        .iter()
        .filter_map(|n| n["peak_rss_mib"].as_f64())
        .fold(0.0, f64::max);
    // Every agent watches Services in all namespaces: how many there are in all.
    let all: Api<k8s_openapi::api::core::v1::Service> = Api::all(c.client.clone());
    let services_in_cluster = c.rt.block_on(all.list(&Default::default()))?.items.len();
    let mut sessions = BTreeMap::new();
    for (name, r) in [("frr1", &lab.frr), ("frr2", &frr2)] {
        let states: Vec<Option<String>> = (0..3)
            .map(|i| r.bgp_state(&c.slot.node_v6(i)).ok().flatten())
            .collect();
        sessions.insert(name, states);
    }
    Ok(json!({
        "services": count,
        "family": "IPv6 remote, aggregation /128",
        "peers_per_agent": 2,
        "services_in_cluster_all_namespaces": services_in_cluster,
        "create_calls_s": created.as_secs_f64(),
        "first_router_has_all_s": first_router_done.map(|d| d.as_secs_f64()),
        "both_routers_have_all_from_every_node_s": all_received.as_secs_f64(),
        "after_last_create_returned_s": (all_received - created).as_secs_f64(),
        "both_ribs_have_all_with_3_hops_s": in_rib.as_secs_f64(),
        "sessions_at_end": sessions,
        "nodes": nodes,
        "max_peak_rss_mib": peak,
        "target": "< 40 MiB RSS per agent (with BGP, 2 peers)",
        "target_met": peak < 40.0,
        "agent_logs": log_findings(c),
    }))
}

fn human_summary(out: &Value) -> String {
    let mut s = String::from("\n== BGP bench summary ==\n");
    let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    if let Some(l) = out.get("create_to_rib") {
        let r = &l["from_create_returned"];
        s.push_str(&format!(
            "create -> route in FRR RIB (3 next hops), {} Services: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (from before the call: p50 {:.1}, p99 {:.1})\n",
            l["services"],
            ms(r, "p50_ms"),
            ms(r, "p99_ms"),
            ms(r, "max_ms"),
            ms(&l["from_before_create_call"], "p50_ms"),
            ms(&l["from_before_create_call"], "p99_ms"),
        ));
    }
    if let Some(b) = out.get("create_to_rib").map(|l| &l["breakdown"]) {
        s.push_str(&format!(
            "  medians: create returned -> last agent announces {:.1} ms; -> bgpd has 3 paths {:.1} ms; bgpd -> zebra RIB {:.1} ms\n",
            ms(&b["create_returned_to_last_agent_logged_announcingNonLocal"], "median_ms"),
            ms(&b["last_agent_logged_to_bgpd_has_3_paths"], "median_ms"),
            ms(&b["bgpd_has_3_paths_to_zebra_rib_3_hops"], "median_ms"),
        ));
    }
    if let Some(g) = out.get("graceful_stop_to_withdraw") {
        let w = &g["sigterm_to_next_hop_gone"];
        let b = &g["restart_to_next_hop_back"];
        s.push_str(&format!(
            "SIGTERM -> next hop gone, {} runs: median {:.1} ms, max {:.1} ms (agent exited: median {:.1} ms; path gone from bgpd: median {:.1} ms); restart -> back: median {:.1} ms, max {:.1} ms\n",
            w["runs"],
            ms(w, "median_ms"),
            ms(w, "max_ms"),
            ms(&g["sigterm_to_agent_exited"], "median_ms"),
            ms(&g["sigterm_to_path_gone_from_bgpd"], "median_ms"),
            ms(b, "median_ms"),
            ms(b, "max_ms"),
        ));
    }
    if let Some(x) = out.get("scale") {
        s.push_str(&format!(
            "{} Services, 2 peers: all routes in both routers after {:.1} s (create calls {:.1} s; {:.2} s after the last create returned); peak RSS max {:.1} MiB (target < 40)\n",
            x["services"],
            x["both_routers_have_all_from_every_node_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
            x["create_calls_s"].as_f64().unwrap_or(f64::NAN),
            x["after_last_create_returned_s"].as_f64().unwrap_or(f64::NAN),
            x["max_peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        ));
        for n in x["nodes"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "  {}: RSS {} MiB, peak {} MiB, CPU {:.2} s total ({:.2} s to announce all, {:.2} s idle 20 s)\n",
                n["node"].as_str().unwrap_or_default(),
                n["rss_mib"],
                n["peak_rss_mib"],
                n["cpu_s_total"].as_f64().unwrap_or(f64::NAN),
                n["cpu_s_to_announce_all"].as_f64().unwrap_or(f64::NAN),
                n["cpu_s_idle_20s"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    if let Some(w) = out.get("bench_wall_s") {
        s.push_str(&format!("wall time {:.0} s\n", w.as_f64().unwrap_or(0.0)));
    }
    s
}
