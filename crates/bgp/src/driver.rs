//! One BGP session over TCP: a tokio task that owns an [`fsm::Session`](crate::fsm::Session),
//! connects to the peer (active only), frames and decodes what arrives, runs the FSM's timers and
//! advertises a set of local routes given through a `watch` channel.
//!
//! Minimal on purpose: no listening socket (passive mode, collision handling), one UPDATE per
//! announced route, and received routes are only counted. [`SessionOptions`] adds a TCP MD5
//! password and an outgoing TTL (see [`crate::transport`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant as StdInstant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fsm::{Action, Event, Session, SessionConfig, State, Timer};
use crate::transport::{set_md5, set_ttl};
use crate::wire::{
    AfiSafi, AsPath, LargeCommunity, Message, MpReachIpv6, Origin, PathAttributes, Prefix, Update,
    WireContext, decode, encode, next_message,
};

/// How many prefixes go into one withdrawing UPDATE (well under 4096 octets for either family).
const WITHDRAW_BATCH: usize = 150;

/// A route this speaker originates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRoute {
    pub prefix: Prefix,
    /// Must be the prefix's family; a route with a next hop of the other family is not sent.
    pub next_hop: IpAddr,
    /// RFC 1997 communities, `(asn << 16) | value`.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities (global admin, local data 1, local data 2).
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    /// Sent to iBGP peers only.
    pub local_pref: Option<u32>,
}

impl LocalRoute {
    /// A route with no communities, MED or LOCAL_PREF.
    pub fn new(prefix: Prefix, next_hop: IpAddr) -> Self {
        Self {
            prefix,
            next_hop,
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
            local_pref: None,
        }
    }
}

/// What the session is doing, published on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// Prefixes currently advertised to the peer.
    pub prefixes_sent: usize,
    /// Prefixes currently learned from the peer.
    pub prefixes_received: usize,
    /// When the session reached Established, while it is.
    pub established_at: Option<StdInstant>,
    /// Why the session last went down, or the last I/O error.
    pub last_error: Option<String>,
    /// The driver task has ended (after [`SessionHandle::stop`]).
    pub finished: bool,
}

/// The running session. Dropping it stops the session as [`SessionHandle::stop`] does.
#[derive(Debug)]
pub struct SessionHandle {
    status: watch::Receiver<SessionStatus>,
    stop: Option<oneshot::Sender<()>>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Bind the local end of the connection to this address.
    pub local: Option<SocketAddr>,
    /// TCP MD5 signature password (RFC 2385), at most 80 bytes.
    pub md5_password: Option<String>,
    /// TTL (IPv4) or hop limit (IPv6) of outgoing packets, e.g. for eBGP multihop.
    pub ttl: Option<u8>,
}

/// Starts one active session to `peer` (port included, normally 179), optionally binding the
/// local end to `local`. Must be called inside a tokio runtime; the socket is created by the
/// runtime's worker threads, so they must live in the right network namespace.
pub fn spawn_session(
    config: SessionConfig,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    routes: watch::Receiver<Vec<LocalRoute>>,
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

/// [`spawn_session`] with transport options (MD5 password, TTL). A bad option (e.g. a password
/// longer than 80 bytes) makes every connect attempt fail, with the error in
/// [`SessionStatus::last_error`].
pub fn spawn_session_with(
    config: SessionConfig,
    peer: SocketAddr,
    options: SessionOptions,
    routes: watch::Receiver<Vec<LocalRoute>>,
) -> SessionHandle {
    let session = Session::new(config);
    let (status_tx, status_rx) = watch::channel(SessionStatus {
        state: session.state(),
        prefixes_sent: 0,
        prefixes_received: 0,
        established_at: None,
        last_error: None,
        finished: false,
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    let driver = Driver {
        wire: session.wire_context(),
        session,
        peer,
        options,
        routes,
        status: status_tx,
        stream: None,
        buf: Vec::new(),
        timers: HashMap::new(),
        events: VecDeque::new(),
        families: Vec::new(),
        advertised: HashMap::new(),
        received: HashSet::new(),
        last_error: None,
    };
    let task = tokio::spawn(driver.run(stop_rx));
    SessionHandle {
        status: status_rx,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

struct Driver {
    session: Session,
    peer: SocketAddr,
    options: SessionOptions,
    routes: watch::Receiver<Vec<LocalRoute>>,
    status: watch::Sender<SessionStatus>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timers: HashMap<Timer, Instant>,
    events: VecDeque<Event>,
    wire: WireContext,
    /// Negotiated families while Established; empty otherwise.
    families: Vec<AfiSafi>,
    /// What the peer has from us (Adj-RIB-Out), by prefix.
    advertised: HashMap<Prefix, LocalRoute>,
    received: HashSet<Prefix>,
    last_error: Option<String>,
}

enum Input {
    Stop,
    Read(std::io::Result<usize>),
    Timer(Timer),
    RoutesChanged,
    RoutesClosed,
}

impl Driver {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut routes_open = true;
        let mut tmp = vec![0u8; 65536];
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
                Input::Read(Ok(0)) => {
                    self.stream = None;
                    self.buf.clear();
                    self.events.push_back(Event::TcpClosed);
                    self.process().await;
                }
                Input::Read(Ok(n)) => {
                    self.buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
                    self.drain_buffer().await;
                }
                Input::Read(Err(e)) => {
                    self.last_error = Some(format!("read: {e}"));
                    self.stream = None;
                    self.buf.clear();
                    self.events.push_back(Event::TcpClosed);
                    self.process().await;
                }
                Input::Timer(t) => {
                    self.timers.remove(&t);
                    self.events.push_back(match t {
                        Timer::ConnectRetry => Event::ConnectRetryTimerExpired,
                        Timer::Hold => Event::HoldTimerExpired,
                        Timer::Keepalive => Event::KeepaliveTimerExpired,
                    });
                    self.process().await;
                }
                Input::RoutesChanged => {
                    self.sync_routes().await;
                    self.publish();
                }
                Input::RoutesClosed => routes_open = false,
            }
        }
        self.status.send_modify(|s| s.finished = true);
    }

    /// Frames and feeds every whole message in the buffer, one at a time (the wire context can
    /// change after the OPEN).
    async fn drain_buffer(&mut self) {
        while self.stream.is_some() {
            let event = match next_message(&self.buf) {
                Ok(None) => break,
                Ok(Some(msg)) => {
                    let len = msg.len();
                    let ev = match decode(msg, self.wire) {
                        Ok(m) => Event::Message(m),
                        Err(e) => Event::DecodeFailed(e),
                    };
                    self.buf.drain(..len);
                    ev
                }
                Err(e) => {
                    self.buf.clear();
                    Event::DecodeFailed(e)
                }
            };
            self.events.push_back(event);
            self.process().await;
        }
    }

    /// Runs queued events through the FSM and carries out the actions.
    async fn process(&mut self) {
        while let Some(event) = self.events.pop_front() {
            let actions = self.session.handle(event, StdInstant::now());
            for action in actions {
                self.execute(action).await;
            }
        }
        self.publish();
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Connect => self.connect().await,
            Action::SendMessage(m) => self.send(&m).await,
            Action::CloseTcp => self.close().await,
            Action::StartTimer(t, d) => {
                self.timers.insert(t, Instant::now() + d);
            }
            Action::StopTimer(t) => {
                self.timers.remove(&t);
            }
            Action::SetWireContext(w) => self.wire = w,
            Action::SessionEstablished { negotiated } => {
                self.families = negotiated.families.clone();
                self.advertised.clear();
                self.sync_routes().await;
                for family in self.families.clone() {
                    self.send_end_of_rib(family).await;
                }
            }
            Action::SessionDown { reason } => {
                self.last_error = Some(format!("{reason:?}"));
                self.families.clear();
                self.advertised.clear();
                self.received.clear();
            }
            Action::Received(update) => {
                for p in &update.withdrawn {
                    self.received.remove(&Prefix::V4(*p));
                }
                if let Some(w) = &update.attributes.mp_unreach {
                    for p in w {
                        self.received.remove(&Prefix::V6(*p));
                    }
                }
                self.received
                    .extend(update.nlri.iter().map(|p| Prefix::V4(*p)));
                if let Some(r) = &update.attributes.mp_reach {
                    self.received.extend(r.nlri.iter().map(|p| Prefix::V6(*p)));
                }
            }
            Action::Withdraw(prefixes) => {
                for p in prefixes {
                    self.received.remove(&p);
                }
            }
            Action::RouteRefreshRequested(family) => {
                let routes: Vec<LocalRoute> = self
                    .advertised
                    .values()
                    .filter(|r| family_of(&r.prefix) == family)
                    .cloned()
                    .collect();
                for r in &routes {
                    if let Some(u) = self.announcement(r) {
                        self.send(&Message::Update(u)).await;
                    }
                }
                self.send_end_of_rib(family).await;
            }
        }
    }

    async fn connect(&mut self) {
        let attempt = async {
            let socket = if self.peer.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(password) = &self.options.md5_password {
                set_md5(socket.as_raw_fd(), self.peer.ip(), password.as_bytes())?;
            }
            if let Some(ttl) = self.options.ttl {
                set_ttl(socket.as_raw_fd(), self.peer.is_ipv6(), ttl)?;
            }
            if let Some(local) = self.options.local {
                socket.bind(local)?;
            }
            socket.connect(self.peer).await
        };
        let timeout = self.session.config().connect_retry;
        let event = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.stream = Some(stream);
                self.buf.clear();
                Event::TcpConnected
            }
            Ok(Err(e)) => {
                self.last_error = Some(format!("connect to {}: {e}", self.peer));
                Event::TcpFailed
            }
            Err(_) => {
                self.last_error = Some(format!("connect to {}: timed out", self.peer));
                Event::TcpFailed
            }
        };
        self.events.push_back(event);
    }

    async fn send(&mut self, message: &Message) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let bytes = encode(message, self.wire);
        if let Err(e) = stream.write_all(&bytes).await {
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
        let wanted: HashMap<Prefix, LocalRoute> = self
            .routes
            .borrow_and_update()
            .iter()
            .filter(|r| self.families.contains(&family_of(&r.prefix)))
            .filter(|r| next_hop_fits(r))
            .map(|r| (r.prefix, r.clone()))
            .collect();
        let mut withdraw: Vec<Prefix> = self
            .advertised
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        withdraw.sort();
        let mut announce: Vec<LocalRoute> = wanted
            .values()
            .filter(|r| self.advertised.get(&r.prefix) != Some(r))
            .cloned()
            .collect();
        announce.sort_by_key(|r| r.prefix);

        let (v4, v6): (Vec<Prefix>, Vec<Prefix>) =
            withdraw.iter().partition(|p| matches!(p, Prefix::V4(_)));
        for chunk in v4.chunks(WITHDRAW_BATCH) {
            let update = Update {
                withdrawn: chunk
                    .iter()
                    .filter_map(|p| match p {
                        Prefix::V4(p) => Some(*p),
                        Prefix::V6(_) => None,
                    })
                    .collect(),
                ..Update::default()
            };
            self.send(&Message::Update(update)).await;
        }
        for chunk in v6.chunks(WITHDRAW_BATCH) {
            let update = Update {
                attributes: PathAttributes {
                    mp_unreach: Some(
                        chunk
                            .iter()
                            .filter_map(|p| match p {
                                Prefix::V6(p) => Some(*p),
                                Prefix::V4(_) => None,
                            })
                            .collect(),
                    ),
                    ..PathAttributes::default()
                },
                ..Update::default()
            };
            self.send(&Message::Update(update)).await;
        }
        for r in &announce {
            if let Some(u) = self.announcement(r) {
                self.send(&Message::Update(u)).await;
            }
        }
        self.advertised = wanted;
    }

    /// The UPDATE announcing one route: ORIGIN IGP, AS_PATH [local ASN] for eBGP (empty for iBGP).
    fn announcement(&self, r: &LocalRoute) -> Option<Update> {
        let config = self.session.config();
        let ibgp = config.ibgp();
        let mut attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(if ibgp {
                AsPath::default()
            } else {
                AsPath::sequence(vec![config.local_asn])
            }),
            med: r.med,
            local_pref: if ibgp { r.local_pref } else { None },
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
        };
        match (r.prefix, r.next_hop) {
            (Prefix::V4(p), IpAddr::V4(nh)) => {
                attributes.next_hop = Some(nh);
                Some(Update {
                    attributes,
                    nlri: vec![p],
                    ..Update::default()
                })
            }
            (Prefix::V6(p), IpAddr::V6(nh)) => {
                attributes.mp_reach = Some(MpReachIpv6 {
                    next_hop: nh,
                    link_local_next_hop: None,
                    nlri: vec![p],
                });
                Some(Update {
                    attributes,
                    ..Update::default()
                })
            }
            _ => None,
        }
    }

    fn publish(&self) {
        let status = SessionStatus {
            state: self.session.state(),
            prefixes_sent: self.advertised.len(),
            prefixes_received: self.received.len(),
            established_at: self.session.established_at(),
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

fn family_of(prefix: &Prefix) -> AfiSafi {
    match prefix {
        Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
        Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

fn next_hop_fits(r: &LocalRoute) -> bool {
    matches!(
        (r.prefix, r.next_hop),
        (Prefix::V4(_), IpAddr::V4(_)) | (Prefix::V6(_), IpAddr::V6(_))
    )
}

async fn read_some(stream: Option<&mut TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Prefix, Ipv6Prefix};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[tokio::test]
    async fn sends_open_and_ceases_on_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(vec![LocalRoute::new(
            Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 10), 32).unwrap()),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        )]);
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

    #[test]
    fn announcements_carry_the_right_attributes() {
        let (_tx, rx) = watch::channel(Vec::new());
        let (status, _) = watch::channel(SessionStatus {
            state: State::Idle,
            prefixes_sent: 0,
            prefixes_received: 0,
            established_at: None,
            last_error: None,
            finished: false,
        });
        let session = Session::new(SessionConfig::new(65001, 65000, Ipv4Addr::LOCALHOST));
        let d = Driver {
            wire: session.wire_context(),
            session,
            peer: "127.0.0.1:179".parse().unwrap(),
            options: SessionOptions::default(),
            routes: rx,
            status,
            stream: None,
            buf: Vec::new(),
            timers: HashMap::new(),
            events: VecDeque::new(),
            families: Vec::new(),
            advertised: HashMap::new(),
            received: HashSet::new(),
            last_error: None,
        };
        let v6 = LocalRoute::new(
            Prefix::V6(Ipv6Prefix::new("2001:db8:ff::10".parse().unwrap(), 128).unwrap()),
            IpAddr::V6("2001:db8:1::2".parse::<Ipv6Addr>().unwrap()),
        );
        let u = d.announcement(&v6).unwrap();
        assert!(u.nlri.is_empty());
        assert_eq!(u.attributes.mp_reach.as_ref().unwrap().nlri.len(), 1);
        assert_eq!(u.attributes.as_path, Some(AsPath::sequence(vec![65001])));
        let mut bad = v6.clone();
        bad.next_hop = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(d.announcement(&bad).is_none());
    }
}
