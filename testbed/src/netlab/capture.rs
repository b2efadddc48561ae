//! Packet capture in a lab namespace: every frame that arrives on one of its
//! interfaces, as `tcpdump` would see it, for tests that check what goes on
//! the wire (GARP, unsolicited NA).

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use super::Ns;

const ETH_P_ALL: u16 = 0x0003;

/// A capture socket for every frame arriving on `ifname` in `ns`.
pub fn capture(ns: &Ns, ifname: &str) -> Result<Socket> {
    let ifname = ifname.to_owned();
    ns.run(move || -> Result<Socket> {
        let c = std::ffi::CString::new(ifname.clone())?;
        // SAFETY: a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            bail!("no interface {ifname}");
        }
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
        )?;
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_ll;
        // the fields are set below.
        let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
        ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
        ll.sll_protocol = ETH_P_ALL.to_be();
        ll.sll_ifindex = index as libc::c_int;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the storage holds a sockaddr_ll of `len` bytes.
        let addr = unsafe { SockAddr::new(storage, len) };
        sock.bind(&addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(sock)
    })?
}

/// Frames from `sock` that `keep` accepts, until `want` of them or `timeout`.
pub fn collect(
    sock: &Socket,
    timeout: Duration,
    mut keep: impl FnMut(&[u8]) -> bool,
    want: usize,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while Instant::now() < deadline && frames.len() < want {
        match sock.recv(&mut buf) {
            Ok(n) => {
                // SAFETY: recv initialised the first n bytes.
                let frame: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if keep(&frame) {
                    frames.push(frame);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("capture failed: {e}"),
        }
    }
    frames
}

/// The MAC of `ifname` in `ns`.
pub fn mac_of(ns: &Ns, ifname: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out)?;
    let text = v[0]["address"].as_str().context("no address")?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()?;
    <[u8; 6]>::try_from(bytes.as_slice()).map_err(|_| anyhow::anyhow!("bad MAC {text}"))
}
