//! External IPAM over gRPC: the allocator's client
//! (`purelb_allocator::external`) against the real reference sidecar binary
//! (`ipam-sidecar`) on a Unix socket in a temp dir, plus a labelled test
//! double for answers a conforming sidecar never gives. No Kubernetes.

use std::net::IpAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use purelb_allocator::external::proto::{self, ipam_server};
use purelb_allocator::external::{
    Code, Families, InvalidResponse, ReleaseTarget, RpcObserver, SidecarClient, SidecarConnections,
    SidecarError, Stats, code_name, method,
};

// ------------------------------------------------------------------ helpers

/// A running `ipam-sidecar` process; killed on drop.
struct SidecarProcess {
    child: Child,
    log: PathBuf,
}

impl SidecarProcess {
    fn start(dir: &Path, pools: &[&str], state: Option<&Path>) -> Self {
        Self::start_on(&dir.join("ipam.sock"), dir, pools, state)
    }

    fn start_on(socket: &Path, dir: &Path, pools: &[&str], state: Option<&Path>) -> Self {
        let log = dir.join(format!(
            "sidecar-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipam-sidecar"));
        cmd.arg("--socket").arg(socket);
        for p in pools {
            cmd.arg("--pool").arg(p);
        }
        if let Some(state) = state {
            cmd.arg("--state").arg(state);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("spawn ipam-sidecar");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The file appears at bind(2), a moment before listen(2): wait
            // until a connection is accepted.
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "ipam-sidecar exited early ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ipam-sidecar never bound {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, log }
    }

    /// SIGTERM, then wait (bounded) for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ipam-sidecar ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| ip(s)).collect()
}

fn code(e: &SidecarError) -> Code {
    e.code().expect("a gRPC code")
}

/// One observation: (socket, method, code name).
type Seen = (String, &'static str, &'static str);

/// Collects observations.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn observer(&self) -> RpcObserver {
        let seen = self.0.clone();
        Arc::new(move |o| {
            seen.lock()
                .unwrap()
                .push((o.socket.to_owned(), o.method, code_name(o.code)));
        })
    }

    fn take(&self) -> Vec<(&'static str, &'static str)> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|(_, m, c)| (m, c))
            .collect()
    }
}

fn client(socket: &Path) -> SidecarClient {
    SidecarClient::connect_lazy(socket.to_str().unwrap())
}

// ------------------------------------------------------------------ families

#[tokio::test]
async fn allocates_v4_v6_and_dual() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(
        dir.path(),
        &[
            "v4=192.0.2.10-192.0.2.12",
            "v6=2001:db8::/126",
            "dual=198.51.100.0/30,2001:db8:1::5-2001:db8:1::7",
        ],
        None,
    );
    let c = client(&dir.path().join("ipam.sock"));

    let got = c.allocate("v4", "ns/a", "", Families::IPV4).await.unwrap();
    assert_eq!(got, ips(&["192.0.2.10"]));
    let got = c.allocate("v4", "ns/b", "", Families::IPV4).await.unwrap();
    assert_eq!(got, ips(&["192.0.2.11"]));

    let got = c.allocate("v6", "ns/a", "", Families::IPV6).await.unwrap();
    assert_eq!(got, ips(&["2001:db8::"]));

    let got = c
        .allocate("dual", "ns/a", "", Families::DUAL)
        .await
        .unwrap();
    assert_eq!(got, ips(&["198.51.100.0", "2001:db8:1::5"]));

    // No family wanted: the sidecar picks (its first range's family).
    let got = c
        .allocate("dual", "ns/b", "", Families::default())
        .await
        .unwrap();
    assert_eq!(got, ips(&["198.51.100.1"]));

    // A family the pool has no range for is a bad request, not retryable.
    let e = c
        .allocate("v4", "ns/c", "", Families::DUAL)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    assert!(!e.is_retryable());
    // ... and it took nothing: the v4 address is still free.
    let got = c.allocate("v4", "ns/c", "", Families::IPV4).await.unwrap();
    assert_eq!(got, ips(&["192.0.2.12"]));
}

#[tokio::test]
async fn allocate_is_idempotent_and_adds_a_missing_family() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["p=10.1.0.0/29,fd00:1::/125"], None);
    let c = client(&dir.path().join("ipam.sock"));

    let first = c.allocate("p", "ns/a", "", Families::IPV4).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.allocate("p", "ns/a", "", Families::IPV4).await.unwrap(),
            first
        );
    }
    // Another service gets another address.
    let other = c.allocate("p", "ns/b", "", Families::IPV4).await.unwrap();
    assert_ne!(other, first);
    // The same service turning dual-stack keeps its IPv4 and gains an IPv6.
    let dual = c.allocate("p", "ns/a", "", Families::DUAL).await.unwrap();
    assert_eq!(dual, vec![first[0], ip("fd00:1::")]);
    assert_eq!(c.stats("p").await.unwrap().in_use(), 3);
}

#[tokio::test]
async fn sharing_key_gives_the_same_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["p=10.2.0.0/29,fd00:2::/125"], None);
    let c = client(&dir.path().join("ipam.sock"));

    let a = c
        .allocate("p", "ns/a", "web", Families::DUAL)
        .await
        .unwrap();
    let b = c
        .allocate("p", "ns/b", "web", Families::DUAL)
        .await
        .unwrap();
    assert_eq!(a, b);
    let other_key = c.allocate("p", "ns/c", "db", Families::DUAL).await.unwrap();
    let no_key = c.allocate("p", "ns/d", "", Families::DUAL).await.unwrap();
    assert_ne!(other_key, a);
    assert_ne!(no_key, a);
    assert_ne!(no_key, other_key);
    let s = c.stats("p").await.unwrap();
    assert_eq!((s.in_use_v4, s.in_use_v6), (3, 3));

    // The shared address stays in use until its last user lets go.
    c.release("p", "ns/a", ReleaseTarget::All).await.unwrap();
    assert_eq!(c.stats("p").await.unwrap().in_use_v4, 3);
    c.release("p", "ns/b", ReleaseTarget::All).await.unwrap();
    assert_eq!(c.stats("p").await.unwrap().in_use_v4, 2);
}

#[tokio::test]
async fn explicit_selector() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["p=10.3.0.0/29"], None);
    let c = client(&dir.path().join("ipam.sock"));

    let want = ips(&["10.3.0.5"]);
    assert_eq!(
        c.allocate_explicit("p", "ns/a", "", &want).await.unwrap(),
        want
    );
    assert_eq!(
        c.allocate_explicit("p", "ns/a", "", &want).await.unwrap(),
        want
    );
    let e = c
        .allocate_explicit("p", "ns/b", "", &want)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::AlreadyExists, "{e}");
    assert!(!e.is_retryable());
    let e = c
        .allocate_explicit("p", "ns/b", "", &ips(&["10.9.9.9"]))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    // Shared under a key: a second service may ask for the same address.
    let shared = ips(&["10.3.0.6"]);
    c.allocate_explicit("p", "ns/c", "k", &shared)
        .await
        .unwrap();
    assert_eq!(
        c.allocate_explicit("p", "ns/d", "k", &shared)
            .await
            .unwrap(),
        shared
    );
    // The family selector skips explicitly taken addresses.
    let next = c.allocate("p", "ns/e", "", Families::IPV4).await.unwrap();
    assert_eq!(next, ips(&["10.3.0.0"]));
}

// ------------------------------------------------------------------ release

#[tokio::test]
async fn release_one_address_or_all() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["p=10.4.0.0/30,fd00:4::/126"], None);
    let c = client(&dir.path().join("ipam.sock"));

    let dual = c.allocate("p", "ns/a", "", Families::DUAL).await.unwrap();
    assert_eq!(dual, ips(&["10.4.0.0", "fd00:4::"]));

    c.release("p", "ns/a", ReleaseTarget::Ip(dual[1]))
        .await
        .unwrap();
    let s = c.cached_stats("p").unwrap();
    assert_eq!((s.in_use_v4, s.in_use_v6), (1, 0));
    // Still holds its IPv4; asking again gives it back plus a (new) IPv6.
    assert_eq!(
        c.allocate("p", "ns/a", "", Families::DUAL).await.unwrap(),
        dual
    );

    c.release("p", "ns/a", ReleaseTarget::All).await.unwrap();
    let s = c.cached_stats("p").unwrap();
    assert_eq!(s.in_use(), 0);

    // Idempotent: again, an address never held, an unknown service or pool.
    c.release("p", "ns/a", ReleaseTarget::All).await.unwrap();
    c.release("p", "ns/a", ReleaseTarget::Ip(ip("10.4.0.3")))
        .await
        .unwrap();
    c.release("p", "ns/nobody", ReleaseTarget::All)
        .await
        .unwrap();
    c.release("gone", "ns/a", ReleaseTarget::All).await.unwrap();

    // A released address is free again.
    assert_eq!(
        c.allocate("p", "ns/b", "", Families::IPV4).await.unwrap(),
        ips(&["10.4.0.0"])
    );
}

// ------------------------------------------------------------------ errors

#[tokio::test]
async fn exhaustion_is_resource_exhausted_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["small=10.5.0.1-10.5.0.2"], None);
    let rec = Recorder::default();
    let c = client(&dir.path().join("ipam.sock")).with_observer(Some(rec.observer()));

    c.allocate("small", "ns/a", "", Families::IPV4)
        .await
        .unwrap();
    c.allocate("small", "ns/b", "", Families::IPV4)
        .await
        .unwrap();
    let e = c
        .allocate("small", "ns/c", "", Families::IPV4)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
    // gRPC ResourceExhausted from a sidecar is requeued (unlike a
    // LocalPool's exhaustion, which is not).
    assert!(e.is_retryable());
    assert_eq!(e.method(), method::ALLOCATE);
    assert!(e.to_string().contains("ResourceExhausted"), "{e}");

    // Space frees up ⇒ the retry succeeds.
    c.release("small", "ns/a", ReleaseTarget::All)
        .await
        .unwrap();
    assert_eq!(
        c.allocate("small", "ns/c", "", Families::IPV4)
            .await
            .unwrap(),
        ips(&["10.5.0.1"])
    );

    let seen = rec.take();
    assert_eq!(
        seen,
        [
            (method::ALLOCATE, "OK"),
            (method::STATS, "OK"),
            (method::ALLOCATE, "OK"),
            (method::STATS, "OK"),
            (method::ALLOCATE, "ResourceExhausted"),
            (method::RELEASE, "OK"),
            (method::STATS, "OK"),
            (method::ALLOCATE, "OK"),
            (method::STATS, "OK"),
        ]
    );
}

#[tokio::test]
async fn unknown_pool_and_bad_requests_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["p=10.6.0.0/30"], None);
    let c = client(&dir.path().join("ipam.sock"));

    let e = c
        .allocate("nope", "ns/a", "", Families::IPV4)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("unknown pool"), "{e}");

    let e = c.stats("nope").await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    let e = c
        .allocate("p", "no-namespace", "", Families::IPV4)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
}

#[tokio::test]
async fn sidecar_down_is_unavailable_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let socket = dir.path().join("nobody-home.sock");
    let c = client(&socket).with_observer(Some(rec.observer()));

    let e = c
        .allocate("p", "ns/a", "", Families::IPV4)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unavailable, "{e}");
    assert!(e.is_retryable());
    let e = c
        .release("p", "ns/a", ReleaseTarget::All)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unavailable, "{e}");
    let e = c.stats("p").await.unwrap_err();
    assert_eq!(code(&e), Code::Unavailable, "{e}");
    assert_eq!(
        rec.take(),
        [
            (method::ALLOCATE, "Unavailable"),
            (method::RELEASE, "Unavailable"),
            (method::STATS, "Unavailable"),
        ]
    );

    // The same lazily connected client works once a sidecar shows up.
    let _sidecar = SidecarProcess::start_on(&socket, dir.path(), &["p=10.7.0.0/30"], None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match c.allocate("p", "ns/a", "", Families::IPV4).await {
            Ok(got) => break got,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(got, ips(&["10.7.0.0"]));
}

// ------------------------------------------------------------------ restart

// Multi-threaded: `terminate` blocks this thread while the client's
// connection must still answer the sidecar's graceful GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_allocations_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let socket = dir.path().join("ipam.sock");
    let pools = ["p=10.8.0.0/29,fd00:8::/125", "q=10.8.1.0/30"];

    let mut sidecar = SidecarProcess::start(dir.path(), &pools, Some(&state));
    let c = client(&socket);
    let a = c.allocate("p", "ns/a", "k", Families::DUAL).await.unwrap();
    let b = c.allocate("p", "ns/b", "", Families::IPV4).await.unwrap();
    let q = c.allocate("q", "ns/a", "", Families::IPV4).await.unwrap();
    c.allocate("q", "ns/z", "", Families::IPV4).await.unwrap();
    c.release("q", "ns/z", ReleaseTarget::All).await.unwrap();

    // Clean shutdown removes the socket.
    let status = sidecar.terminate();
    assert!(status.success(), "{status}: {}", sidecar.log());
    assert!(!socket.exists(), "socket left behind");
    drop(sidecar);

    // Something leaves a stale socket behind; the new sidecar copes.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(is_socket(&socket));

    let _sidecar = SidecarProcess::start(dir.path(), &pools, Some(&state));
    // Same client, same (reconnecting) channel; retry while it reconnects.
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        match c.allocate("p", "ns/a", "k", Families::DUAL).await {
            Ok(v) => break v,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(again, a);
    assert_eq!(
        c.allocate("p", "ns/b", "", Families::IPV4).await.unwrap(),
        b
    );
    // The sharing key survived too.
    assert_eq!(
        c.allocate("p", "ns/c", "k", Families::DUAL).await.unwrap(),
        a
    );
    assert_eq!(
        c.allocate("q", "ns/a", "", Families::IPV4).await.unwrap(),
        q
    );
    let s = c.stats("q").await.unwrap();
    assert_eq!(s.in_use_v4, 1, "the released address stayed released");

    // The state file is plain JSON.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["pools"]["p"]["ns/a"]["sharing_key"], "k");
}

/// A client that holds a connection but cannot answer the graceful GOAWAY
/// (its single-threaded runtime is blocked) does not keep the sidecar alive:
/// the drain is bounded.
#[tokio::test]
async fn sigterm_exits_even_with_a_stuck_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = SidecarProcess::start(dir.path(), &["p=10.11.0.0/30"], None);
    let c = client(&dir.path().join("ipam.sock"));
    c.allocate("p", "ns/a", "", Families::IPV4).await.unwrap();
    let start = Instant::now();
    let status = sidecar.terminate(); // blocks this (only) runtime thread
    assert!(status.success(), "{status}: {}", sidecar.log());
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(!dir.path().join("ipam.sock").exists());
}

#[test]
fn sidecar_flag_errors_name_the_flag() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipam-sidecar"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(run(&["--pool", "p=10.0.0.0/33"]).contains("--pool"));
    assert!(run(&["--socket", "/tmp/x.sock"]).contains("--pool"));
    assert!(run(&["--pool", "p=10.0.0.0/30", "--frobnicate"]).contains("--frobnicate"));
    let help = Command::new(env!("CARGO_BIN_EXE_ipam-sidecar"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8(help.stdout).unwrap().contains("--state"));
}

// ------------------------------------------------------------------ stats

#[tokio::test]
async fn stats_numbers_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(
        dir.path(),
        &["p=10.9.0.0/28,10.9.1.0-10.9.1.3,fd00:9::/64"],
        None,
    );
    let socket = dir.path().join("ipam.sock");
    let rec = Recorder::default();
    let conns = SidecarConnections::with_options(Some(rec.observer()), Duration::from_secs(5));
    let c = conns.client(socket.to_str().unwrap());

    assert_eq!(c.cached_stats("p"), None);
    // Publishing with an empty cache asks the sidecar once ...
    let s = c.stats_cached_or_fetch("p").await.unwrap();
    assert_eq!(
        s,
        Stats {
            in_use_v4: 0,
            in_use_v6: 0,
            size_v4: 20,
            // A /64 has 2^64 addresses, one more than u64 holds: saturated.
            size_v6: u64::MAX,
            has_known_capacity: true,
            display_addresses: vec![
                "10.9.0.0/28".into(),
                "10.9.1.0-10.9.1.3".into(),
                "fd00:9::/64".into()
            ],
        }
    );
    // ... and then reads the cache.
    c.stats_cached_or_fetch("p").await.unwrap();
    assert_eq!(rec.take(), [(method::STATS, "OK")]);

    // Allocate and release refresh the cache of that pool.
    c.allocate("p", "ns/a", "", Families::DUAL).await.unwrap();
    let s = c.cached_stats("p").unwrap();
    assert_eq!((s.in_use_v4, s.in_use_v6), (1, 1));
    assert_eq!(
        rec.take(),
        [(method::ALLOCATE, "OK"), (method::STATS, "OK")]
    );

    // The cache lives with the per-socket client: another group's client for
    // the same socket sees it; a change made behind its back does not show
    // until the next refresh.
    let same = conns.client(socket.to_str().unwrap());
    assert_eq!(same.cached_stats("p").unwrap().in_use(), 2);
    assert_eq!(conns.sockets(), [socket.to_str().unwrap().to_owned()]);
    let outsider = client(&socket);
    outsider
        .allocate("p", "ns/b", "", Families::IPV4)
        .await
        .unwrap();
    assert_eq!(c.cached_stats("p").unwrap().in_use_v4, 1, "stale by design");
    assert_eq!(c.stats_cached_or_fetch("p").await.unwrap().in_use_v4, 1);
    assert_eq!(c.stats("p").await.unwrap().in_use_v4, 2);
    assert_eq!(c.cached_stats("p").unwrap().in_use_v4, 2);

    c.release("p", "ns/a", ReleaseTarget::All).await.unwrap();
    let s = c.cached_stats("p").unwrap();
    assert_eq!((s.in_use_v4, s.in_use_v6), (1, 0));

    // A failed refresh keeps the old numbers (here: unknown pool ⇒ error).
    assert!(c.stats("nope").await.is_err());
    assert_eq!(c.cached_stats("nope"), None);
    c.forget_stats("p");
    assert_eq!(c.cached_stats("p"), None);
}

#[tokio::test]
async fn concurrent_allocations_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = SidecarProcess::start(dir.path(), &["p=10.10.0.0/27"], None);
    let conns = SidecarConnections::new();
    let c = conns.client(dir.path().join("ipam.sock").to_str().unwrap());

    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.allocate("p", &format!("ns/svc{i}"), "", Families::IPV4)
                    .await
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap().unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 24);
    assert_eq!(c.stats("p").await.unwrap().in_use_v4, 24);
}

// ------------------------------------------------------------------ wire

/// The wire format is upstream's: field numbers and types, checked byte by
/// byte, and the full method names.
#[test]
fn wire_format_matches_upstream() {
    let req = proto::AllocateRequest {
        pool: "p".into(),
        service: "n/s".into(),
        sharing_key: "k".into(),
        selector: Some(proto::allocate_request::Selector::Families(
            proto::FamilyRequest {
                want_ipv4: true,
                want_ipv6: true,
            },
        )),
    };
    assert_eq!(
        req.encode_to_vec(),
        [
            0x0a, 1, b'p', // 1: pool
            0x12, 3, b'n', b'/', b's', // 2: service
            0x1a, 1, b'k', // 3: sharing_key
            0x2a, 4, 0x08, 1, 0x10, 1, // 5: families {1: v4, 2: v6}
        ]
    );
    let explicit = proto::AllocateRequest {
        selector: Some(proto::allocate_request::Selector::Explicit(
            proto::ExplicitIPs {
                ips: vec!["1.2.3.4".into()],
            },
        )),
        ..Default::default()
    };
    assert_eq!(
        explicit.encode_to_vec(),
        [0x22, 9, 0x0a, 7, b'1', b'.', b'2', b'.', b'3', b'.', b'4']
    );
    let resp = proto::AllocateResponse {
        ips: vec![proto::AllocatedIp { ip: "::1".into() }],
    };
    assert_eq!(resp.encode_to_vec(), [0x0a, 5, 0x0a, 3, b':', b':', b'1']);

    let all = proto::ReleaseRequest {
        pool: "p".into(),
        service: "n/s".into(),
        target: Some(proto::release_request::Target::All(true)),
    };
    assert_eq!(
        all.encode_to_vec(),
        [0x0a, 1, b'p', 0x12, 3, b'n', b'/', b's', 0x20, 1]
    );
    let one = proto::ReleaseRequest {
        target: Some(proto::release_request::Target::Ip("::1".into())),
        ..Default::default()
    };
    assert_eq!(one.encode_to_vec(), [0x1a, 3, b':', b':', b'1']);
    assert_eq!(proto::ReleaseResponse {}.encode_to_vec(), [0u8; 0]);

    let stats = proto::StatsResponse {
        in_use_v4: 1,
        in_use_v6: 2,
        size_v4: 3,
        size_v6: 4,
        has_known_capacity: true,
        display_addresses: vec!["x".into()],
    };
    assert_eq!(
        stats.encode_to_vec(),
        [0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4, 0x28, 1, 0x32, 1, b'x']
    );
    assert_eq!(
        proto::StatsRequest { pool: "p".into() }.encode_to_vec(),
        [0x0a, 1, b'p']
    );

    assert_eq!(method::ALLOCATE, "/purelb.ipam.v1.IPAM/Allocate");
    assert_eq!(method::RELEASE, "/purelb.ipam.v1.IPAM/Release");
    assert_eq!(method::STATS, "/purelb.ipam.v1.IPAM/Stats");
}

// ------------------------------------------------------------------ test double

/// TEST DOUBLE, not a sidecar: answers every Allocate with the configured
/// addresses (even zero, or seventeen, or garbage) after an optional delay,
/// so the client's response checks and deadline can be exercised. Release and
/// Stats answer OK.
struct FakeSidecar {
    answer: Vec<String>,
    delay: Duration,
}

#[tonic::async_trait]
impl ipam_server::Ipam for FakeSidecar {
    async fn allocate(
        &self,
        _request: tonic::Request<proto::AllocateRequest>,
    ) -> Result<tonic::Response<proto::AllocateResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        Ok(tonic::Response::new(proto::AllocateResponse {
            ips: self
                .answer
                .iter()
                .map(|ip| proto::AllocatedIp { ip: ip.clone() })
                .collect(),
        }))
    }

    async fn release(
        &self,
        _request: tonic::Request<proto::ReleaseRequest>,
    ) -> Result<tonic::Response<proto::ReleaseResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        Ok(tonic::Response::new(proto::ReleaseResponse {}))
    }

    async fn stats(
        &self,
        _request: tonic::Request<proto::StatsRequest>,
    ) -> Result<tonic::Response<proto::StatsResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::StatsResponse::default()))
    }
}

/// Serves a [`FakeSidecar`] on `socket` until the test's runtime ends.
fn serve_fake(socket: &Path, answer: &[&str], delay: Duration) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let fake = FakeSidecar {
        answer: answer.iter().map(|s| (*s).to_owned()).collect(),
        delay,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ipam_server::IpamServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
}

#[tokio::test]
async fn response_validation_against_a_test_double() {
    let dir = tempfile::tempdir().unwrap();
    let seventeen: Vec<String> = (1..=17).map(|i| format!("10.0.0.{i}")).collect();
    let seventeen: Vec<&str> = seventeen.iter().map(String::as_str).collect();
    let cases: [(&str, &[&str], Option<InvalidResponse>); 5] = [
        ("zero", &[], Some(InvalidResponse::NoAddresses)),
        (
            "seventeen",
            &seventeen,
            Some(InvalidResponse::TooManyAddresses(17)),
        ),
        (
            "garbage",
            &["10.0.0.1", "not-an-ip"],
            Some(InvalidResponse::UnparseableAddress("not-an-ip".into())),
        ),
        ("sixteen", &seventeen[..16], None),
        // Returned as-is: no family check, as upstream.
        ("odd-family", &["fd00::1"], None),
    ];
    let rec = Recorder::default();
    for (name, answer, want) in cases {
        let socket = dir.path().join(format!("{name}.sock"));
        serve_fake(&socket, answer, Duration::ZERO);
        let c = client(&socket).with_observer(Some(rec.observer()));
        let got = c.allocate("p", "ns/a", "", Families::IPV4).await;
        match want {
            Some(problem) => {
                let e = got.unwrap_err();
                assert_eq!(
                    e,
                    SidecarError::InvalidResponse {
                        socket: socket.to_str().unwrap().to_owned(),
                        method: method::ALLOCATE,
                        problem,
                    },
                    "{name}"
                );
                assert!(!e.is_retryable(), "{name}");
                assert_eq!(e.code(), None);
                // The RPC itself was OK (that is what the metric shows), and
                // no stats refresh follows a rejected answer.
                assert_eq!(rec.take(), [(method::ALLOCATE, "OK")], "{name}");
            }
            None => {
                let got = got.unwrap();
                assert_eq!(got.len(), answer.len(), "{name}");
                assert_eq!(
                    rec.take(),
                    [(method::ALLOCATE, "OK"), (method::STATS, "OK")],
                    "{name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn deadline_is_deadline_exceeded_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("slow.sock");
    serve_fake(&socket, &["10.0.0.1"], Duration::from_secs(30));
    let rec = Recorder::default();
    let c = client(&socket)
        .with_observer(Some(rec.observer()))
        .with_timeout(Duration::from_millis(300));
    assert_eq!(c.timeout(), Duration::from_millis(300));

    let start = Instant::now();
    let e = c
        .allocate("p", "ns/a", "", Families::IPV4)
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    assert!(e.is_retryable());
    let e = c
        .release("p", "ns/a", ReleaseTarget::All)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    assert_eq!(
        rec.take(),
        [
            (method::ALLOCATE, "DeadlineExceeded"),
            (method::RELEASE, "DeadlineExceeded"),
        ]
    );
}
