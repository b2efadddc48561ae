//! The PureLB allocator: assigns addresses to LoadBalancer Services from
//! ServiceGroup pools. Flags and environment as PureLB's, plus
//! leader election so several replicas can run.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Parser};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use purelb_allocator::controller::{Controller, Settings};
use purelb_allocator::leader::{self, Leadership, Timing};
use purelb_allocator::metrics::Metrics;
use purelb_kube_edge::http::{self, Health};
use purelb_kube_edge::setup;

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Parser, Debug)]
#[command(name = "allocator", version, about = "PureLB allocator")]
struct Args {
    /// Port for /metrics, /healthz and /readyz.
    #[arg(long, default_value_t = 7472)]
    port: u16,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Install namespace: ServiceGroups are read from here. Defaults to the
    /// service account's namespace.
    #[arg(long, env = "PURELB_NAMESPACE")]
    namespace: Option<String>,
    /// `PureLB` makes this allocator handle Services without a loadBalancerClass.
    #[arg(
        long = "default-announcer",
        env = "DEFAULT_ANNOUNCER",
        default_value = ""
    )]
    default_announcer: String,
    /// `debug` for debug logs; anything else is info.
    #[arg(long = "log-level", env = "PURELB_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Elect one leader among replicas through the Lease `purelb-allocator`.
    #[arg(long = "leader-elect", env = "PURELB_LEADER_ELECT", action = ArgAction::Set, default_value_t = true)]
    leader_elect: bool,
    /// This replica's name in the election (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a leader's Lease is valid, in seconds.
    #[arg(long = "lease-duration", env = "PURELB_LEASE_DURATION", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_duration: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    setup::init_json_logging(log_filter(&args.log_level));
    tracing::info!(release = env!("CARGO_PKG_VERSION"), "log-level" = %args.log_level, "Starting");

    let client = setup::client(args.kubeconfig.as_deref()).await?;
    let namespace = args.namespace.filter(|ns| !ns.is_empty()).or_else(|| {
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .ok()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
    });
    if namespace.is_none() {
        tracing::warn!(
            op = "startup",
            "install namespace unknown: ServiceGroup scoping and multi-pool are off"
        );
    }
    let settings = Settings {
        namespace: namespace.clone(),
        default_announcer: args.default_announcer == "PureLB",
    };

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, args.port));
    let server = tokio::spawn({
        let (metrics, health) = (metrics.clone(), health.clone());
        async move { http::bind(addr, metrics, health).await?.await }
    });

    let leadership = match (args.leader_elect, namespace) {
        (true, Some(ns)) => {
            let identity = args.identity.unwrap_or_else(hostname);
            let timing = Timing {
                lease_duration: Duration::from_secs(args.lease_duration),
                ..Timing::scaled(args.lease_duration)
            };
            leader::spawn(
                Api::<Lease>::namespaced(client.clone(), &ns),
                "purelb-allocator".to_owned(),
                identity,
                timing,
            )
        }
        (true, None) => anyhow::bail!(
            "--leader-elect needs the install namespace (--namespace or PURELB_NAMESPACE)"
        ),
        (false, _) => Leadership::Always,
    };

    tokio::select! {
        result = Controller::run(client, settings, metrics, health, leadership) => {
            result.context("controller stopped")?;
        }
        result = server => {
            result.context("metrics server panicked")?.with_context(|| format!("metrics server on {addr}"))?;
        }
        _ = shutdown_signal() => tracing::info!(op = "shutdown", "signal received; stopping"),
    }
    Ok(())
}

/// `--log-level debug` logs everything at debug level; anything else is info.
fn log_filter(level: &str) -> &'static str {
    if level == "debug" { "debug" } else { "info" }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "allocator".to_owned())
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
