//! Scenario benchmarks of the node agent on the real control plane and network lab
//! (three node namespaces running `lbnodeagent`, the allocator in-process). Needs
//! root. Prints one JSON object.
//!
//! `cargo bench -p purelb-agent --bench agent [failover] [latency] [scale]`
//! (all three without a filter):
//! * `failover`: the VIP elsewhere after its announcer stops (SIGTERM, graceful)
//!   or is killed (SIGKILL), median and max over `AGENT_BENCH_RUNS` (10) runs each;
//! * `latency`: Service create → VIP on a NIC, p50/p99 over `AGENT_BENCH_SERVICES`
//!   (100) Services created one after another (IPv6: the IPv4 test slot is a /28);
//! * `scale`: 1,000 Services (half local, half remote, IPv6) on three nodes: time
//!   until all are announced, then each agent's RSS and CPU seconds.
//!
//! Times are measured from just before the API call (or signal) to the kernel's
//! address notification in the node's namespace.

#[path = "../tests/agent_lab/mod.rs"]
mod agent_lab;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_lab::*;
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use purelb_agent::kernel::{EventGroups, EventStream, KernelEvent};
use serde_json::{Value, json};
use testbed::netlab::Ns;

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the agent benchmarks need root");
        return Ok(());
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let runs: usize = env_number("AGENT_BENCH_RUNS", 10);
    let services: usize = env_number("AGENT_BENCH_SERVICES", 100);
    let mut out = serde_json::Map::new();
    if wanted("failover") {
        out.insert("failover".into(), failover(runs)?);
    }
    if wanted("latency") {
        out.insert("create_to_vip".into(), create_to_vip(services)?);
    }
    if wanted("scale") {
        out.insert(
            "scale_1000".into(),
            scale(env_number("AGENT_BENCH_SCALE", 1000))?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    Ok(())
}

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Address additions seen in every node namespace: (when, ip, node index).
struct AddWatch {
    rx: mpsc::Receiver<(Instant, IpAddr, usize)>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl AddWatch {
    fn start(c: &Cluster) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = mpsc::channel();
        for (i, n) in c.nodes.iter().enumerate() {
            let (ns, tx, stop, ready) = (n.ns.clone(), tx.clone(), stop.clone(), ready_tx.clone());
            threads.push(std::thread::spawn(move || listen(ns, i, tx, stop, ready)));
        }
        for _ in 0..c.nodes.len() {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .context("address listener start")?;
        }
        Ok(Self { rx, stop, threads })
    }

    /// The next addition, if one comes within `timeout`.
    fn next(&self, timeout: Duration) -> Option<(Instant, IpAddr, usize)> {
        self.rx.recv_timeout(timeout).ok()
    }

    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for AddWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn listen(
    ns: Ns,
    index: usize,
    tx: mpsc::Sender<(Instant, IpAddr, usize)>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
) {
    let _ = ns.run(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut events = EventStream::open(EventGroups {
                links: false,
                addresses: true,
                routes: false,
            })
            .await?;
            let _ = ready.send(());
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(100), events.next()).await {
                    Ok(Some(KernelEvent::AddressAdded(a))) if a.is_owned() => {
                        let _ = tx.send((Instant::now(), a.ip, index));
                    }
                    Ok(None) => break,
                    _ => {}
                }
            }
            anyhow::Ok(())
        })
    });
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        millis(samples[i])
    };
    let n = samples.len();
    let median = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        millis(samples[n / 2])
    } else {
        millis((samples[n / 2 - 1] + samples[n / 2]) / 2)
    };
    json!({
        "runs": n,
        "median_ms": median,
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": millis(*samples.last().unwrap_or(&Duration::ZERO)),
        "min_ms": millis(*samples.first().unwrap_or(&Duration::ZERO)),
        "samples_ms": samples.iter().map(|d| millis(*d)).collect::<Vec<_>>(),
    })
}

/// Waits for an addition of `ip` on a node other than `not`; returns when it came.
fn wait_add_elsewhere(w: &AddWatch, ip: IpAddr, not: usize, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some((at, added, node)) = w.next(left)
            && added == ip
            && node != not
        {
            return Ok(at);
        }
    }
    bail!("{ip} did not appear on another node within {timeout:?}")
}

fn failover(runs: usize) -> Result<Value> {
    let mut c = Cluster::new(Options::default())?;
    c.create_service("web", &c.local_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    let watch = AddWatch::start(&c)?;
    let mut graceful = Vec::new();
    let mut killed = Vec::new();
    for kill in [false, true] {
        for run in 0..runs {
            let (holder, _) = c.wait_single_holder(vip)?;
            // Let renewals settle into a random phase (SIGKILL failover depends on it).
            std::thread::sleep(Duration::from_millis(200 + 487 * run as u64 % 4000));
            watch.drain();
            let t0 = Instant::now();
            if kill {
                c.kill_agent(holder)?;
            } else {
                c.stop_agent(holder)?;
            }
            let at = wait_add_elsewhere(&watch, vip, holder, Duration::from_secs(30))
                .with_context(|| c.logs())?;
            let took = at - t0;
            eprintln!(
                "failover {} run {run}: {took:?}",
                if kill { "SIGKILL" } else { "graceful" }
            );
            if kill {
                killed.push(took);
            } else {
                graceful.push(took);
            }
            c.start_agent(holder)?;
            c.wait_members(3)?;
            // The restarted node is the hash winner again: wait until it alone holds it.
            wait_for(TIMEOUT, "the VIP back on the restarted node", || {
                let h = c.holders(vip)?;
                Ok((h.len() == 1 && h[0].0 == holder).then_some(()))
            })
            .with_context(|| c.logs())?;
        }
    }
    Ok(json!({
        "lease_duration_s": 10,
        "graceful_sigterm": summary(graceful),
        "sigkill": summary(killed),
        "reference_purelb_graceful_ms": "2200-3200",
    }))
}

fn create_to_vip(count: usize) -> Result<Value> {
    let c = Cluster::new(Options {
        large_v6_pool: true,
        ..Options::default()
    })?;
    let watch = AddWatch::start(&c)?;
    // Past the agents' join hold-down: steady state, not start-up.
    std::thread::sleep(Duration::from_millis(1500));
    let mut samples = Vec::new();
    // The kernel also notifies changes of existing addresses (an IPv6 VIP turning
    // deprecated, a lifetime renewal): only an address's first appearance counts.
    let mut seen = std::collections::HashSet::new();
    for i in 0..count {
        watch.drain();
        let name = format!("svc-{i}");
        let t0 = Instant::now();
        c.create_service(&name, &c.local_group(), &["IPv6"], json!({}))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (at, ip) = loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .with_context(|| format!("no VIP for {name}\n{}", c.logs()))?;
            if let Some((at, ip, _)) = watch.next(left)
                && seen.insert(ip)
            {
                break (at, ip);
            }
        };
        samples.push(at - t0);
        let got = c.wait_ingress(&name, 1)?[0];
        if got != ip {
            bail!("{name}: VIP {got} but the kernel reported {ip}");
        }
    }
    let mut s = summary(samples);
    if let Value::Object(m) = &mut s {
        m.remove("samples_ms");
        m.insert("family".into(), json!("IPv6 local"));
        m.insert("reference_purelb_ms".into(), json!("400-1100"));
    }
    Ok(s)
}

fn scale(count: usize) -> Result<Value> {
    let c = Cluster::new(Options {
        large_v6_pool: true,
        ..Options::default()
    })?;
    let before: Vec<(u64, u64, f64)> = (0..3)
        .map(|i| usage(c.agent(i).pid()))
        .collect::<Result<_>>()?;
    let local = count / 2;
    let t0 = Instant::now();
    // Created 16 at a time, as fast as the API server takes them.
    let names: Vec<(String, String)> = (0..count)
        .map(|i| {
            let group = if i < local {
                c.local_group()
            } else {
                c.remote_group()
            };
            (format!("svc-{i}"), group)
        })
        .collect();
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(c.client.clone(), c.ns());
    c.rt.block_on(async {
        futures::stream::iter(names.iter())
            .map(|(name, group)| {
                let api = api.clone();
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
    // All announced: every remote VIP on each node's kube-lb0, every local VIP on
    // exactly one node.
    let announced = wait_for(Duration::from_secs(300), "all VIPs announced", || {
        c.ensure_agents_running()?;
        let mut on_dummy = Vec::new();
        let mut local_total = 0;
        for n in &c.nodes {
            let addrs = addresses(&n.ns)?;
            // kube-lb0 (an ifb here) has an IPv6 link-local address of its own.
            on_dummy.push(
                addrs
                    .iter()
                    .filter(|a| a.ifname == DUMMY && !a.ip.to_string().starts_with("fe80"))
                    .count(),
            );
            local_total += addrs
                .iter()
                .filter(|a| a.ifname == n.lan_if && a.ip.is_ipv6() && a.deprecated)
                .count();
        }
        Ok(
            (on_dummy.iter().all(|d| *d == count - local) && local_total == local)
                .then(|| t0.elapsed()),
        )
    })
    .with_context(|| c.logs())?;
    let mut nodes = Vec::new();
    let at_done: Vec<(u64, u64, f64)> = (0..3)
        .map(|i| usage(c.agent(i).pid()))
        .collect::<Result<_>>()?;
    let idle = Duration::from_secs(30);
    std::thread::sleep(idle);
    for i in 0..3 {
        let (rss, hwm, cpu) = usage(c.agent(i).pid())?;
        let m = c.metrics(i)?;
        let mut announced_here: BTreeMap<&str, usize> = BTreeMap::new();
        for line in m
            .lines()
            .filter(|l| l.starts_with("purelb_lbnodeagent_announced{"))
        {
            let kind = if line.contains("ip=\"2001:db8:2:") {
                "remote"
            } else {
                "local"
            };
            *announced_here.entry(kind).or_default() += 1;
        }
        nodes.push(json!({
            "node": c.nodes[i].name,
            "rss_mib": rss as f64 / 1024.0,
            "peak_rss_mib": hwm as f64 / 1024.0,
            "rss_before_services_mib": before[i].0 as f64 / 1024.0,
            "cpu_s_total": cpu,
            "cpu_s_to_announce_all": at_done[i].2 - before[i].2,
            "cpu_s_idle_30s": cpu - at_done[i].2,
            "announced": announced_here,
        }));
    }
    let mut per_node = HashMap::new();
    per_node.insert("nodes", nodes);
    Ok(json!({
        "services": count,
        "local_ipv6": local,
        "remote_ipv6": count - local,
        "create_calls_s": created.as_secs_f64(),
        "all_announced_s": announced.as_secs_f64(),
        "nodes": per_node.remove("nodes"),
        "reference": "DESIGN target: < 40 MiB RSS total per agent (with BGP, 2 peers)",
    }))
}
