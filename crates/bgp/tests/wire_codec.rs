//! Byte-exact tests against the RFC 4271 layouts, and error classification.

use std::net::{Ipv4Addr, Ipv6Addr};

use purelb_bgp::wire::*;

const FOUR: WireContext = WireContext {
    four_octet_as: true,
    ibgp: false,
};
const TWO: WireContext = WireContext {
    four_octet_as: false,
    ibgp: false,
};

fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = header((19 + body.len()) as u16, kind);
    v.extend_from_slice(body);
    v
}

fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

fn v4(a: [u8; 4], len: u8) -> Ipv4Prefix {
    Ipv4Prefix::new(Ipv4Addr::from(a), len).unwrap()
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const NH_192_0_2_1: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];
const AS_PATH_65001_4: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NLRI_203_0_113: [u8; 4] = [24, 203, 0, 113];

#[test]
fn keepalive_bytes() {
    let mut want = vec![0xff; 16];
    want.extend_from_slice(&[0x00, 0x13, 0x04]);
    assert_eq!(encode(&Message::Keepalive, FOUR), want);
    assert_eq!(decode(&want, FOUR), Ok(Message::Keepalive));
}

#[test]
fn open_bytes_with_four_octet_capability() {
    let open = Open {
        version: 4,
        my_asn: 65001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities {
            four_octet_as: true,
            ..Capabilities::default()
        },
    };
    let mut want = header(37, 1);
    want.extend_from_slice(&[4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 8]);
    want.extend_from_slice(&[2, 6, 65, 4, 0, 0, 0xfd, 0xe9]);
    assert_eq!(encode(&Message::Open(open.clone()), FOUR), want);
    assert_eq!(decode(&want, FOUR), Ok(Message::Open(open)));
}

#[test]
fn open_large_asn_uses_as_trans() {
    let open = Open {
        version: 4,
        my_asn: 4_200_000_000,
        hold_time: 180,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: Capabilities {
            multiprotocol: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            route_refresh: true,
            four_octet_as: true,
            graceful_restart: Some(GracefulRestart {
                flags: GracefulRestart::RESTART_STATE,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi_safi: AfiSafi::IPV4_UNICAST,
                    forwarding_preserved: true,
                }],
            }),
            unknown: vec![RawCapability {
                code: 73,
                value: b"node1".to_vec(),
            }],
        },
    };
    let bytes = encode(&Message::Open(open.clone()), FOUR);
    assert_eq!(&bytes[20..22], &23456u16.to_be_bytes());
    // GR: R bit + 120 s, then AFI 1 SAFI 1 with the forwarding bit.
    let gr = [64, 6, 0x80, 120, 0, 1, 1, 0x80];
    assert!(bytes.windows(gr.len()).any(|w| w == gr));
    assert_eq!(decode(&bytes, FOUR), Ok(Message::Open(open)));
}

#[test]
fn update_as_path_is_as_sequence_four_octet() {
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![65001])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..PathAttributes::default()
        },
        nlri: vec![v4([203, 0, 113, 0], 24)],
        ..Update::default()
    };
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65001_4, &NH_192_0_2_1].concat();
    let want = update_bytes(&[], &attrs, &NLRI_203_0_113);
    assert_eq!(want.len(), 47);
    let got = encode(&Message::Update(update.clone()), FOUR);
    assert_eq!(got, want);
    // Segment type octet right after the AS_PATH header: 2 = AS_SEQUENCE, never 1 (AS_SET).
    assert_eq!(got[19 + 4 + 4 + 3], 2);
    assert_eq!(decode(&want, FOUR), Ok(Message::Update(update)));
}

#[test]
fn update_as_path_two_octet_and_as4_path() {
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![65001, 4_200_000_000])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..PathAttributes::default()
        },
        nlri: vec![v4([203, 0, 113, 0], 24)],
        ..Update::default()
    };
    let attrs = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 6, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0],
        &NH_192_0_2_1,
        &[0xc0, 17, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0xfa, 0x56, 0xea, 0x00],
    ]
    .concat();
    let want = update_bytes(&[], &attrs, &NLRI_203_0_113);
    assert_eq!(encode(&Message::Update(update.clone()), TWO), want);
    assert_eq!(decode(&want, TWO), Ok(Message::Update(update)));
}

#[test]
fn as4_path_merge_keeps_leading_two_octet_asns() {
    // AS_PATH 65002 65001 23456, AS4_PATH 65001 4200000000 -> 65002 65001 4200000000.
    let attrs = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 8, 2, 3, 0xfd, 0xea, 0xfd, 0xe9, 0x5b, 0xa0],
        &NH_192_0_2_1,
        &[0xc0, 17, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0xfa, 0x56, 0xea, 0x00],
    ]
    .concat();
    let Ok(Message::Update(u)) = decode(&update_bytes(&[], &attrs, &NLRI_203_0_113), TWO) else {
        panic!("decode failed");
    };
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::sequence(vec![65002, 65001, 4_200_000_000]))
    );
    // From a 4-octet peer AS4_PATH is discarded.
    let attrs4 = [
        &ORIGIN_IGP[..],
        &AS_PATH_65001_4,
        &NH_192_0_2_1,
        &[0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x00],
    ]
    .concat();
    let Ok(Message::Update(u)) = decode(&update_bytes(&[], &attrs4, &NLRI_203_0_113), FOUR) else {
        panic!("decode failed");
    };
    assert_eq!(u.attributes.as_path, Some(AsPath::sequence(vec![65001])));
    assert_eq!(u.discarded_attributes, vec![17]);
}

#[test]
fn communities_med_local_pref_large_bytes() {
    let update = Update {
        attributes: PathAttributes {
            med: Some(10),
            local_pref: Some(200),
            communities: vec![0xfde9_0064],
            large_communities: vec![LargeCommunity {
                global_admin: 65001,
                local_data1: 1,
                local_data2: 2,
            }],
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let attrs = [
        &[0x80, 4, 4, 0, 0, 0, 10][..],
        &[0x40, 5, 4, 0, 0, 0, 200],
        &[0xc0, 8, 4, 0xfd, 0xe9, 0, 0x64],
        &[0xc0, 32, 12, 0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2],
    ]
    .concat();
    let want = update_bytes(&[], &attrs, &[]);
    assert_eq!(encode(&Message::Update(update.clone()), FOUR), want);
    assert_eq!(decode(&want, FOUR), Ok(Message::Update(update)));
}

#[test]
fn mp_reach_ipv6_with_link_local() {
    let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let p = Ipv6Prefix::new("2001:db8:1::".parse().unwrap(), 48).unwrap();
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![65001])),
            mp_reach: Some(MpReachIpv6 {
                next_hop: global,
                link_local_next_hop: Some(ll),
                nlri: vec![p],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let mut reach = vec![0x80, 14, 44, 0, 2, 1, 32];
    reach.extend_from_slice(&global.octets());
    reach.extend_from_slice(&ll.octets());
    reach.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65001_4, &reach].concat();
    let want = update_bytes(&[], &attrs, &[]);
    assert_eq!(encode(&Message::Update(update.clone()), FOUR), want);
    assert_eq!(decode(&want, FOUR), Ok(Message::Update(update)));
}

#[test]
fn end_of_rib_markers() {
    let v4 = encode(&Message::Update(Update::end_of_rib_ipv4()), FOUR);
    assert_eq!(v4, update_bytes(&[], &[], &[]));
    assert_eq!(v4.len(), 23);
    let v6 = encode(&Message::Update(Update::end_of_rib_ipv6()), FOUR);
    assert_eq!(v6, update_bytes(&[], &[0x80, 15, 3, 0, 2, 1], &[]));
    for (bytes, fam) in [(v4, AfiSafi::IPV4_UNICAST), (v6, AfiSafi::IPV6_UNICAST)] {
        let Ok(Message::Update(u)) = decode(&bytes, FOUR) else {
            panic!("decode failed");
        };
        assert_eq!(u.end_of_rib(), Some(fam));
    }
    let mut not_eor = Update::end_of_rib_ipv4();
    not_eor.withdrawn.push(v4_prefix());
    assert_eq!(not_eor.end_of_rib(), None);
}

fn v4_prefix() -> Ipv4Prefix {
    v4([10, 0, 0, 0], 8)
}

#[test]
fn notification_and_route_refresh_bytes() {
    let n = Message::Notification(Notification {
        code: 6,
        subcode: 2,
        data: vec![],
    });
    let want = message(3, &[6, 2]);
    assert_eq!(encode(&n, FOUR), want);
    assert_eq!(decode(&want, FOUR), Ok(n));

    let rr = Message::RouteRefresh(AfiSafi::IPV6_UNICAST);
    let want = message(5, &[0, 2, 0, 1]);
    assert_eq!(encode(&rr, FOUR), want);
    assert_eq!(decode(&want, FOUR), Ok(rr));

    let bad = message(5, &[0, 2, 0]);
    let err = decode(&bad, FOUR).unwrap_err();
    assert_eq!(err.notification(), Some((7, 1, bad)));
}

#[test]
fn framing() {
    let ka = encode(&Message::Keepalive, FOUR);
    let mut two = ka.clone();
    two.extend_from_slice(&ka);
    assert_eq!(next_message(&two), Ok(Some(&ka[..])));
    assert_eq!(next_message(&ka[..18]), Ok(None));
    assert_eq!(next_message(&[]), Ok(None));
    assert_eq!(next_message(&two[..30]), Ok(Some(&ka[..])));
    let open = encode(
        &Message::Open(Open {
            version: 4,
            my_asn: 65001,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: Capabilities::default(),
        }),
        FOUR,
    );
    assert_eq!(next_message(&open[..25]), Ok(None));
    // Bad marker is reported as soon as it is seen.
    assert_eq!(
        next_message(&[0xff, 0xfe]).unwrap_err().notification(),
        Some((1, 1, vec![]))
    );
}

#[test]
fn header_errors_map_to_notifications() {
    let mut bad_marker = encode(&Message::Keepalive, FOUR);
    bad_marker[3] = 0;
    assert_eq!(
        decode(&bad_marker, FOUR).unwrap_err().notification(),
        Some((1, 1, vec![]))
    );
    assert_eq!(
        next_message(&header(18, 4)).unwrap_err().notification(),
        Some((1, 2, vec![0, 18]))
    );
    assert_eq!(
        next_message(&header(4097, 2)).unwrap_err().notification(),
        Some((1, 2, vec![0x10, 0x01]))
    );
    assert_eq!(
        decode(&header(19, 9), FOUR).unwrap_err().notification(),
        Some((1, 3, vec![9]))
    );
    // KEEPALIVE must be exactly 19, OPEN at least 29, UPDATE at least 23, NOTIFICATION 21.
    assert_eq!(
        decode(&message(4, &[0]), FOUR).unwrap_err().notification(),
        Some((1, 2, vec![0, 20]))
    );
    assert_eq!(
        decode(&message(1, &[4, 0, 1]), FOUR)
            .unwrap_err()
            .notification(),
        Some((1, 2, vec![0, 22]))
    );
    assert_eq!(
        decode(&message(2, &[0, 0]), FOUR)
            .unwrap_err()
            .notification(),
        Some((1, 2, vec![0, 21]))
    );
    assert_eq!(
        decode(&message(3, &[6]), FOUR).unwrap_err().notification(),
        Some((1, 2, vec![0, 20]))
    );
}

fn open_body(version: u8, asn: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&asn.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    message(1, &b)
}

#[test]
fn open_errors_map_to_notifications() {
    let id = [192, 0, 2, 1];
    let n = |bytes: Vec<u8>| decode(&bytes, FOUR).unwrap_err().notification();
    assert_eq!(
        n(open_body(3, 65001, 90, id, &[])),
        Some((2, 1, vec![0, 4]))
    );
    assert_eq!(n(open_body(4, 0, 90, id, &[])), Some((2, 2, vec![])));
    assert_eq!(
        n(open_body(4, 65001, 90, [0; 4], &[])),
        Some((2, 3, vec![]))
    );
    assert_eq!(n(open_body(4, 65001, 1, id, &[])), Some((2, 6, vec![])));
    assert_eq!(n(open_body(4, 65001, 2, id, &[])), Some((2, 6, vec![])));
    assert_eq!(
        n(open_body(4, 65001, 90, id, &[1, 1, 0])),
        Some((2, 4, vec![]))
    );
    // A capability that overruns its parameter.
    assert_eq!(
        n(open_body(4, 65001, 90, id, &[2, 3, 65, 4, 0])),
        Some((2, 0, vec![]))
    );
    // Hold time 0 is acceptable (no keepalives).
    assert!(decode(&open_body(4, 65001, 0, id, &[]), FOUR).is_ok());
    // The 4-octet capability's AS 0 is a bad peer AS even with AS_TRANS in the 2-octet field.
    assert_eq!(
        n(open_body(4, 23456, 90, id, &[2, 6, 65, 4, 0, 0, 0, 0])),
        Some((2, 2, vec![]))
    );
}

fn treat_as_withdraw(bytes: &[u8], ctx: WireContext) -> Vec<Prefix> {
    match decode(bytes, ctx) {
        Err(e @ DecodeError::TreatAsWithdraw { .. }) => {
            assert_eq!(e.notification(), None);
            let DecodeError::TreatAsWithdraw { prefixes, .. } = e else {
                unreachable!()
            };
            prefixes
        }
        other => panic!("expected treat-as-withdraw, got {other:?}"),
    }
}

#[test]
fn update_treat_as_withdraw_cases() {
    let want = vec![
        Prefix::V4(v4([10, 0, 0, 0], 8)),
        Prefix::V4(v4([203, 0, 113, 0], 24)),
    ];
    let withdrawn = [8, 10];
    let cases: Vec<Vec<u8>> = vec![
        // ORIGIN value 5
        [&[0x40, 1, 1, 5][..], &AS_PATH_65001_4, &NH_192_0_2_1].concat(),
        // ORIGIN with optional flag set
        [&[0xc0, 1, 1, 0][..], &AS_PATH_65001_4, &NH_192_0_2_1].concat(),
        // AS_PATH segment type 7
        [
            &ORIGIN_IGP[..],
            &[0x40, 2, 6, 7, 1, 0, 0, 0xfd, 0xe9],
            &NH_192_0_2_1,
        ]
        .concat(),
        // AS_PATH segment count overruns
        [
            &ORIGIN_IGP[..],
            &[0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9],
            &NH_192_0_2_1,
        ]
        .concat(),
        // NEXT_HOP of 3 octets
        [&ORIGIN_IGP[..], &AS_PATH_65001_4, &[0x40, 3, 3, 192, 0, 2]].concat(),
        // missing NEXT_HOP
        [&ORIGIN_IGP[..], &AS_PATH_65001_4].concat(),
        // missing ORIGIN
        [&AS_PATH_65001_4[..], &NH_192_0_2_1].concat(),
        // MED of 2 octets
        [
            &ORIGIN_IGP[..],
            &AS_PATH_65001_4,
            &NH_192_0_2_1,
            &[0x80, 4, 2, 0, 1],
        ]
        .concat(),
        // COMMUNITIES of 3 octets
        [
            &ORIGIN_IGP[..],
            &AS_PATH_65001_4,
            &NH_192_0_2_1,
            &[0xc0, 8, 3, 0, 1, 2],
        ]
        .concat(),
        // LARGE_COMMUNITIES of 8 octets
        [
            &ORIGIN_IGP[..],
            &AS_PATH_65001_4,
            &NH_192_0_2_1,
            &[0xc0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 2],
        ]
        .concat(),
        // last attribute's length overruns the attribute field
        [
            &ORIGIN_IGP[..],
            &AS_PATH_65001_4,
            &NH_192_0_2_1,
            &[0x80, 4, 9, 0, 0],
        ]
        .concat(),
    ];
    for (i, attrs) in cases.iter().enumerate() {
        let bytes = update_bytes(&withdrawn, attrs, &NLRI_203_0_113);
        assert_eq!(treat_as_withdraw(&bytes, FOUR), want, "case {i}");
    }
    // LOCAL_PREF of 2 octets: treat-as-withdraw from iBGP, discarded from eBGP.
    let attrs = [
        &ORIGIN_IGP[..],
        &AS_PATH_65001_4,
        &NH_192_0_2_1,
        &[0x40, 5, 2, 0, 1],
    ]
    .concat();
    let bytes = update_bytes(&[], &attrs, &NLRI_203_0_113);
    let ibgp = WireContext {
        four_octet_as: true,
        ibgp: true,
    };
    assert_eq!(
        treat_as_withdraw(&bytes, ibgp),
        vec![Prefix::V4(v4([203, 0, 113, 0], 24))]
    );
    let Ok(Message::Update(u)) = decode(&bytes, FOUR) else {
        panic!("expected discard");
    };
    assert_eq!(u.discarded_attributes, vec![5]);
    assert_eq!(u.attributes.local_pref, None);
}

#[test]
fn update_treat_as_withdraw_includes_ipv6() {
    let mut reach = vec![0x80, 14, 26, 0, 2, 1, 16];
    reach.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    reach.extend_from_slice(&[0, 32, 0x20, 0x01, 0x0d, 0xb8]);
    let attrs = [&[0x40, 1, 1, 9][..], &AS_PATH_65001_4, &reach].concat();
    let prefixes = treat_as_withdraw(&update_bytes(&[], &attrs, &[]), FOUR);
    assert_eq!(
        prefixes,
        vec![Prefix::V6(
            Ipv6Prefix::new("2001:db8::".parse().unwrap(), 32).unwrap()
        )]
    );
}

#[test]
fn update_attribute_discard_cases() {
    let base = [&ORIGIN_IGP[..], &AS_PATH_65001_4, &NH_192_0_2_1].concat();
    // ATOMIC_AGGREGATE with a value, AGGREGATOR of the wrong size, a repeated ORIGIN.
    for (extra, code) in [
        (vec![0x40, 6, 1, 0], 6u8),
        (vec![0xc0, 7, 6, 0, 0, 0xfd, 0xe9, 1, 2], 7),
        (vec![0x40, 1, 1, 2], 1),
    ] {
        let attrs = [&base[..], &extra].concat();
        let Ok(Message::Update(u)) = decode(&update_bytes(&[], &attrs, &NLRI_203_0_113), FOUR)
        else {
            panic!("expected attribute discard for {code}");
        };
        assert_eq!(u.discarded_attributes, vec![code]);
        assert_eq!(u.attributes.origin, Some(Origin::Igp));
        assert_eq!(u.nlri, vec![v4([203, 0, 113, 0], 24)]);
    }
}

#[test]
fn update_session_reset_cases() {
    let base = [&ORIGIN_IGP[..], &AS_PATH_65001_4, &NH_192_0_2_1].concat();
    let n = |bytes: Vec<u8>| decode(&bytes, FOUR).unwrap_err().notification();
    // Withdrawn length runs past the message.
    assert_eq!(n(message(2, &[0, 9, 0, 0])), Some((3, 1, vec![])));
    // Total attribute length runs past the message.
    assert_eq!(n(message(2, &[0, 0, 0, 9, 0x40])), Some((3, 1, vec![])));
    // NLRI prefix length 33.
    assert_eq!(
        n(update_bytes(&[], &base, &[33, 1, 2, 3, 4, 5])),
        Some((3, 10, vec![]))
    );
    // Unrecognised well-known attribute: data is the attribute.
    let attrs = [&base[..], &[0x40, 99, 1, 7]].concat();
    assert_eq!(
        n(update_bytes(&[], &attrs, &NLRI_203_0_113)),
        Some((3, 2, vec![0x40, 99, 1, 7]))
    );
    // MP_UNREACH twice.
    let attrs = [&[0x80, 15, 3, 0, 2, 1][..], &[0x80, 15, 3, 0, 2, 1]].concat();
    assert_eq!(n(update_bytes(&[], &attrs, &[])), Some((3, 1, vec![])));
    // MP_REACH with a 5-octet next hop.
    let attrs = [&base[..], &[0x80, 14, 9, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0]].concat();
    assert!(matches!(n(update_bytes(&[], &attrs, &[])), Some((3, 9, _))));
    // Attribute list broken with nothing parsed to withdraw.
    assert_eq!(n(update_bytes(&[], &[0x80, 4], &[])), Some((3, 1, vec![])));
}

#[test]
fn unknown_optional_attributes_are_kept() {
    let attrs = [
        &ORIGIN_IGP[..],
        &AS_PATH_65001_4,
        &NH_192_0_2_1,
        &[0xe0, 200, 2, 1, 2],
    ]
    .concat();
    let bytes = update_bytes(&[], &attrs, &NLRI_203_0_113);
    let Ok(Message::Update(u)) = decode(&bytes, FOUR) else {
        panic!("decode failed");
    };
    assert_eq!(
        u.attributes.other,
        vec![RawAttribute {
            flags: 0xe0,
            code: 200,
            value: vec![1, 2]
        }]
    );
    assert_eq!(encode(&Message::Update(u), FOUR), bytes);
}

#[test]
fn extended_length_attributes() {
    let communities: Vec<u32> = (0..100).collect();
    let update = Update {
        attributes: PathAttributes {
            communities: communities.clone(),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let bytes = encode(&Message::Update(update.clone()), FOUR);
    // flags 0xd0 = optional, transitive, extended length; length 400.
    assert_eq!(&bytes[23..27], &[0xd0, 8, 0x01, 0x90]);
    assert_eq!(decode(&bytes, FOUR), Ok(Message::Update(update)));
}
