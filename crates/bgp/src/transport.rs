//! Socket options for BGP transport on Linux: TCP MD5 signatures (RFC 2385, per peer address or,
//! on a listener, per prefix), the outgoing TTL / hop limit (eBGP multihop), the bound interface
//! and IPv6-only listeners. Applied to a socket before `connect` or `listen`.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// `TCP_MD5SIG_MAXKEYLEN` in linux/tcp.h.
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `TCP_MD5SIG` in linux/tcp.h.
const TCP_MD5SIG: libc::c_int = 14;
/// `TCP_MD5SIG_EXT` in linux/tcp.h: honours `flags`, e.g. a key for a whole prefix.
const TCP_MD5SIG_EXT: libc::c_int = 32;
/// `TCP_MD5SIG_FLAG_PREFIX` in linux/tcp.h.
const TCP_MD5SIG_FLAG_PREFIX: u8 = 1;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

fn sockaddr_of(peer: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_storage and both are POD.
            unsafe {
                std::ptr::write(
                    std::ptr::addr_of_mut!(storage).cast::<libc::sockaddr_in>(),
                    sin,
                );
            }
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 is smaller than sockaddr_storage and both are POD.
            unsafe {
                std::ptr::write(
                    std::ptr::addr_of_mut!(storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                );
            }
        }
    }
    storage
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option too large"))?;
    // SAFETY: `value` points to `len` readable bytes for the duration of the call.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets (or, with an empty password, clears) the TCP MD5 key for `peer` on socket `fd`. The
/// socket's family must match the peer's. Keys longer than [`MD5_MAX_KEY_LEN`] are an error.
pub fn set_md5(fd: RawFd, peer: IpAddr, password: &[u8]) -> io::Result<()> {
    set_md5_sig(fd, peer, None, password)
}

/// Like [`set_md5`] for every address in `peer/prefix_len` (dynamic neighbours on a listener).
pub fn set_md5_prefix(fd: RawFd, peer: IpAddr, prefix_len: u8, password: &[u8]) -> io::Result<()> {
    set_md5_sig(fd, peer, Some(prefix_len), password)
}

fn set_md5_sig(fd: RawFd, peer: IpAddr, prefix: Option<u8>, password: &[u8]) -> io::Result<()> {
    if password.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 key is {} bytes, at most {MD5_MAX_KEY_LEN} allowed",
                password.len()
            ),
        ));
    }
    let mut key = [0u8; MD5_MAX_KEY_LEN];
    key.get_mut(..password.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key too long"))?
        .copy_from_slice(password);
    let sig = TcpMd5Sig {
        addr: sockaddr_of(peer),
        flags: if prefix.is_some() {
            TCP_MD5SIG_FLAG_PREFIX
        } else {
            0
        },
        prefixlen: prefix.unwrap_or(0),
        // Fits: at most 80.
        keylen: password.len() as u16,
        ifindex: 0,
        key,
    };
    let option = if prefix.is_some() {
        TCP_MD5SIG_EXT
    } else {
        TCP_MD5SIG
    };
    setsockopt(fd, libc::IPPROTO_TCP, option, &sig)
}

/// Binds the socket to one interface (`SO_BINDTODEVICE`).
pub fn set_bind_device(fd: RawFd, ifname: &str) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    let len = libc::socklen_t::try_from(name.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"))?;
    // SAFETY: `name` points to `len` readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes an IPv6 socket accept IPv6 only, so an IPv4 listener can share its port.
pub fn set_v6_only(fd: RawFd) -> io::Result<()> {
    setsockopt(
        fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        &libc::c_int::from(1u8),
    )
}

/// Sets the TTL (IPv4) or unicast hop limit (IPv6) of packets sent on `fd`.
pub fn set_ttl(fd: RawFd, ipv6: bool, ttl: u8) -> io::Result<()> {
    let v = libc::c_int::from(ttl);
    if ipv6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn struct_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, flags), 128);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, keylen), 130);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, ifindex), 132);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, key), 136);
    }

    #[tokio::test]
    async fn sets_key_and_ttl_and_rejects_long_keys() {
        let s4 = tokio::net::TcpSocket::new_v4().unwrap();
        let fd = s4.as_raw_fd();
        set_md5(fd, "198.51.100.1".parse().unwrap(), b"s3cret").unwrap();
        set_md5(fd, "198.51.100.1".parse().unwrap(), &[b'k'; 80]).unwrap();
        let e = set_md5(fd, "198.51.100.1".parse().unwrap(), &[b'k'; 81]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        set_ttl(fd, false, 2).unwrap();
        set_md5_prefix(fd, "198.51.100.0".parse().unwrap(), 24, b"s3cret").unwrap();
        set_bind_device(fd, "lo").unwrap();
        assert!(set_bind_device(fd, "no-such-interface-name-at-all").is_err());
        if let Ok(s6) = tokio::net::TcpSocket::new_v6() {
            set_md5(s6.as_raw_fd(), "2001:db8:1::1".parse().unwrap(), b"s3cret").unwrap();
            set_ttl(s6.as_raw_fd(), true, 255).unwrap();
        }
    }

    /// A listener with `IP_MINTTL` 255 (what GTSM peers set) drops SYNs with the default TTL and
    /// accepts them with TTL 255.
    #[tokio::test]
    async fn ttl_255_passes_a_min_ttl_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MINTTL,
            &libc::c_int::from(255u8),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = |ttl: Option<u8>| async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            if let Some(ttl) = ttl {
                set_ttl(s.as_raw_fd(), false, ttl).unwrap();
            }
            tokio::time::timeout(std::time::Duration::from_millis(1500), s.connect(addr)).await
        };
        assert!(connect(None).await.is_err(), "default TTL got through");
        assert!(connect(Some(255)).await.unwrap().is_ok());
    }
}
