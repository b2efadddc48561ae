//! Gratuitous ARP and unsolicited IPv6 Neighbor Advertisements:
//! after a local VIP moves to this node, tell the LAN which MAC now owns it.
//!
//! IPv4: one "GARP" is an ARP request and an ARP reply, both broadcast, with
//! sender = target = the VIP and sender MAC = the interface's MAC, written
//! as whole Ethernet frames to an `AF_PACKET` socket (what PureLB's
//! mdlayher/arp client sends, padding included).
//!
//! IPv6: one unsolicited Neighbor Advertisement to ff02::1 (Override set,
//! Solicited and Router clear, with a target link-layer address option),
//! hop limit 255, sent on a raw ICMPv6 socket. The kernel fills in the
//! ICMPv6 checksum on such sockets (it always checksums `IPPROTO_ICMPV6`
//! raw sockets at offset 2), and picks the source address — the interface's
//! link-local one — as for any packet to a link-scope multicast address.

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

/// ARP operation codes.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_P_ARP: u16 = 0x0806;
/// Shortest Ethernet frame without FCS; shorter frames are zero-padded.
const MIN_FRAME: usize = 60;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const NDP_OPT_TARGET_LLADDR: u8 = 2;
/// ff02::1, all nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[derive(Debug, thiserror::Error)]
pub enum GarpError {
    #[error("cannot open a {kind} socket: {source}")]
    Socket {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set {option} on the {kind} socket: {source}")]
    SocketOption {
        kind: &'static str,
        option: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sending {what} for {ip} on link {ifindex}: {source}")]
    Send {
        what: &'static str,
        ip: std::net::IpAddr,
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("short write sending {what} for {ip} on link {ifindex}: {written} of {len} bytes")]
    ShortWrite {
        what: &'static str,
        ip: std::net::IpAddr,
        ifindex: u32,
        written: usize,
        len: usize,
    },
}

/// A broadcast Ethernet frame carrying a gratuitous ARP packet of operation
/// `op` ([`ARP_REQUEST`] or [`ARP_REPLY`]): sender and target protocol
/// address `ip`, sender hardware address `mac`, target hardware address
/// broadcast; zero-padded to 60 bytes.
pub fn arp_frame(op: u16, mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f.push(6); // hardware address length
    f.push(4); // protocol address length
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&ip.octets());
    f.resize(MIN_FRAME, 0);
    f
}

/// The ICMPv6 message of an unsolicited Neighbor Advertisement for `ip`
/// owned by `mac` (RFC 4861 sections 4.4 and 7.2.6): Override set, Router and
/// Solicited clear, one target link-layer address option. The checksum
/// field is zero: it depends on the source address, which the kernel picks
/// and checksums (see [`icmpv6_checksum`] to compute it yourself).
pub fn neighbor_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.push(ICMPV6_NEIGHBOR_ADVERTISEMENT);
    m.push(0); // code
    m.extend_from_slice(&[0, 0]); // checksum
    m.push(NA_FLAG_OVERRIDE);
    m.extend_from_slice(&[0, 0, 0]); // reserved
    m.extend_from_slice(&ip.octets());
    m.push(NDP_OPT_TARGET_LLADDR);
    m.push(1); // option length in units of 8 bytes
    m.extend_from_slice(&mac);
    m
}

/// The ICMPv6 checksum (RFC 4443 section 2.3) of `msg` sent from `src` to `dst`,
/// computed with `msg`'s checksum field taken as zero.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = match *chunk {
                [a, b] => u16::from_be_bytes([a, b]),
                [a] => u16::from_be_bytes([a, 0]),
                _ => 0,
            };
            sum += u64::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]); // next header: ICMPv6
    let mut body = msg.to_vec();
    if body.len() >= 4 {
        body[2] = 0;
        body[3] = 0;
    }
    add(&body);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one gratuitous ARP for `ip` on link `ifindex`: a request frame and
/// a reply frame, both from `mac` to broadcast. Needs `CAP_NET_RAW`.
pub fn send_garp(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), GarpError> {
    const KIND: &str = "AF_PACKET";
    // Protocol 0: this socket only sends, it receives nothing.
    let sock = Socket::new(Domain::PACKET, Type::RAW, None)
        .map_err(|source| GarpError::Socket { kind: KIND, source })?;
    let dest = link_layer_addr(ifindex, ETH_P_ARP, BROADCAST);
    for (op, what) in [(ARP_REQUEST, "ARP request"), (ARP_REPLY, "ARP reply")] {
        let frame = arp_frame(op, mac, ip);
        let written = sock
            .send_to(&frame, &dest)
            .map_err(|source| GarpError::Send {
                what,
                ip: ip.into(),
                ifindex,
                source,
            })?;
        if written != frame.len() {
            return Err(GarpError::ShortWrite {
                what,
                ip: ip.into(),
                ifindex,
                written,
                len: frame.len(),
            });
        }
    }
    Ok(())
}

/// Sends one unsolicited Neighbor Advertisement for `ip` (owned by `mac`)
/// to ff02::1 on link `ifindex`, hop limit 255. Needs `CAP_NET_RAW`.
pub fn send_unsolicited_na(ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> Result<(), GarpError> {
    const KIND: &str = "raw ICMPv6";
    let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .map_err(|source| GarpError::Socket { kind: KIND, source })?;
    let opt = |option: &'static str| {
        move |source| GarpError::SocketOption {
            kind: KIND,
            option,
            source,
        }
    };
    // Receivers drop neighbor discovery packets with any other hop limit.
    sock.set_multicast_hops_v6(255)
        .map_err(opt("IPV6_MULTICAST_HOPS"))?;
    sock.set_unicast_hops_v6(255)
        .map_err(opt("IPV6_UNICAST_HOPS"))?;
    sock.set_multicast_if_v6(ifindex)
        .map_err(opt("IPV6_MULTICAST_IF"))?;
    sock.set_multicast_loop_v6(false)
        .map_err(opt("IPV6_MULTICAST_LOOP"))?;
    let msg = neighbor_advertisement(mac, ip);
    let dest = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    let written = sock
        .send_to(&msg, &dest)
        .map_err(|source| GarpError::Send {
            what: "neighbor advertisement",
            ip: ip.into(),
            ifindex,
            source,
        })?;
    if written != msg.len() {
        return Err(GarpError::ShortWrite {
            what: "neighbor advertisement",
            ip: ip.into(),
            ifindex,
            written,
            len: msg.len(),
        });
    }
    Ok(())
}

/// A `sockaddr_ll` for sending on link `ifindex`.
fn link_layer_addr(ifindex: u32, protocol: u16, dest_mac: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: SockAddrStorage is a sockaddr_storage, large and aligned enough
    // for sockaddr_ll; every field is written below.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex as libc::c_int;
    ll.sll_hatype = 0;
    ll.sll_pkttype = 0;
    ll.sll_halen = 6;
    ll.sll_addr = [0; 8];
    ll.sll_addr[..6].copy_from_slice(&dest_mac);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised sockaddr_ll of `len` bytes.
    unsafe { SockAddr::new(storage, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    #[test]
    fn arp_request_frame_is_byte_exact() {
        let f = arp_frame(ARP_REQUEST, MAC, Ipv4Addr::new(198, 51, 100, 10));
        let mut want = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src: MAC
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet/IPv4, 6/4
            0x00, 0x01, // request
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // sender MAC
            198, 51, 100, 10, // sender IP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // target MAC
            198, 51, 100, 10, // target IP
        ];
        want.resize(60, 0);
        assert_eq!(f, want);
    }

    #[test]
    fn arp_reply_differs_only_in_op() {
        let ip = Ipv4Addr::new(203, 0, 113, 7);
        let req = arp_frame(ARP_REQUEST, MAC, ip);
        let rep = arp_frame(ARP_REPLY, MAC, ip);
        assert_eq!(rep.len(), 60);
        assert_eq!(&rep[20..22], &[0, 2]);
        assert_eq!(req[..20], rep[..20]);
        assert_eq!(req[22..], rep[22..]);
    }

    #[test]
    fn neighbor_advertisement_is_byte_exact() {
        let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let m = neighbor_advertisement(MAC, ip);
        let want = vec![
            136, 0, 0, 0, // type, code, checksum
            0x20, 0, 0, 0, // O=1, S=0, R=0
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
            2, 1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // target link-layer address
        ];
        assert_eq!(m, want);
    }

    #[test]
    fn icmpv6_checksum_verifies() {
        let src: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
        let mut m = neighbor_advertisement(MAC, "2001:db8::10".parse().unwrap());
        let c = icmpv6_checksum(src, ALL_NODES, &m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        // The stored checksum field is ignored by the computation.
        assert_eq!(icmpv6_checksum(src, ALL_NODES, &m), c);
        // Verified independently: the one's-complement sum over pseudo
        // header and message including the checksum is 0xffff.
        let mut sum: u32 = 0;
        let mut words = Vec::new();
        words.extend_from_slice(&src.octets());
        words.extend_from_slice(&ALL_NODES.octets());
        words.extend_from_slice(&(m.len() as u32).to_be_bytes());
        words.extend_from_slice(&[0, 0, 0, 58]);
        words.extend_from_slice(&m);
        for w in words.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
