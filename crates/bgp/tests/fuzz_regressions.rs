//! The `cargo fuzz` target's receive path (`purelb_bgp::fuzzing::fuzz_session_receive`) on
//! stable: every file of the seed corpus `fuzz/corpus/session_receive/` is replayed, the seeds
//! are rebuilt here from messages and must match the files, and each seed reaches the state it
//! was written for. Crashes the fuzzer finds are added below as inline byte arrays.
//! `FUZZ_CORPUS=<dir> cargo test -p purelb-bgp --test fuzz_regressions replay_corpus` also
//! replays another directory, such as a fuzzer's working corpus.
//!
//! Regenerate the seed files after a deliberate codec change with
//! `cargo test -p purelb-bgp --test fuzz_regressions -- --ignored write_seed_corpus`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use purelb_bgp::fsm::State;
use purelb_bgp::fuzzing::{ReceiveSummary, control, fuzz_session_receive, peer_open};
use purelb_bgp::wire::{
    AfiSafi, AsPath, Ipv4Prefix, Ipv6Prefix, LargeCommunity, Message, MpReachIpv6, Notification,
    Origin, PathAttributes, Update, WireContext, encode,
};

const FOUR: WireContext = WireContext {
    four_octet_as: true,
    ibgp: false,
};
const TWO: WireContext = WireContext {
    four_octet_as: false,
    ibgp: false,
};
const FOUR_IBGP: WireContext = WireContext {
    four_octet_as: true,
    ibgp: true,
};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session_receive")
}

fn v4(a: [u8; 4], len: u8) -> Ipv4Prefix {
    Ipv4Prefix::new(Ipv4Addr::from(a), len).unwrap()
}

fn v6(s: &str, len: u8) -> Ipv6Prefix {
    Ipv6Prefix::new(s.parse().unwrap(), len).unwrap()
}

fn attributes(path: Vec<u32>) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(path)),
        communities: vec![(65000 << 16) | 100],
        large_communities: vec![LargeCommunity {
            global_admin: 65000,
            local_data1: 1,
            local_data2: 2,
        }],
        ..PathAttributes::default()
    }
}

/// An UPDATE from raw fields, for malformed ones.
fn raw_update(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&(19 + body.len() as u16).to_be_bytes());
    v.push(2);
    v.extend_from_slice(body);
    v
}

fn seed(ctl: u8, messages: &[(Message, WireContext)], raw: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![ctl];
    for (m, ctx) in messages {
        v.extend_from_slice(&encode(m, *ctx));
    }
    for r in raw {
        v.extend_from_slice(r);
    }
    v
}

struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    expect: fn(&ReceiveSummary),
}

/// The seed corpus, each file with what replaying it must do.
fn seeds() -> Vec<Seed> {
    use control::*;

    // Active, handshake, 4-octet: an IPv4 announcement with MED, a KEEPALIVE, a ROUTE-REFRESH.
    let ipv4 = Update {
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            med: Some(10),
            ..attributes(vec![65000])
        },
        nlri: vec![v4([203, 0, 113, 10], 32), v4([198, 18, 0, 0], 15)],
        ..Update::default()
    };
    let ipv4_update_4oct = seed(
        HANDSHAKE | FOUR_OCTET,
        &[
            (Message::Update(ipv4), FOUR),
            (Message::Keepalive, FOUR),
            (Message::RouteRefresh(AfiSafi::IPV4_UNICAST), FOUR),
        ],
        &[],
    );

    // Passive, handshake with hold 0, 2-octet peer: AS_TRANS in AS_PATH, the real path in
    // AS4_PATH, and a withdrawal.
    let as4 = Update {
        withdrawn: vec![v4([203, 0, 113, 11], 32)],
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            ..attributes(vec![65000, 4_200_000_001])
        },
        nlri: vec![v4([203, 0, 113, 12], 32)],
        ..Update::default()
    };
    let as4path_2oct = seed(
        PASSIVE | HANDSHAKE | HOLD_ZERO,
        &[(Message::Update(as4), TWO)],
        &[],
    );

    // Passive, handshake, 4-octet, our graceful restart: IPv6 in MP_REACH with a link-local next
    // hop, an MP_UNREACH, and both End-of-RIBs.
    let reach = Update {
        attributes: PathAttributes {
            mp_reach: Some(MpReachIpv6 {
                next_hop: "2001:db8:1::1".parse().unwrap(),
                link_local_next_hop: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                nlri: vec![v6("2001:db8:ff::10", 128), v6("2001:db8:aa::", 48)],
            }),
            ..attributes(vec![65000])
        },
        ..Update::default()
    };
    let unreach = Update {
        attributes: PathAttributes {
            mp_unreach: Some(vec![v6("2001:db8:ff::11", 128)]),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let ipv6_mp = seed(
        PASSIVE | HANDSHAKE | FOUR_OCTET | GRACEFUL_RESTART,
        &[
            (Message::Update(reach), FOUR),
            (Message::Update(unreach), FOUR),
            (Message::Update(Update::end_of_rib_ipv4()), FOUR),
            (Message::Update(Update::end_of_rib_ipv6()), FOUR),
        ],
        &[],
    );

    // Active, no handshake: the input brings the OPEN and KEEPALIVE itself, then an UPDATE and
    // a Cease.
    let announce = Update {
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            ..attributes(vec![65000])
        },
        nlri: vec![v4([203, 0, 113, 13], 32)],
        ..Update::default()
    };
    let open_in_input = seed(
        0,
        &[
            (peer_open(FOUR_OCTET), FOUR),
            (Message::Keepalive, FOUR),
            (Message::Update(announce), FOUR),
            (
                Message::Notification(Notification {
                    code: 6,
                    subcode: 2,
                    data: Vec::new(),
                }),
                FOUR,
            ),
        ],
        &[],
    );

    // iBGP with reconnect: a malformed LOCAL_PREF (treat-as-withdraw, session stays), then a
    // withdrawn-routes length overrunning the message (3/1, session reset), then on the new
    // connection a good UPDATE with LOCAL_PREF.
    let bad_local_pref = raw_update(&[
        0, 0, // no withdrawn routes
        0, 20, // attributes
        0x40, 1, 1, 0, // ORIGIN IGP
        0x40, 2, 0, // AS_PATH empty
        0x40, 3, 4, 192, 0, 2, 2, // NEXT_HOP
        0x40, 5, 3, 0, 0, 100, // LOCAL_PREF of length 3
        32, 203, 0, 113, 14, // NLRI
    ]);
    let overrun = raw_update(&[0, 16, 0, 0]);
    let good = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
            local_pref: Some(100),
            ..PathAttributes::default()
        },
        nlri: vec![v4([203, 0, 113, 14], 32)],
        ..Update::default()
    };
    let mut ibgp_reconnect = seed(
        HANDSHAKE | FOUR_OCTET | IBGP | RECONNECT,
        &[],
        &[&bad_local_pref, &overrun],
    );
    ibgp_reconnect.extend_from_slice(&encode(&Message::Update(good), FOUR_IBGP));

    vec![
        Seed {
            name: "seed-ipv4-update-4oct",
            bytes: ipv4_update_4oct,
            expect: |s| {
                assert_eq!(
                    (s.state, s.established, s.updates),
                    (State::Established, 1, 1)
                );
                assert_eq!(s.messages, 5);
            },
        },
        Seed {
            name: "seed-as4path-2oct-hold0",
            bytes: as4path_2oct,
            expect: |s| {
                assert_eq!(
                    (s.state, s.established, s.updates),
                    (State::Established, 1, 1)
                );
            },
        },
        Seed {
            name: "seed-ipv6-mp-reach",
            bytes: ipv6_mp,
            expect: |s| {
                assert_eq!(
                    (s.state, s.established, s.updates),
                    (State::Established, 1, 4)
                );
            },
        },
        Seed {
            name: "seed-open-in-input",
            bytes: open_in_input,
            expect: |s| {
                assert_eq!((s.state, s.established, s.updates), (State::Idle, 1, 1));
                assert_eq!(s.closes, 1);
            },
        },
        Seed {
            name: "seed-ibgp-withdraw-reconnect",
            bytes: ibgp_reconnect,
            expect: |s| {
                assert_eq!(
                    (s.state, s.established, s.updates),
                    (State::Established, 2, 1)
                );
                assert_eq!((s.withdraws, s.closes), (1, 1));
            },
        },
    ]
}

#[test]
fn seeds_reach_their_states() {
    for seed in seeds() {
        let summary = fuzz_session_receive(&seed.bytes);
        eprintln!("{}: {summary:?}", seed.name);
        (seed.expect)(&summary);
    }
}

#[test]
fn seed_files_match_the_builders() {
    for seed in seeds() {
        let path = corpus_dir().join(seed.name);
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (see write_seed_corpus)", path.display()));
        assert!(
            on_disk == seed.bytes,
            "{} differs from its builder (see write_seed_corpus)",
            path.display()
        );
    }
}

fn replay_dir(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fuzz_session_receive(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    n
}

/// Every file in the corpus directory, seeds and anything added since, through the harness; with
/// `FUZZ_CORPUS=<dir>` also every file there (a fuzzer's working corpus, say).
#[test]
fn replay_corpus() {
    let n = replay_dir(&corpus_dir());
    assert!(n >= seeds().len(), "only {n} corpus files");
    if let Some(dir) = std::env::var_os("FUZZ_CORPUS") {
        let n = replay_dir(Path::new(&dir));
        eprintln!("replayed {n} files from {}", Path::new(&dir).display());
    }
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    for seed in seeds() {
        std::fs::write(corpus_dir().join(seed.name), &seed.bytes).unwrap();
    }
}

#[test]
fn empty_and_short_inputs() {
    assert_eq!(fuzz_session_receive(&[]).state, State::Idle);
    for ctl in 0..=u8::MAX {
        let s = fuzz_session_receive(&[ctl]);
        let expect = if ctl & control::HANDSHAKE != 0 {
            State::Established
        } else {
            State::OpenSent
        };
        assert_eq!(s.state, expect, "control {ctl:#04x}");
        // A partial header waits for more; a bad marker is 1/1.
        fuzz_session_receive(&[ctl, 0xff, 0xff]);
        fuzz_session_receive(&[ctl, 0x00]);
    }
}

// ---- crashes found by the harness, as found ----

/// Handshake, then a ROUTE-REFRESH of 4096 octets (header length 0x1000, type 5, zeros). It is
/// malformed (7/1), and the NOTIFICATION echoed the whole message as its data: 4117 octets,
/// over the 4096 limit ("sent a message of 4117 octets"). Fixed in `DecodeError::notification`,
/// which now cuts the data to 4075 octets.
const LONG_ROUTE_REFRESH: [u8; 4097] = {
    let mut v = [0u8; 4097];
    v[0] = control::HANDSHAKE;
    let mut i = 1;
    while i <= 16 {
        v[i] = 0xff;
        i += 1;
    }
    v[17] = 0x10; // length 4096
    v[19] = 5; // ROUTE-REFRESH
    v
};

#[test]
fn long_route_refresh_notification_fits() {
    let s = fuzz_session_receive(&LONG_ROUTE_REFRESH);
    assert_eq!((s.state, s.established, s.closes), (State::Idle, 1, 1));
    // Just under the limit the whole message is still echoed (4075 + 21 = 4096).
    let mut v = LONG_ROUTE_REFRESH.to_vec();
    v.truncate(1 + 4075);
    v[17] = (4075u16 >> 8) as u8;
    v[18] = (4075u16 & 0xff) as u8;
    fuzz_session_receive(&v);
}
