//! Scenario benchmarks on the real cluster (`testbed/topology/purelb.clab.yml`: four
//! kubelets with containerd and kube-proxy, FRR, a client), PureLB installed from
//! `deploy/` with the images of `make images`. Needs root. Prints one JSON object,
//! and a summary on stderr.
//!
//! `cargo bench -p purelb-agent --bench cluster`:
//! * `startup`: control plane and four Ready nodes, the image import per node, and the
//!   install (`kubectl apply -k deploy`, `-k deploy/defaults`, both rolled out);
//! * `create_to_answer`: a LoadBalancer Service created → the first answer from a
//!   backend pod to the client behind the router, through kube-proxy, p50/p99/max over
//!   `CLUSTER_BENCH_SERVICES` (100) local and as many remote IPv4 Services, created one
//!   after another in front of one web Deployment.

use std::net::IpAddr;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use testbed::cluster::Cluster;
use testbed::cluster::workload::{Families, LbService, ask};

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the cluster benchmarks need root");
        return Ok(());
    }
    let services: usize = std::env::var("CLUSTER_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (c, install) = Cluster::start_with_purelb()?;
    // Pools large enough for the run, in the lab's routed ranges.
    c.apply_yaml(&format!(
        "apiVersion: purelb.io/v2\nkind: ServiceGroup\nmetadata: {{name: bench-local, namespace: purelb-system}}\n\
         spec: {{local: {{v4pools: [{{subnet: 172.30.250.0/24, pool: 172.30.250.30-172.30.250.{}, aggregation: default}}]}}}}\n\
         ---\napiVersion: purelb.io/v2\nkind: ServiceGroup\nmetadata: {{name: bench-remote, namespace: purelb-system}}\n\
         spec: {{remote: {{v4pools: [{{subnet: 10.255.2.0/24, pool: 10.255.2.1-10.255.2.254, aggregation: /32}}]}}}}\n",
        (30 + services).min(199)
    ))?;
    c.kubectl(&["create", "namespace", "bench"])?;
    c.deploy_web("bench", "web", 4)?;
    let client = c.host("client")?.netns().to_owned();
    let mut out = serde_json::Map::new();
    out.insert(
        "startup".into(),
        json!({
            "cluster_ready_s": c.startup_time.as_secs_f64(),
            "image_import_s": c.nodes.iter().map(|n| n.image_import_time.as_secs_f64()).collect::<Vec<_>>(),
            "install_rolled_out_s": install.as_secs_f64(),
        }),
    );
    for (kind, group) in [("local", "bench-local"), ("remote", "bench-remote")] {
        let mut times = Vec::with_capacity(services);
        for i in 0..services {
            let name = format!("{kind}-{i}");
            let created = Instant::now();
            let ips: Vec<IpAddr> = c.lb_service(&LbService {
                namespace: "bench",
                name: &name,
                app: "web",
                group,
                families: Families::Ipv4,
                external_traffic_policy: "Cluster",
            })?;
            ask(Some(&client), ips[0], Duration::from_secs(60))?;
            times.push(created.elapsed());
        }
        times.sort();
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        let summary = json!({
            "services": services,
            "p50_ms": at(0.5).as_secs_f64() * 1e3,
            "p99_ms": at(0.99).as_secs_f64() * 1e3,
            "max_ms": times.last().map_or(0.0, |t| t.as_secs_f64() * 1e3),
        });
        eprintln!("create → first answer, {kind}: {summary}");
        out.insert(format!("create_to_answer_{kind}"), summary);
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
