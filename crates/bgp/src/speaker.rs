//! The speaker: every session of one BGP instance, started from a [`SpeakerConfig`] value and
//! changed by applying another one.
//!
//! [`Speaker::apply`] diffs the new configuration against the running one: a neighbour whose
//! session identity changed (address, port, ASNs, router ID, timers, families, graceful restart,
//! passive mode, MD5 password, TTL, local address, interface) gets a new session; a neighbour
//! whose only change is its export policy, or any change to the defined sets and policies, keeps
//! its session and is sent the difference in UPDATEs. Neighbours not mentioned are left alone.
//!
//! Local routes are given with [`Speaker::set_routes`] / [`Speaker::announce`] /
//! [`Speaker::withdraw`]; each peer's Adj-RIB-Out is those routes through its export policy,
//! handed to its session task (see [`crate::driver`]), which sends the difference. A listener per
//! address family takes the connections peers open to us and hands each to its neighbour's
//! session, or, for an address inside a dynamic-neighbour range, creates a passive session from
//! the range's template.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::driver::{SessionHandle, SessionOptions, SessionStatus, family_of, spawn_session_with};
use crate::fsm::{GracefulRestartConfig, SessionConfig, State};
use crate::policy::{ExportPolicy, PolicyConfig, PolicyError, PolicySet};
use crate::rib::{AdjRibOut, LocalRoute, ReceivedRoute};
use crate::transport::{MD5_MAX_KEY_LEN, set_md5, set_md5_prefix, set_v6_only};
use crate::wire::{AfiSafi, Prefix};
use ipnet::IpNet;

/// The standard BGP port.
pub const BGP_PORT: u16 = 179;

/// One BGP instance's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Accept connections on this port; `None` = no listener (only active sessions work).
    pub listen_port: Option<u16>,
    /// Addresses to listen on; empty = every address of both families.
    pub listen_addresses: Vec<IpAddr>,
    pub neighbors: Vec<NeighborConfig>,
    /// Peers accepted from address ranges, configured from a template.
    pub dynamic_neighbors: Vec<DynamicNeighbors>,
    pub policy: PolicyConfig,
}

impl SpeakerConfig {
    /// A speaker with no neighbours, listening on port 179 everywhere.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> Self {
        Self {
            asn,
            router_id,
            listen_port: Some(BGP_PORT),
            listen_addresses: Vec::new(),
            neighbors: Vec::new(),
            dynamic_neighbors: Vec::new(),
            policy: PolicyConfig::default(),
        }
    }
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    pub address: IpAddr,
    /// The peer's port (179).
    pub port: u16,
    pub peer_asn: u32,
    /// Our ASN toward this peer; `None` = the speaker's.
    pub local_asn: Option<u32>,
    pub description: String,
    /// Configured but not started.
    pub admin_down: bool,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// Seconds (0, or at least 3). Default 90.
    pub hold_time: u16,
    /// Default 120 s.
    pub connect_retry: Duration,
    /// Families offered. Default IPv4 and IPv6 unicast.
    pub families: Vec<AfiSafi>,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// TCP MD5 password (RFC 2385).
    pub md5_password: Option<String>,
    /// eBGP multihop: the TTL of outgoing packets. `None` = 1 toward eBGP peers (directly
    /// connected only, as GoBGP and FRR do), the system default toward iBGP peers.
    pub ttl: Option<u8>,
    /// Source address of our connection.
    pub local_address: Option<IpAddr>,
    /// Interface to bind the connection to.
    pub bind_interface: Option<String>,
    pub export: ExportPolicy,
}

impl NeighborConfig {
    /// An active eBGP/iBGP neighbour with the defaults.
    pub fn new(address: IpAddr, peer_asn: u32) -> Self {
        Self {
            address,
            port: BGP_PORT,
            peer_asn,
            local_asn: None,
            description: String::new(),
            admin_down: false,
            passive: false,
            hold_time: 90,
            connect_retry: Duration::from_secs(120),
            families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            graceful_restart: None,
            md5_password: None,
            ttl: None,
            local_address: None,
            bind_interface: None,
            export: ExportPolicy::default(),
        }
    }
}

/// Peers accepted from `prefix`, each configured as `template` (its address is replaced by the
/// peer's and it is always passive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicNeighbors {
    pub prefix: IpNet,
    pub template: NeighborConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("neighbor {0} is configured twice")]
    DuplicateNeighbor(IpAddr),
    #[error("neighbor {neighbor}: {problem}")]
    InvalidNeighbor { neighbor: String, problem: String },
    #[error("router ID 0.0.0.0 is not allowed")]
    RouterIdUnspecified,
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What [`Speaker::apply`] did to each neighbour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// Identity changed: the session was restarted.
    pub reset: Vec<IpAddr>,
    /// Export policy or attributes changed: UPDATEs only.
    pub updated: Vec<IpAddr>,
}

/// One peer as the speaker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub peer_asn: u32,
    pub local_asn: u32,
    pub description: String,
    /// Accepted from a dynamic-neighbour range.
    pub dynamic: bool,
    pub admin_down: bool,
    pub state: State,
    pub established_at: Option<Instant>,
    pub peer_id: Option<Ipv4Addr>,
    pub families: Vec<AfiSafi>,
    pub prefixes_sent: usize,
    pub prefixes_received: usize,
    pub last_error: Option<String>,
}

impl PeerStatus {
    /// How long the session has been Established.
    pub fn uptime(&self) -> Option<Duration> {
        self.established_at.map(|t| t.elapsed())
    }
}

/// A local route and the peers it is currently advertised to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    pub route: LocalRoute,
    pub sent_to: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerStatus {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub peers: Vec<PeerStatus>,
    pub routes: Vec<RouteStatus>,
}

/// A running BGP instance. Dropping it ends every session (as [`Speaker::stop`] does, without
/// waiting).
pub struct Speaker {
    inner: Arc<Mutex<Inner>>,
    listeners: Vec<Listener>,
    changes: watch::Receiver<u64>,
}

struct Listener {
    address: SocketAddr,
    socket: Arc<TcpListener>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inner {
    config: SpeakerConfig,
    policy: PolicySet,
    routes: BTreeMap<Prefix, LocalRoute>,
    peers: BTreeMap<IpAddr, Peer>,
    changes: watch::Sender<u64>,
}

struct Peer {
    config: NeighborConfig,
    dynamic: bool,
    /// The peer's Adj-RIB-Out, as handed to its session.
    adj_rib_out: watch::Sender<AdjRibOut>,
    session: Option<SessionHandle>,
    watcher: Option<JoinHandle<()>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

type SessionIdentity = (SessionConfig, SocketAddr, SessionOptions);

fn identity(global: &SpeakerConfig, n: &NeighborConfig) -> SessionIdentity {
    let config = SessionConfig {
        local_asn: n.local_asn.unwrap_or(global.asn),
        peer_asn: n.peer_asn,
        bgp_id: global.router_id,
        hold_time: n.hold_time,
        connect_retry: n.connect_retry,
        passive: n.passive,
        families: n.families.clone(),
        graceful_restart: n.graceful_restart.clone(),
    };
    // Like GoBGP and FRR, a single-hop eBGP session sends with TTL 1 unless multihop is set.
    let ebgp = config.local_asn != config.peer_asn;
    let options = SessionOptions {
        local: n.local_address.map(|a| SocketAddr::new(a, 0)),
        md5_password: n.md5_password.clone(),
        ttl: n.ttl.or(ebgp.then_some(1)),
        bind_interface: n.bind_interface.clone(),
    };
    (config, SocketAddr::new(n.address, n.port), options)
}

fn validate(config: &SpeakerConfig) -> Result<PolicySet, SpeakerError> {
    if config.router_id.is_unspecified() {
        return Err(SpeakerError::RouterIdUnspecified);
    }
    let policy = PolicySet::compile(&config.policy)?;
    let mut seen = BTreeSet::new();
    let templates = config.dynamic_neighbors.iter().map(|d| &d.template);
    for n in &config.neighbors {
        if !seen.insert(n.address) {
            return Err(SpeakerError::DuplicateNeighbor(n.address));
        }
    }
    for n in config.neighbors.iter().chain(templates) {
        let name = n.address.to_string();
        let problem = |problem: String| SpeakerError::InvalidNeighbor {
            neighbor: name.clone(),
            problem,
        };
        if n.hold_time == 1 || n.hold_time == 2 {
            return Err(problem(format!(
                "hold time {} is not allowed (0 or at least 3)",
                n.hold_time
            )));
        }
        if n.md5_password
            .as_ref()
            .is_some_and(|p| p.len() > MD5_MAX_KEY_LEN)
        {
            return Err(problem(format!(
                "the TCP MD5 password is longer than {MD5_MAX_KEY_LEN} bytes"
            )));
        }
        if n.ttl == Some(0) {
            return Err(problem("multihop TTL 0 is not allowed".into()));
        }
        if n.families.is_empty() {
            return Err(problem("no address family is enabled".into()));
        }
        policy.check_export(&name, &n.export)?;
    }
    Ok(policy)
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn adj_rib_out(&self, n: &NeighborConfig) -> Vec<LocalRoute> {
        let mut out = Vec::with_capacity(self.routes.len());
        out.extend(
            self.routes
                .values()
                .filter_map(|r| self.policy.export(r, n.address, &n.export)),
        );
        out
    }

    fn start_peer(&mut self, n: NeighborConfig, dynamic: bool) {
        let (adj_rib_out, rx) = watch::channel(Arc::new(self.adj_rib_out(&n)));
        let (session, watcher) = if n.admin_down {
            (None, None)
        } else {
            let (config, peer, options) = identity(&self.config, &n);
            let handle = spawn_session_with(config, peer, options, rx);
            let watcher = forward_changes(handle.subscribe(), self.changes.clone());
            (Some(handle), Some(watcher))
        };
        self.peers.insert(
            n.address,
            Peer {
                config: n,
                dynamic,
                adj_rib_out,
                session,
                watcher,
            },
        );
        self.changes.send_modify(|v| *v += 1);
    }

    /// Recomputes one peer's Adj-RIB-Out; the session sends the difference.
    fn refresh(&self, peer: &Peer) {
        let routes = self.adj_rib_out(&peer.config);
        peer.adj_rib_out.send_if_modified(|current| {
            if **current == routes {
                false
            } else {
                *current = Arc::new(routes);
                true
            }
        });
    }

    /// Routes one route change through every peer's export policy.
    fn route_changed(&self, prefix: Prefix) {
        let route = self.routes.get(&prefix);
        for peer in self.peers.values() {
            let exported = route.and_then(|r| {
                self.policy
                    .export(r, peer.config.address, &peer.config.export)
            });
            peer.adj_rib_out.send_if_modified(|current| {
                // Copies only if the session task is reading the previous version right now.
                let current = Arc::make_mut(current);
                let at = current.iter().position(|r| r.prefix == prefix);
                match (at, exported.clone()) {
                    (Some(i), Some(new)) if current.get(i) == Some(&new) => false,
                    (Some(i), Some(new)) => {
                        if let Some(slot) = current.get_mut(i) {
                            *slot = new;
                        }
                        true
                    }
                    (Some(i), None) => {
                        current.swap_remove(i);
                        true
                    }
                    (None, Some(new)) => {
                        current.push(new);
                        true
                    }
                    (None, None) => false,
                }
            });
        }
        self.changes.send_modify(|v| *v += 1);
    }

    fn peer_status(&self) -> Vec<PeerStatus> {
        self.peers
            .values()
            .map(|p| {
                let s = p.session.as_ref().map(SessionHandle::state);
                PeerStatus {
                    address: p.config.address,
                    peer_asn: p.config.peer_asn,
                    local_asn: p.config.local_asn.unwrap_or(self.config.asn),
                    description: p.config.description.clone(),
                    dynamic: p.dynamic,
                    admin_down: p.config.admin_down,
                    state: s.as_ref().map_or(State::Idle, |s| s.state),
                    established_at: s.as_ref().and_then(|s| s.established_at),
                    peer_id: s.as_ref().and_then(|s| s.peer_id),
                    families: s.as_ref().map(|s| s.families.clone()).unwrap_or_default(),
                    prefixes_sent: s.as_ref().map_or(0, |s| s.prefixes_sent),
                    prefixes_received: s.as_ref().map_or(0, |s| s.prefixes_received),
                    last_error: s.and_then(|s| s.last_error),
                }
            })
            .collect()
    }

    /// A connection from `remote`: to its neighbour's session, to a new dynamic neighbour, or
    /// refused.
    fn incoming(&mut self, stream: tokio::net::TcpStream, remote: IpAddr) {
        let remote = canonical(remote);
        if let Some(peer) = self.peers.get(&remote) {
            if let Some(session) = &peer.session {
                session.accept(stream);
            }
            return;
        }
        let template = self
            .config
            .dynamic_neighbors
            .iter()
            .find(|d| d.prefix.contains(&remote))
            .map(|d| d.template.clone());
        if let Some(mut n) = template {
            n.address = remote;
            n.passive = true;
            self.start_peer(n, true);
            if let Some(session) = self.peers.get(&remote).and_then(|p| p.session.as_ref()) {
                session.accept(stream);
            }
        }
    }
}

/// An IPv4 peer reaching an IPv6 socket shows up IPv4-mapped.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn forward_changes(
    mut status: watch::Receiver<SessionStatus>,
    changes: watch::Sender<u64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            changes.send_modify(|v| *v += 1);
        }
    })
}

impl Speaker {
    /// Validates `config`, opens the listeners and starts a session per neighbour. Must be called
    /// inside a tokio runtime whose threads are in the network namespace the speaker serves.
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let policy = validate(&config)?;
        let (changes_tx, changes) = watch::channel(0);
        let inner = Arc::new(Mutex::new(Inner {
            config: config.clone(),
            policy,
            routes: BTreeMap::new(),
            peers: BTreeMap::new(),
            changes: changes_tx,
        }));
        let mut speaker = Speaker {
            inner,
            listeners: Vec::new(),
            changes,
        };
        speaker.listen(&config)?;
        speaker.set_md5_keys();
        let mut inner = lock(&speaker.inner);
        for n in config.neighbors {
            inner.start_peer(n, false);
        }
        drop(inner);
        Ok(speaker)
    }

    /// Applies a new configuration (see the module documentation). An invalid configuration is
    /// refused whole and the running one stays.
    pub async fn apply(&mut self, config: SpeakerConfig) -> Result<ApplyReport, SpeakerError> {
        let policy = validate(&config)?;
        self.listen(&config)?;
        let mut report = ApplyReport::default();
        let mut stopping = Vec::new();
        {
            let mut inner = lock(&self.inner);
            let old_config = std::mem::replace(&mut inner.config, config.clone());
            let policy_changed = old_config.policy != config.policy;
            inner.policy = policy;
            let wanted: BTreeMap<IpAddr, &NeighborConfig> =
                config.neighbors.iter().map(|n| (n.address, n)).collect();
            let in_range = |ip: IpAddr| {
                config
                    .dynamic_neighbors
                    .iter()
                    .any(|d| d.prefix.contains(&ip))
            };
            let gone: Vec<IpAddr> = inner
                .peers
                .iter()
                .filter(|(ip, p)| !wanted.contains_key(ip) && (!p.dynamic || !in_range(**ip)))
                .map(|(ip, _)| *ip)
                .collect();
            for ip in gone {
                if let Some(mut p) = inner.peers.remove(&ip) {
                    stopping.extend(p.session.take());
                    report.removed.push(ip);
                }
            }
            for (ip, n) in wanted {
                let existing = inner.peers.get(&ip).map(|p| {
                    (
                        identity(&old_config, &p.config) == identity(&config, n)
                            && p.config.admin_down == n.admin_down,
                        p.config == *n,
                    )
                });
                match existing {
                    None => {
                        inner.start_peer(n.clone(), false);
                        report.added.push(ip);
                    }
                    Some((true, true)) => {
                        if policy_changed && let Some(p) = inner.peers.get(&ip) {
                            inner.refresh(p);
                        }
                    }
                    Some((true, false)) => {
                        if let Some(p) = inner.peers.get_mut(&ip) {
                            p.config = n.clone();
                            p.dynamic = false;
                        }
                        if let Some(p) = inner.peers.get(&ip) {
                            inner.refresh(p);
                        }
                        report.updated.push(ip);
                    }
                    Some((false, _)) => {
                        if let Some(mut p) = inner.peers.remove(&ip) {
                            stopping.extend(p.session.take());
                        }
                        inner.start_peer(n.clone(), false);
                        report.reset.push(ip);
                    }
                }
            }
            // Dynamic peers follow their template the same way.
            let dynamic: Vec<IpAddr> = inner
                .peers
                .iter()
                .filter(|(_, p)| p.dynamic)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in dynamic {
                let Some(mut n) = config
                    .dynamic_neighbors
                    .iter()
                    .find(|d| d.prefix.contains(&ip))
                    .map(|d| d.template.clone())
                else {
                    continue;
                };
                n.address = ip;
                n.passive = true;
                let same = inner
                    .peers
                    .get(&ip)
                    .map(|p| identity(&old_config, &p.config) == identity(&config, &n));
                if same == Some(false) {
                    if let Some(mut p) = inner.peers.remove(&ip) {
                        stopping.extend(p.session.take());
                    }
                    report.reset.push(ip);
                } else if let Some(p) = inner.peers.get_mut(&ip) {
                    p.config = n;
                    if let Some(p) = inner.peers.get(&ip) {
                        inner.refresh(p);
                    }
                }
            }
            inner.changes.send_modify(|v| *v += 1);
        }
        self.set_md5_keys();
        for s in stopping {
            s.stop().await;
        }
        Ok(report)
    }

    /// Replaces every local route.
    pub fn set_routes(&self, routes: impl IntoIterator<Item = LocalRoute>) {
        let mut inner = lock(&self.inner);
        inner.routes = routes.into_iter().map(|r| (r.prefix, r)).collect();
        for peer in inner.peers.values() {
            inner.refresh(peer);
        }
        inner.changes.send_modify(|v| *v += 1);
    }

    /// Adds or replaces one local route.
    pub fn announce(&self, route: LocalRoute) {
        let mut inner = lock(&self.inner);
        let prefix = route.prefix;
        if inner.routes.get(&prefix) == Some(&route) {
            return;
        }
        inner.routes.insert(prefix, route);
        inner.route_changed(prefix);
    }

    /// Withdraws one local route.
    pub fn withdraw(&self, prefix: Prefix) {
        let mut inner = lock(&self.inner);
        if inner.routes.remove(&prefix).is_some() {
            inner.route_changed(prefix);
        }
    }

    /// A receiver that changes whenever a session's status, the routes or the configuration do.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The speaker's ASN and router ID.
    pub fn identity(&self) -> (u32, Ipv4Addr) {
        let inner = lock(&self.inner);
        (inner.config.asn, inner.config.router_id)
    }

    /// Every peer's status, without the routes (cheap with many routes).
    pub fn peers(&self) -> Vec<PeerStatus> {
        let inner = lock(&self.inner);
        inner.peer_status()
    }

    /// Every peer and every local route, with where each was sent.
    pub fn status(&self) -> SpeakerStatus {
        let inner = lock(&self.inner);
        let peers = inner.peer_status();
        let sent: Vec<(IpAddr, BTreeSet<Prefix>)> = inner
            .peers
            .values()
            .zip(&peers)
            .filter(|(_, s)| s.state == State::Established)
            .map(|(p, s)| {
                let prefixes = p
                    .adj_rib_out
                    .borrow()
                    .iter()
                    .filter(|r| s.families.contains(&family_of(&r.prefix)))
                    .map(|r| r.prefix)
                    .collect();
                (p.config.address, prefixes)
            })
            .collect();
        let routes = inner
            .routes
            .values()
            .map(|r| RouteStatus {
                route: r.clone(),
                sent_to: sent
                    .iter()
                    .filter(|(_, set)| set.contains(&r.prefix))
                    .map(|(ip, _)| *ip)
                    .collect(),
            })
            .collect();
        SpeakerStatus {
            asn: inner.config.asn,
            router_id: inner.config.router_id,
            peers,
            routes,
        }
    }

    /// Routes received from every peer, by peer.
    pub fn received_routes(&self) -> Vec<(IpAddr, ReceivedRoute)> {
        let inner = lock(&self.inner);
        inner
            .peers
            .values()
            .filter_map(|p| p.session.as_ref().map(|s| (p.config.address, s)))
            .flat_map(|(ip, s)| s.received_routes().into_iter().map(move |r| (ip, r)))
            .collect()
    }

    /// Sends Cease to every peer, closes every session and the listeners.
    pub async fn stop(self) {
        let sessions: Vec<SessionHandle> = {
            let mut inner = lock(&self.inner);
            inner
                .peers
                .values_mut()
                .filter_map(|p| p.session.take())
                .collect()
        };
        for s in sessions {
            s.stop().await;
        }
    }

    /// The addresses the listeners are bound to.
    pub fn listening_on(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.address).collect()
    }

    /// Binds the listeners `config` asks for, keeping those already bound.
    fn listen(&mut self, config: &SpeakerConfig) -> Result<(), SpeakerError> {
        let wanted: Vec<SocketAddr> = match config.listen_port {
            None => Vec::new(),
            Some(port) if config.listen_addresses.is_empty() => vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            ],
            Some(port) => config
                .listen_addresses
                .iter()
                .map(|a| SocketAddr::new(*a, port))
                .collect(),
        };
        let mut kept = Vec::new();
        for address in wanted {
            if let Some(i) = self.listeners.iter().position(|l| l.address == address) {
                kept.push(self.listeners.swap_remove(i));
                continue;
            }
            let socket = bind_listener(address)
                .map_err(|source| SpeakerError::Listen { address, source })?;
            let socket = Arc::new(socket);
            let task = tokio::spawn(accept_loop(socket.clone(), Arc::downgrade(&self.inner)));
            kept.push(Listener {
                address,
                socket,
                task,
            });
        }
        self.listeners = kept;
        Ok(())
    }

    /// Installs the MD5 keys of neighbours and dynamic ranges on the listeners of their family.
    /// Keys already present are replaced; the kernel drops keys when the listener closes.
    fn set_md5_keys(&self) {
        let inner = lock(&self.inner);
        let keys = inner
            .config
            .neighbors
            .iter()
            .filter_map(|n| Some((n.address, None, n.md5_password.as_ref()?)))
            .chain(inner.config.dynamic_neighbors.iter().filter_map(|d| {
                Some((
                    d.prefix.addr(),
                    Some(d.prefix.prefix_len()),
                    d.template.md5_password.as_ref()?,
                ))
            }));
        for (addr, prefix_len, password) in keys {
            for l in &self.listeners {
                if l.address.is_ipv4() != addr.is_ipv4() {
                    continue;
                }
                let fd = l.socket.as_raw_fd();
                let result = match prefix_len {
                    None => set_md5(fd, addr, password.as_bytes()),
                    Some(len) => set_md5_prefix(fd, addr, len, password.as_bytes()),
                };
                if let Err(e) = result {
                    tracing::warn!(%addr, error = %e, "cannot set the TCP MD5 key on the listener");
                }
            }
        }
    }
}

fn bind_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let s = TcpSocket::new_v6()?;
        set_v6_only(s.as_raw_fd())?;
        s
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(64)
}

async fn accept_loop(listener: Arc<TcpListener>, inner: std::sync::Weak<Mutex<Inner>>) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        lock(&inner).incoming(stream, remote.ip());
    }
}
