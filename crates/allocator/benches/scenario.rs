//! Scenario benchmark on a real control plane: create N LoadBalancer Services
//! as fast as the API server takes them and measure how long until each has
//! an address. Prints one JSON object.
//!
//! `cargo bench -p purelb-allocator --bench scenario` (N = 5000; set
//! `SCENARIO_SERVICES` to change it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Allocator, ServiceSpec, apply_group, create_service, ingress_of, prepare};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const INSTALL_NAMESPACE: &str = "purelb-bench";
const CONCURRENT_CREATES: usize = 32;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let count: usize = std::env::var("SCENARIO_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    prepare(INSTALL_NAMESPACE);
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.test_namespace("bench").await.expect("namespace");
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        "bench",
        json!({"local": {"v4pool": {"pool": "10.128.0.0/16", "subnet": "10.128.0.0/16"}}}),
    )
    .await;
    let allocator = Allocator::start(
        INSTALL_NAMESPACE,
        "bench",
        &[("PURELB_LEADER_ELECT", "false")],
    );

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let addressed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let watch = {
        let addressed = addressed.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(
                watcher::watcher(services, watcher::Config::default()).applied_objects()
            );
            while let Ok(Some(service)) = events.try_next().await {
                if !ingress_of(&service).is_empty() {
                    let name = service.metadata.name.unwrap_or_default();
                    addressed
                        .lock()
                        .expect("lock")
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };

    let start = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(CONCURRENT_CREATES, |i| {
            let (client, created, namespace) =
                (client.clone(), created.clone(), ns.name().to_owned());
            async move {
                let name = format!("svc-{i}");
                let before = Instant::now();
                let spec = ServiceSpec {
                    node_ports: false,
                    ..ServiceSpec::group("bench")
                };
                create_service(&client, &namespace, &name, spec).await;
                created.lock().expect("lock").insert(name, before);
            }
        })
        .await;
    let all_created = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while addressed.lock().expect("lock").len() < count {
        assert!(
            Instant::now() < deadline,
            "not every Service got an address within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_addressed = start.elapsed();
    watch.abort();

    let created = created.lock().expect("lock");
    let addressed = addressed.lock().expect("lock");
    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, at)| addressed[name].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (rss_kib, cpu_seconds) = process_usage(allocator.child.id());
    println!(
        "{}",
        json!({
            "services": count,
            "all_created_s": all_created.as_secs_f64(),
            "all_addressed_s": all_addressed.as_secs_f64(),
            "create_to_address_p50_ms": percentile(0.50).as_secs_f64() * 1e3,
            "create_to_address_p99_ms": percentile(0.99).as_secs_f64() * 1e3,
            "create_to_address_max_ms": latencies[latencies.len() - 1].as_secs_f64() * 1e3,
            "allocator_peak_rss_mib": rss_kib as f64 / 1024.0,
            "allocator_cpu_s": cpu_seconds,
        })
    );
}

/// Peak RSS (KiB) and CPU seconds (user + system) of a process, from /proc.
fn process_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (rss, ticks as f64 / per_second)
}
