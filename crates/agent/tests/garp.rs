//! GARP and unsolicited NA on the wire: sent from one namespace, captured
//! with an AF_PACKET socket on the peer end of the veth. Needs root
//! (skipped without it, failing under CI=true).

use anyhow::{Context, Result};
use purelb_agent::kernel::Kernel;
use purelb_agent::kernel::garp::{ALL_NODES, icmpv6_checksum, send_garp, send_unsolicited_na};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use testbed::netlab::{Lab, LinkSpec, Ns, capture, collect, require_root};

struct Pair {
    _lab: Lab,
    n1: Ns,
    n1_if: String,
    n2: Ns,
    n2_if: String,
}

fn pair() -> Result<Pair> {
    let lab = Lab::new()?;
    let n1 = lab.node("n1")?;
    let n2 = lab.node("n2")?;
    let link = lab.link(
        &n1,
        &n2,
        LinkSpec::new()
            .v4("198.51.100.1/24", "198.51.100.2/24")
            .v6("2001:db8:1::1/64", "2001:db8:1::2/64"),
    )?;
    Ok(Pair {
        n1_if: link.a_if().to_owned(),
        n2_if: link.b_if().to_owned(),
        _lab: lab,
        n1,
        n2,
    })
}

/// Index and MAC of `ifname` in `ns`, through the kernel module.
fn link_of(ns: &Ns, ifname: &str) -> Result<(u32, [u8; 6])> {
    ns.run(|| -> Result<(u32, [u8; 6])> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let k = Kernel::new()?;
            let l = k.link_by_name(ifname).await?.context("link")?;
            Ok((l.index, k.link_mac(l.index).await?))
        })
    })?
}

#[test]
fn garp_is_a_broadcast_request_and_reply() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let p = pair()?;
    let vip = Ipv4Addr::new(198, 51, 100, 10);
    let (index, mac) = link_of(&p.n1, &p.n1_if)?;
    let cap = capture(&p.n2, &p.n2_if)?;
    p.n1.run(|| send_garp(index, mac, vip))??;

    let frames = collect(
        &cap,
        Duration::from_secs(3),
        |f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == vip.octets(),
        2,
    );
    assert_eq!(frames.len(), 2, "two ARP frames for the VIP: {frames:02x?}");
    let ops: Vec<u16> = frames
        .iter()
        .map(|f| u16::from_be_bytes([f[20], f[21]]))
        .collect();
    assert_eq!(ops, [1, 2], "request, then reply");
    for f in &frames {
        assert_eq!(f[0..6], [0xff; 6], "broadcast destination");
        assert_eq!(f[6..12], mac, "source MAC = interface MAC");
        assert_eq!(f[14..20], [0, 1, 8, 0, 6, 4], "Ethernet/IPv4 ARP");
        assert_eq!(f[22..28], mac, "sender hardware address");
        assert_eq!(f[28..32], vip.octets(), "sender IP");
        assert_eq!(f[38..42], vip.octets(), "target IP");
    }
    Ok(())
}

#[test]
fn unsolicited_na_goes_to_all_nodes_with_hop_limit_255() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let p = pair()?;
    let vip: Ipv6Addr = "2001:db8:1::10".parse()?;
    let (index, mac) = link_of(&p.n1, &p.n1_if)?;
    let cap = capture(&p.n2, &p.n2_if)?;
    p.n1.run(|| send_unsolicited_na(index, mac, vip))??;

    // Ethernet (14) + IPv6 (40) + ICMPv6 NA with one option (32).
    let frames = collect(
        &cap,
        Duration::from_secs(3),
        |f| f.len() >= 86 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 136,
        1,
    );
    let f = frames.first().context("an NA was captured")?;
    assert_eq!(f[0..6], [0x33, 0x33, 0, 0, 0, 1], "all-nodes multicast MAC");
    assert_eq!(f[6..12], mac, "source MAC");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38])?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54])?);
    assert_eq!(dst, ALL_NODES);
    assert_eq!(
        src.segments()[0] & 0xffc0,
        0xfe80,
        "link-local source {src}"
    );
    assert_eq!(f[21], 255, "hop limit");
    let payload_len = usize::from(u16::from_be_bytes([f[18], f[19]]));
    assert_eq!(payload_len, 32);
    let icmp = &f[54..54 + payload_len];
    assert_eq!(icmp[1], 0, "code");
    assert_eq!(icmp[4] & 0x80, 0, "Router clear");
    assert_eq!(icmp[4] & 0x40, 0, "Solicited clear");
    assert_eq!(icmp[4] & 0x20, 0x20, "Override set");
    assert_eq!(icmp[8..24], vip.octets(), "target");
    assert_eq!(icmp[24..26], [2, 1], "target link-layer address option");
    assert_eq!(icmp[26..32], mac);
    let stored = u16::from_be_bytes([icmp[2], icmp[3]]);
    assert_ne!(stored, 0, "the kernel filled in the checksum");
    assert_eq!(stored, icmpv6_checksum(src, dst, icmp), "valid checksum");
    Ok(())
}
