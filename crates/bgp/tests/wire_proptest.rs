//! Property tests: encode->decode identity for every message kind, no panic on arbitrary or
//! mutated input, and netgauze-bgp-pkt (the reference parser) accepting what we encode.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{AsPath as NgAsPath, PathAttributeValue};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use proptest::collection::vec;
use proptest::prelude::*;
use purelb_bgp::wire::*;

fn ctx(four_octet_as: bool) -> WireContext {
    WireContext {
        four_octet_as,
        ibgp: false,
    }
}

fn v4_prefix() -> impl Strategy<Value = Ipv4Prefix> {
    (any::<u32>(), 0u8..=32).prop_filter_map("len", |(a, l)| Ipv4Prefix::new(Ipv4Addr::from(a), l))
}

fn v6_prefix() -> impl Strategy<Value = Ipv6Prefix> {
    (any::<u128>(), 0u8..=128)
        .prop_filter_map("len", |(a, l)| Ipv6Prefix::new(Ipv6Addr::from(a), l))
}

fn afi_safi() -> impl Strategy<Value = AfiSafi> {
    prop_oneof![
        Just(AfiSafi::IPV4_UNICAST),
        Just(AfiSafi::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| AfiSafi { afi, safi }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    let caps = (
        vec(afi_safi(), 0..4),
        any::<bool>(),
        proptest::option::of((0u8..16, 0u16..4096, vec((afi_safi(), any::<bool>()), 0..3))),
        vec(
            (
                any::<u8>().prop_filter("known", |c| ![1, 2, 64, 65].contains(c)),
                vec(any::<u8>(), 0..20),
            ),
            0..3,
        ),
    );
    (
        any::<bool>(),
        1u32..,
        any::<u16>().prop_filter("hold", |h| *h != 1 && *h != 2),
        1u32..,
        caps,
    )
        .prop_map(|(four, asn, hold_time, id, (mp, rr, gr, unknown))| {
            let mut multiprotocol = Vec::new();
            for f in mp {
                if !multiprotocol.contains(&f) {
                    multiprotocol.push(f);
                }
            }
            Open {
                version: 4,
                my_asn: if four { asn } else { asn % 65535 + 1 },
                hold_time,
                bgp_id: Ipv4Addr::from(id),
                capabilities: Capabilities {
                    multiprotocol,
                    route_refresh: rr,
                    four_octet_as: four,
                    graceful_restart: gr.map(|(flags, restart_time, fams)| GracefulRestart {
                        flags,
                        restart_time,
                        families: fams
                            .into_iter()
                            .map(|(afi_safi, forwarding_preserved)| GracefulRestartFamily {
                                afi_safi,
                                forwarding_preserved,
                            })
                            .collect(),
                    }),
                    unknown: unknown
                        .into_iter()
                        .map(|(code, value)| RawCapability { code, value })
                        .collect(),
                },
            }
        })
}

/// Sequences and sets only (netgauze has no confederation segments), at most 255 per segment.
fn as_path() -> impl Strategy<Value = AsPath> {
    vec((any::<bool>(), vec(1u32.., 1..6)), 0..3).prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(set, asns)| AsSegment {
                kind: if set {
                    AsSegmentType::Set
                } else {
                    AsSegmentType::Sequence
                },
                asns,
            })
            .collect(),
    })
}

fn update() -> impl Strategy<Value = Update> {
    let attrs = (
        proptest::option::of(prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ]),
        proptest::option::of(as_path()),
        proptest::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        vec(any::<u32>(), 0..5),
        vec(
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(g, a, b)| LargeCommunity {
                global_admin: g,
                local_data1: a,
                local_data2: b,
            }),
            0..4,
        ),
        proptest::option::of((
            any::<u128>(),
            proptest::option::of(any::<u128>()),
            vec(v6_prefix(), 0..6),
        )),
        proptest::option::of(vec(v6_prefix(), 0..6)),
        proptest::collection::btree_map(100u8..=250, (any::<bool>(), vec(any::<u8>(), 0..8)), 0..3),
    );
    (vec(v4_prefix(), 0..8), attrs, vec(v4_prefix(), 0..8)).prop_map(
        move |(
            withdrawn,
            (origin, as_path, next_hop, med, local_pref, communities, large, reach, unreach, other),
            nlri,
        )| {
            let mp_reach = reach.map(|(nh, ll, nlri)| MpReachIpv6 {
                next_hop: Ipv6Addr::from(nh),
                link_local_next_hop: ll.map(Ipv6Addr::from),
                nlri,
            });
            let announces =
                !nlri.is_empty() || mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty());
            let mut a = PathAttributes {
                origin,
                as_path,
                next_hop,
                med,
                local_pref,
                communities,
                large_communities: large,
                mp_reach,
                mp_unreach: unreach,
                other: raw_attrs(other),
            };
            if announces {
                a.origin.get_or_insert(Origin::Igp);
                a.as_path
                    .get_or_insert_with(|| AsPath::sequence(vec![65001]));
                if !nlri.is_empty() {
                    a.next_hop.get_or_insert(Ipv4Addr::new(192, 0, 2, 1));
                }
            }
            Update {
                withdrawn,
                attributes: a,
                nlri,
                discarded_attributes: Vec::new(),
            }
        },
    )
}

fn raw_attrs(m: BTreeMap<u8, (bool, Vec<u8>)>) -> Vec<RawAttribute> {
    m.into_iter()
        .map(|(code, (transitive, value))| RawAttribute {
            flags: if transitive { 0xc0 } else { 0x80 },
            code,
            value,
        })
        .collect()
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update().prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(code, subcode, data)| {
            Message::Notification(Notification {
                code,
                subcode,
                data,
            })
        }),
        Just(Message::Keepalive),
        afi_safi().prop_map(Message::RouteRefresh),
    ]
}

/// netgauze refuses multicast destinations as unicast NLRI (e.g. 224.0.0.0/3, ff00::/8), a
/// semantic check we leave to the speaker's policy.
fn is_unicast(u: &Update) -> bool {
    let v4_ok = |p: &Ipv4Prefix| p.addr().octets()[0] < 224;
    let v6_ok = |p: &Ipv6Prefix| p.addr().octets()[0] != 0xff;
    let a = &u.attributes;
    u.withdrawn.iter().all(v4_ok)
        && u.nlri.iter().all(v4_ok)
        && a.mp_reach.iter().flat_map(|r| r.nlri.iter()).all(v6_ok)
        && a.mp_unreach.iter().flatten().all(v6_ok)
}

fn netgauze_parse(bytes: &[u8], asn4: bool) -> Result<BgpMessage, String> {
    let mut ctx =
        BgpParsingContext::new(asn4, HashMap::new(), HashMap::new(), true, true, true, true);
    BgpMessage::parse(&mut SliceReader::new(bytes), &mut ctx).map_err(|e| format!("{e:?}"))
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=100000 for a longer soak.

    #[test]
    fn round_trip_four_octet(msg in message()) {
        let bytes = encode(&msg, ctx(true));
        prop_assert_eq!(next_message(&bytes), Ok(Some(&bytes[..])));
        prop_assert_eq!(decode(&bytes, ctx(true)), Ok(msg));
    }

    #[test]
    fn round_trip_two_octet(msg in message()) {
        let bytes = encode(&msg, ctx(false));
        prop_assert_eq!(decode(&bytes, ctx(false)), Ok(msg));
    }

    /// The reference parser accepts our UPDATEs and reads the same AS_PATH segment types and
    /// NLRI counts. (It rejects unknown capabilities and route-refresh families in some
    /// configurations, so OPEN is checked on a fixed sample in `netgauze_reads_our_open`.)
    #[test]
    fn netgauze_reads_our_updates(u in update().prop_filter("unicast", is_unicast), four in any::<bool>()) {
        let bytes = encode(&Message::Update(u.clone()), ctx(four));
        let parsed = netgauze_parse(&bytes, four);
        let Ok(BgpMessage::Update(ng)) = parsed else {
            return Err(TestCaseError::fail(format!("netgauze: {parsed:?}")));
        };
        prop_assert_eq!(ng.nlri().len(), u.nlri.len());
        prop_assert_eq!(ng.withdraw_routes().len(), u.withdrawn.len());
        for attr in ng.path_attributes() {
            if let PathAttributeValue::AsPath(path) = attr.value() {
                let ours: Vec<u8> = u.attributes.as_path.iter()
                    .flat_map(|p| p.segments.iter().map(|s| s.kind as u8)).collect();
                let theirs: Vec<u8> = match path {
                    NgAsPath::As2PathSegments(s) => s.iter().map(|s| s.segment_type() as u8).collect(),
                    NgAsPath::As4PathSegments(s) => s.iter().map(|s| s.segment_type() as u8).collect(),
                };
                prop_assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        for four in [false, true] {
            let _ = decode(&bytes, ctx(four));
        }
        let _ = next_message(&bytes);
    }

    /// Random bodies behind a valid header reach the per-type decoders.
    #[test]
    fn arbitrary_bodies_never_panic(kind in 1u8..=5, body in vec(any::<u8>(), 0..600)) {
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        for four in [false, true] {
            let _ = decode(&bytes, ctx(four));
        }
    }

    /// Valid messages with bytes flipped, truncated or extended, length field kept consistent
    /// half of the time so the damage reaches the body parser.
    #[test]
    fn mutated_messages_never_panic(
        msg in message(),
        flips in vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        fix_len in any::<bool>(),
        four in any::<bool>(),
    ) {
        let mut bytes = encode(&msg, ctx(four));
        for (i, b) in flips {
            let i = 19 + i % bytes.len().saturating_sub(19).max(1);
            if let Some(slot) = bytes.get_mut(i) {
                *slot = b;
            }
        }
        bytes.truncate(19 + cut % (bytes.len() + 1).saturating_sub(18).max(1));
        if fix_len && bytes.len() >= 19 {
            let len = (bytes.len() as u16).to_be_bytes();
            bytes[16] = len[0];
            bytes[17] = len[1];
        }
        let _ = next_message(&bytes);
        match decode(&bytes, ctx(four)) {
            Ok(m) => {
                // Whatever decodes must encode again without trouble.
                let _ = encode(&m, ctx(four));
            }
            Err(e) => {
                let _ = e.notification();
            }
        }
    }
}

#[test]
fn netgauze_reads_our_open() {
    let open = Open {
        version: 4,
        my_asn: 4_200_000_000,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities {
            multiprotocol: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            route_refresh: true,
            four_octet_as: true,
            graceful_restart: Some(GracefulRestart {
                flags: GracefulRestart::RESTART_STATE,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi_safi: AfiSafi::IPV6_UNICAST,
                    forwarding_preserved: true,
                }],
            }),
            unknown: vec![],
        },
    };
    let bytes = encode(&Message::Open(open), ctx(true));
    let parsed = netgauze_parse(&bytes, true);
    let Ok(BgpMessage::Open(ng)) = parsed else {
        panic!("netgauze: {parsed:?}");
    };
    assert_eq!(ng.my_as(), 23456);
    assert_eq!(ng.hold_time(), 90);
    assert_eq!(ng.bgp_id(), Ipv4Addr::new(192, 0, 2, 1));
    for msg in [
        Message::Keepalive,
        Message::RouteRefresh(AfiSafi::IPV4_UNICAST),
        Message::Notification(Notification {
            code: 6,
            subcode: 2,
            data: vec![],
        }),
        Message::Update(Update::end_of_rib_ipv6()),
    ] {
        let bytes = encode(&msg, ctx(true));
        assert!(netgauze_parse(&bytes, true).is_ok(), "{msg:?}");
    }
}

/// The reverse direction: what netgauze accepts as an UPDATE, we accept too (we are never
/// stricter than the reference parser on well-formed input).
#[test]
fn we_read_netgauze_sample() {
    // Hand-written in FRR's attribute order: ORIGIN IGP, AS_PATH 65001, NEXT_HOP 192.0.2.1,
    // MED 0, NLRI 10.1.0.0/16.
    let hex = concat!(
        "ffffffffffffffffffffffffffffffff",
        "0035",
        "02",
        "0000",
        "001b",
        "40010100",
        "400206020100",
        "00fde9",
        "400304c0000201",
        "80040400000000",
        "100a01",
    );
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    assert!(netgauze_parse(&bytes, true).is_ok());
    let Ok(Message::Update(u)) = decode(&bytes, ctx(true)) else {
        panic!("decode failed");
    };
    assert_eq!(u.attributes.med, Some(0));
    assert_eq!(u.attributes.as_path, Some(AsPath::sequence(vec![65001])));
}
