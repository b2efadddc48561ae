//! The RFC 4271 section 8 session finite state machine, as a pure state machine.
//!
//! [`Session::handle`] takes one [`Event`] and the current time (passed in, never read here) and
//! returns the [`Action`]s the caller must carry out: open or close the TCP connection, send
//! messages, start or stop timers, and report session changes. There is no I/O, no async and no
//! clock inside, so every transition can be tested by feeding events.
//!
//! Deliberate simplifications of RFC 4271 section 8 (the optional session attributes are all off):
//! no DelayOpen, no DampPeerOscillations, no IdleHoldTimer. One addition: after an error drops the
//! session to Idle, and unless it was stopped by [`Event::ManualStop`], the ConnectRetry timer is
//! started; its expiry in Idle is an automatic start (RFC 4271 event 3), so a speaker keeps trying.
//! Collision detection (section 6.8) needs two connections and lives above this type; the
//! decision itself is [`resolve_collision`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::wire::{
    AfiSafi, Capabilities, DecodeError, GracefulRestart, GracefulRestartFamily, Message,
    Notification, Open, Prefix, Update, WireContext, notification_code,
};

/// The hold time used in OpenSent before the peer's OPEN arrives (RFC 4271 section 8.2.2 suggests 4
/// minutes).
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);

/// Cease subcodes (RFC 4486).
pub mod cease_subcode {
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
}

/// FSM error subcodes (RFC 6608).
pub mod fsm_subcode {
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Graceful restart as advertised in our OPEN (RFC 4724).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Seconds (12 bits; larger values are clamped to 4095).
    pub restart_time: u16,
    /// Set the Restart State (R) bit: we have just restarted.
    pub restarting: bool,
    /// Claim forwarding state was preserved for every family (F bit).
    pub forwarding_preserved: bool,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        Self {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: false,
        }
    }
}

/// What one session is configured to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub peer_asn: u32,
    pub bgp_id: Ipv4Addr,
    /// Seconds; 0 disables keepalives and the hold timer, otherwise at least 3. Default 90.
    pub hold_time: u16,
    /// Default 120 s (RFC 4271); PureLB deployments may want it shorter.
    pub connect_retry: Duration,
    /// Never initiate a connection; wait for [`Event::TcpAccepted`].
    pub passive: bool,
    /// Families offered in the multiprotocol capability. Default IPv4 and IPv6 unicast.
    pub families: Vec<AfiSafi>,
    /// `None` = graceful restart not advertised.
    pub graceful_restart: Option<GracefulRestartConfig>,
}

impl SessionConfig {
    /// A config with the defaults: hold 90 s, connect-retry 120 s, active, IPv4 and IPv6 unicast,
    /// no graceful restart.
    pub fn new(local_asn: u32, peer_asn: u32, bgp_id: Ipv4Addr) -> Self {
        Self {
            local_asn,
            peer_asn,
            bgp_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(120),
            passive: false,
            families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            graceful_restart: None,
        }
    }

    /// Internal peer (same ASN).
    pub fn ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

/// One input to the FSM. `Message` is not boxed: events are moved, not stored, and boxing would
/// cost an allocation per received UPDATE on the bulk path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ManualStart,
    ManualStop,
    /// Our outbound connection completed.
    TcpConnected,
    /// The peer connected to us.
    TcpAccepted,
    /// Our outbound connection attempt failed.
    TcpFailed,
    /// The established TCP connection closed or errored.
    TcpClosed,
    Message(Message),
    DecodeFailed(DecodeError),
    ConnectRetryTimerExpired,
    HoldTimerExpired,
    KeepaliveTimerExpired,
}

/// What both OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Seconds; 0 = no keepalives and no hold timer.
    pub hold_time: u16,
    /// Seconds: `hold_time / 3`.
    pub keepalive: u16,
    pub four_octet_as: bool,
    /// Families both sides offered (a peer without multiprotocol capabilities offers IPv4 unicast).
    pub families: Vec<AfiSafi>,
    pub peer_id: Ipv4Addr,
    pub peer_asn: u32,
    pub route_refresh: bool,
    /// The peer's graceful restart capability, if it sent one.
    pub graceful_restart: Option<GracefulRestart>,
    /// Codec settings for the rest of the session.
    pub wire: WireContext,
}

/// Why the session left OpenSent/OpenConfirm/Established (or its connection attempt) for Idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    ManualStop,
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We sent this NOTIFICATION because of an error in what the peer sent.
    NotificationSent(Notification),
    /// The TCP connection closed.
    TcpClosed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open an outbound TCP connection to the peer (answer with TcpConnected or TcpFailed).
    Connect,
    SendMessage(Message),
    /// Close the TCP connection (after sending any message queued before this action).
    CloseTcp,
    /// Start, or restart, a timer; its expiry is the matching `*TimerExpired` event.
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// Use this context for encoding and decoding from now on (emitted when the peer's OPEN is
    /// accepted).
    SetWireContext(WireContext),
    SessionEstablished {
        negotiated: Negotiated,
    },
    SessionDown {
        reason: DownReason,
    },
    /// An UPDATE received in Established.
    Received(Update),
    /// RFC 7606 treat-as-withdraw: remove these prefixes learned from the peer; the session stays.
    Withdraw(Vec<Prefix>),
    /// The peer asked for our Adj-RIB-Out for this family again (RFC 2918).
    RouteRefreshRequested(AfiSafi),
}

/// One BGP session's FSM. See the module documentation.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Started (manually or automatically) and not manually stopped.
    admin_up: bool,
    connect_retry_counter: u32,
    negotiated: Option<Negotiated>,
    wire: WireContext,
    established_at: Option<Instant>,
    last_down: Option<DownReason>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        let wire = WireContext {
            four_octet_as: false,
            ibgp: config.ibgp(),
        };
        Self {
            config,
            state: State::Idle,
            admin_up: false,
            connect_retry_counter: 0,
            negotiated: None,
            wire,
            established_at: None,
            last_down: None,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    pub fn state(&self) -> State {
        self.state
    }
    /// What the last OPEN exchange agreed on (kept until the next one).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }
    /// The codec settings to use now.
    pub fn wire_context(&self) -> WireContext {
        self.wire
    }
    /// When the session reached Established, while it is.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }
    /// Why the session last went down.
    pub fn last_down(&self) -> Option<&DownReason> {
        self.last_down.as_ref()
    }
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::ManualStart => {
                self.admin_up = true;
                if self.state == State::Idle {
                    self.connect_retry_counter = 0;
                    self.start(&mut out);
                }
            }
            Event::ManualStop => {
                self.admin_up = false;
                self.manual_stop(&mut out);
            }
            Event::TcpConnected | Event::TcpAccepted => self.tcp_up(&mut out),
            Event::TcpFailed => self.tcp_failed(&mut out),
            Event::TcpClosed => self.tcp_closed(&mut out),
            Event::ConnectRetryTimerExpired => self.connect_retry_expired(&mut out),
            Event::HoldTimerExpired => self.hold_expired(&mut out),
            Event::KeepaliveTimerExpired => self.keepalive_expired(&mut out),
            Event::Message(m) => self.message(m, now, &mut out),
            Event::DecodeFailed(e) => self.decode_failed(e, &mut out),
        }
        out
    }

    // ---- helpers ----

    fn retry(&self) -> Action {
        Action::StartTimer(Timer::ConnectRetry, self.config.connect_retry)
    }

    /// Idle → Connect (or Active when passive).
    fn start(&mut self, out: &mut Vec<Action>) {
        out.push(self.retry());
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            out.push(Action::Connect);
        }
    }

    fn our_open(&self) -> Open {
        let graceful_restart = self.config.graceful_restart.as_ref().map(|gr| {
            let mut flags = 0;
            if gr.restarting {
                flags |= GracefulRestart::RESTART_STATE;
            }
            GracefulRestart {
                flags,
                restart_time: gr.restart_time.min(4095),
                families: self
                    .config
                    .families
                    .iter()
                    .map(|&afi_safi| GracefulRestartFamily {
                        afi_safi,
                        forwarding_preserved: gr.forwarding_preserved,
                    })
                    .collect(),
            }
        });
        Open {
            version: 4,
            my_asn: self.config.local_asn,
            hold_time: self.config.hold_time,
            bgp_id: self.config.bgp_id,
            capabilities: Capabilities {
                multiprotocol: self.config.families.clone(),
                route_refresh: true,
                four_octet_as: true,
                graceful_restart,
                unknown: Vec::new(),
            },
        }
    }

    /// Back to Idle from a state with a connection (or a connection attempt): optionally send a
    /// NOTIFICATION, close, stop timers, report the reason, and schedule an automatic restart
    /// unless stopped.
    fn down(&mut self, notify: Option<Notification>, reason: DownReason, out: &mut Vec<Action>) {
        if let Some(n) = notify {
            out.push(Action::SendMessage(Message::Notification(n)));
        }
        out.push(Action::CloseTcp);
        out.push(Action::StopTimer(Timer::Hold));
        out.push(Action::StopTimer(Timer::Keepalive));
        let had_session = matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        );
        self.state = State::Idle;
        self.established_at = None;
        self.wire = WireContext {
            four_octet_as: false,
            ibgp: self.config.ibgp(),
        };
        if self.admin_up {
            self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
            out.push(self.retry());
        } else {
            self.connect_retry_counter = 0;
            out.push(Action::StopTimer(Timer::ConnectRetry));
        }
        if had_session || reason == DownReason::ManualStop {
            self.last_down = Some(reason.clone());
            out.push(Action::SessionDown { reason });
        }
    }

    /// Sends a NOTIFICATION for an error and goes down.
    fn error(&mut self, code: u8, subcode: u8, data: Vec<u8>, out: &mut Vec<Action>) {
        let n = Notification {
            code,
            subcode,
            data,
        };
        self.down(Some(n.clone()), DownReason::NotificationSent(n), out);
    }

    /// An event the current state does not expect (RFC 4271 section 8.2.2 "any other event",
    /// RFC 6608).
    fn fsm_error(&mut self, out: &mut Vec<Action>) {
        let subcode = match self.state {
            State::OpenSent => fsm_subcode::UNEXPECTED_IN_OPEN_SENT,
            State::OpenConfirm => fsm_subcode::UNEXPECTED_IN_OPEN_CONFIRM,
            State::Established => fsm_subcode::UNEXPECTED_IN_ESTABLISHED,
            // Connect/Active: no session to notify; just drop the connection.
            State::Connect | State::Active => {
                self.down(None, DownReason::TcpClosed, out);
                return;
            }
            State::Idle => return,
        };
        self.error(notification_code::FSM, subcode, Vec::new(), out);
    }

    fn hold_timers(&self, out: &mut Vec<Action>) {
        if let Some(n) = &self.negotiated
            && n.hold_time != 0
        {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(u64::from(n.hold_time)),
            ));
        }
    }

    // ---- events ----

    fn manual_stop(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Idle => {}
            State::Connect | State::Active => {
                self.down(None, DownReason::ManualStop, out);
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                let n = Notification {
                    code: notification_code::CEASE,
                    subcode: cease_subcode::ADMINISTRATIVE_SHUTDOWN,
                    data: Vec::new(),
                };
                self.down(Some(n), DownReason::ManualStop, out);
            }
        }
    }

    fn tcp_up(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Connect | State::Active => {
                out.push(Action::StopTimer(Timer::ConnectRetry));
                out.push(Action::SendMessage(Message::Open(self.our_open())));
                out.push(Action::StartTimer(Timer::Hold, LARGE_HOLD_TIME));
                self.state = State::OpenSent;
            }
            // A second connection while one is in progress: collision handling is the caller's
            // (see `resolve_collision`); this FSM stays with its connection.
            _ => {}
        }
    }

    fn tcp_failed(&mut self, out: &mut Vec<Action>) {
        match self.state {
            // RFC 4271: Connect → Active with the ConnectRetry timer restarted; Active stays
            // (we treat a failure there the same way rather than dropping to Idle).
            State::Connect | State::Active => {
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
                out.push(self.retry());
                self.state = State::Active;
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.down(None, DownReason::TcpClosed, out);
            }
            State::Idle => {}
        }
    }

    fn tcp_closed(&mut self, out: &mut Vec<Action>) {
        match self.state {
            // RFC 4271 section 8.2.2 OpenSent: TcpConnectionFails → Active with ConnectRetry
            // restarted.
            State::OpenSent => {
                out.push(Action::StopTimer(Timer::Hold));
                out.push(self.retry());
                self.state = State::Active;
            }
            _ => self.tcp_failed(out),
        }
    }

    fn connect_retry_expired(&mut self, out: &mut Vec<Action>) {
        match self.state {
            // Automatic start after an error.
            State::Idle if self.admin_up => self.start(out),
            State::Idle => {}
            State::Connect | State::Active => {
                out.push(self.retry());
                if self.config.passive {
                    self.state = State::Active;
                } else {
                    if self.state == State::Connect {
                        // Drop the attempt in progress before the new one.
                        out.push(Action::CloseTcp);
                    }
                    self.state = State::Connect;
                    out.push(Action::Connect);
                }
            }
            _ => self.fsm_error(out),
        }
    }

    fn hold_expired(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {
                let n = Notification {
                    code: notification_code::HOLD_TIMER_EXPIRED,
                    subcode: 0,
                    data: Vec::new(),
                };
                self.down(Some(n), DownReason::HoldTimerExpired, out);
            }
            State::Idle => {}
            State::Connect | State::Active => self.fsm_error(out),
        }
    }

    fn keepalive_expired(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::OpenConfirm | State::Established => {
                out.push(Action::SendMessage(Message::Keepalive));
                if let Some(n) = &self.negotiated
                    && n.keepalive != 0
                {
                    out.push(Action::StartTimer(
                        Timer::Keepalive,
                        Duration::from_secs(u64::from(n.keepalive)),
                    ));
                }
            }
            State::Idle => {}
            _ => self.fsm_error(out),
        }
    }

    fn decode_failed(&mut self, e: DecodeError, out: &mut Vec<Action>) {
        match (self.state, e) {
            (State::Idle, _) => {}
            (State::Established, DecodeError::TreatAsWithdraw { prefixes, .. }) => {
                // The message arrived: it counts for the hold timer like any UPDATE.
                self.hold_timers(out);
                out.push(Action::Withdraw(prefixes));
            }
            (_, e) => match e.notification() {
                Some((code, subcode, data)) => self.error(code, subcode, data, out),
                None => self.fsm_error(out),
            },
        }
    }

    fn message(&mut self, m: Message, now: Instant, out: &mut Vec<Action>) {
        match (self.state, m) {
            (State::Idle, _) => {}
            (_, Message::Notification(n)) => {
                self.down(None, DownReason::NotificationReceived(n), out);
            }
            (State::OpenSent, Message::Open(open)) => self.open_received(open, out),
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.established_at = Some(now);
                self.hold_timers(out);
                if let Some(negotiated) = self.negotiated.clone() {
                    out.push(Action::SessionEstablished { negotiated });
                }
            }
            (State::Established, Message::Keepalive) => self.hold_timers(out),
            (State::Established, Message::Update(u)) => {
                self.hold_timers(out);
                out.push(Action::Received(u));
            }
            (State::Established, Message::RouteRefresh(f)) => {
                self.hold_timers(out);
                out.push(Action::RouteRefreshRequested(f));
            }
            _ => self.fsm_error(out),
        }
    }

    /// OpenSent + OPEN: validate (RFC 4271 section 6.2), negotiate, → OpenConfirm.
    fn open_received(&mut self, open: Open, out: &mut Vec<Action>) {
        if let Some(err) = self.check_open(&open) {
            match err.notification() {
                Some((code, subcode, data)) => self.error(code, subcode, data, out),
                None => self.fsm_error(out),
            }
            return;
        }
        let hold_time = self.config.hold_time.min(open.hold_time);
        let keepalive = hold_time / 3;
        let four_octet_as = open.capabilities.four_octet_as;
        let peer_families: Vec<AfiSafi> = if open.capabilities.multiprotocol.is_empty() {
            vec![AfiSafi::IPV4_UNICAST]
        } else {
            open.capabilities.multiprotocol.clone()
        };
        let families = self
            .config
            .families
            .iter()
            .copied()
            .filter(|f| peer_families.contains(f))
            .collect();
        let wire = WireContext {
            four_octet_as,
            ibgp: self.config.ibgp(),
        };
        self.wire = wire;
        self.negotiated = Some(Negotiated {
            hold_time,
            keepalive,
            four_octet_as,
            families,
            peer_id: open.bgp_id,
            peer_asn: open.my_asn,
            route_refresh: open.capabilities.route_refresh,
            graceful_restart: open.capabilities.graceful_restart,
            wire,
        });
        out.push(Action::SetWireContext(wire));
        out.push(Action::SendMessage(Message::Keepalive));
        if hold_time == 0 {
            out.push(Action::StopTimer(Timer::Hold));
            out.push(Action::StopTimer(Timer::Keepalive));
        } else {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(u64::from(hold_time)),
            ));
            out.push(Action::StartTimer(
                Timer::Keepalive,
                Duration::from_secs(u64::from(keepalive)),
            ));
        }
        self.state = State::OpenConfirm;
    }

    fn check_open(&self, open: &Open) -> Option<DecodeError> {
        if open.version != 4 {
            return Some(DecodeError::UnsupportedVersion(open.version));
        }
        // `my_asn` is the capability's value when there is one; a peer with a large ASN and no
        // 4-octet capability shows AS_TRANS, which does not match the configured ASN.
        if open.my_asn != self.config.peer_asn {
            return Some(DecodeError::BadPeerAs(open.my_asn));
        }
        if open.bgp_id.is_unspecified() {
            return Some(DecodeError::BadBgpId(open.bgp_id));
        }
        // RFC 6286 section 2.2: identifiers must be unique within an AS; an external peer may
        // share ours.
        if self.config.ibgp() && open.bgp_id == self.config.bgp_id {
            return Some(DecodeError::BadBgpId(open.bgp_id));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Some(DecodeError::UnacceptableHoldTime(open.hold_time));
        }
        None
    }
}

/// Which connection survives a collision (RFC 4271 section 6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The connection we initiated.
    Outbound,
    /// The connection the peer initiated.
    Inbound,
}

/// RFC 4271 section 6.8 with RFC 6286 section 2.3 for equal identifiers: when the local BGP
/// identifier is lower, keep the connection the peer initiated; otherwise keep ours. With equal
/// identifiers (possible between different ASes) the connection initiated by the speaker with the
/// larger ASN wins. The loser is closed with NOTIFICATION Cease 6/7 (connection collision
/// resolution).
pub fn resolve_collision(
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
    local_asn: u32,
    remote_asn: u32,
) -> Keep {
    let (l, r) = (u32::from(local_id), u32::from(remote_id));
    if l < r || (l == r && local_asn < remote_asn) {
        Keep::Inbound
    } else {
        Keep::Outbound
    }
}
