//! Arbitrary event sequences (including messages decoded from arbitrary bytes) never panic,
//! a passive session never connects, and the state stays consistent with the actions.

use std::net::Ipv4Addr;
use std::time::Instant;

use proptest::prelude::*;
use purelb_bgp::fsm::*;
use purelb_bgp::wire::*;

fn open(asn: u32, hold_time: u16, id: u32, four: bool) -> Message {
    Message::Open(Open {
        version: 4,
        my_asn: asn,
        hold_time,
        bgp_id: Ipv4Addr::from(id),
        capabilities: Capabilities {
            four_octet_as: four,
            ..Capabilities::default()
        },
    })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::ManualStart),
        Just(Event::ManualStop),
        Just(Event::TcpConnected),
        Just(Event::TcpAccepted),
        Just(Event::TcpFailed),
        Just(Event::TcpClosed),
        Just(Event::ConnectRetryTimerExpired),
        Just(Event::HoldTimerExpired),
        Just(Event::KeepaliveTimerExpired),
        Just(Event::Message(Message::Keepalive)),
        Just(Event::Message(Message::Update(Update::end_of_rib_ipv4()))),
        (
            prop_oneof![Just(65002u32), any::<u32>()],
            any::<u16>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(asn, hold, id, four)| Event::Message(open(asn, hold, id, four))),
        // Bytes behind a valid header, through the decoder.
        (1u8..=5, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(kind, body)| {
            let mut v = vec![0xff; 16];
            v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
            v.push(kind);
            v.extend_from_slice(&body);
            match decode(&v, WireContext::default()) {
                Ok(m) => Event::Message(m),
                Err(e) => Event::DecodeFailed(e),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_events_never_panic(passive: bool, events in proptest::collection::vec(event(), 0..64)) {
        let mut cfg = SessionConfig::new(65001, 65002, Ipv4Addr::new(192, 0, 2, 1));
        cfg.passive = passive;
        let mut s = Session::new(cfg);
        let now = Instant::now();
        for e in events {
            let before = s.state();
            let acts = s.handle(e, now);
            if passive {
                prop_assert!(!acts.contains(&Action::Connect));
            }
            if acts.iter().any(|a| matches!(a, Action::SessionEstablished { .. })) {
                prop_assert_eq!(before, State::OpenConfirm);
                prop_assert_eq!(s.state(), State::Established);
            }
            if acts.iter().any(|a| matches!(a, Action::SessionDown { .. })) {
                prop_assert_eq!(s.state(), State::Idle);
            }
            if s.state() != State::Established {
                prop_assert_eq!(s.established_at(), None);
            }
        }
    }
}
