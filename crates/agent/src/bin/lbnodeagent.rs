//! The PureLB node agent: elects, per address, the node that announces a local VIP,
//! puts VIPs on NICs and on the dummy interface, and keeps the announcing
//! annotations. Flags and environment as PureLB's.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use purelb_agent::announce::controller::{Controller, Options};
use purelb_agent::bgp::runtime::{self as bgp_runtime, BgpOptions};
use purelb_agent::event::COMPONENT;
use purelb_agent::kernel::Kernel;
use purelb_agent::metrics::Metrics;
use purelb_agent::node::election::Timing;
use purelb_agent::parse::go_duration::parse_go_duration;
use purelb_kube_edge::events::EventSink;
use purelb_kube_edge::http::{self, Health};
use purelb_kube_edge::setup;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(name = "lbnodeagent", version, about = "PureLB node agent")]
struct Args {
    /// Install namespace: node Leases and ServiceGroups live here.
    #[arg(long, env = "PURELB_NAMESPACE", value_parser = non_empty)]
    namespace: String,
    /// This node's name (the Node object and the lease `purelb-node-<name>`).
    #[arg(long = "node-name", env = "PURELB_NODE_NAME", value_parser = non_empty)]
    node_name: String,
    /// This pod's UID, written to the lease as `purelb.io/instance`; the lease is
    /// deleted at shutdown only while it carries this value. Generated when absent.
    #[arg(long = "pod-uid", env = "PURELB_POD_UID")]
    pod_uid: Option<String>,
    /// Address the metrics server binds (all addresses when absent).
    #[arg(long, env = "PURELB_HOST")]
    host: Option<IpAddr>,
    /// Port for /metrics and /healthz.
    #[arg(long, default_value_t = 7472)]
    port: u16,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// How long a node lease is valid (Go duration, or seconds).
    #[arg(long = "lease-duration", env = "PURELB_LEASE_DURATION", default_value = "10s", value_parser = duration)]
    lease_duration: Duration,
    /// How long after its last successful renewal the node keeps its local
    /// addresses; must be shorter than the lease duration (fencing). Default: 70%
    /// of the lease duration.
    #[arg(long = "renew-deadline", env = "PURELB_RENEW_DEADLINE", value_parser = duration)]
    renew_deadline: Option<Duration>,
    /// Wait between failed renewals. Default: a fifth of the lease duration.
    #[arg(long = "retry-period", env = "PURELB_RETRY_PERIOD", value_parser = duration)]
    retry_period: Option<Duration>,
    /// `debug` for debug logs; anything else is info.
    #[arg(long = "log-level", env = "PURELB_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// A Go duration (`10s`, `1m30s`) or a number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    if let Ok(seconds) = s.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    parse_go_duration(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut timing = Timing::for_lease(args.lease_duration);
    if let Some(d) = args.renew_deadline {
        timing.renew_deadline = d;
    }
    if let Some(d) = args.retry_period {
        timing.retry_period = d;
    }
    if let Err(message) = timing.validate() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    setup::init_json_logging(log_filter(&args.log_level));
    tracing::info!(release = env!("CARGO_PKG_VERSION"), "log-level" = %args.log_level, node = %args.node_name, "Starting");
    // Two workers: the agent is mostly waiting, and a DaemonSet pod should stay small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args, timing))
}

async fn run(args: Args, timing: Timing) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let client = setup::client(args.kubeconfig.as_deref()).await?;
    let kernel = Kernel::new().context("opening netlink")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let addr = SocketAddr::new(
        args.host.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        args.port,
    );
    let server = http::bind(addr, metrics.clone(), health.clone())
        .await
        .with_context(|| format!("metrics server on {addr}"))?;
    let server = tokio::spawn(server);
    let instance = args.pod_uid.filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{}-{}-{nanos:x}", args.node_name, std::process::id())
    });
    // One stop signal for both halves: the announcer and the embedded BGP speaker.
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let bgp = tokio::spawn(bgp_runtime::run(
        client.clone(),
        BgpOptions {
            namespace: args.namespace.clone(),
            node: args.node_name.clone(),
        },
        EventSink::spawn(client.clone(), COMPONENT, Some(args.node_name.clone())),
        stop.clone(),
    ));
    let settings = Options {
        namespace: args.namespace,
        node: args.node_name,
        instance,
        timing,
    };
    let mut stopped = stop.clone();
    let controller_stop = async move {
        let _ = stopped.wait_for(|s| *s).await.map(|_| ());
    };
    tokio::select! {
        result = Controller::run(client, settings, kernel, metrics, health, controller_stop) => {
            result.context("agent stopped")?;
        }
        result = server => {
            result.context("metrics server panicked")?.with_context(|| format!("metrics server on {addr}"))?;
        }
    }
    // The speaker has sent its Cease and written AgentShutdown, or fails here.
    bgp.await
        .context("BGP task panicked")?
        .context("BGP stopped")?;
    Ok(())
}

/// `--log-level debug` is debug for the agent's own logs only: the HTTP and TLS stacks would
/// drown it. Anything else is info.
fn log_filter(level: &str) -> &'static str {
    if level == "debug" {
        "info,purelb_agent=debug,lbnodeagent=debug"
    } else {
        "info"
    }
}

/// SIGTERM, SIGINT or SIGQUIT. The handlers are installed at once (so a signal
/// during start-up is not fatal); the returned future resolves on the first signal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut quit = signal(SignalKind::quit()).context("SIGQUIT handler")?;
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
        };
        tracing::info!(op = "shutdown", signal = which, "signal received");
    })
}
