//! One BGP session over TCP: a tokio task that owns an [`fsm::Session`](crate::fsm::Session),
//! connects to the peer (unless passive), takes the connections the peer opens to us (handed over
//! by the speaker's listener, see [`SessionHandle::accept`]) with RFC 4271 section 6.8 collision
//! handling, frames and decodes what arrives, runs the FSM's timers, keeps the routes the peer
//! sends (with RFC 4724 helper-mode retention across a peer restart) and advertises the routes it
//! is given through a `watch` channel, grouped into as few UPDATEs as their attributes allow.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fsm::{
    Action, DownReason, Event, Keep, Negotiated, Session, SessionConfig, State, Timer,
    cease_subcode, resolve_collision,
};
use crate::rib::{AdjRibOut, DEFAULT_LOCAL_PREF, LocalRoute, ReceivedRib, ReceivedRoute, lock};
use crate::transport::{set_bind_device, set_md5, set_ttl};
use crate::wire::{
    AfiSafi, AsPath, GracefulRestart, LargeCommunity, Message, MpReachIpv6, Notification, Origin,
    PathAttributes, Prefix, Update, WireContext, decode, encode, next_message, notification_code,
};

/// The largest BGP message without RFC 8654 extended messages.
const MAX_MESSAGE: usize = 4096;

/// Buffered output is written out once it reaches this size (and at the end of every event).
const FLUSH_AT: usize = 64 * 1024;

/// What the session is doing, published on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// Prefixes currently advertised to the peer.
    pub prefixes_sent: usize,
    /// Prefixes currently learned from the peer (stale ones included).
    pub prefixes_received: usize,
    /// Bumped whenever the received routes change.
    pub received_version: u64,
    /// When the session reached Established, while it is.
    pub established_at: Option<StdInstant>,
    /// The peer's BGP identifier from its last OPEN.
    pub peer_id: Option<Ipv4Addr>,
    /// Families both sides enabled, while Established.
    pub families: Vec<AfiSafi>,
    /// Why the session last went down, or the last I/O error.
    pub last_error: Option<String>,
    /// The driver task has ended (after [`SessionHandle::stop`]).
    pub finished: bool,
}

impl SessionStatus {
    fn initial(state: State) -> Self {
        Self {
            state,
            prefixes_sent: 0,
            prefixes_received: 0,
            received_version: 0,
            established_at: None,
            peer_id: None,
            families: Vec::new(),
            last_error: None,
            finished: false,
        }
    }
}

/// The running session. Dropping it stops the session as [`SessionHandle::stop`] does.
#[derive(Debug)]
pub struct SessionHandle {
    status: watch::Receiver<SessionStatus>,
    stop: Option<oneshot::Sender<()>>,
    inbound: mpsc::UnboundedSender<TcpStream>,
    received: ReceivedRib,
    task: Option<JoinHandle<()>>,
}

impl SessionHandle {
    /// The current status.
    pub fn state(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A receiver to wait for status changes.
    pub fn subscribe(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Hands the session a connection the peer opened to us.
    pub fn accept(&self, stream: TcpStream) {
        let _ = self.inbound.send(stream);
    }

    /// The routes the peer has sent us, sorted by prefix.
    pub fn received_routes(&self) -> Vec<ReceivedRoute> {
        let mut routes: Vec<ReceivedRoute> = lock(&self.received).values().cloned().collect();
        routes.sort_by_key(|r| r.prefix);
        routes
    }

    /// ManualStop: sends a Cease NOTIFICATION if a connection is up, closes it, and waits for the
    /// task to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Transport settings of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionOptions {
    /// Bind the local end of the connection to this address.
    pub local: Option<SocketAddr>,
    /// TCP MD5 signature password (RFC 2385), at most 80 bytes.
    pub md5_password: Option<String>,
    /// TTL (IPv4) or hop limit (IPv6) of outgoing packets, e.g. for eBGP multihop.
    pub ttl: Option<u8>,
    /// Bind the socket to this interface (`SO_BINDTODEVICE`).
    pub bind_interface: Option<String>,
}

/// Starts one session to `peer` (port included, normally 179), optionally binding the local end
/// to `local`. Must be called inside a tokio runtime; the socket is created by the runtime's
/// worker threads, so they must live in the right network namespace.
pub fn spawn_session(
    config: SessionConfig,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    routes: watch::Receiver<AdjRibOut>,
) -> SessionHandle {
    spawn_session_with(
        config,
        peer,
        SessionOptions {
            local,
            ..SessionOptions::default()
        },
        routes,
    )
}

/// [`spawn_session`] with transport options (MD5 password, TTL, interface). A bad option (e.g. a
/// password longer than 80 bytes) makes every connect attempt fail, with the error in
/// [`SessionStatus::last_error`].
pub fn spawn_session_with(
    config: SessionConfig,
    peer: SocketAddr,
    options: SessionOptions,
    routes: watch::Receiver<AdjRibOut>,
) -> SessionHandle {
    let (driver, status, inbound) = Driver::new(config, peer, options, routes);
    let received = driver.received.clone();
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(driver.run(stop_rx));
    SessionHandle {
        status,
        stop: Some(stop_tx),
        inbound,
        received,
        task: Some(task),
    }
}

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

/// A second connection from the peer while ours is opening: held until its OPEN shows which of
/// the two survives.
struct Candidate {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Driver {
    session: Session,
    peer: SocketAddr,
    options: SessionOptions,
    routes: watch::Receiver<AdjRibOut>,
    status: watch::Sender<SessionStatus>,
    inbound: mpsc::UnboundedReceiver<TcpStream>,
    stream: Option<TcpStream>,
    /// The current connection is the one we opened.
    outbound: bool,
    local_addr: Option<IpAddr>,
    connecting: Option<Connecting>,
    candidate: Option<Candidate>,
    buf: Vec<u8>,
    out: Vec<u8>,
    timers: HashMap<Timer, Instant>,
    events: VecDeque<Event>,
    wire: WireContext,
    /// Negotiated families while Established; empty otherwise.
    families: Vec<AfiSafi>,
    /// What the peer has from us: a fingerprint of each advertised route, by prefix (the routes
    /// themselves live in the shared [`AdjRibOut`]).
    advertised: HashMap<Prefix, u64>,
    received: ReceivedRib,
    received_version: u64,
    /// The peer's graceful-restart capability from the last OPEN exchange.
    peer_restart: Option<GracefulRestart>,
    /// When routes kept across a peer restart are dropped if no End-of-RIB came.
    stale_deadline: Option<Instant>,
    last_error: Option<String>,
}

enum Input {
    Stop,
    Read(std::io::Result<usize>),
    Timer(Timer),
    StaleExpired,
    Connected(std::io::Result<TcpStream>),
    Inbound(TcpStream),
    CandidateRead(std::io::Result<usize>),
    RoutesChanged,
    RoutesClosed,
}

impl Driver {
    fn new(
        config: SessionConfig,
        peer: SocketAddr,
        options: SessionOptions,
        routes: watch::Receiver<AdjRibOut>,
    ) -> (
        Self,
        watch::Receiver<SessionStatus>,
        mpsc::UnboundedSender<TcpStream>,
    ) {
        let session = Session::new(config);
        let (status_tx, status_rx) = watch::channel(SessionStatus::initial(session.state()));
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            wire: session.wire_context(),
            session,
            peer,
            options,
            routes,
            status: status_tx,
            inbound: inbound_rx,
            stream: None,
            outbound: false,
            local_addr: None,
            connecting: None,
            candidate: None,
            buf: Vec::new(),
            out: Vec::new(),
            timers: HashMap::new(),
            events: VecDeque::new(),
            families: Vec::new(),
            advertised: HashMap::new(),
            received: Arc::default(),
            received_version: 0,
            peer_restart: None,
            stale_deadline: None,
            last_error: None,
        };
        (driver, status_rx, inbound_tx)
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut routes_open = true;
        let mut inbound_open = true;
        let mut tmp = vec![0u8; 65536];
        let mut candidate_tmp = vec![0u8; 4096];
        self.events.push_back(Event::ManualStart);
        self.process().await;
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let established = self.session.state() == State::Established;
            let input = tokio::select! {
                _ = &mut stop => Input::Stop,
                r = read_some(self.stream.as_mut(), &mut tmp) => Input::Read(r),
                t = sleep_for(next_timer) => Input::Timer(t),
                () = sleep_until(self.stale_deadline) => Input::StaleExpired,
                c = connect_result(self.connecting.as_mut()) => Input::Connected(c),
                s = self.inbound.recv(), if inbound_open => match s {
                    Some(s) => Input::Inbound(s),
                    None => { inbound_open = false; continue; }
                },
                r = read_some(self.candidate.as_mut().map(|c| &mut c.stream), &mut candidate_tmp)
                    => Input::CandidateRead(r),
                c = self.routes.changed(), if routes_open && established => match c {
                    Ok(()) => Input::RoutesChanged,
                    Err(_) => Input::RoutesClosed,
                },
            };
            match input {
                Input::Stop => {
                    self.events.push_back(Event::ManualStop);
                    self.process().await;
                    self.close().await;
                    break;
                }
                Input::Read(Ok(0)) => self.connection_lost(None).await,
                Input::Read(Ok(n)) => {
                    self.buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
                    self.drain_buffer().await;
                }
                Input::Read(Err(e)) => self.connection_lost(Some(format!("read: {e}"))).await,
                Input::Timer(t) => {
                    self.timers.remove(&t);
                    self.events.push_back(match t {
                        Timer::ConnectRetry => Event::ConnectRetryTimerExpired,
                        Timer::Hold => Event::HoldTimerExpired,
                        Timer::Keepalive => Event::KeepaliveTimerExpired,
                    });
                    self.process().await;
                }
                Input::StaleExpired => {
                    self.stale_deadline = None;
                    self.drop_stale(|_| true);
                    self.publish();
                }
                Input::Connected(result) => {
                    self.connecting = None;
                    self.connected(result);
                    self.process().await;
                }
                Input::Inbound(stream) => self.inbound(stream).await,
                Input::CandidateRead(r) => {
                    let bytes = match r {
                        Ok(n) if n > 0 => candidate_tmp.get(..n).unwrap_or_default(),
                        _ => {
                            self.candidate = None;
                            continue;
                        }
                    };
                    if let Some(c) = self.candidate.as_mut() {
                        c.buf.extend_from_slice(bytes);
                    }
                    self.resolve_candidate().await;
                }
                Input::RoutesChanged => {
                    self.sync_routes().await;
                    self.process().await;
                }
                Input::RoutesClosed => routes_open = false,
            }
        }
        self.status.send_modify(|s| s.finished = true);
    }

    async fn connection_lost(&mut self, error: Option<String>) {
        if error.is_some() {
            self.last_error = error;
        }
        self.stream = None;
        self.buf.clear();
        self.out.clear();
        self.events.push_back(Event::TcpClosed);
        self.process().await;
    }

    fn connected(&mut self, result: std::io::Result<TcpStream>) {
        let event = match result {
            Ok(stream) if self.stream.is_none() => {
                self.set_stream(stream, true);
                Event::TcpConnected
            }
            // An inbound connection got there first.
            Ok(_) => return,
            Err(e) => {
                self.last_error = Some(format!("connect to {}: {e}", self.peer));
                Event::TcpFailed
            }
        };
        self.events.push_back(event);
    }

    fn set_stream(&mut self, stream: TcpStream, outbound: bool) {
        let _ = stream.set_nodelay(true);
        self.local_addr = stream.local_addr().ok().map(|a| a.ip());
        self.stream = Some(stream);
        self.outbound = outbound;
        self.buf.clear();
        self.out.clear();
    }

    /// A connection from the peer: take it when we have none, hold it against ours while the
    /// OPENs are exchanged, or, when Established, refuse it — unless the peer does graceful
    /// restart, in which case the new connection means the old one is dead (RFC 4724 section 4.2).
    async fn inbound(&mut self, stream: TcpStream) {
        match self.session.state() {
            State::Idle | State::Connect | State::Active if self.stream.is_none() => {
                self.adopt(stream, Vec::new()).await;
            }
            State::Established if self.peer_restart.is_some() => {
                self.last_error =
                    Some("peer reconnected: treating the old session as closed".into());
                self.stream = None;
                self.events.push_back(Event::TcpClosed);
                self.process().await;
                self.adopt(stream, Vec::new()).await;
            }
            State::OpenSent | State::OpenConfirm if self.candidate.is_none() => {
                self.candidate = Some(Candidate {
                    stream,
                    buf: Vec::new(),
                });
            }
            _ => refuse(stream).await,
        }
    }

    /// Makes `stream` the session's connection, with `buf` holding what already arrived on it.
    async fn adopt(&mut self, stream: TcpStream, buf: Vec<u8>) {
        self.connecting = None;
        self.set_stream(stream, false);
        self.buf = buf;
        if self.session.state() == State::Idle {
            self.events.push_back(Event::ConnectRetryTimerExpired);
        }
        self.events.push_back(Event::TcpAccepted);
        self.process().await;
        self.drain_buffer().await;
    }

    /// Once the held connection's OPEN is in, RFC 4271 section 6.8 picks the survivor; the loser
    /// gets Cease 6/7.
    async fn resolve_candidate(&mut self) {
        let Some(c) = self.candidate.as_ref() else {
            return;
        };
        let open = match next_message(&c.buf) {
            Ok(None) => return,
            Ok(Some(m)) => match decode(m, WireContext::default()) {
                Ok(Message::Open(open)) => open,
                _ => {
                    self.candidate = None;
                    return;
                }
            },
            Err(_) => {
                self.candidate = None;
                return;
            }
        };
        let Some(candidate) = self.candidate.take() else {
            return;
        };
        let config = self.session.config();
        let keep = resolve_collision(config.bgp_id, open.bgp_id, config.local_asn, open.my_asn);
        let keep_candidate = !self.outbound || keep == Keep::Inbound;
        if !keep_candidate {
            refuse(candidate.stream).await;
            return;
        }
        self.send(&Message::Notification(collision_cease())).await;
        self.flush().await;
        self.close().await;
        self.events.push_back(Event::TcpClosed);
        self.process().await;
        self.last_error = Some("connection collision: kept the peer's connection".into());
        self.adopt(candidate.stream, candidate.buf).await;
    }

    /// Frames and feeds every whole message in the buffer, one at a time (the wire context can
    /// change after the OPEN).
    async fn drain_buffer(&mut self) {
        let mut consumed = 0;
        while self.stream.is_some() {
            let rest = self.buf.get(consumed..).unwrap_or_default();
            let event = match next_message(rest) {
                Ok(None) => break,
                Ok(Some(msg)) => {
                    consumed += msg.len();
                    match decode(msg, self.wire) {
                        Ok(m) => Event::Message(m),
                        Err(e) => Event::DecodeFailed(e),
                    }
                }
                Err(e) => {
                    consumed = self.buf.len();
                    Event::DecodeFailed(e)
                }
            };
            self.events.push_back(event);
            self.process().await;
        }
        if self.stream.is_some() {
            self.buf.drain(..consumed.min(self.buf.len()));
        } else {
            self.buf.clear();
        }
    }

    /// Runs queued events through the FSM, carries out the actions and writes what they queued.
    async fn process(&mut self) {
        loop {
            while let Some(event) = self.events.pop_front() {
                let actions = self.session.handle(event, StdInstant::now());
                for action in actions {
                    self.execute(action).await;
                }
            }
            self.flush().await;
            if self.events.is_empty() {
                break;
            }
        }
        self.publish();
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Connect => {
                if self.stream.is_none() {
                    self.connecting = Some(Box::pin(connect(
                        self.peer,
                        self.options.clone(),
                        self.session.config().connect_retry,
                    )));
                }
            }
            Action::SendMessage(m) => self.send(&m).await,
            Action::CloseTcp => {
                self.flush().await;
                self.close().await;
                self.connecting = None;
            }
            Action::StartTimer(t, d) => {
                self.timers.insert(t, Instant::now() + d);
            }
            Action::StopTimer(t) => {
                self.timers.remove(&t);
            }
            Action::SetWireContext(w) => self.wire = w,
            Action::SessionEstablished { negotiated } => self.established(&negotiated).await,
            Action::SessionDown { reason } => self.down(reason),
            Action::Received(update) => self.received(update),
            Action::Withdraw(prefixes) => {
                let mut rib = lock(&self.received);
                for p in prefixes {
                    rib.remove(&p);
                }
                drop(rib);
                self.received_version += 1;
            }
            Action::RouteRefreshRequested(family) => {
                let routes = self.routes.borrow().clone();
                let again: Vec<&LocalRoute> = routes
                    .iter()
                    .filter(|r| family_of(&r.prefix) == family)
                    .filter(|r| self.advertised.contains_key(&r.prefix))
                    .collect();
                self.announce(again).await;
                self.send_end_of_rib(family).await;
            }
        }
    }

    async fn established(&mut self, negotiated: &Negotiated) {
        self.families = negotiated.families.clone();
        self.peer_restart = negotiated.graceful_restart.clone();
        // Stale routes of families the peer no longer preserves go now (RFC 4724 section 4.2).
        let kept: Vec<AfiSafi> = self
            .peer_restart
            .iter()
            .flat_map(|gr| gr.families.iter().map(|f| f.afi_safi))
            .collect();
        self.drop_stale(|f| !kept.contains(&f));
        self.advertised = HashMap::new();
        self.sync_routes().await;
        for family in self.families.clone() {
            self.send_end_of_rib(family).await;
        }
    }

    /// RFC 4724 helper: when a peer that does graceful restart loses its connection (no
    /// NOTIFICATION), its routes stay, marked stale, for its restart time.
    fn down(&mut self, reason: DownReason) {
        self.wire = self.session.wire_context();
        self.families.clear();
        self.advertised = HashMap::new();
        let restart_time = self
            .peer_restart
            .as_ref()
            .map(|gr| gr.restart_time)
            .filter(|t| *t > 0);
        match (&reason, restart_time) {
            (DownReason::TcpClosed, Some(secs)) => {
                for r in lock(&self.received).values_mut() {
                    r.stale = true;
                }
                self.stale_deadline = Some(Instant::now() + Duration::from_secs(u64::from(secs)));
            }
            _ => {
                lock(&self.received).clear();
                self.stale_deadline = None;
            }
        }
        self.received_version += 1;
        self.last_error = Some(format!("{reason:?}"));
    }

    fn drop_stale(&mut self, family: impl Fn(AfiSafi) -> bool) {
        let mut rib = lock(&self.received);
        rib.retain(|p, r| !(r.stale && family(family_of(p))));
        if !rib.values().any(|r| r.stale) {
            self.stale_deadline = None;
        }
        drop(rib);
        self.received_version += 1;
    }

    fn received(&mut self, update: Update) {
        if let Some(family) = update.end_of_rib() {
            self.drop_stale(|f| f == family);
            return;
        }
        let attrs = &update.attributes;
        let route = |prefix: Prefix, next_hop: Option<IpAddr>| ReceivedRoute {
            prefix,
            next_hop,
            as_path: attrs.as_path.clone().unwrap_or_default(),
            communities: attrs.communities.clone(),
            large_communities: attrs.large_communities.clone(),
            med: attrs.med,
            local_pref: attrs.local_pref,
            stale: false,
        };
        let mut rib = lock(&self.received);
        for p in &update.withdrawn {
            rib.remove(&Prefix::V4(*p));
        }
        for p in attrs.mp_unreach.iter().flatten() {
            rib.remove(&Prefix::V6(*p));
        }
        let v4_next_hop = attrs.next_hop.map(IpAddr::V4);
        for p in &update.nlri {
            rib.insert(Prefix::V4(*p), route(Prefix::V4(*p), v4_next_hop));
        }
        if let Some(r) = &attrs.mp_reach {
            for p in &r.nlri {
                rib.insert(
                    Prefix::V6(*p),
                    route(Prefix::V6(*p), Some(IpAddr::V6(r.next_hop))),
                );
            }
        }
        drop(rib);
        self.received_version += 1;
    }

    /// Queues a message; it goes out at the end of the current event (or sooner when the buffer
    /// is large).
    async fn send(&mut self, message: &Message) {
        if self.stream.is_none() {
            return;
        }
        self.out.extend_from_slice(&encode(message, self.wire));
        if self.out.len() >= FLUSH_AT {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            self.out.clear();
            return;
        };
        let result = stream.write_all(&self.out).await;
        self.out.clear();
        if let Err(e) = result {
            self.last_error = Some(format!("write: {e}"));
            self.stream = None;
            self.buf.clear();
            self.events.push_back(Event::TcpClosed);
        }
    }

    async fn close(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.shutdown().await;
        }
        self.buf.clear();
        self.out.clear();
    }

    async fn send_end_of_rib(&mut self, family: AfiSafi) {
        let eor = if family == AfiSafi::IPV6_UNICAST {
            Update::end_of_rib_ipv6()
        } else {
            Update::end_of_rib_ipv4()
        };
        self.send(&Message::Update(eor)).await;
    }

    /// Sends the difference between the watched routes and what the peer has.
    async fn sync_routes(&mut self) {
        if self.families.is_empty() {
            return;
        }
        let routes = self.routes.borrow_and_update().clone();
        let mut next = HashMap::with_capacity(routes.len());
        let mut announce = Vec::new();
        for r in routes
            .iter()
            .filter(|r| self.families.contains(&family_of(&r.prefix)))
        {
            let print = fingerprint(r);
            if self.advertised.get(&r.prefix) != Some(&print) {
                announce.push(r);
            }
            next.insert(r.prefix, print);
        }
        let mut withdraw: Vec<Prefix> = self
            .advertised
            .keys()
            .filter(|p| !next.contains_key(p))
            .copied()
            .collect();
        withdraw.sort();
        for update in withdrawals(&withdraw) {
            self.send(&Message::Update(update)).await;
        }
        self.announce(announce).await;
        self.advertised = next;
    }

    /// Announces routes, those with equal attributes packed together into UPDATEs of at most
    /// 4096 octets.
    async fn announce(&mut self, mut routes: Vec<&LocalRoute>) {
        routes.sort_by(|a, b| {
            a.attribute_key()
                .cmp(&b.attribute_key())
                .then(a.prefix.cmp(&b.prefix))
        });
        let mut start = 0;
        while let Some(first) = routes.get(start) {
            let end = routes
                .iter()
                .skip(start)
                .position(|r| r.attribute_key() != first.attribute_key())
                .map_or(routes.len(), |n| start + n);
            let group = routes.get(start..end).unwrap_or_default();
            for update in self.announcements(group) {
                self.send(&Message::Update(update)).await;
            }
            start = end;
        }
    }

    /// The path attributes for a route: ORIGIN IGP, AS_PATH `[local ASN, prepends]` toward eBGP
    /// (empty toward iBGP), LOCAL_PREF toward iBGP only.
    fn attributes(&self, r: &LocalRoute) -> PathAttributes {
        let config = self.session.config();
        let ibgp = config.ibgp();
        let as_path = if ibgp {
            AsPath::default()
        } else {
            let mut path = vec![config.local_asn];
            path.extend_from_slice(&r.as_path_prepend);
            AsPath::sequence(path)
        };
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(as_path),
            med: r.med,
            local_pref: ibgp.then(|| r.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
            communities: r.communities.clone(),
            large_communities: r
                .large_communities
                .iter()
                .map(|&(global_admin, local_data1, local_data2)| LargeCommunity {
                    global_admin,
                    local_data1,
                    local_data2,
                })
                .collect(),
            ..PathAttributes::default()
        }
    }

    /// The next hop to send for a route, or `None` when it cannot be sent on this session.
    fn next_hop(&self, r: &LocalRoute) -> Option<IpAddr> {
        match (r.prefix, r.next_hop) {
            (Prefix::V4(_), Some(nh @ IpAddr::V4(_)))
            | (Prefix::V6(_), Some(nh @ IpAddr::V6(_))) => Some(nh),
            (_, Some(_)) => None,
            (Prefix::V4(_), None) => self.local_addr.filter(IpAddr::is_ipv4),
            (Prefix::V6(_), None) => match self.local_addr? {
                IpAddr::V4(a) => Some(IpAddr::V6(a.to_ipv6_mapped())),
                v6 => Some(v6),
            },
        }
    }

    /// UPDATEs announcing `group` (routes with one attribute key, all of one family or skipped).
    fn announcements<R: std::borrow::Borrow<LocalRoute>>(&self, group: &[R]) -> Vec<Update> {
        let Some(first) = group.first().map(|r| r.borrow()) else {
            return Vec::new();
        };
        let Some(next_hop) = self.next_hop(first) else {
            return Vec::new();
        };
        let mut attributes = self.attributes(first);
        let base = match next_hop {
            IpAddr::V4(nh) => {
                attributes.next_hop = Some(nh);
                Update {
                    attributes,
                    ..Update::default()
                }
            }
            IpAddr::V6(nh) => {
                attributes.mp_reach = Some(MpReachIpv6 {
                    next_hop: nh,
                    link_local_next_hop: None,
                    nlri: Vec::new(),
                });
                Update {
                    attributes,
                    ..Update::default()
                }
            }
        };
        let room =
            MAX_MESSAGE.saturating_sub(encode(&Message::Update(base.clone()), self.wire).len());
        let mut updates = Vec::new();
        let mut current = base.clone();
        let mut used = 0;
        for r in group {
            let r = r.borrow();
            let cost = prefix_cost(&r.prefix);
            if used + cost > room {
                updates.push(std::mem::replace(&mut current, base.clone()));
                used = 0;
            }
            match (r.prefix, current.attributes.mp_reach.as_mut()) {
                (Prefix::V4(p), None) => current.nlri.push(p),
                (Prefix::V6(p), Some(reach)) => reach.nlri.push(p),
                _ => continue,
            }
            used += cost;
        }
        if used > 0 {
            updates.push(current);
        }
        updates
    }

    fn publish(&self) {
        let status = SessionStatus {
            state: self.session.state(),
            prefixes_sent: self.advertised.len(),
            prefixes_received: lock(&self.received).len(),
            received_version: self.received_version,
            established_at: self.session.established_at(),
            peer_id: self.session.negotiated().map(|n| n.peer_id),
            families: self.families.clone(),
            last_error: self.last_error.clone(),
            finished: false,
        };
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }
}

fn collision_cease() -> Notification {
    Notification {
        code: notification_code::CEASE,
        subcode: cease_subcode::CONNECTION_COLLISION_RESOLUTION,
        data: Vec::new(),
    }
}

/// Closes a connection we do not want with Cease 6/7.
async fn refuse(mut stream: TcpStream) {
    let bytes = encode(
        &Message::Notification(collision_cease()),
        WireContext::default(),
    );
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

async fn connect(
    peer: SocketAddr,
    options: SessionOptions,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let attempt = async {
        let socket = if peer.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(password) = &options.md5_password {
            set_md5(socket.as_raw_fd(), peer.ip(), password.as_bytes())?;
        }
        if let Some(ttl) = options.ttl {
            set_ttl(socket.as_raw_fd(), peer.is_ipv6(), ttl)?;
        }
        if let Some(ifname) = &options.bind_interface {
            set_bind_device(socket.as_raw_fd(), ifname)?;
        }
        if let Some(local) = options.local {
            socket.bind(local)?;
        }
        socket.connect(peer).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        })
}

/// Octets a prefix takes in NLRI or withdrawn routes.
fn prefix_cost(p: &Prefix) -> usize {
    1 + usize::from(prefix_len(p)).div_ceil(8)
}

/// A stable fingerprint of a route, to tell whether the peer already has it as it is.
fn fingerprint(r: &LocalRoute) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.hash(&mut h);
    h.finish()
}

/// UPDATEs withdrawing `prefixes` (IPv4 in the withdrawn field, IPv6 in MP_UNREACH), each
/// packed up to 4096 octets.
fn withdrawals(prefixes: &[Prefix]) -> Vec<Update> {
    // Header (19), the two length fields (4) and, for IPv6, the MP_UNREACH attribute header
    // with its AFI/SAFI (4 + 3).
    const V4_ROOM: usize = MAX_MESSAGE - 23;
    const V6_ROOM: usize = MAX_MESSAGE - 23 - 7;
    let mut updates = Vec::new();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let (mut v4_used, mut v6_used) = (0, 0);
    for p in prefixes {
        let cost = prefix_cost(p);
        match p {
            Prefix::V4(p) => {
                if v4_used + cost > V4_ROOM {
                    updates.push(Update {
                        withdrawn: std::mem::take(&mut v4),
                        ..Update::default()
                    });
                    v4_used = 0;
                }
                v4.push(*p);
                v4_used += cost;
            }
            Prefix::V6(p) => {
                if v6_used + cost > V6_ROOM {
                    updates.push(v6_withdrawal(std::mem::take(&mut v6)));
                    v6_used = 0;
                }
                v6.push(*p);
                v6_used += cost;
            }
        }
    }
    if !v4.is_empty() {
        updates.push(Update {
            withdrawn: v4,
            ..Update::default()
        });
    }
    if !v6.is_empty() {
        updates.push(v6_withdrawal(v6));
    }
    updates
}

fn v6_withdrawal(prefixes: Vec<crate::wire::Ipv6Prefix>) -> Update {
    Update {
        attributes: PathAttributes {
            mp_unreach: Some(prefixes),
            ..PathAttributes::default()
        },
        ..Update::default()
    }
}

fn prefix_len(p: &Prefix) -> u8 {
    match p {
        Prefix::V4(p) => p.len(),
        Prefix::V6(p) => p.len(),
    }
}

/// The address family a prefix belongs to.
pub fn family_of(prefix: &Prefix) -> AfiSafi {
    match prefix {
        Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
        Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

async fn read_some(stream: Option<&mut TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn connect_result(connecting: Option<&mut Connecting>) -> std::io::Result<TcpStream> {
    match connecting {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_for(timer: Option<(Timer, Instant)>) -> Timer {
    match timer {
        Some((t, at)) => {
            tokio::time::sleep_until(at).await;
            t
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Prefix, Ipv6Prefix};
    use std::net::Ipv6Addr;

    #[tokio::test]
    async fn sends_open_and_ceases_on_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(Arc::new(vec![LocalRoute::new(
            Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 10), 32).unwrap()),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        )]));
        let config = SessionConfig::new(65001, 65000, Ipv4Addr::new(10, 0, 0, 1));
        let handle = spawn_session(config, addr, None, rx);
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut have = Vec::new();
        let open = loop {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0);
            have.extend_from_slice(&buf[..n]);
            if let Some(m) = next_message(&have).unwrap() {
                break decode(m, WireContext::default()).unwrap();
            }
        };
        let Message::Open(open) = open else {
            panic!("expected OPEN, got {open:?}");
        };
        assert_eq!(open.my_asn, 65001);
        let mut status = handle.subscribe();
        status
            .wait_for(|s| s.state == State::OpenSent)
            .await
            .unwrap();
        handle.stop().await;
        // Cease then close.
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest).await.unwrap();
        let m = next_message(&rest).unwrap().unwrap();
        let Message::Notification(n) = decode(m, WireContext::default()).unwrap() else {
            panic!("expected NOTIFICATION");
        };
        assert_eq!(n.code, 6);
    }

    fn driver() -> Driver {
        let (_tx, rx) = watch::channel(AdjRibOut::default());
        let config = SessionConfig::new(65001, 65000, Ipv4Addr::LOCALHOST);
        Driver::new(
            config,
            "127.0.0.1:179".parse().unwrap(),
            SessionOptions::default(),
            rx,
        )
        .0
    }

    fn v4(i: u32) -> Prefix {
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::from(0xcb00_7100 + i), 32).unwrap())
    }

    #[test]
    fn announcements_carry_the_right_attributes() {
        let d = driver();
        let v6 = LocalRoute::new(
            Prefix::V6(Ipv6Prefix::new("2001:db8:ff::10".parse().unwrap(), 128).unwrap()),
            IpAddr::V6("2001:db8:1::2".parse::<Ipv6Addr>().unwrap()),
        );
        let u = d.announcements(std::slice::from_ref(&v6));
        assert_eq!(u.len(), 1);
        assert!(u[0].nlri.is_empty());
        assert_eq!(u[0].attributes.mp_reach.as_ref().unwrap().nlri.len(), 1);
        assert_eq!(u[0].attributes.as_path, Some(AsPath::sequence(vec![65001])));
        assert_eq!(u[0].attributes.local_pref, None);
        let mut bad = v6.clone();
        bad.next_hop = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(d.announcements(&[bad]).is_empty());
        let mut prepended = v6;
        prepended.as_path_prepend = vec![65001, 65001];
        let u = d.announcements(&[prepended]);
        assert_eq!(
            u[0].attributes.as_path,
            Some(AsPath::sequence(vec![65001, 65001, 65001]))
        );
    }

    #[test]
    fn next_hop_self_uses_the_connection_address() {
        let mut d = driver();
        let v4r = LocalRoute::originated(v4(1));
        let v6r = LocalRoute::originated(Prefix::V6(
            Ipv6Prefix::new("2001:db8:ff::10".parse().unwrap(), 128).unwrap(),
        ));
        assert!(d.announcements(std::slice::from_ref(&v4r)).is_empty());
        d.local_addr = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)));
        let u = d.announcements(&[v4r]);
        assert_eq!(
            u[0].attributes.next_hop,
            Some(Ipv4Addr::new(198, 51, 100, 2))
        );
        let u = d.announcements(&[v6r]);
        assert_eq!(
            u[0].attributes.mp_reach.as_ref().unwrap().next_hop,
            "::ffff:198.51.100.2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn ibgp_routes_carry_local_pref_and_an_empty_path() {
        let (_tx, rx) = watch::channel(AdjRibOut::default());
        let config = SessionConfig::new(65001, 65001, Ipv4Addr::LOCALHOST);
        let d = Driver::new(
            config,
            "127.0.0.1:179".parse().unwrap(),
            SessionOptions::default(),
            rx,
        )
        .0;
        let r = LocalRoute::new(v4(1), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let u = d.announcements(&[r]);
        assert_eq!(u[0].attributes.local_pref, Some(DEFAULT_LOCAL_PREF));
        assert_eq!(u[0].attributes.as_path, Some(AsPath::default()));
    }

    /// 2,000 routes with one set of attributes fill UPDATEs up to 4096 octets; each one encodes
    /// within the limit and together they carry every prefix once.
    #[test]
    fn routes_with_equal_attributes_share_updates() {
        let d = driver();
        let routes: Vec<LocalRoute> = (0..2000)
            .map(|i| {
                let mut r = LocalRoute::new(v4(i), IpAddr::V4(Ipv4Addr::LOCALHOST));
                r.communities = vec![(65001 << 16) | 100];
                r
            })
            .collect();
        let updates = d.announcements(&routes);
        assert!(updates.len() <= 3, "{} UPDATEs", updates.len());
        let mut seen = 0;
        for u in &updates {
            let bytes = encode(&Message::Update(u.clone()), d.wire);
            assert!(bytes.len() <= MAX_MESSAGE);
            seen += u.nlri.len();
        }
        assert_eq!(seen, 2000);
    }
}
