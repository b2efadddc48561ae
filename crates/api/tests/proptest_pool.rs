//! Property tests for pool parsing: parsers never panic, CIDRs round-trip,
//! and `nth`/`offset_of` are inverses inside a range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use purelb_api::pool::{AddressRange, Network, PoolRange, network_of, parse_cidr};

fn messy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F:./%\\- \t+]{0,50}",
        "\\PC{0,40}",
        any::<String>(),
    ]
}

/// A range of either family from two arbitrary ends, put in order.
fn address_range() -> impl Strategy<Value = AddressRange> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            AddressRange::new(Ipv4Addr::from(lo).into(), Ipv4Addr::from(hi).into())
        }),
        (any::<u128>(), any::<u128>()).prop_map(|(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            AddressRange::new(Ipv6Addr::from(lo).into(), Ipv6Addr::from(hi).into())
        }),
        // IPv6 ranges around the IPv4-mapped block, which they then hold.
        (0u128..1 << 40, (1u128 << 49)..1 << 60).prop_map(|(lo, hi)| {
            AddressRange::new(Ipv6Addr::from(lo).into(), Ipv6Addr::from(hi).into())
        }),
    ]
    .prop_filter_map("mapped IPv6 ends may mix families", Result::ok)
}

proptest! {
    #[test]
    fn parsers_are_total(pool in messy(), subnet in messy(), aggregation in messy()) {
        let _ = parse_cidr(&pool);
        let _ = AddressRange::parse(&pool);
        if let Ok(p) = PoolRange::parse(&pool, &subnet, Some(&aggregation)) {
            prop_assert!(p.addresses().is_within(p.subnet()));
            let _ = p.announce_prefix_len();
        }
    }

    #[test]
    fn range_strings_parse(range in address_range(), spaces in "[ \t]{0,2}") {
        let text = format!("{spaces}{}{spaces}-{spaces}{}{spaces}", range.first(), range.last());
        prop_assert_eq!(AddressRange::parse(&text), Ok(range));
        let reversed = format!("{}-{}", range.last(), range.first());
        prop_assert_eq!(AddressRange::parse(&reversed).is_ok(), range.first() == range.last());
    }

    #[test]
    fn cidr_round_trips(ip in any::<IpAddr>(), len in 0u8..=128) {
        let len = if ip.is_ipv4() { len % 33 } else { len };
        let cidr = network_of(ip, len).expect("length within the family");
        let text = cidr.to_string();
        prop_assert_eq!(parse_cidr(&text), Ok(cidr));
        prop_assert_eq!(parse_cidr(&text).map(|c| c.to_string()), Ok(text));
        prop_assert!(cidr.holds(cidr.network()));
        let as_range = AddressRange::parse(&cidr.to_string());
        if cidr.last().to_canonical() == cidr.last() {
            prop_assert!(cidr.holds(cidr.last()));
            let as_range = as_range.expect("a CIDR is a range");
            prop_assert!(as_range.is_within(&cidr));
            prop_assert_eq!(as_range.last(), cidr.last());
        } else {
            // An IPv6 network ending in the IPv4-mapped block, like Go's.
            prop_assert!(!cidr.holds(cidr.last()));
            prop_assert!(as_range.is_err());
        }
    }

    #[test]
    fn nth_inverts_offset_of(range in address_range(), pick in any::<u128>(), probe in any::<IpAddr>()) {
        let offset = pick % range.max_offset().saturating_add(1).max(1);
        let offset = if range.max_offset() == u128::MAX { pick } else { offset };
        let ip = range.nth(offset).expect("offset inside the range");
        prop_assert!(range.contains(ip));
        prop_assert_eq!(range.offset_of(ip), Some(offset));
        prop_assert_eq!(range.nth(range.max_offset()), Some(range.last()));
        prop_assert_eq!(range.nth(0), Some(range.first()));
        match range.offset_of(probe) {
            Some(o) => prop_assert_eq!(range.nth(o), Some(probe.to_canonical())),
            None => prop_assert!(!range.contains(probe)),
        }
        if let Some(beyond) = range.max_offset().checked_add(1) {
            prop_assert_eq!(range.nth(beyond), None);
        }
        prop_assert_eq!(range.size(), range.max_offset().saturating_add(1));
    }
}
