//! The receive path the fuzz target and its regression tests run.
//!
//! [`fuzz_session_receive`] builds one [`Session`] (local AS 65001, peer AS 65000, or 65001 for
//! iBGP), brings it up to the point where it reads from the peer, and then feeds it the input
//! bytes exactly as `Driver::drain_buffer` in `driver.rs` does: [`next_message`] frames one whole
//! message, [`decode`] reads it with the session's current [`Session::wire_context`], and the
//! result goes into [`Session::handle`] as [`Event::Message`] or [`Event::DecodeFailed`]; a
//! framing error drops the rest of the buffer. This repeats until no whole message remains or the
//! session closes the connection. Every [`Action::SendMessage`] is encoded with [`encode`] in the
//! context the driver would use (the last [`Action::SetWireContext`]).
//!
//! The first input octet selects the setup (bits in [`control`]); the rest is what the peer sent.
//!
//! Besides "no panic", the harness checks (and panics when one fails, which is what the fuzzer
//! reports as a crash):
//!
//! - every message the FSM sends encodes to at most [`MAX_MESSAGE_LEN`] octets, frames as exactly
//!   one message and decodes back to itself;
//! - every UPDATE the session accepts re-encodes without panicking, and on a 4-octet-AS session
//!   re-encodes to at most [`MAX_MESSAGE_LEN`] octets and decodes back to the same UPDATE (less
//!   the list of discarded attributes, which is never encoded);
//! - a passive session never asks for an outbound connection.
//!
//! Not part of the speaker's own code path; it lives in the library so the `cargo fuzz` target
//! (`fuzz/fuzz_targets/session_receive.rs`) and `tests/fuzz_regressions.rs` run the same code.

use std::net::Ipv4Addr;
use std::time::Instant;

use crate::fsm::{Action, Event, Session, SessionConfig, State};
use crate::wire::{
    AfiSafi, Capabilities, MAX_MESSAGE_LEN, Message, Open, Update, WireContext, decode, encode,
    next_message,
};

/// Bits of the first input octet.
pub mod control {
    /// Passive session: ManualStart, then TcpAccepted. Otherwise active: ManualStart, Connect,
    /// TcpConnected.
    pub const PASSIVE: u8 = 0x01;
    /// Before the input, the peer sends a valid OPEN and a KEEPALIVE (through the same framing
    /// and decoding), so the input is read in Established. Otherwise the input starts in
    /// OpenSent and must bring its own OPEN.
    pub const HANDSHAKE: u8 = 0x02;
    /// The handshake OPEN carries the 4-octet AS capability (AS_PATH with 4-octet ASNs);
    /// otherwise the peer is a 2-octet speaker (AS_TRANS / AS4_PATH).
    pub const FOUR_OCTET: u8 = 0x04;
    /// The peer is internal: peer AS 65001, the same as ours.
    pub const IBGP: u8 = 0x08;
    /// When the session closes the connection and input remains, reconnect (ConnectRetry expiry,
    /// a new TCP connection, and the handshake again with [`HANDSHAKE`]) and read the rest on the
    /// new connection. Otherwise stop there, as the driver drops its buffer on close.
    pub const RECONNECT: u8 = 0x10;
    /// Our OPEN advertises graceful restart.
    pub const GRACEFUL_RESTART: u8 = 0x20;
    /// The handshake OPEN has hold time 0 (no keepalives, no hold timer) instead of 90.
    pub const HOLD_ZERO: u8 = 0x40;
}

/// Local AS of the fuzzed session.
pub const LOCAL_ASN: u32 = 65001;
/// Peer AS of the fuzzed session when [`control::IBGP`] is not set.
pub const PEER_ASN: u32 = 65000;
/// Our BGP identifier.
pub const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The identifier in the handshake OPEN.
pub const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// What one run did, for tests to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveSummary {
    /// FSM state at the end.
    pub state: State,
    /// Whole messages framed from the buffer (handshake included).
    pub messages: usize,
    /// Messages the FSM sent (all encoded).
    pub sent: usize,
    /// Times the session reached Established.
    pub established: usize,
    /// UPDATEs accepted in Established.
    pub updates: usize,
    /// RFC 7606 treat-as-withdraw results.
    pub withdraws: usize,
    /// Connections the session closed.
    pub closes: usize,
}

impl ReceiveSummary {
    fn new() -> Self {
        Self {
            state: State::Idle,
            messages: 0,
            sent: 0,
            established: 0,
            updates: 0,
            withdraws: 0,
            closes: 0,
        }
    }
}

/// The OPEN the peer sends in the handshake for this control octet.
pub fn peer_open(ctl: u8) -> Message {
    Message::Open(Open {
        version: 4,
        my_asn: peer_asn(ctl),
        hold_time: if ctl & control::HOLD_ZERO != 0 { 0 } else { 90 },
        bgp_id: PEER_ID,
        capabilities: Capabilities {
            multiprotocol: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            route_refresh: true,
            four_octet_as: ctl & control::FOUR_OCTET != 0,
            graceful_restart: None,
            unknown: Vec::new(),
        },
    })
}

fn peer_asn(ctl: u8) -> u32 {
    if ctl & control::IBGP != 0 {
        LOCAL_ASN
    } else {
        PEER_ASN
    }
}

/// The handshake bytes (OPEN, KEEPALIVE) the peer sends for this control octet.
fn handshake(ctl: u8) -> Vec<u8> {
    let mut v = encode(&peer_open(ctl), WireContext::default());
    v.extend_from_slice(&encode(&Message::Keepalive, WireContext::default()));
    v
}

struct Harness {
    session: Session,
    passive: bool,
    /// The context the driver encodes with: the last `SetWireContext`.
    wire: WireContext,
    connected: bool,
    reconnect: bool,
    buf: Vec<u8>,
    now: Instant,
    summary: ReceiveSummary,
}

impl Harness {
    /// Runs one event, carrying out its actions like the driver.
    fn process(&mut self, event: Event) {
        // The driver also queues TcpClosed after a failed write; here writes cannot fail.
        for action in self.session.handle(event, self.now) {
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Connect => {
                assert!(!self.passive, "a passive session asked to connect");
            }
            Action::SendMessage(m) => {
                self.summary.sent += 1;
                check_sent(&m, self.wire);
            }
            Action::CloseTcp => {
                if self.connected {
                    self.summary.closes += 1;
                }
                self.connected = false;
                // The driver drops what it had buffered; with RECONNECT the rest of the input
                // is what arrives on the next connection.
                if !self.reconnect {
                    self.buf.clear();
                }
            }
            Action::SetWireContext(w) => self.wire = w,
            Action::SessionEstablished { .. } => self.summary.established += 1,
            Action::Received(update) => {
                self.summary.updates += 1;
                check_received(update, self.wire);
            }
            Action::Withdraw(_) => self.summary.withdraws += 1,
            Action::StartTimer(..)
            | Action::StopTimer(_)
            | Action::SessionDown { .. }
            | Action::RouteRefreshRequested(_) => {}
        }
    }

    /// A new TCP connection, from Idle (after the session closed one) or from ManualStart.
    fn connect(&mut self, ctl: u8) {
        if self.session.state() == State::Idle {
            // The automatic restart after an error.
            self.process(Event::ConnectRetryTimerExpired);
        }
        self.connected = true;
        self.process(if self.passive {
            Event::TcpAccepted
        } else {
            Event::TcpConnected
        });
        if ctl & control::HANDSHAKE != 0 {
            let mut v = handshake(ctl);
            v.append(&mut self.buf);
            self.buf = v;
        }
    }

    /// `Driver::drain_buffer`: frame, decode with the session's context, feed, repeat.
    fn drain(&mut self) {
        while self.connected {
            let event = match next_message(&self.buf) {
                Ok(None) => break,
                Ok(Some(msg)) => {
                    let len = msg.len();
                    let ev = match decode(msg, self.session.wire_context()) {
                        Ok(m) => Event::Message(m),
                        Err(e) => Event::DecodeFailed(e),
                    };
                    self.buf.drain(..len);
                    self.summary.messages += 1;
                    ev
                }
                Err(e) => {
                    self.buf.clear();
                    Event::DecodeFailed(e)
                }
            };
            self.process(event);
        }
    }
}

/// A message for an assertion message: its debug form, cut short.
fn brief(m: &Message) -> String {
    let mut s = format!("{m:?}");
    if s.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Every message the FSM sends must fit, frame and decode back to itself.
fn check_sent(m: &Message, wire: WireContext) {
    let bytes = encode(m, wire);
    assert!(
        bytes.len() <= MAX_MESSAGE_LEN,
        "sent a message of {} octets: {}",
        bytes.len(),
        brief(m)
    );
    let framed = next_message(&bytes).map(|f| f.map(<[u8]>::len));
    assert!(
        framed == Ok(Some(bytes.len())),
        "sent message does not frame ({framed:?}): {}",
        brief(m)
    );
    let back = decode(&bytes, wire);
    assert!(
        back.as_ref() == Ok(m),
        "sent message does not decode to itself: {} became {:?}",
        brief(m),
        back.map(|b| brief(&b))
    );
}

/// A received UPDATE re-encodes; on a 4-octet session it round-trips.
fn check_received(mut update: Update, wire: WireContext) {
    update.discarded_attributes.clear();
    let m = Message::Update(update);
    let bytes = encode(&m, wire);
    let back = decode(&bytes, wire);
    // Toward a 2-octet peer the path is split into AS_PATH + AS4_PATH again, which may grow the
    // message and regroup confederation segments; only the encoder's not panicking is checked.
    if wire.four_octet_as {
        assert!(
            bytes.len() <= MAX_MESSAGE_LEN,
            "received UPDATE re-encodes to {} octets: {}",
            bytes.len(),
            brief(&m)
        );
        assert!(
            back.as_ref() == Ok(&m),
            "received UPDATE does not round-trip: {} became {:?}",
            brief(&m),
            back.map(|b| brief(&b))
        );
    }
}

/// Runs one fuzz input through the session receive path. See the module documentation.
pub fn fuzz_session_receive(data: &[u8]) -> ReceiveSummary {
    let Some((&ctl, rest)) = data.split_first() else {
        return ReceiveSummary::new();
    };
    let passive = ctl & control::PASSIVE != 0;
    let mut config = SessionConfig::new(LOCAL_ASN, peer_asn(ctl), LOCAL_ID);
    config.passive = passive;
    if ctl & control::GRACEFUL_RESTART != 0 {
        config.graceful_restart = Some(Default::default());
    }
    let session = Session::new(config);
    let mut h = Harness {
        wire: session.wire_context(),
        session,
        passive,
        connected: false,
        reconnect: ctl & control::RECONNECT != 0,
        buf: rest.to_vec(),
        now: Instant::now(),
        summary: ReceiveSummary::new(),
    };
    h.process(Event::ManualStart);
    h.connect(ctl);
    // Each pass ends with the buffer short of a whole message, or with a close caused by a
    // message taken from the input, so reconnecting ends.
    loop {
        h.drain();
        if h.connected || !h.reconnect || h.buf.is_empty() {
            break;
        }
        h.connect(ctl);
    }
    h.summary.state = h.session.state();
    h.summary
}
