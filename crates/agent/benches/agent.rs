//! Scenario benchmarks of the node agent on the real cluster (see `on_cluster`:
//! four kubelets, the agents as the `lbnodeagent` DaemonSet's pods, the allocator
//! Deployment, the lab's FRR router peered with every node). Needs root. Prints one
//! JSON object.
//!
//! `cargo bench -p purelb-agent --bench agent [failover] [latency] [scale]`
//! (all three without a filter):
//! * `failover`: the VIP of a local IPv4 Service elsewhere after its announcer's pod
//!   is deleted (the kubelet stops the agent with SIGTERM: graceful) or its agent is
//!   killed (SIGKILL, the kubelet frozen so it stays down), median and max over
//!   `AGENT_BENCH_RUNS` (10) runs each;
//! * `latency`: Service create → VIP on a NIC, p50/p99 over `AGENT_BENCH_SERVICES`
//!   (100) local IPv6 Services created one after another;
//! * `scale`: `AGENT_BENCH_SCALE` (1,000) Services (half local, half remote, IPv6)
//!   on the four nodes: time until all are announced, then each agent's RSS and CPU
//!   seconds.
//!
//! Times are measured from just before the API call (or `kill_agent`) to the
//! kernel's address notification in the node's namespace.

#[path = "../tests/on_cluster/mod.rs"]
mod on_cluster;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use on_cluster::*;
use purelb_agent::kernel::{EventGroups, EventStream, KernelEvent};
use serde_json::{Value, json};
use testbed::cluster::Cluster;
use testbed::netlab::Ns;

/// The bench's local pool: lan1 addresses, 65,536 of them (a test's pool has 256).
const LOCAL_V6_POOL: &str = "2001:db8:250::5:0/112";
/// The bench's remote pool, away from the lab's and the tests' remote ranges.
const REMOTE_V6_POOL: &str = "fd00:10:255:ff::1:0/112";
const REMOTE_V6_SUBNET: &str = "fd00:10:255:ff::/64";

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
    let runs: usize = env_number("AGENT_BENCH_RUNS", 10);
    let services: usize = env_number("AGENT_BENCH_SERVICES", 100);
    // Alone on the cluster: the scenarios stop agents and measure the agents' usage.
    let c = cluster_mut();
    let mut out = serde_json::Map::new();
    if wanted("failover") {
        out.insert("failover".into(), failover(&c, runs)?);
    }
    if wanted("latency") {
        out.insert("create_to_vip".into(), create_to_vip(&c, services)?);
    }
    if wanted("scale") {
        out.insert(
            "scale_1000".into(),
            scale(&c, env_number("AGENT_BENCH_SCALE", 1000))?,
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

/// The bench's ServiceGroups in `ns`, (local, remote). The remote pool aggregates
/// to its /64: one route for all, so BGP adds no per-Service work here (that is the
/// bgp bench's subject).
fn bench_groups(ns: &TestNs, k: &Kube) -> Result<(String, String)> {
    let (local, remote) = (format!("{}-local", ns.name), format!("{}-remote", ns.name));
    ns.group(
        k,
        &local,
        json!({"local": {"v6pools": [{"pool": LOCAL_V6_POOL, "subnet": LAN1_V6, "aggregation": "default"}]}}),
    )?;
    ns.group(
        k,
        &remote,
        json!({"remote": {"v6pools": [{"pool": REMOTE_V6_POOL, "subnet": REMOTE_V6_SUBNET, "aggregation": "default"}]}}),
    )?;
    Ok((local, remote))
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

fn failover(c: &Cluster, runs: usize) -> Result<Value> {
    let k = Kube::new(c)?;
    let ns = TestNs::new(c, "agent-bench-failover")?;
    let pools = ns.groups(&k)?;
    k.create_service(&ns.name, "web", &pools.local, &["IPv4"], json!({}))?;
    let vip = k.wait_ingress(&ns.name, "web", 1)?[0];
    let watch = AddWatch::start(c)?;
    let mut graceful = Vec::new();
    let mut killed = Vec::new();
    for kill in [false, true] {
        for run in 0..runs {
            let (holder, _) = wait_single_holder(c, vip)?;
            let node = c.nodes[holder].name.clone();
            let pod = agent_pod_on(c, &node)?;
            // Let renewals settle into a random phase (SIGKILL failover depends on it).
            std::thread::sleep(Duration::from_millis(200 + 487 * run as u64 % 4000));
            let took = if kill {
                // Frozen, the kubelet cannot restart the killed container.
                c.nodes[holder].freeze_kubelet(true)?;
                let measured = (|| -> Result<Duration> {
                    watch.drain();
                    let t0 = Instant::now();
                    kill_agent(c, &node)?;
                    let at = wait_add_elsewhere(&watch, vip, holder, Duration::from_secs(30))
                        .with_context(|| agent_logs_about(c, &vip.to_string()))?;
                    Ok(at - t0)
                })();
                // A new pod rather than the kubelet restarting the container: the
                // kubelet's crash-loop back-off of one pod grows with every kill, past
                // what a run can wait for.
                let replaced = k.delete_pod(&pod);
                c.nodes[holder].freeze_kubelet(false)?;
                replaced?;
                measured?
            } else {
                watch.drain();
                let t0 = Instant::now();
                k.delete_pod(&pod)?;
                let at = wait_add_elsewhere(&watch, vip, holder, Duration::from_secs(30))
                    .with_context(|| agent_logs_about(c, &vip.to_string()))?;
                at - t0
            };
            eprintln!(
                "failover {} run {run}: {took:?}",
                if kill { "SIGKILL" } else { "graceful" }
            );
            if kill {
                killed.push(took);
            } else {
                graceful.push(took);
            }
            wait_agents_rolled_out(c)?;
            // The node's new agent is the hash winner again: wait until it alone holds it.
            wait_for(TIMEOUT, "the VIP back on the node's new agent", || {
                let h = holders(c, vip)?;
                Ok((h.len() == 1 && h[0].0 == holder).then_some(()))
            })
            .with_context(|| agent_logs_about(c, &vip.to_string()))?;
        }
    }
    Ok(json!({
        "lease_duration_s": LEASE_DURATION.as_secs(),
        "graceful_sigterm": summary(graceful),
        "sigkill": summary(killed),
        "reference_purelb_graceful_ms": "2200-3200",
    }))
}

fn create_to_vip(c: &Cluster, count: usize) -> Result<Value> {
    let k = Kube::new(c)?;
    let ns = TestNs::new(c, "agent-bench-latency")?;
    let (local, _) = bench_groups(&ns, &k)?;
    let watch = AddWatch::start(c)?;
    // The new ServiceGroups reach the allocator's cache first: the first sample is a
    // steady-state one too.
    std::thread::sleep(Duration::from_millis(1500));
    let mut samples = Vec::new();
    // The kernel also notifies changes of existing addresses (an IPv6 VIP turning
    // deprecated, a lifetime renewal): only an address's first appearance counts.
    let mut seen = HashSet::new();
    for i in 0..count {
        watch.drain();
        let name = format!("svc-{i}");
        let t0 = Instant::now();
        k.create_service(&ns.name, &name, &local, &["IPv6"], json!({}))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (at, ip) = loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .with_context(|| {
                    format!(
                        "no VIP for {name}\n{}",
                        agent_logs_about(c, &format!("{}/{name}", ns.name))
                    )
                })?;
            if let Some((at, ip, _)) = watch.next(left)
                && seen.insert(ip)
            {
                break (at, ip);
            }
        };
        samples.push(at - t0);
        let got = k.wait_ingress(&ns.name, &name, 1)?[0];
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

fn scale(c: &Cluster, count: usize) -> Result<Value> {
    let k = Kube::new(c)?;
    let ns = TestNs::new(c, "agent-bench-scale")?;
    let (local_group, remote_group) = bench_groups(&ns, &k)?;
    // Only lan1 nodes hold addresses of the local pool, each on its lan1 interface.
    let lan1 = lan1_nodes(c)?;
    let lan_if: Vec<Option<String>> = (0..c.nodes.len())
        .map(|i| lan1.contains(&i).then(|| lan1_interface(c, i)).transpose())
        .collect::<Result<_>>()?;
    // Read once: an agent that restarts during the scenario fails the reads below.
    let pids: Vec<i32> = c
        .nodes
        .iter()
        .map(|n| agent_pid(c, &n.name))
        .collect::<Result<_>>()?;
    let before: Vec<(u64, u64, f64)> = pids.iter().map(|p| usage(*p)).collect::<Result<_>>()?;
    let local = count / 2;
    let remote = count - local;
    let t0 = Instant::now();
    // Created 16 at a time, as fast as the API server takes them.
    let names: Vec<(String, &str)> = (0..count)
        .map(|i| {
            let group = if i < local {
                &local_group
            } else {
                &remote_group
            };
            (format!("svc-{i}"), group.as_str())
        })
        .collect();
    let api: Api<Service> = Api::namespaced(k.client.clone(), &ns.name);
    k.rt.block_on(async {
        futures::stream::iter(names.iter())
            .map(|(name, group)| {
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
    // All announced: every remote VIP on each node's kube-lb0, every local VIP
    // (deprecated, as the agent adds them) on exactly one node's LAN interface.
    let mut last_seen = (Vec::new(), 0);
    let announced = wait_for(Duration::from_secs(300), "all VIPs announced", || {
        let mut on_dummy = Vec::new();
        let mut local_holders: HashMap<IpAddr, usize> = HashMap::new();
        for (n, lan_if) in c.nodes.iter().zip(&lan_if) {
            let addrs = addresses(&n.ns)?;
            // kube-lb0 may have an IPv6 link-local address of its own.
            on_dummy.push(
                addrs
                    .iter()
                    .filter(|a| {
                        a.ifname == DUMMY
                            && !matches!(a.ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
                    })
                    .count(),
            );
            for a in addrs
                .iter()
                .filter(|a| lan_if.as_ref() == Some(&a.ifname) && a.ip.is_ipv6() && a.deprecated)
            {
                *local_holders.entry(a.ip).or_default() += 1;
            }
        }
        let done = on_dummy.iter().all(|d| *d == remote)
            && local_holders.len() == local
            && local_holders.values().all(|n| *n == 1);
        last_seen = (on_dummy, local_holders.len());
        Ok(done.then(|| t0.elapsed()))
    })
    .with_context(|| {
        format!(
            "last seen: remote VIPs per node {:?}, local VIPs {}\n{}",
            last_seen.0,
            last_seen.1,
            agent_log_tails(c)
        )
    })?;
    let at_done: Vec<(u64, u64, f64)> = pids.iter().map(|p| usage(*p)).collect::<Result<_>>()?;
    let idle = Duration::from_secs(30);
    std::thread::sleep(idle);
    let mut nodes = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let (rss, hwm, cpu) = usage(*pid)?;
        let m = metrics(c, i)?;
        let mut announced_here: BTreeMap<&str, usize> = BTreeMap::new();
        for line in m
            .lines()
            .filter(|l| l.starts_with("purelb_lbnodeagent_announced{"))
        {
            let kind = if line.contains("ip=\"fd00:10:255:") {
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
    Ok(json!({
        "services": count,
        "local_ipv6": local,
        "remote_ipv6": remote,
        "create_calls_s": created.as_secs_f64(),
        "all_announced_s": announced.as_secs_f64(),
        "nodes": nodes,
        "reference": "DESIGN target: < 40 MiB RSS total per agent (with BGP, 2 peers)",
    }))
}
