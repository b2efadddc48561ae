//! UPDATE encode and decode throughput of the hand-written codec (`purelb_bgp::wire`).
//!
//! Cases, all on a 4-octet-AS eBGP session with the attributes the speaker sends (ORIGIN IGP,
//! AS_PATH sequence [65001], NEXT_HOP or MP_REACH next hop, one community, one large community):
//!
//! - `ipv4_1`: one /32 in the NLRI field;
//! - `ipv4_full`: as many /32s as fit in a 4096-octet UPDATE;
//! - `ipv6_1`: one /128 in MP_REACH_NLRI;
//! - `ipv6_full`: as many /128s as fit in MP_REACH_NLRI;
//! - `withdraw_full`: a withdraw-only UPDATE (no attributes) with as many /32s as fit.
//!
//! Throughput is prefixes per second, and bytes per second of the encoded message.
//! `cargo bench -p purelb-bgp --bench codec` (about 50 s).

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use purelb_bgp::wire::{
    AsPath, Ipv4Prefix, Ipv6Prefix, LargeCommunity, MAX_MESSAGE_LEN, Message, MpReachIpv6, Origin,
    PathAttributes, Update, WireContext, decode, encode,
};

const CTX: WireContext = WireContext {
    four_octet_as: true,
    ibgp: false,
};

fn attributes() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(vec![65001])),
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![LargeCommunity {
            global_admin: 65001,
            local_data1: 1,
            local_data2: 2,
        }],
        ..PathAttributes::default()
    }
}

/// 10.0.0.0/32, 10.0.0.1/32, ...
fn v4_hosts(n: usize) -> Vec<Ipv4Prefix> {
    (0..n)
        .map(|i| {
            let addr = Ipv4Addr::from(0x0a00_0000 + i as u32);
            Ipv4Prefix::new(addr, 32).expect("/32")
        })
        .collect()
}

/// 2001:db8:ff::/128, 2001:db8:ff::1/128, ...
fn v6_hosts(n: usize) -> Vec<Ipv6Prefix> {
    (0..n)
        .map(|i| {
            let addr = Ipv6Addr::from(0x2001_0db8_00ff_0000_0000_0000_0000_0000u128 + i as u128);
            Ipv6Prefix::new(addr, 128).expect("/128")
        })
        .collect()
}

fn ipv4_update(n: usize) -> Message {
    Message::Update(Update {
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 2)),
            ..attributes()
        },
        nlri: v4_hosts(n),
        ..Update::default()
    })
}

fn ipv6_update(n: usize) -> Message {
    Message::Update(Update {
        attributes: PathAttributes {
            mp_reach: Some(MpReachIpv6 {
                next_hop: "2001:db8:1::2".parse().expect("address"),
                link_local_next_hop: None,
                nlri: v6_hosts(n),
            }),
            ..attributes()
        },
        ..Update::default()
    })
}

fn withdraw_update(n: usize) -> Message {
    Message::Update(Update {
        withdrawn: v4_hosts(n),
        ..Update::default()
    })
}

/// The largest `n` for which `make(n)` encodes within [`MAX_MESSAGE_LEN`].
fn fill(make: impl Fn(usize) -> Message) -> usize {
    let mut n = 1;
    while encode(&make(n + 1), CTX).len() <= MAX_MESSAGE_LEN {
        n += 1;
    }
    n
}

struct Case {
    name: &'static str,
    message: Message,
    prefixes: usize,
}

fn cases() -> Vec<Case> {
    let v4_full = fill(ipv4_update);
    let v6_full = fill(ipv6_update);
    let wd_full = fill(withdraw_update);
    vec![
        Case {
            name: "ipv4_1",
            message: ipv4_update(1),
            prefixes: 1,
        },
        Case {
            name: "ipv4_full",
            message: ipv4_update(v4_full),
            prefixes: v4_full,
        },
        Case {
            name: "ipv6_1",
            message: ipv6_update(1),
            prefixes: 1,
        },
        Case {
            name: "ipv6_full",
            message: ipv6_update(v6_full),
            prefixes: v6_full,
        },
        Case {
            name: "withdraw_full",
            message: withdraw_update(wd_full),
            prefixes: wd_full,
        },
    ]
}

fn codec(c: &mut Criterion) {
    let cases = cases();
    for case in &cases {
        let bytes = encode(&case.message, CTX);
        // The benchmark must measure what it says: the bytes decode back to the message.
        assert_eq!(
            decode(&bytes, CTX).as_ref(),
            Ok(&case.message),
            "{}",
            case.name
        );
        println!(
            "{}: {} prefixes in a {}-octet UPDATE",
            case.name,
            case.prefixes,
            bytes.len()
        );
    }

    let mut group = c.benchmark_group("encode");
    for case in &cases {
        let len = encode(&case.message, CTX).len();
        group.throughput(Throughput::ElementsAndBytes {
            elements: case.prefixes as u64,
            bytes: len as u64,
        });
        group.bench_function(case.name, |b| {
            b.iter(|| encode(black_box(&case.message), black_box(CTX)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for case in &cases {
        let bytes = encode(&case.message, CTX);
        group.throughput(Throughput::ElementsAndBytes {
            elements: case.prefixes as u64,
            bytes: bytes.len() as u64,
        });
        group.bench_function(case.name, |b| {
            b.iter(|| decode(black_box(&bytes), black_box(CTX)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = codec
}
criterion_main!(benches);
