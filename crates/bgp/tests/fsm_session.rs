//! The session FSM, driven by events: two sessions wired to each other in memory (every message
//! encoded and decoded by the wire layer), plus single-session transitions.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use purelb_bgp::fsm::*;
use purelb_bgp::wire::*;

const A_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Two sessions and a TCP "connection" between them.
struct Pair {
    a: Session,
    b: Session,
    ctx_a: WireContext,
    ctx_b: WireContext,
    log_a: Vec<Action>,
    log_b: Vec<Action>,
    connected: bool,
    queue: VecDeque<(Side, Event)>,
    now: Instant,
}

impl Pair {
    fn new(a: SessionConfig, b: SessionConfig) -> Self {
        let (a, b) = (Session::new(a), Session::new(b));
        Self {
            ctx_a: a.wire_context(),
            ctx_b: b.wire_context(),
            a,
            b,
            log_a: Vec::new(),
            log_b: Vec::new(),
            connected: false,
            queue: VecDeque::new(),
            now: Instant::now(),
        }
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn ctx(&self, side: Side) -> WireContext {
        match side {
            Side::A => self.ctx_a,
            Side::B => self.ctx_b,
        }
    }

    fn log(&self, side: Side) -> &[Action] {
        match side {
            Side::A => &self.log_a,
            Side::B => &self.log_b,
        }
    }

    /// Feeds an event and runs everything it causes until both sides are quiet.
    fn send(&mut self, side: Side, event: Event) {
        self.queue.push_back((side, event));
        let mut steps = 0;
        while let Some((side, event)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1000, "event loop does not settle");
            let now = self.now;
            let actions = self.session(side).handle(event, now);
            for action in actions {
                self.apply(side, &action);
                match side {
                    Side::A => self.log_a.push(action),
                    Side::B => self.log_b.push(action),
                }
            }
        }
    }

    fn apply(&mut self, side: Side, action: &Action) {
        let other = side.other();
        match action {
            Action::SetWireContext(c) => match side {
                Side::A => self.ctx_a = *c,
                Side::B => self.ctx_b = *c,
            },
            Action::Connect => {
                let listening =
                    matches!(self.session(other).state(), State::Active | State::Connect);
                if listening && !self.connected {
                    self.connected = true;
                    self.queue.push_back((side, Event::TcpConnected));
                    self.queue.push_back((other, Event::TcpAccepted));
                } else {
                    self.queue.push_back((side, Event::TcpFailed));
                }
            }
            Action::SendMessage(m) if self.connected => {
                let bytes = encode(m, self.ctx(side));
                let event = deliver(&bytes, self.ctx(other));
                self.queue.push_back((other, event));
            }
            Action::CloseTcp if self.connected => {
                self.connected = false;
                self.queue.push_back((other, Event::TcpClosed));
            }
            _ => {}
        }
    }

    fn clear_logs(&mut self) {
        self.log_a.clear();
        self.log_b.clear();
    }
}

/// Frames and decodes bytes the way the receive path will.
fn deliver(bytes: &[u8], ctx: WireContext) -> Event {
    let frame = match next_message(bytes) {
        Ok(Some(frame)) => frame,
        Ok(None) => panic!("incomplete message"),
        Err(e) => return Event::DecodeFailed(e),
    };
    match decode(frame, ctx) {
        Ok(m) => Event::Message(m),
        Err(e) => Event::DecodeFailed(e),
    }
}

fn config(local: u32, peer: u32, id: Ipv4Addr) -> SessionConfig {
    SessionConfig::new(local, peer, id)
}

fn established(log: &[Action]) -> Option<&Negotiated> {
    log.iter().find_map(|a| match a {
        Action::SessionEstablished { negotiated } => Some(negotiated),
        _ => None,
    })
}

fn down_reason(log: &[Action]) -> Option<&DownReason> {
    log.iter().find_map(|a| match a {
        Action::SessionDown { reason } => Some(reason),
        _ => None,
    })
}

fn sent_notification(log: &[Action]) -> Option<&Notification> {
    log.iter().find_map(|a| match a {
        Action::SendMessage(Message::Notification(n)) => Some(n),
        _ => None,
    })
}

/// A (65001, active) and B (65002, passive) brought to Established.
fn up_pair(mut a: SessionConfig, mut b: SessionConfig) -> Pair {
    a.passive = false;
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.send(Side::B, Event::ManualStart);
    p.send(Side::A, Event::ManualStart);
    assert_eq!(p.a.state(), State::Established, "A: {:?}", p.log_a);
    assert_eq!(p.b.state(), State::Established, "B: {:?}", p.log_b);
    p
}

fn ebgp_pair() -> Pair {
    up_pair(config(65001, 65002, A_ID), config(65002, 65001, B_ID))
}

#[test]
fn active_to_passive_reaches_established() {
    let p = ebgp_pair();
    let na = established(&p.log_a).expect("A established");
    let nb = established(&p.log_b).expect("B established");
    assert_eq!(na.peer_id, B_ID);
    assert_eq!(nb.peer_id, A_ID);
    assert_eq!(na.peer_asn, 65002);
    assert_eq!(nb.peer_asn, 65001);
    assert_eq!(na.hold_time, 90);
    assert_eq!(na.keepalive, 30);
    assert!(na.four_octet_as && na.route_refresh);
    assert_eq!(
        na.families,
        vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
    );
    assert_eq!(
        na.wire,
        WireContext {
            four_octet_as: true,
            ibgp: false
        }
    );
    assert!(p.log_a.contains(&Action::Connect));
    assert!(
        !p.log_b.contains(&Action::Connect),
        "passive side connected"
    );
    assert_eq!(p.a.established_at(), Some(p.now));
    // Established starts the hold timer for the negotiated time.
    assert!(
        p.log_a
            .contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(90)))
    );
}

#[test]
fn passive_to_active_reaches_established() {
    // Same, with the roles swapped: B initiates.
    let mut p = up_pair(config(65002, 65001, B_ID), config(65001, 65002, A_ID));
    assert!(established(&p.log_a).is_some());
    assert!(established(&p.log_b).is_some());
    // KEEPALIVE and UPDATE keep it up and UPDATEs are passed up.
    p.clear_logs();
    p.send(Side::A, Event::KeepaliveTimerExpired);
    assert_eq!(p.b.state(), State::Established);
    assert!(
        p.log_b
            .contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(90)))
    );
}

#[test]
fn both_active_establish_when_one_listens() {
    // Both active; B's first attempt fails (A not listening yet), A then connects to B in Active.
    let mut p = Pair::new(config(65001, 65002, A_ID), config(65002, 65001, B_ID));
    p.send(Side::B, Event::ManualStart);
    assert_eq!(p.b.state(), State::Active);
    assert!(p.log_b.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(120)
    )));
    p.send(Side::A, Event::ManualStart);
    assert_eq!(p.a.state(), State::Established);
    assert_eq!(p.b.state(), State::Established);
}

#[test]
fn hold_time_is_the_minimum() {
    let mut a = config(65001, 65002, A_ID);
    a.hold_time = 30;
    let p = up_pair(a, config(65002, 65001, B_ID));
    for log in [p.log(Side::A), p.log(Side::B)] {
        let n = established(log).expect("established");
        assert_eq!((n.hold_time, n.keepalive), (30, 10));
        assert!(log.contains(&Action::StartTimer(
            Timer::Keepalive,
            Duration::from_secs(10)
        )));
    }
}

#[test]
fn hold_time_zero_means_no_keepalives() {
    let mut a = config(65001, 65002, A_ID);
    a.hold_time = 0;
    let p = up_pair(a, config(65002, 65001, B_ID));
    for log in [p.log(Side::A), p.log(Side::B)] {
        let n = established(log).expect("established");
        assert_eq!((n.hold_time, n.keepalive), (0, 0));
        assert!(!log.iter().any(|a| match a {
            Action::StartTimer(Timer::Keepalive, _) => true,
            Action::StartTimer(Timer::Hold, d) => *d != LARGE_HOLD_TIME,
            _ => false,
        }));
    }
}

#[test]
fn four_octet_asn_negotiates() {
    let p = up_pair(
        config(4_200_000_001, 65002, A_ID),
        config(65002, 4_200_000_001, B_ID),
    );
    let nb = established(&p.log_b).expect("B established");
    assert_eq!(nb.peer_asn, 4_200_000_001);
    assert!(nb.four_octet_as);
    assert!(p.b.wire_context().four_octet_as);
}

/// A session in OpenSent, with its actions so far.
fn open_sent(cfg: SessionConfig) -> (Session, Instant) {
    let now = Instant::now();
    let mut s = Session::new(cfg);
    s.handle(Event::ManualStart, now);
    let acts = s.handle(Event::TcpConnected, now);
    assert!(matches!(
        acts.as_slice(),
        [
            Action::StopTimer(Timer::ConnectRetry),
            Action::SendMessage(Message::Open(_)),
            Action::StartTimer(Timer::Hold, _)
        ]
    ));
    assert_eq!(s.state(), State::OpenSent);
    (s, now)
}

fn peer_open(asn: u32, id: Ipv4Addr) -> Open {
    Open {
        version: 4,
        my_asn: asn,
        hold_time: 90,
        bgp_id: id,
        capabilities: Capabilities::default(),
    }
}

#[test]
fn two_octet_peer_without_capabilities() {
    // No 4-octet capability and no multiprotocol capabilities: 2-octet AS_PATH, IPv4 unicast only.
    let (mut s, now) = open_sent(config(65001, 65002, A_ID));
    let acts = s.handle(Event::Message(Message::Open(peer_open(65002, B_ID))), now);
    let ctx = WireContext {
        four_octet_as: false,
        ibgp: false,
    };
    assert!(acts.contains(&Action::SetWireContext(ctx)));
    assert!(acts.contains(&Action::SendMessage(Message::Keepalive)));
    assert_eq!(s.state(), State::OpenConfirm);
    let acts = s.handle(Event::Message(Message::Keepalive), now);
    let n = established(&acts).expect("established");
    assert_eq!(n.families, vec![AfiSafi::IPV4_UNICAST]);
    assert!(!n.four_octet_as && !n.route_refresh);
}

#[test]
fn large_asn_peer_without_capability_is_bad_peer_as() {
    let (mut s, now) = open_sent(config(65001, 4_200_000_001, A_ID));
    let acts = s.handle(
        Event::Message(Message::Open(peer_open(u32::from(AS_TRANS), B_ID))),
        now,
    );
    assert_eq!(
        sent_notification(&acts).map(|n| (n.code, n.subcode)),
        Some((2, 2))
    );
}

#[test]
fn wrong_peer_as_sends_2_2_and_goes_idle() {
    let mut a = config(65001, 65003, A_ID);
    a.passive = true;
    let mut p = Pair::new(a, config(65002, 65001, B_ID));
    p.send(Side::A, Event::ManualStart);
    p.send(Side::B, Event::ManualStart);
    let n = sent_notification(&p.log_a).expect("A sent a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 2));
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.b.state(), State::Idle);
    assert_eq!(
        down_reason(&p.log_a),
        Some(&DownReason::NotificationSent(n.clone()))
    );
    assert!(matches!(
        down_reason(&p.log_b),
        Some(DownReason::NotificationReceived(Notification {
            code: 2,
            subcode: 2,
            ..
        }))
    ));
    // Not manually stopped: the ConnectRetry timer restarts the session from Idle.
    assert!(p.log_a.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(120)
    )));
    let now = p.now;
    let acts = p.b.handle(Event::ConnectRetryTimerExpired, now);
    assert!(acts.contains(&Action::Connect));
    assert_eq!(p.b.state(), State::Connect);
}

/// (code, subcode, data) of the NOTIFICATION expected.
type Want = (u8, u8, Vec<u8>);

#[test]
fn open_validation_notifications() {
    let cases: Vec<(SessionConfig, Open, Want)> = vec![
        (
            config(65001, 65002, A_ID),
            Open {
                version: 3,
                ..peer_open(65002, B_ID)
            },
            (2, 1, vec![0, 4]),
        ),
        (
            config(65001, 65002, A_ID),
            peer_open(65002, Ipv4Addr::UNSPECIFIED),
            (2, 3, vec![]),
        ),
        // iBGP peer with our identifier (RFC 6286: unique within an AS).
        (
            config(65001, 65001, A_ID),
            peer_open(65001, A_ID),
            (2, 3, vec![]),
        ),
        (
            config(65001, 65002, A_ID),
            Open {
                hold_time: 2,
                ..peer_open(65002, B_ID)
            },
            (2, 6, vec![]),
        ),
    ];
    for (cfg, open, want) in cases {
        let (mut s, now) = open_sent(cfg);
        let acts = s.handle(Event::Message(Message::Open(open.clone())), now);
        let n = sent_notification(&acts).expect("notification");
        assert_eq!((n.code, n.subcode, n.data.clone()), want, "{open:?}");
        assert!(acts.contains(&Action::CloseTcp));
        assert_eq!(s.state(), State::Idle);
    }
    // An external peer may share our identifier.
    let (mut s, now) = open_sent(config(65001, 65002, A_ID));
    s.handle(Event::Message(Message::Open(peer_open(65002, A_ID))), now);
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn hold_timer_expiry_sends_4_0() {
    let mut p = ebgp_pair();
    p.clear_logs();
    p.send(Side::A, Event::HoldTimerExpired);
    let n = sent_notification(&p.log_a).expect("notification");
    assert_eq!((n.code, n.subcode), (4, 0));
    assert!(p.log_a.contains(&Action::CloseTcp));
    assert_eq!(down_reason(&p.log_a), Some(&DownReason::HoldTimerExpired));
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.a.established_at(), None);
    assert!(matches!(
        down_reason(&p.log_b),
        Some(DownReason::NotificationReceived(Notification {
            code: 4,
            ..
        }))
    ));
}

#[test]
fn manual_stop_sends_cease_2() {
    let mut p = ebgp_pair();
    p.clear_logs();
    p.send(Side::A, Event::ManualStop);
    let n = sent_notification(&p.log_a).expect("notification");
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(down_reason(&p.log_a), Some(&DownReason::ManualStop));
    assert!(p.log_a.contains(&Action::StopTimer(Timer::ConnectRetry)));
    assert!(
        !p.log_a
            .iter()
            .any(|a| matches!(a, Action::StartTimer(Timer::ConnectRetry, _)))
    );
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.b.state(), State::Idle);
    // Stopped stays stopped.
    let now = p.now;
    assert!(p.a.handle(Event::ConnectRetryTimerExpired, now).is_empty());
}

fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(2);
    v.extend_from_slice(&body);
    v
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH_65002_4: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xea];
const NH: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 2];
const NLRI_203_0_113: [u8; 4] = [24, 203, 0, 113];

#[test]
fn updates_are_passed_up() {
    let mut p = ebgp_pair();
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65002_4, &NH].concat();
    let event = deliver(&update_bytes(&[], &attrs, &NLRI_203_0_113), p.ctx_a);
    let now = p.now;
    let acts = p.a.handle(event, now);
    let Some(Action::Received(u)) = acts.iter().find(|a| matches!(a, Action::Received(_))) else {
        panic!("no Received in {acts:?}");
    };
    assert_eq!(u.nlri.len(), 1);
    assert!(acts.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(90))));
    // ROUTE-REFRESH is passed up too.
    let acts = p.a.handle(
        Event::Message(Message::RouteRefresh(AfiSafi::IPV6_UNICAST)),
        now,
    );
    assert!(acts.contains(&Action::RouteRefreshRequested(AfiSafi::IPV6_UNICAST)));
}

#[test]
fn malformed_update_sends_its_notification() {
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65002_4, &NH, &[0x40, 99, 1, 7]].concat();
    let cases = [
        // Withdrawn length runs past the message.
        (
            vec![0xff; 16]
                .into_iter()
                .chain([0, 23, 2, 0, 9, 0, 0])
                .collect::<Vec<u8>>(),
            (3, 1, vec![]),
        ),
        // Unrecognised well-known attribute: data is the attribute.
        (
            update_bytes(&[], &attrs, &NLRI_203_0_113),
            (3, 2, vec![0x40, 99, 1, 7]),
        ),
        // NLRI prefix length 33.
        (
            update_bytes(
                &[],
                &[&ORIGIN_IGP[..], &AS_PATH_65002_4, &NH].concat(),
                &[33, 1, 2, 3, 4, 5],
            ),
            (3, 10, vec![]),
        ),
    ];
    for (bytes, want) in cases {
        let mut p = ebgp_pair();
        p.clear_logs();
        let event = deliver(&bytes, p.ctx_a);
        assert!(matches!(event, Event::DecodeFailed(_)), "{event:?}");
        p.send(Side::A, event);
        let n = sent_notification(&p.log_a).expect("notification");
        assert_eq!((n.code, n.subcode, n.data.clone()), want);
        assert!(p.log_a.contains(&Action::CloseTcp));
        assert_eq!(p.a.state(), State::Idle);
        assert_eq!(p.b.state(), State::Idle);
    }
}

#[test]
fn treat_as_withdraw_keeps_established() {
    let mut p = ebgp_pair();
    p.clear_logs();
    // ORIGIN value 5, withdrawing 10/8 and announcing 203.0.113/24.
    let attrs = [&[0x40, 1, 1, 5][..], &AS_PATH_65002_4, &NH].concat();
    let event = deliver(&update_bytes(&[8, 10], &attrs, &NLRI_203_0_113), p.ctx_a);
    p.send(Side::A, event);
    assert_eq!(p.a.state(), State::Established);
    assert_eq!(p.b.state(), State::Established);
    assert_eq!(sent_notification(&p.log_a), None);
    let want = vec![
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("prefix")),
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 24).expect("prefix")),
    ];
    assert!(p.log_a.contains(&Action::Withdraw(want)), "{:?}", p.log_a);
}

#[test]
fn notification_received_goes_idle_with_the_code() {
    let mut p = ebgp_pair();
    let now = p.now;
    let n = Notification {
        code: 6,
        subcode: 4,
        data: vec![],
    };
    let acts =
        p.a.handle(Event::Message(Message::Notification(n.clone())), now);
    assert!(acts.contains(&Action::CloseTcp));
    assert_eq!(
        down_reason(&acts),
        Some(&DownReason::NotificationReceived(n))
    );
    assert_eq!(sent_notification(&acts), None);
    assert_eq!(p.a.state(), State::Idle);
}

#[test]
fn unexpected_message_is_an_fsm_error() {
    let mut p = ebgp_pair();
    let now = p.now;
    let acts =
        p.a.handle(Event::Message(Message::Open(peer_open(65002, B_ID))), now);
    assert_eq!(
        sent_notification(&acts).map(|n| (n.code, n.subcode)),
        Some((5, 3))
    );
    let (mut s, now) = open_sent(config(65001, 65002, A_ID));
    let acts = s.handle(Event::Message(Message::Keepalive), now);
    assert_eq!(
        sent_notification(&acts).map(|n| (n.code, n.subcode)),
        Some((5, 1))
    );
}

#[test]
fn passive_never_connects() {
    let mut cfg = config(65001, 65002, A_ID);
    cfg.passive = true;
    let mut s = Session::new(cfg);
    let now = Instant::now();
    let mut all = s.handle(Event::ManualStart, now);
    assert_eq!(s.state(), State::Active);
    for event in [
        Event::ConnectRetryTimerExpired,
        Event::TcpFailed,
        Event::ConnectRetryTimerExpired,
        Event::TcpAccepted,
        Event::TcpClosed,
        Event::ConnectRetryTimerExpired,
        Event::HoldTimerExpired,
        Event::ConnectRetryTimerExpired,
    ] {
        all.extend(s.handle(event, now));
    }
    assert!(!all.contains(&Action::Connect), "{all:?}");
    assert_eq!(s.state(), State::Active);
}

#[test]
fn connect_retry_after_tcp_failed() {
    let mut cfg = config(65001, 65002, A_ID);
    cfg.connect_retry = Duration::from_secs(5);
    let mut s = Session::new(cfg);
    let now = Instant::now();
    let acts = s.handle(Event::ManualStart, now);
    assert_eq!(
        acts,
        vec![
            Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(5)),
            Action::Connect
        ]
    );
    assert_eq!(s.state(), State::Connect);
    let acts = s.handle(Event::TcpFailed, now);
    assert_eq!(
        acts,
        vec![Action::StartTimer(
            Timer::ConnectRetry,
            Duration::from_secs(5)
        )]
    );
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.connect_retry_counter(), 1);
    let acts = s.handle(Event::ConnectRetryTimerExpired, now);
    assert!(acts.contains(&Action::Connect));
    assert_eq!(s.state(), State::Connect);
    // A connection lost in OpenSent goes back to Active to wait for the retry.
    s.handle(Event::TcpConnected, now);
    let acts = s.handle(Event::TcpClosed, now);
    assert!(acts.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(5)
    )));
    assert_eq!(s.state(), State::Active);
}

#[test]
fn graceful_restart_is_advertised_and_negotiated() {
    let mut a = config(65001, 65002, A_ID);
    a.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 90,
        restarting: true,
        forwarding_preserved: true,
    });
    let p = up_pair(a, config(65002, 65001, B_ID));
    let gr = established(&p.log_b)
        .and_then(|n| n.graceful_restart.clone())
        .expect("peer's graceful restart");
    assert_eq!(gr.restart_time, 90);
    assert_eq!(
        gr.flags & GracefulRestart::RESTART_STATE,
        GracefulRestart::RESTART_STATE
    );
    assert_eq!(gr.families.len(), 2);
    assert!(gr.families.iter().all(|f| f.forwarding_preserved));
    assert_eq!(
        established(&p.log_a).and_then(|n| n.graceful_restart.clone()),
        None
    );
}

#[test]
fn families_are_intersected() {
    let mut a = config(65001, 65002, A_ID);
    a.families = vec![AfiSafi::IPV6_UNICAST];
    let p = up_pair(a, config(65002, 65001, B_ID));
    for log in [p.log(Side::A), p.log(Side::B)] {
        assert_eq!(
            established(log).map(|n| n.families.clone()),
            Some(vec![AfiSafi::IPV6_UNICAST])
        );
    }
}

#[test]
fn collision_resolution() {
    let lo = Ipv4Addr::new(10, 0, 0, 1);
    let hi = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(resolve_collision(lo, hi, 65001, 65002), Keep::Inbound);
    assert_eq!(resolve_collision(hi, lo, 65001, 65002), Keep::Outbound);
    assert_eq!(resolve_collision(lo, lo, 65001, 65002), Keep::Inbound);
    assert_eq!(resolve_collision(lo, lo, 65002, 65001), Keep::Outbound);
}
