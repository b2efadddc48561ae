//! Scenario benchmarks of the node agent's embedded BGP speaker on the real cluster
//! (see `on_cluster`): four kubelets, the agents as the `lbnodeagent` DaemonSet's
//! pods, the allocator Deployment, and the lab's FRR router (AS 64514), which the
//! lab's BGPConfiguration peers with every node (AS 64515) over IPv4 and IPv6 (eBGP,
//! ECMP). Needs root. Prints one JSON object, then a human summary on stderr.
//!
//! `cargo bench -p purelb-agent --bench bgp [-- latency stop scale]` (all three
//! without a filter):
//! * `latency`: Service create → its /128 in the router's RIB with next hops from all
//!   four nodes, p50/p99/max over `BGP_BENCH_SERVICES` (100) remote IPv6 Services
//!   created one after another (aggregation /128: one route per Service);
//! * `stop`: an agent's pod deleted (the kubelet stops the agent with SIGTERM:
//!   graceful) → its next hop gone from the router's RIB, median and max over
//!   `BGP_BENCH_RUNS` (10) runs, a different node each run, and the DaemonSet's
//!   replacement → back;
//! * `scale`: `BGP_BENCH_SCALE` (1,000) remote IPv6 Services, each agent with two
//!   Established sessions (IPv4 and IPv6) to the router: time until the router holds
//!   every route from every node, then each agent's RSS, peak RSS and CPU seconds.

#[path = "../tests/on_cluster/mod.rs"]
mod on_cluster;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use on_cluster::*;
use serde_json::{Value, json};
use testbed::cluster::Cluster;
use testbed::netlab::Frr;

/// The lab router's AS (testbed/topology/router/frr.conf).
const ROUTER_AS: u32 = 64514;
/// The bench's remote pool, away from the lab's and the tests' remote ranges.
const REMOTE_V6_POOL: &str = "fd00:10:255:ff::1:0/112";
const REMOTE_V6_SUBNET: &str = "fd00:10:255:ff::/64";
/// How often the RIB is polled in the latency scenarios.
const POLL: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    // Alone on the cluster: the scenarios stop agents and measure the agents' usage.
    let c = cluster_mut();
    let mut out = serde_json::Map::new();
    let started = Instant::now();
    if wanted("latency") {
        out.insert(
            "create_to_rib".into(),
            create_to_rib(&c, env_number("BGP_BENCH_SERVICES", 100))?,
        );
    }
    if wanted("stop") {
        out.insert(
            "graceful_stop_to_withdraw".into(),
            graceful_stop(&c, env_number("BGP_BENCH_RUNS", 10))?,
        );
    }
    if wanted("scale") {
        out.insert(
            "scale".into(),
            scale(&c, env_number("BGP_BENCH_SCALE", 1000))?,
        );
    }
    out.insert(
        "bench_wall_s".into(),
        json!(started.elapsed().as_secs_f64()),
    );
    let out = Value::Object(out);
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!("{}", human_summary(&out, c.nodes.len()));
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

/// The cluster's router, peered with every node, and a namespace of the bench with a
/// remote ServiceGroup whose pool aggregates to /128: one route per Service.
struct BgpLab<'a> {
    c: &'a Cluster,
    k: Kube,
    ns: TestNs,
    group: String,
    frr: Frr,
    /// Node index of every address a next hop may name (global and link-local).
    hop_owner: HashMap<String, usize>,
    /// Every node (indices): the next hops of a remote route.
    all: Vec<usize>,
}

impl<'a> BgpLab<'a> {
    fn new(c: &'a Cluster, prefix: &str) -> Result<Self> {
        let k = Kube::new(c)?;
        let ns = TestNs::new(c, prefix)?;
        let group = format!("{}-remote", ns.name);
        ns.group(
            &k,
            &group,
            json!({"remote": {"v6pools": [{"pool": REMOTE_V6_POOL, "subnet": REMOTE_V6_SUBNET, "aggregation": "/128"}]}}),
        )?;
        let frr = c.router()?.clone();
        for i in 0..c.nodes.len() {
            for peer in [node_v4(c, i), node_v6(c, i)] {
                frr.wait_established(&peer.to_string(), TIMEOUT)
                    .with_context(|| agent_log_tails(c))?;
            }
        }
        let mut hop_owner = HashMap::new();
        for (i, n) in c.nodes.iter().enumerate() {
            for ip in &n.node_ips {
                hop_owner.insert(ip.to_string(), i);
            }
            for a in addresses(&n.ns)? {
                if a.ifname.starts_with("eth") {
                    hop_owner.insert(a.ip.to_string(), i);
                }
            }
        }
        Ok(Self {
            c,
            k,
            ns,
            group,
            frr,
            hop_owner,
            all: (0..c.nodes.len()).collect(),
        })
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

/// Where each of the router's daemon logs ends now: a scenario's part of them starts
/// there (the router runs, and logs, as long as the cluster).
fn log_marks(frr: &Frr) -> Vec<usize> {
    frr.procs().iter().map(|p| p.log().len()).collect()
}

/// bgpd's neighbor up/down lines (log-neighbor-changes) after `marks`, without
/// addresses and times, counted: how the sessions ended (NOTIFICATION Cease, or the TCP
/// connection dropping).
fn neighbor_changes(frr: &Frr, marks: &[usize], nodes: &HashMap<String, usize>) -> Value {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (p, mark) in frr.procs().iter().zip(marks) {
        let log = p.log();
        for line in log.get(*mark..).unwrap_or_default().lines() {
            if !(line.contains("NOTIFICATION") || line.contains("Down") || line.contains(" Up ")) {
                continue;
            }
            // Drop the timestamp and [ID] prefix and the neighbor's address.
            let text = line.split_once("] ").map_or(line, |(_, r)| r);
            let text: String = text
                .split_whitespace()
                .map(|w| {
                    if nodes.keys().any(|a| w.contains(a.as_str())) {
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

/// Warnings and errors in every agent's current log (JSON lines), counted by level,
/// target and message; and how often the BGP configuration was applied.
fn log_findings(c: &Cluster) -> Value {
    let mut out = serde_json::Map::new();
    for n in &c.nodes {
        let log = match agent_log(c, &n.name) {
            Ok(log) => log,
            Err(e) => {
                out.insert(n.name.clone(), json!({"error": format!("{e:#}")}));
                continue;
            }
        };
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

fn create_to_rib(c: &Cluster, count: usize) -> Result<Value> {
    let lab = BgpLab::new(c, "bgp-bench-latency")?;
    let ns = lab.ns.name.as_str();
    let n = c.nodes.len();
    let mut zebra = Vty::connect(&lab.frr, "zebra")?;
    let mut bgpd = Vty::connect(&lab.frr, "bgpd")?;
    // The new ServiceGroup reaches the allocator's cache first: the first sample is a
    // steady-state one too.
    std::thread::sleep(Duration::from_millis(1500));
    let mut from_return = Vec::new();
    let mut from_call = Vec::new();
    let mut to_ingress = Vec::new();
    let mut create_calls = Vec::new();
    let mut bgpd_to_rib = Vec::new();
    // (Service, when its create call returned, create returned → bgpd had every path)
    let mut announced = Vec::new();
    let mut polls = 0;
    for i in 0..count {
        let name = format!("svc-{i}");
        let t0 = Instant::now();
        lab.k
            .create_service(ns, &name, &lab.group, &["IPv6"], json!({}))?;
        let t1 = Instant::now();
        let t1_wall = std::time::SystemTime::now();
        // The allocator writes the address before any agent can announce it.
        let vip = loop {
            let ips = ingress(&lab.k.service(ns, &name)?);
            if let Some(ip) = ips.first() {
                break *ip;
            }
            if t1.elapsed() > TIMEOUT {
                bail!("no address on {name}");
            }
            std::thread::sleep(POLL);
        };
        let t2 = Instant::now();
        let (bgp_at, at, polled) = poll_bgp_and_rib(
            &mut bgpd,
            &mut zebra,
            &lab.hop_owner,
            &format!("{vip}/128"),
            &lab.all,
            TIMEOUT,
        )
        .with_context(|| agent_logs_about(c, &vip.to_string()))?;
        polls += polled;
        from_return.push(at - t1);
        from_call.push(at - t0);
        to_ingress.push(t2 - t1);
        create_calls.push(t1 - t0);
        bgpd_to_rib.push(at - bgp_at);
        announced.push((name, t1_wall, bgp_at - t1));
    }
    // The last node's "announcingNonLocal" (its log's wall clock), if every node logged
    // it; the logs are read once, after the measurements (a log that cannot be read
    // leaves these two breakdowns without samples).
    let logs: Vec<String> = c
        .nodes
        .iter()
        .map(|node| agent_log(c, &node.name).unwrap_or_default())
        .collect();
    let mut to_last_agent = Vec::new();
    let mut agent_to_bgpd = Vec::new();
    for (name, t1_wall, to_bgpd) in &announced {
        let key = format!("{ns}/{name}");
        let logged: Vec<_> = logs
            .iter()
            .filter_map(|log| announce_time(log, &key))
            .collect();
        if logged.len() == n
            && let Some(last) = logged.iter().max()
            && let Ok(d) = last.duration_since(*t1_wall)
        {
            to_last_agent.push(d);
            agent_to_bgpd.push(to_bgpd.saturating_sub(d));
        }
    }
    // One query's own cost, measured on its own.
    let t = Instant::now();
    for _ in 0..100 {
        rib_nodes(&mut zebra, &lab.hop_owner, "2001:db8:ffff::/128")?;
    }
    let query_ms = millis(t.elapsed() / 100);
    let mut breakdown = serde_json::Map::new();
    breakdown.insert("create_call".into(), summary(create_calls, false));
    breakdown.insert(
        "create_returned_to_ingress_seen_by_bench".into(),
        summary(to_ingress, false),
    );
    breakdown.insert(
        "create_returned_to_last_agent_logged_announcingNonLocal".into(),
        summary(to_last_agent, false),
    );
    breakdown.insert(
        format!("last_agent_logged_to_bgpd_has_{n}_paths"),
        summary(agent_to_bgpd, false),
    );
    breakdown.insert(
        format!("bgpd_has_{n}_paths_to_zebra_rib_{n}_hops"),
        summary(bgpd_to_rib, false),
    );
    Ok(json!({
        "family": format!("IPv6 remote, aggregation /128, {n} next hops (ECMP)"),
        "services": count,
        "from_create_returned": summary(from_return, false),
        "from_before_create_call": summary(from_call, false),
        "breakdown": breakdown,
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

/// The samples of the graceful-stop scenario's runs.
#[derive(Default)]
struct StopSamples {
    withdrawn: Vec<Duration>,
    bgp_gone: Vec<Duration>,
    exited: Vec<Duration>,
    back: Vec<Duration>,
}

fn graceful_stop(c: &Cluster, runs: usize) -> Result<Value> {
    let lab = BgpLab::new(c, "bgp-bench-stop")?;
    let ns = lab.ns.name.as_str();
    lab.k
        .create_service(ns, "web", &lab.group, &["IPv6"], json!({}))?;
    let vip = lab.k.wait_ingress(ns, "web", 1)?[0];
    let prefix = format!("{vip}/128");
    let mut zebra = Vty::connect(&lab.frr, "zebra")?;
    poll_rib(&mut zebra, &lab.hop_owner, &prefix, &lab.all, TIMEOUT)
        .with_context(|| agent_logs_about(c, &vip.to_string()))?;
    // The lab's router logs session changes only with log-neighbor-changes: on for
    // this scenario, then off again, as the lab configures it.
    let router_bgp = format!("router bgp {ROUTER_AS}");
    lab.frr
        .configure(&[&router_bgp, "bgp log-neighbor-changes"])?;
    let marks = log_marks(&lab.frr);
    let measured = stop_runs(&lab, &mut zebra, vip, runs);
    let router_saw = neighbor_changes(&lab.frr, &marks, &lab.hop_owner);
    let restored = lab
        .frr
        .configure(&[&router_bgp, "no bgp log-neighbor-changes"]);
    let s = measured?;
    restored?;
    Ok(json!({
        "family": "IPv6 remote /128 (the node also has an IPv4 session)",
        "sigterm_to_next_hop_gone": summary(s.withdrawn, true),
        "sigterm_to_path_gone_from_bgpd": summary(s.bgp_gone, false),
        "sigterm_to_agent_exited": summary(s.exited, false),
        "router_saw": router_saw,
        "restart_to_next_hop_back": summary(s.back, false),
        "poll_interval_ms": millis(POLL),
        "agent_logs": log_findings(c),
    }))
}

/// `runs` graceful stops, of node `run % nodes` each: from the pod's deletion to its
/// next hop gone from the RIB, its path gone from bgpd and its agent exited; from that
/// exit (when the DaemonSet's replacement can start) to its next hop back.
fn stop_runs(lab: &BgpLab, zebra: &mut Vty, vip: IpAddr, runs: usize) -> Result<StopSamples> {
    let c = lab.c;
    let prefix = format!("{vip}/128");
    let mut s = StopSamples::default();
    for run in 0..runs {
        let node = run % c.nodes.len();
        let name = &c.nodes[node].name;
        let others: Vec<usize> = lab.all.iter().copied().filter(|i| *i != node).collect();
        let pod = agent_pod_on(c, name)?;
        let pid = agent_pid(c, name)?;
        // Let keepalives and renewals settle into a different phase each run.
        std::thread::sleep(Duration::from_millis(300 + 373 * run as u64 % 1500));
        // The RIB is polled from another thread while this one watches the agent exit:
        // the withdrawal may come before that.
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
        lab.k.delete_pod(&pod)?;
        let gone = wait_exited(pid, TIMEOUT)?;
        let (bgp_at, at, _) = poller
            .join()
            .map_err(|_| anyhow::anyhow!("poller panicked"))?
            .with_context(|| agent_logs_about(c, &vip.to_string()))?;
        let took = at.saturating_duration_since(t0);
        eprintln!(
            "graceful stop run {run} (node {node}): path gone from bgpd after {:?}, next hop gone from the RIB after {took:?}, agent exited after {:?}",
            bgp_at.saturating_duration_since(t0),
            gone - t0
        );
        s.withdrawn.push(took);
        s.bgp_gone.push(bgp_at.saturating_duration_since(t0));
        s.exited.push(gone - t0);
        // The replacement pod is created, started, ready and peered on the cluster's
        // schedule: longer than a plain restart.
        let (at, _) = poll_rib(
            zebra,
            &lab.hop_owner,
            &prefix,
            &lab.all,
            Duration::from_secs(180),
        )
        .with_context(|| agent_log_tails(c))?;
        s.back.push(at.saturating_duration_since(gone));
        wait_agents_rolled_out(c)?;
    }
    Ok(s)
}

/// Prefixes received from each node's IPv6 session (`pfxRcd`), by node index.
fn received(bgpd: &mut Vty, c: &Cluster) -> Result<Vec<u64>> {
    let v = bgpd.json("show bgp ipv6 unicast summary json")?;
    Ok((0..c.nodes.len())
        .map(|i| {
            v["peers"][node_v6(c, i).to_string()]["pfxRcd"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect())
}

/// BGP IPv6 routes in the RIB with next hops from every node (`all`).
fn rib_routes_with_all_hops(
    zebra: &mut Vty,
    owners: &HashMap<String, usize>,
    all: &[usize],
) -> Result<usize> {
    let v = zebra.json("show ipv6 route bgp json")?;
    let mut n = 0;
    for prefix in v.as_object().into_iter().flatten().map(|(p, _)| p) {
        let mut nodes: Vec<usize> = testbed::netlab::rib_next_hops(&v, prefix)
            .iter()
            .filter_map(|ip| owners.get(ip).copied())
            .collect();
        nodes.sort();
        nodes.dedup();
        if nodes == all {
            n += 1;
        }
    }
    Ok(n)
}

fn scale(c: &Cluster, count: usize) -> Result<Value> {
    let lab = BgpLab::new(c, "bgp-bench-scale")?;
    let n = c.nodes.len();
    // As in `create_to_rib`: the new ServiceGroup reaches the allocator's cache first.
    std::thread::sleep(Duration::from_millis(1500));
    // Read once: an agent that restarts during the scenario fails the reads below.
    let pids: Vec<i32> = c
        .nodes
        .iter()
        .map(|node| agent_pid(c, &node.name))
        .collect::<Result<_>>()?;
    let before: Vec<(u64, u64, f64)> = pids.iter().map(|p| usage(*p)).collect::<Result<_>>()?;
    let t0 = Instant::now();
    // Created 16 at a time, as fast as the API server takes them.
    let names: Vec<String> = (0..count).map(|i| format!("svc-{i}")).collect();
    let group = lab.group.as_str();
    let api: Api<Service> = Api::namespaced(lab.k.client.clone(), &lab.ns.name);
    lab.k.rt.block_on(async {
        futures::stream::iter(names.iter())
            .map(|name| {
                let api = api.clone();
                async move {
                    let svc: Service = serde_json::from_value(json!({
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
    let mut bgpd = Vty::connect(&lab.frr, "bgpd")?;
    let mut zebra = Vty::connect(&lab.frr, "zebra")?;
    // The router has every route from every node (bgpd's Adj-RIB-In counts).
    let mut last_seen = Vec::new();
    let all_received = wait_for(Duration::from_secs(300), "all routes in the router", || {
        let got = received(&mut bgpd, c)?;
        let done = got.iter().all(|r| *r as usize == count);
        last_seen = got;
        Ok(done.then(|| t0.elapsed()))
    })
    .with_context(|| format!("last pfxRcd: {last_seen:?}\n{}", agent_log_tails(c)))?;
    // And zebra installed them with a next hop from every node each.
    let in_rib = wait_for(Duration::from_secs(120), "all routes in the RIB", || {
        let r = rib_routes_with_all_hops(&mut zebra, &lab.hop_owner, &lab.all)?;
        Ok((r == count).then(|| t0.elapsed()))
    })?;
    let at_done: Vec<(u64, u64, f64)> = pids.iter().map(|p| usage(*p)).collect::<Result<_>>()?;
    let idle = Duration::from_secs(20);
    std::thread::sleep(idle);
    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    let mut nodes = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let (rss, hwm, cpu) = usage(*pid)?;
        let m = metrics(c, i)?;
        let announced = m
            .lines()
            .filter(|l| l.starts_with("purelb_lbnodeagent_announced{"))
            .count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        nodes.push(json!({
            "node": c.nodes[i].name,
            "pid": pid,
            "rss_mib": mib(rss),
            "peak_rss_mib": mib(hwm),
            "rss_before_services_mib": mib(before[i].0),
            "rss_at_all_announced_mib": mib(at_done[i].0),
            "cpu_s_total": cpu,
            "cpu_s_to_announce_all": at_done[i].2 - before[i].2,
            "cpu_s_idle_20s": cpu - at_done[i].2,
            "threads": status_field(&status, "Threads:"),
            "announced_metric_lines": announced,
        }));
    }
    let peak = nodes
        .iter()
        .filter_map(|n| n["peak_rss_mib"].as_f64())
        .fold(0.0, f64::max);
    // Every agent watches Services in all namespaces: how many there are in all.
    let all: Api<Service> = Api::all(lab.k.client.clone());
    let services_in_cluster = lab
        .k
        .rt
        .block_on(all.list(&Default::default()))?
        .items
        .len();
    let mut sessions = BTreeMap::new();
    for (family, v6) in [("ipv4", false), ("ipv6", true)] {
        let states: Vec<Option<String>> = (0..n)
            .map(|i| {
                let peer = if v6 { node_v6(c, i) } else { node_v4(c, i) };
                lab.frr.bgp_state(&peer.to_string()).ok().flatten()
            })
            .collect();
        sessions.insert(family, states);
    }
    Ok(json!({
        "services": count,
        "family": "IPv6 remote, aggregation /128",
        "peers_per_agent": 2,
        "peers": "IPv4 and IPv6 sessions to the lab router",
        "services_in_cluster_all_namespaces": services_in_cluster,
        "create_calls_s": created.as_secs_f64(),
        "router_has_all_from_every_node_s": all_received.as_secs_f64(),
        "after_last_create_returned_s": (all_received - created).as_secs_f64(),
        format!("rib_has_all_with_{n}_hops_s"): in_rib.as_secs_f64(),
        "sessions_at_end": sessions,
        "nodes": nodes,
        "max_peak_rss_mib": peak,
        "target": "< 40 MiB RSS per agent (with BGP, 2 peers)",
        "target_met": peak < 40.0,
        "agent_logs": log_findings(c),
    }))
}

fn human_summary(out: &Value, nodes: usize) -> String {
    let mut s = String::from("\n== BGP bench summary ==\n");
    let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    if let Some(l) = out.get("create_to_rib") {
        let r = &l["from_create_returned"];
        s.push_str(&format!(
            "create -> route in the router's RIB ({nodes} next hops), {} Services: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (from before the call: p50 {:.1}, p99 {:.1})\n",
            l["services"],
            ms(r, "p50_ms"),
            ms(r, "p99_ms"),
            ms(r, "max_ms"),
            ms(&l["from_before_create_call"], "p50_ms"),
            ms(&l["from_before_create_call"], "p99_ms"),
        ));
        let b = &l["breakdown"];
        s.push_str(&format!(
            "  medians: create returned -> last agent announces {:.1} ms; -> bgpd has {nodes} paths {:.1} ms; bgpd -> zebra RIB {:.1} ms\n",
            ms(&b["create_returned_to_last_agent_logged_announcingNonLocal"], "median_ms"),
            ms(&b[format!("last_agent_logged_to_bgpd_has_{nodes}_paths")], "median_ms"),
            ms(&b[format!("bgpd_has_{nodes}_paths_to_zebra_rib_{nodes}_hops")], "median_ms"),
        ));
    }
    if let Some(g) = out.get("graceful_stop_to_withdraw") {
        let w = &g["sigterm_to_next_hop_gone"];
        let b = &g["restart_to_next_hop_back"];
        s.push_str(&format!(
            "pod delete (SIGTERM) -> next hop gone, {} runs: median {:.1} ms, max {:.1} ms (agent exited: median {:.1} ms; path gone from bgpd: median {:.1} ms); exit -> replacement's next hop back: median {:.1} ms, max {:.1} ms\n",
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
            "{} Services, IPv4 and IPv6 sessions per agent: all routes in the router after {:.1} s (create calls {:.1} s; {:.2} s after the last create returned); peak RSS max {:.1} MiB (target < 40)\n",
            x["services"],
            x["router_has_all_from_every_node_s"]
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
