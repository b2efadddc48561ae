//! `ipam-sidecar`: a reference external-IPAM sidecar for PureLB.
//!
//! It serves `purelb.ipam.v1.IPAM` on a Unix socket and hands out addresses
//! from the pools given on the command line. It is small on purpose, as a
//! starting point for a real integration, but it keeps the whole contract:
//!
//! * Allocate is idempotent on (pool, service): asking again returns what the
//!   service holds (and fills in a family it does not hold yet).
//! * Services with the same non-empty sharing key get the same address of a
//!   family; the sidecar knows no ports, so it does not check port clashes.
//! * The `explicit` selector takes exactly the addresses asked for.
//! * Release is idempotent: releasing what is not held (even in a pool it
//!   does not serve) is OK.
//! * With `--state FILE` every change is written to FILE (JSON, replaced
//!   atomically by rename) before the call returns, and FILE is read back at
//!   start, so a restart keeps every allocation.
//! * A stale socket file is removed before binding; concurrent calls are
//!   serialised by one lock; SIGTERM/SIGINT stop it cleanly and remove the
//!   socket.
//!
//! Status codes: `InvalidArgument` for malformed requests, an unknown pool or
//! a family the pool has no range for; `ResourceExhausted` when a family has
//! no free address; `AlreadyExists` when an explicitly requested address
//! belongs to another service; `Unavailable` when the state file cannot be
//! written (nothing is changed then).
//!
//! ```text
//! ipam-sidecar --socket /var/run/purelb/ipam.sock \
//!     --pool web=192.0.2.0/28,2001:db8::10-2001:db8::1f --pool db=198.51.100.8-198.51.100.15 \
//!     --state /var/lib/ipam-sidecar/state.json
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use purelb_allocator::external::proto::{
    self, allocate_request::Selector, ipam_server::Ipam, ipam_server::IpamServer,
    release_request::Target,
};
use purelb_allocator::external::{DEFAULT_SOCKET, MAX_ALLOCATE_IPS};
use purelb_api::pool::{AddressRange, IpFamily};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

const USAGE: &str = "\
usage: ipam-sidecar [--socket PATH] --pool NAME=RANGE[,RANGE...] [--pool ...] [--state FILE]

  --socket PATH   Unix socket to serve on (default /var/run/purelb/ipam.sock);
                  a stale socket there is removed first
  --pool NAME=RANGES
                  a pool named NAME (the ServiceGroup name) with comma-separated
                  ranges, each a CIDR (192.0.2.0/28, every address of it) or
                  FIRST-LAST (192.0.2.10-192.0.2.20); repeat for more pools
  --state FILE    keep allocations in FILE (JSON) across restarts; without it
                  they live in memory only
  --help          this text
";

// ---------------------------------------------------------------- flags

#[derive(Debug)]
struct Options {
    socket: PathBuf,
    pools: Vec<PoolConfig>,
    state: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct PoolConfig {
    name: String,
    ranges: Vec<AddressRange>,
    /// The range strings as given, for `display_addresses`.
    display: Vec<String>,
}

enum Parsed {
    Run(Options),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut socket = None;
    let mut state = None;
    let mut pools: Vec<PoolConfig> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag}: missing value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Parsed::Help),
            "--socket" => {
                let v = value("--socket")?;
                if v.is_empty() {
                    return Err("--socket: empty path".into());
                }
                socket = Some(PathBuf::from(v));
            }
            "--state" => {
                let v = value("--state")?;
                if v.is_empty() {
                    return Err("--state: empty path".into());
                }
                state = Some(PathBuf::from(v));
            }
            "--pool" => {
                let pool = parse_pool(&value("--pool")?).map_err(|e| format!("--pool {e}"))?;
                if pools.iter().any(|p| p.name == pool.name) {
                    return Err(format!("--pool {:?}: pool defined twice", pool.name));
                }
                for other in &pools {
                    for a in &pool.ranges {
                        if let Some(b) = other.ranges.iter().find(|b| overlaps(a, b)) {
                            return Err(format!(
                                "--pool {:?}: range {a} overlaps range {b} of pool {:?}",
                                pool.name, other.name
                            ));
                        }
                    }
                }
                pools.push(pool);
            }
            other => return Err(format!("{other}: unknown flag (see --help)")),
        }
    }
    if pools.is_empty() {
        return Err("--pool: at least one pool is required".into());
    }
    Ok(Parsed::Run(Options {
        socket: socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        pools,
        state,
    }))
}

/// `NAME=RANGE[,RANGE...]`; errors start with the quoted value.
fn parse_pool(spec: &str) -> Result<PoolConfig, String> {
    let (name, ranges) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: want NAME=RANGE[,RANGE...]"))?;
    if name.is_empty() {
        return Err(format!("{spec:?}: empty pool name"));
    }
    let mut parsed: Vec<AddressRange> = Vec::new();
    let mut display = Vec::new();
    for r in ranges.split(',') {
        let r = r.trim();
        if r.is_empty() {
            return Err(format!("{spec:?}: empty range"));
        }
        let range = AddressRange::parse(r).map_err(|e| format!("{spec:?}: {e}"))?;
        if let Some(other) = parsed.iter().find(|o| overlaps(&range, o)) {
            return Err(format!("{spec:?}: range {range} overlaps range {other}"));
        }
        parsed.push(range);
        display.push(r.to_owned());
    }
    Ok(PoolConfig {
        name: name.to_owned(),
        ranges: parsed,
        display,
    })
}

fn overlaps(a: &AddressRange, b: &AddressRange) -> bool {
    a.family() == b.family() && (a.contains(b.first()) || b.contains(a.first()))
}

// ---------------------------------------------------------------- state

/// The persisted state: pool → service → holding. Pools that are no longer
/// configured are kept (re-adding the pool brings them back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u32,
    pools: BTreeMap<String, BTreeMap<String, Holding>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Holding {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sharing_key: String,
    ips: Vec<IpAddr>,
}

const STATE_VERSION: u32 = 1;

/// How long a stop waits for open connections to go away.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

impl State {
    fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("--state {}: {e}", path.display()))?;
                if state.version != STATE_VERSION {
                    return Err(format!(
                        "--state {}: unsupported version {}",
                        path.display(),
                        state.version
                    ));
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                pools: BTreeMap::new(),
            }),
            Err(e) => Err(format!("--state {}: {e}", path.display())),
        }
    }

    /// Writes to `FILE.tmp`, syncs, renames over FILE, syncs the directory.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }

    fn pool(&self, name: &str) -> Option<&BTreeMap<String, Holding>> {
        self.pools.get(name)
    }
}

/// Who uses an address of a pool: sharing key and services.
#[derive(Debug, Default)]
struct Use<'a> {
    sharing_key: &'a str,
    services: BTreeSet<&'a str>,
}

fn uses(holdings: &BTreeMap<String, Holding>) -> BTreeMap<IpAddr, Use<'_>> {
    let mut m: BTreeMap<IpAddr, Use<'_>> = BTreeMap::new();
    for (service, h) in holdings {
        for ip in &h.ips {
            let u = m.entry(*ip).or_default();
            u.sharing_key = &h.sharing_key;
            u.services.insert(service);
        }
    }
    m
}

// ---------------------------------------------------------------- service

struct Sidecar {
    pools: BTreeMap<String, PoolConfig>,
    state_file: Option<PathBuf>,
    state: Mutex<State>,
}

impl Sidecar {
    fn config(&self, pool: &str) -> Result<&PoolConfig, Status> {
        self.pools
            .get(pool)
            .ok_or_else(|| Status::invalid_argument(format!("unknown pool {pool:?}")))
    }

    /// Runs `change` on a copy of the state and, if it succeeds, persists the
    /// copy and makes it current: a failed or unpersisted call changes nothing.
    fn mutate<T>(&self, change: impl FnOnce(&mut State) -> Result<T, Status>) -> Result<T, Status> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = state.clone();
        let out = change(&mut next)?;
        if next != *state {
            if let Some(path) = &self.state_file {
                next.save(path).map_err(|e| {
                    eprintln!("ipam-sidecar: writing {}: {e}", path.display());
                    Status::unavailable(format!("cannot persist state: {e}"))
                })?;
            }
            *state = next;
        }
        Ok(out)
    }
}

fn check_service(service: &str) -> Result<(), Status> {
    match service.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "service {service:?}: want \"namespace/name\""
        ))),
    }
}

/// Family-selector allocation on `holdings` (one pool's services).
fn allocate_families(
    config: &PoolConfig,
    holdings: &mut BTreeMap<String, Holding>,
    service: &str,
    sharing_key: &str,
    want: &[IpFamily],
) -> Result<Vec<IpAddr>, Status> {
    // A service keeps the key it first allocated under.
    let sharing_key = holdings
        .get(service)
        .filter(|h| !h.ips.is_empty())
        .map_or_else(|| sharing_key.to_owned(), |h| h.sharing_key.clone());
    let sharing_key = sharing_key.as_str();
    for &family in want {
        let held = holdings
            .get(service)
            .is_some_and(|h| h.ips.iter().any(|ip| IpFamily::of(*ip) == family));
        if held {
            continue;
        }
        if !config.ranges.iter().any(|r| r.family() == family) {
            return Err(Status::invalid_argument(format!(
                "pool {:?} has no {family} range",
                config.name
            )));
        }
        let ip = {
            let used = uses(holdings);
            // Shared: the address this key already has in the family, if any.
            let shared = (!sharing_key.is_empty())
                .then(|| {
                    used.iter().find(|(ip, u)| {
                        IpFamily::of(**ip) == family && u.sharing_key == sharing_key
                    })
                })
                .flatten()
                .map(|(ip, _)| *ip);
            match shared {
                Some(ip) => ip,
                None => {
                    first_free(config, family, |ip| used.contains_key(&ip)).ok_or_else(|| {
                        Status::resource_exhausted(format!(
                            "pool {:?} exhausted: no available {family} address for {service}",
                            config.name
                        ))
                    })?
                }
            }
        };
        let h = holdings.entry(service.to_owned()).or_default();
        if h.ips.is_empty() {
            h.sharing_key = sharing_key.to_owned();
        }
        h.ips.push(ip);
    }
    let held = holdings
        .get(service)
        .map(|h| h.ips.clone())
        .unwrap_or_default();
    Ok(held
        .into_iter()
        .filter(|ip| want.contains(&IpFamily::of(*ip)))
        .collect())
}

/// The lowest free address of `family`, ranges in order.
fn first_free(
    config: &PoolConfig,
    family: IpFamily,
    taken: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    config
        .ranges
        .iter()
        .filter(|r| r.family() == family)
        .find_map(|r| {
            (0..=r.max_offset())
                .map_while(|off| r.nth(off))
                .find(|ip| !taken(*ip))
        })
}

/// Explicit-selector allocation: exactly these addresses.
fn allocate_explicit(
    config: &PoolConfig,
    holdings: &mut BTreeMap<String, Holding>,
    service: &str,
    sharing_key: &str,
    requested: &[String],
) -> Result<Vec<IpAddr>, Status> {
    if requested.is_empty() {
        return Err(Status::invalid_argument(
            "explicit selector without addresses",
        ));
    }
    if requested.len() > MAX_ALLOCATE_IPS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_ALLOCATE_IPS} addresses per request"
        )));
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for s in requested {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| Status::invalid_argument(format!("invalid address {s:?}")))?;
        let ip = ip.to_canonical();
        if !config.ranges.iter().any(|r| r.contains(ip)) {
            return Err(Status::invalid_argument(format!(
                "{ip} is not in pool {:?}",
                config.name
            )));
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let used = uses(holdings);
    let own_key = holdings
        .get(service)
        .filter(|h| !h.ips.is_empty())
        .map_or(sharing_key, |h| h.sharing_key.as_str());
    for ip in &ips {
        if let Some(u) = used.get(ip) {
            let mine = u.services.contains(service);
            let shared = !sharing_key.is_empty() && u.sharing_key == sharing_key;
            if !mine && !shared {
                let owner = u.services.iter().next().copied().unwrap_or_default();
                return Err(Status::already_exists(format!(
                    "{ip} is already allocated to {owner}"
                )));
            }
            if !mine && own_key != sharing_key {
                return Err(Status::already_exists(format!(
                    "{service} holds addresses under another sharing key"
                )));
            }
        }
    }
    let h = holdings.entry(service.to_owned()).or_default();
    if h.ips.is_empty() {
        h.sharing_key = sharing_key.to_owned();
    }
    for ip in &ips {
        if !h.ips.contains(ip) {
            h.ips.push(*ip);
        }
    }
    Ok(ips)
}

#[tonic::async_trait]
impl Ipam for Sidecar {
    async fn allocate(
        &self,
        request: Request<proto::AllocateRequest>,
    ) -> Result<Response<proto::AllocateResponse>, Status> {
        let req = request.into_inner();
        let config = self.config(&req.pool)?;
        check_service(&req.service)?;
        let ips = self.mutate(|state| {
            let holdings = state.pools.entry(req.pool.clone()).or_default();
            let out = match &req.selector {
                Some(Selector::Families(f)) => {
                    let mut want = Vec::new();
                    if f.want_ipv4 {
                        want.push(IpFamily::V4);
                    }
                    if f.want_ipv6 {
                        want.push(IpFamily::V6);
                    }
                    if want.is_empty() {
                        // No preference: the first range's family.
                        want.push(config.ranges[0].family());
                    }
                    allocate_families(config, holdings, &req.service, &req.sharing_key, &want)
                }
                Some(Selector::Explicit(e)) => {
                    allocate_explicit(config, holdings, &req.service, &req.sharing_key, &e.ips)
                }
                None => Err(Status::invalid_argument(
                    "selector missing: want explicit or families",
                )),
            };
            if holdings.is_empty() {
                state.pools.remove(&req.pool);
            }
            out
        })?;
        eprintln!(
            "ipam-sidecar: allocate pool={} service={} key={:?} -> {ips:?}",
            req.pool, req.service, req.sharing_key
        );
        Ok(Response::new(proto::AllocateResponse {
            ips: ips
                .iter()
                .map(|ip| proto::AllocatedIp { ip: ip.to_string() })
                .collect(),
        }))
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        let req = request.into_inner();
        check_service(&req.service)?;
        let only: Option<IpAddr> = match &req.target {
            Some(Target::Ip(s)) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| Status::invalid_argument(format!("invalid address {s:?}")))?
                    .to_canonical(),
            ),
            Some(Target::All(true)) => None,
            Some(Target::All(false)) => {
                return Err(Status::invalid_argument("target all must be true"));
            }
            None => return Err(Status::invalid_argument("target missing: want ip or all")),
        };
        self.mutate(|state| {
            if let Some(holdings) = state.pools.get_mut(&req.pool) {
                if let Some(h) = holdings.get_mut(&req.service) {
                    match only {
                        Some(ip) => h.ips.retain(|held| *held != ip),
                        None => h.ips.clear(),
                    }
                    if h.ips.is_empty() {
                        holdings.remove(&req.service);
                    }
                }
                if holdings.is_empty() {
                    state.pools.remove(&req.pool);
                }
            }
            Ok(())
        })?;
        eprintln!(
            "ipam-sidecar: release pool={} service={} target={}",
            req.pool,
            req.service,
            only.map_or_else(|| "all".to_owned(), |ip| ip.to_string())
        );
        Ok(Response::new(proto::ReleaseResponse {}))
    }

    async fn stats(
        &self,
        request: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::StatsResponse>, Status> {
        let req = request.into_inner();
        let config = self.config(&req.pool)?;
        let size = |family: IpFamily| -> u64 {
            let total = config
                .ranges
                .iter()
                .filter(|r| r.family() == family)
                .fold(0u128, |acc, r| acc.saturating_add(r.size()));
            u64::try_from(total).unwrap_or(u64::MAX)
        };
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut v4, mut v6) = (0u64, 0u64);
        if let Some(holdings) = state.pool(&req.pool) {
            for ip in uses(holdings).keys() {
                match IpFamily::of(*ip) {
                    IpFamily::V4 => v4 += 1,
                    IpFamily::V6 => v6 += 1,
                }
            }
        }
        Ok(Response::new(proto::StatsResponse {
            in_use_v4: v4,
            in_use_v6: v6,
            size_v4: size(IpFamily::V4),
            size_v6: size(IpFamily::V6),
            has_known_capacity: true,
            display_addresses: config.display.clone(),
        }))
    }
}

// ---------------------------------------------------------------- main

/// Removes a leftover socket at `path`; refuses to remove anything else.
fn remove_stale_socket(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| format!("--socket {}: removing stale socket: {e}", path.display())),
        Ok(_) => Err(format!(
            "--socket {}: exists and is not a socket",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("--socket {}: {e}", path.display())),
    }
}

async fn run(options: Options) -> Result<(), String> {
    let mut state = match &options.state {
        Some(path) => State::load(path)?,
        None => {
            eprintln!("ipam-sidecar: no --state: allocations are lost on restart");
            State::default()
        }
    };
    state.version = STATE_VERSION;
    for (pool, holdings) in &state.pools {
        let held: usize = holdings.values().map(|h| h.ips.len()).sum();
        match options.pools.iter().find(|p| &p.name == pool) {
            None => eprintln!(
                "ipam-sidecar: state has {held} address(es) of pool {pool:?}, which is not configured; kept"
            ),
            Some(cfg) => {
                for ip in holdings.values().flat_map(|h| &h.ips) {
                    if !cfg.ranges.iter().any(|r| r.contains(*ip)) {
                        eprintln!(
                            "ipam-sidecar: pool {pool:?}: held address {ip} is outside its ranges; kept"
                        );
                    }
                }
            }
        }
    }

    remove_stale_socket(&options.socket)?;
    let listener = UnixListener::bind(&options.socket)
        .map_err(|e| format!("--socket {}: {e}", options.socket.display()))?;
    std::fs::set_permissions(&options.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("--socket {}: {e}", options.socket.display()))?;

    let sidecar = Sidecar {
        pools: options
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect(),
        state_file: options.state.clone(),
        state: Mutex::new(state),
    };
    for p in &options.pools {
        eprintln!("ipam-sidecar: pool {:?}: {}", p.name, p.display.join(","));
    }
    eprintln!("ipam-sidecar: listening on {}", options.socket.display());

    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => eprintln!("ipam-sidecar: SIGTERM, stopping"),
            _ = int.recv() => eprintln!("ipam-sidecar: SIGINT, stopping"),
        }
        let _ = stopping_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .add_service(IpamServer::new(sidecar))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    // Graceful stop lets calls in flight finish, but a client that never
    // answers the HTTP/2 GOAWAY would hold it forever: bound the drain.
    let drain_limit = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(DRAIN_LIMIT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        served = server => served,
        () = drain_limit => {
            eprintln!("ipam-sidecar: connections still open after {DRAIN_LIMIT:?}; exiting");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&options.socket);
    served.map_err(|e| format!("serving {}: {e}", options.socket.display()))
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ipam-sidecar: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipam-sidecar: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipam-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Parsed, String> {
        parse_args(a.iter().map(|s| (*s).to_owned()))
    }

    fn err(a: &[&str]) -> String {
        match args(a) {
            Err(e) => e,
            Ok(_) => panic!("{a:?} parsed"),
        }
    }

    #[test]
    fn flags() {
        let Ok(Parsed::Run(o)) = args(&[
            "--socket",
            "/tmp/s.sock",
            "--pool=a=10.0.0.0/30,fd00::1-fd00::3",
            "--pool",
            "b=10.0.1.5-10.0.1.6",
            "--state",
            "/tmp/st.json",
        ]) else {
            panic!("did not parse");
        };
        assert_eq!(o.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(o.state, Some(PathBuf::from("/tmp/st.json")));
        assert_eq!(o.pools.len(), 2);
        assert_eq!(o.pools[0].display, ["10.0.0.0/30", "fd00::1-fd00::3"]);
        assert_eq!(o.pools[1].ranges[0].size(), 2);
    }

    #[test]
    fn flag_errors_name_the_flag() {
        assert!(err(&[]).starts_with("--pool"));
        assert!(err(&["--pool", "x"]).starts_with("--pool"));
        assert!(err(&["--pool", "x=10.0.0.300/30"]).starts_with("--pool"));
        assert!(err(&["--pool", "=10.0.0.0/30"]).starts_with("--pool"));
        assert!(err(&["--pool", "a=10.0.0.0/30", "--pool", "a=10.0.1.0/30"]).contains("twice"));
        assert!(
            err(&["--pool", "a=10.0.0.0/30", "--pool", "b=10.0.0.2-10.0.0.9"]).contains("overlaps")
        );
        assert!(err(&["--pool", "a=10.0.0.0/30,10.0.0.1-10.0.0.2"]).contains("overlaps"));
        assert!(err(&["--pool", "a=10.0.0.0/30", "--socket"]).starts_with("--socket"));
        assert!(err(&["--pool", "a=10.0.0.0/30", "--state", ""]).starts_with("--state"));
        assert!(err(&["--bogus"]).starts_with("--bogus"));
    }

    fn pool(spec: &str) -> PoolConfig {
        parse_pool(spec).unwrap()
    }

    #[test]
    fn families_and_sharing() {
        let cfg = pool("p=10.0.0.0/31,fd00::/127");
        let mut h = BTreeMap::new();
        let dual = [IpFamily::V4, IpFamily::V6];
        let a = allocate_families(&cfg, &mut h, "ns/a", "", &dual).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a,
            allocate_families(&cfg, &mut h, "ns/a", "", &dual).unwrap()
        );
        let b = allocate_families(&cfg, &mut h, "ns/b", "k", &[IpFamily::V4]).unwrap();
        let c = allocate_families(&cfg, &mut h, "ns/c", "k", &[IpFamily::V4]).unwrap();
        assert_eq!(b, c);
        let e = allocate_families(&cfg, &mut h, "ns/d", "", &[IpFamily::V4]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut s = State::load(&path).unwrap();
        assert!(s.pools.is_empty());
        s.pools.entry("p".into()).or_default().insert(
            "ns/a".into(),
            Holding {
                sharing_key: "k".into(),
                ips: vec!["10.0.0.1".parse().unwrap()],
            },
        );
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), s);
        std::fs::write(&path, "{").unwrap();
        assert!(State::load(&path).unwrap_err().starts_with("--state"));
    }
}
