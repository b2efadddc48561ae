//! `bgp-speak`: runs one [`Speaker`] from a YAML or JSON file, for tests, benchmarks and manual
//! interop work.
//!
//! ```text
//! bgp-speak --config speaker.yaml [--routes N --route-start 10.0.0.0]
//!           [--routes6 N --route-start6 2001:db8:100::] [--status-json FILE] [--log LEVEL]
//! ```
//!
//! The local routes are those of the file plus the synthetic ones (`--routes N` IPv4 /32s counting
//! up from `--route-start`, `--routes6 N` IPv6 /128s from `--route-start6`, all next-hop-self).
//!
//! Signals: SIGTERM/SIGINT stop cleanly (Cease to every peer, exit 0); SIGUSR1 withdraws every
//! local route; SIGHUP re-reads the file and applies it (the report goes to stdout as one JSON
//! line and into the status file; a bad file is logged and the running configuration stays), and
//! the local routes become the file's plus the synthetic ones again (undoing a SIGUSR1).
//!
//! Logs are tracing JSON lines on stderr. A bad flag or file exits non-zero with a message naming
//! the flag or field.

#[path = "bgp_speak/config.rs"]
mod config;
#[path = "bgp_speak/status.rs"]
mod status;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use purelb_bgp::rib::LocalRoute;
use purelb_bgp::speaker::Speaker;
use purelb_bgp::wire::{Ipv4Prefix, Ipv6Prefix, Prefix};

use config::Loaded;
use status::{Reload, StatusWriter};

#[derive(Debug, Parser)]
#[command(
    name = "bgp-speak",
    version,
    about = "Run the PureLB BGP speaker from a YAML or JSON file"
)]
struct Args {
    /// Configuration file: YAML if it ends in .yaml/.yml, JSON otherwise.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Announce N synthetic IPv4 /32 routes (next-hop-self), counting up from --route-start.
    #[arg(long, value_name = "N", default_value_t = 0)]
    routes: u32,
    /// First address of the synthetic IPv4 routes.
    #[arg(long, value_name = "ADDR", default_value = "10.0.0.0")]
    route_start: Ipv4Addr,
    /// Announce N synthetic IPv6 /128 routes (next-hop-self), counting up from --route-start6.
    #[arg(long, value_name = "N", default_value_t = 0)]
    routes6: u32,
    /// First address of the synthetic IPv6 routes.
    #[arg(long, value_name = "ADDR", default_value = "2001:db8:100::")]
    route_start6: Ipv6Addr,
    /// Write the status (peers, states, prefix counts, errors) as JSON to FILE every second and
    /// on exit.
    #[arg(long, value_name = "FILE")]
    status_json: Option<PathBuf>,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing EnvFilter directive.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log: String,
}

/// The synthetic routes of the command line, generated on demand (not kept in memory).
#[derive(Debug, Clone, Copy)]
struct Synthetic {
    v4_start: u32,
    v4: u32,
    v6_start: u128,
    v6: u32,
}

impl Synthetic {
    fn from_args(args: &Args) -> Result<Self> {
        let v4_start = u32::from(args.route_start);
        if args.routes > 0 && v4_start.checked_add(args.routes - 1).is_none() {
            bail!(
                "--routes {} from --route-start {} runs past 255.255.255.255",
                args.routes,
                args.route_start
            );
        }
        let v6_start = u128::from(args.route_start6);
        if args.routes6 > 0 && v6_start.checked_add(u128::from(args.routes6 - 1)).is_none() {
            bail!(
                "--routes6 {} from --route-start6 {} runs past the last IPv6 address",
                args.routes6,
                args.route_start6
            );
        }
        Ok(Self {
            v4_start,
            v4: args.routes,
            v6_start,
            v6: args.routes6,
        })
    }

    fn count(&self) -> usize {
        self.v4 as usize + self.v6 as usize
    }

    fn routes(self) -> impl Iterator<Item = LocalRoute> {
        let v4 = (0..self.v4).filter_map(move |i| {
            Ipv4Prefix::new(Ipv4Addr::from(self.v4_start.wrapping_add(i)), 32)
                .map(|p| LocalRoute::originated(Prefix::V4(p)))
        });
        let v6 = (0..self.v6).filter_map(move |i| {
            Ipv6Prefix::new(
                Ipv6Addr::from(self.v6_start.wrapping_add(u128::from(i))),
                128,
            )
            .map(|p| LocalRoute::originated(Prefix::V6(p)))
        });
        v4.chain(v6)
    }
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("--log {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The signals bgp-speak handles, blocked in every thread and taken by one thread with
/// `sigwait`, which forwards them to the runtime.
const SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks [`SIGNALS`] in this thread (and so in every thread started after) and starts the
/// thread that waits for them. Must run before any other thread is started.
fn forward_signals() -> Result<mpsc::UnboundedReceiver<libc::c_int>> {
    let set = signal_set();
    // SAFETY: pthread_sigmask with a valid set and no old-set pointer.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        bail!(
            "cannot block signals: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait on a valid set, writing into a local.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc == 0 && tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(rx)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let signals = match forward_signals() {
        Ok(rx) => rx,
        Err(e) => return fail(&e),
    };
    if let Err(e) = init_logging(&args.log) {
        return fail(&e);
    }
    let synthetic = match Synthetic::from_args(&args) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the tokio runtime: {e}")),
    };
    match runtime.block_on(run(args, loaded, synthetic, signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("bgp-speak: {e:#}");
    error!(error = %format!("{e:#}"), "exiting");
    ExitCode::FAILURE
}

/// Replaces the speaker's local routes with the file's and the synthetic ones; returns how many
/// routes that is (duplicates counted once).
fn load_routes(speaker: &Speaker, file_routes: &[LocalRoute], synthetic: Synthetic) -> usize {
    let started = Instant::now();
    speaker.set_routes(file_routes.iter().cloned().chain(synthetic.routes()));
    let count = file_routes.len() + synthetic.count();
    info!(
        routes = count,
        from_file = file_routes.len(),
        synthetic = synthetic.count(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "routes loaded"
    );
    count
}

async fn run(
    args: Args,
    loaded: Loaded,
    synthetic: Synthetic,
    mut signals: mpsc::UnboundedReceiver<libc::c_int>,
) -> Result<()> {
    let Loaded { config, routes } = loaded;
    let mut speaker = Speaker::start(config.clone())
        .await
        .context("cannot start the speaker")?;
    info!(
        asn = config.asn,
        router_id = %config.router_id,
        neighbors = config.neighbors.len(),
        listening = ?speaker.listening_on(),
        "speaker started"
    );
    let mut file_routes = routes;
    let mut writer = args.status_json.clone().map(StatusWriter::new);
    let mut route_count = load_routes(&speaker, &file_routes, synthetic);
    let mut withdrawn = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(w) = writer.as_mut() {
                    w.write(&speaker, route_count, withdrawn, true);
                }
            }
            sig = signals.recv() => match sig {
                None => break,
                Some(libc::SIGTERM | libc::SIGINT) => {
                    info!(signal = sig, "stopping");
                    break;
                }
                Some(libc::SIGUSR1) => {
                    let started = Instant::now();
                    speaker.set_routes(std::iter::empty());
                    route_count = 0;
                    withdrawn = true;
                    info!(
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "SIGUSR1: withdrew every local route"
                    );
                    if let Some(w) = writer.as_mut() {
                        w.write(&speaker, route_count, withdrawn, true);
                    }
                }
                Some(libc::SIGHUP) => {
                    let outcome = reload(&mut speaker, &args).await;
                    match outcome {
                        Ok((report, routes)) => {
                            file_routes = routes;
                            route_count = load_routes(&speaker, &file_routes, synthetic);
                            withdrawn = false;
                            let reload = Reload::applied(&report);
                            if let Ok(line) = serde_json::to_string(&reload) {
                                println!("{line}");
                            }
                            info!(
                                added = ?report.added,
                                removed = ?report.removed,
                                reset = ?report.reset,
                                updated = ?report.updated,
                                "SIGHUP: configuration applied"
                            );
                            if let Some(w) = writer.as_mut() {
                                w.reloaded(reload);
                            }
                        }
                        Err(e) => {
                            let message = format!("{e:#}");
                            error!(error = %message, "SIGHUP: reload failed; the running configuration stays");
                            let reload = Reload::failed(message);
                            if let Ok(line) = serde_json::to_string(&reload) {
                                println!("{line}");
                            }
                            if let Some(w) = writer.as_mut() {
                                w.reloaded(reload);
                            }
                        }
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write(&speaker, route_count, withdrawn, true);
                    }
                }
                Some(other) => warn!(signal = other, "unexpected signal"),
            }
        }
    }
    if let Some(w) = writer.as_mut() {
        w.write(&speaker, route_count, withdrawn, false);
    }
    speaker.stop().await;
    info!("stopped");
    Ok(())
}

async fn reload(
    speaker: &mut Speaker,
    args: &Args,
) -> Result<(purelb_bgp::speaker::ApplyReport, Vec<LocalRoute>)> {
    let Loaded { config, routes } = config::load(&args.config)?;
    let report = speaker.apply(config).await?;
    Ok((report, routes))
}
