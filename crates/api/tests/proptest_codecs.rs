//! Property tests for the annotation and Lease codecs: parsers never panic,
//! and encode(parse(x)) is canonical and stable.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proptest::prelude::*;
use purelb_api::annotations::{
    Announcements, SlotOwner, encode_allocated_from, parse_addresses, parse_allocated_from,
};
use purelb_api::election::{Electorate, winner};
use purelb_api::lease::{decode_subnets, encode_subnets};
use purelb_api::pool::{IpFamily, IpNet, network_of, parse_cidr};

/// Strings drawn from the characters these formats are made of, plus any text.
fn messy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F:.,/%\\- \t\nnode]{0,60}",
        "\\PC{0,40}",
        any::<String>(),
    ]
}

fn node() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.-]{0,10}"
}

fn interface() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9,._@:-]{1,15}"
}

fn cidr() -> impl Strategy<Value = IpNet> {
    (any::<IpAddr>(), 0u8..=128).prop_map(|(ip, len)| {
        let len = match ip {
            IpAddr::V4(_) => len % 33,
            IpAddr::V6(_) => len,
        };
        network_of(ip, len).expect("length within the family")
    })
}

proptest! {
    #[test]
    fn announcing_parse_is_total_and_encode_is_stable(value in messy()) {
        let parsed = Announcements::parse(&value);
        match parsed.encode() {
            None => prop_assert!(parsed.is_empty()),
            Some(encoded) => {
                let reparsed = Announcements::parse(&encoded);
                prop_assert_eq!(&reparsed, &parsed);
                prop_assert_eq!(reparsed.encode(), Some(encoded.clone()));
                prop_assert!(!encoded.contains("  "));
                prop_assert_eq!(encoded.split(' ').count(), parsed.len());
            }
        }
    }

    #[test]
    fn announcing_keeps_one_valid_entry_per_ip(
        entries in prop::collection::vec((node(), interface(), any::<IpAddr>()), 0..8),
        separator in prop_oneof![Just(" "), Just("  "), Just("\t"), Just("\n ")],
    ) {
        let value = entries
            .iter()
            .map(|(n, i, ip)| format!("{n},{i},{ip}"))
            .collect::<Vec<_>>()
            .join(separator);
        let parsed = Announcements::parse(&value);
        let ips: BTreeSet<IpAddr> = entries.iter().map(|(_, _, ip)| ip.to_canonical()).collect();
        prop_assert_eq!(parsed.len(), ips.len());
        for (n, i, ip) in &entries {
            let kept = parsed.announcer(*ip).expect("every IP keeps a slot");
            // The least (node, interface) for the IP wins.
            prop_assert!((kept.node(), kept.interface()) <= (n.as_str(), i.as_str()));
        }
    }

    #[test]
    fn claim_owns_the_slot_and_keeps_only_live_ips(
        existing in prop::collection::vec((node(), interface(), any::<IpAddr>()), 0..6),
        ingress in prop::collection::vec(any::<IpAddr>(), 0..6),
        mine in (node(), interface()),
        pick in any::<prop::sample::Index>(),
        extra in any::<IpAddr>(),
    ) {
        let value = existing
            .iter()
            .map(|(n, i, ip)| format!("{n},{i},{ip}"))
            .collect::<Vec<_>>()
            .join(" ");
        let before = Announcements::parse(&value);
        let ip = if ingress.is_empty() { extra } else { ingress[pick.index(ingress.len())] };
        let announcer = SlotOwner::new(mine.0.clone(), mine.1.clone()).expect("valid announcer");
        let mut after = before.clone();
        let stolen = after.claim(ip, announcer.clone(), &ingress);

        prop_assert_eq!(after.announcer(ip), Some(&announcer));
        let family = IpFamily::of(ip);
        let live: Vec<IpAddr> = ingress
            .iter()
            .map(|i| i.to_canonical())
            .filter(|i| IpFamily::of(*i) == family)
            .collect();
        for (slot_ip, slot) in after.iter() {
            if slot_ip != ip.to_canonical() {
                prop_assert!(live.contains(&slot_ip));
                prop_assert_eq!(before.announcer(slot_ip), Some(slot));
            }
        }
        let previous = before.announcer(ip).map(|a| a.node().to_owned());
        prop_assert_eq!(stolen, previous.filter(|n| *n != mine.0));
        let encoded = after.encode().expect("at least the claimed slot");
        prop_assert_eq!(Announcements::parse(&encoded), after);
    }

    #[test]
    fn addresses_parse_is_total(value in messy()) {
        if let Ok(ips) = parse_addresses(&value) {
            prop_assert_eq!(ips.len(), value.split(',').count());
        }
    }

    #[test]
    fn addresses_round_trip(ips in prop::collection::vec(any::<IpAddr>(), 1..4)) {
        let value = ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",");
        let canonical: Vec<IpAddr> = ips.iter().map(|ip| ip.to_canonical()).collect();
        prop_assert_eq!(parse_addresses(&value), Ok(canonical));
    }

    #[test]
    fn allocated_from_round_trip(names in prop::collection::vec("[a-z0-9][a-z0-9-]{0,10}", 0..5)) {
        let encoded = encode_allocated_from(names.iter().map(String::as_str));
        let mut unique: Vec<&str> = Vec::new();
        for n in &names {
            if !unique.contains(&n.as_str()) {
                unique.push(n);
            }
        }
        prop_assert_eq!(parse_allocated_from(&encoded), unique.clone());
        prop_assert_eq!(encode_allocated_from(unique), encoded);
    }

    #[test]
    fn lease_subnets_round_trip(subnets in prop::collection::vec(cidr(), 0..10)) {
        let encoded = encode_subnets(subnets.clone());
        let decoded = decode_subnets(&encoded);
        let expected: BTreeSet<IpNet> = subnets.into_iter().collect();
        let got: BTreeSet<IpNet> = decoded.iter().map(|s| s.cidr()).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(decoded.len(), decoded.iter().map(|s| s.spelling()).collect::<BTreeSet<_>>().len());
        for s in &decoded {
            prop_assert_eq!(s.spelling(), s.cidr().to_string());
        }
        prop_assert_eq!(encode_subnets(decoded.iter().map(|s| s.cidr())), encoded);
    }

    #[test]
    fn lease_decode_is_total(value in messy()) {
        for s in decode_subnets(&value) {
            prop_assert_eq!(parse_cidr(s.spelling()), Ok(s.cidr()));
        }
    }

    #[test]
    fn winner_ignores_candidate_order(
        nodes in prop::collection::btree_set(node(), 1..8),
        ip in any::<IpAddr>(),
        rotate in any::<prop::sample::Index>(),
    ) {
        let mut list: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let first = winner(ip, list.iter().copied());
        prop_assert!(first.is_some_and(|w| nodes.contains(w)));
        let by = rotate.index(list.len());
        list.rotate_left(by);
        list.reverse();
        prop_assert_eq!(winner(ip, list.iter().copied()), first);

        let everywhere = network_of(ip.to_canonical(), 0).expect("a /0");
        let electorate: Electorate = nodes.iter().map(|n| (n.clone(), [everywhere])).collect();
        prop_assert_eq!(electorate.winner(ip), first);
    }
}
