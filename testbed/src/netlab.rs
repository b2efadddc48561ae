//! Small networks of Linux network namespaces for integration tests.
//!
//! A [`Lab`] owns namespaces ("nodes" and "routers"), veth links between
//! them, optional L2 segments ([`Lan`]), management links to the host (so a
//! node can reach the test's kube-apiserver), and routing daemons (FRR,
//! BIRD, GoBGP) started inside namespaces. Dropping the lab — also while a
//! failing test unwinds — kills every process it started and removes
//! namespaces, host links and its temp dir. Namespaces left behind by a
//! SIGKILLed test process are removed by the next [`Lab::new`] on the
//! machine.
//!
//! When the lab is dropped during a panic (or with env `NETLAB_LOGS=1`) it
//! prints the tail of every daemon's log; with `NETLAB_KEEP=1` it keeps its
//! temp dir (configs, sockets, full logs).
//!
//! Everything here needs root; start privileged tests with
//! `if !testbed::netlab::require_root() { return; }`.
//!
//! All calls block (they run `ip`, `nft`, `vtysh` ...). From an async test,
//! call them where blocking is fine (`tokio::task::spawn_blocking`, or a
//! multi-thread runtime when nothing else must progress meanwhile).
//!
//! ```no_run
//! use std::time::Duration;
//! use testbed::netlab::{Lab, LinkSpec};
//! # fn main() -> anyhow::Result<()> {
//! let lab = Lab::new()?;
//! let r1 = lab.router("r1")?;
//! let n1 = lab.node("n1")?;
//! lab.link(&r1, &n1, LinkSpec::new().v4("198.51.100.1/24", "198.51.100.2/24"))?;
//! lab.add_fake_dummy(&n1, "kube-lb0")?;
//! let frr = lab.frr(&r1, "router bgp 65001\n bgp router-id 198.51.100.1\n")?;
//! let mgmt = lab.management_link(&n1)?; // n1 reaches the host at mgmt.host_addr()
//! n1.exec(&["ip", "addr"])?;
//! frr.wait_established("198.51.100.2", Duration::from_secs(30))?;
//! # Ok(()) }
//! ```

mod capture;
pub(crate) mod cmd;
mod daemons;
pub(crate) mod host;

pub use capture::{capture, collect, mac_of};
pub use cmd::CmdOutput;
pub use daemons::{Bird, BirdProtocol, Frr, Gobgp, parse_bird_protocols, rib_next_hops};

use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// For privileged tests: `true` when running as root. Otherwise prints a
/// skip message and returns `false` — unless env `CI` is `"true"`, where a
/// skipped privileged test is a failure, so it panics.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("netlab tests need root, and CI=true forbids skipping them");
    }
    eprintln!("SKIPPED: netlab test needs root (run as root, or under CI=true to fail instead)");
    false
}

/// Polls `cond` (every 100 ms) until it returns `Ok(true)`. An `Err` from
/// `cond` counts as "not yet" (daemons refuse connections while starting);
/// the last one is part of the timeout error.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    wait_for(timeout, what, || Ok(cond()?.then_some(())))
}

/// Polls `f` (every 50 ms) until it returns `Ok(Some(v))`, and returns `v`.
/// Errors count as "not yet", as in [`wait_until`].
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);
static MGMT_SEQ: AtomicU32 = AtomicU32::new(0);

/// What a namespace is for. Routers forward IPv4/IPv6; nodes do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Node,
    Router,
    /// Holds the bridge of a [`Lan`].
    Lan,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Router => "router",
            Role::Lan => "lan",
        }
    }
}

struct ProcEntry {
    pid: u32,
    name: String,
    netns: String,
    log: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
    /// The write end of its stdin, for processes that exit when it closes.
    _lifeline: Option<ChildStdin>,
}

impl ProcEntry {
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.exit = Some(st);
        }
        self.exit
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    names: Vec<String>,
    netns: Vec<String>,
    procs: Vec<ProcEntry>,
    host_links: Vec<String>,
    if_seq: HashMap<String, u32>,
}

struct Shared {
    prefix: String,
    dir: PathBuf,
    tempdir: Mutex<Option<tempfile::TempDir>>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not stop the teardown.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_if(&self, netns: &str, stem: &str) -> String {
        let mut st = self.state();
        let n = st.if_seq.entry(format!("{netns}/{stem}")).or_insert(0);
        let name = format!("{stem}{n}");
        *n += 1;
        name
    }
}

/// A lab: the namespaces, links and processes of one test. See the module
/// docs. Dropping it tears everything down.
pub struct Lab {
    shared: Arc<Shared>,
}

impl Lab {
    /// Creates an empty lab (after removing what dead test processes left
    /// behind). Fails when not root.
    pub fn new() -> Result<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("netlab needs root");
        }
        host::init_process()?;
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{}{}-{}", host::NS_PREFIX, std::process::id(), seq);
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .context("cannot create the lab's temp dir")?;
        Ok(Lab {
            shared: Arc::new(Shared {
                prefix,
                dir: tempdir.path().to_owned(),
                tempdir: Mutex::new(Some(tempdir)),
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The lab's temp dir (daemon configs, sockets and logs live below it,
    /// one subdirectory per namespace). Removed when the lab is dropped,
    /// unless env `NETLAB_KEEP=1`.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The `plb-<pid>-<n>` prefix of this lab's namespace names.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// A namespace for a (Kubernetes) node: `lo` up, IPv6 DAD off, no
    /// forwarding.
    pub fn node(&self, name: &str) -> Result<Ns> {
        self.namespace(name, Role::Node)
    }

    /// A namespace for a router: like a node, with IPv4/IPv6 forwarding on.
    pub fn router(&self, name: &str) -> Result<Ns> {
        self.namespace(name, Role::Router)
    }

    /// Creates namespace `plb-<pid>-<lab>-<role>-<name>`. `name` (letters,
    /// digits, `-`) must be unique in the lab.
    pub fn namespace(&self, name: &str, role: Role) -> Result<Ns> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("bad namespace name {name:?}: use letters, digits, '-' and '_'");
        }
        let netns = format!("{}-{}-{}", self.shared.prefix, role.as_str(), name);
        {
            let mut st = self.shared.state();
            if st.closed {
                bail!("lab already torn down");
            }
            if st.names.iter().any(|n| n == name) {
                bail!("namespace {name:?} already exists in this lab");
            }
            st.names.push(name.to_owned());
        }
        {
            // `ip netns add` races with itself when it first makes
            // /run/netns a shared mount: serialise it host-wide.
            let _guard = host::global_lock()?;
            cmd::host(&["ip", "netns", "add", &netns])?;
        }
        self.shared.state().netns.push(netns.clone());
        let ns = Ns {
            name: name.to_owned(),
            netns,
            role,
            shared: self.shared.clone(),
        };
        std::fs::create_dir_all(ns.dir())
            .with_context(|| format!("cannot create {}", ns.dir().display()))?;
        let fwd = if role == Role::Router { "1" } else { "0" };
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.dad_transmits=0",
            "net.ipv6.conf.default.dad_transmits=0",
            &format!("net.ipv4.ip_forward={fwd}"),
            &format!("net.ipv6.conf.all.forwarding={fwd}"),
        ])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair between `a` and `b` (interfaces `eth<k>`, numbered per
    /// namespace in creation order), with the addresses of `spec`, both
    /// ends up.
    pub fn link(&self, a: &Ns, b: &Ns, spec: LinkSpec) -> Result<Link> {
        let a_if = self.shared.next_if(&a.netns, "eth");
        let b_if = self.shared.next_if(&b.netns, "eth");
        a.ip(&[
            "link", "add", &a_if, "type", "veth", "peer", "name", &b_if, "netns", &b.netns,
        ])?;
        for addr in &spec.a {
            a.add_addr(&a_if, addr)?;
        }
        for addr in &spec.b {
            b.add_addr(&b_if, addr)?;
        }
        a.ip(&["link", "set", &a_if, "up"])?;
        b.ip(&["link", "set", &b_if, "up"])?;
        Ok(Link {
            a: a.clone(),
            a_if,
            b: b.clone(),
            b_if,
        })
    }

    /// A veth pair between `a` (interface `a_if`) and `b` (`b_if`), both ends
    /// up, no addresses: a link whose names a topology file gives.
    pub fn veth(&self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<()> {
        a.ip(&[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.netns,
        ])?;
        a.ip(&["link", "set", a_if, "up"])?;
        b.ip(&["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// A veth pair between `ns` (interface `ns_if`) and the root namespace
    /// (interface `host_if`, which the lab deletes at teardown), both up, no
    /// addresses.
    pub fn host_veth(&self, ns: &Ns, ns_if: &str, host_if: &str) -> Result<()> {
        {
            let _guard = host::global_lock()?;
            cmd::host(&[
                "ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns",
                &ns.netns,
            ])?;
            self.shared.state().host_links.push(host_if.to_owned());
        }
        cmd::host(&["ip", "link", "set", host_if, "up"])?;
        ns.ip(&["link", "set", ns_if, "up"])?;
        Ok(())
    }

    /// An L2 segment: a bridge `br0` (multicast snooping off) in its own
    /// namespace, to which [`Lan::attach`] connects namespaces.
    pub fn lan(&self, name: &str) -> Result<Lan> {
        let ns = self.namespace(name, Role::Lan)?;
        ns.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Lan { ns })
    }

    /// Creates `name` in `ns` as a stand-in for a `dummy` link (this kernel
    /// has no dummy driver): an `ifb` device, set up. Like dummy it is
    /// `BROADCAST,NOARP,UP,LOWER_UP`, drops what is sent to it, and
    /// addresses put on it become local routes (and connected routes that
    /// FRR's `redistribute connected` / BIRD's `protocol direct` pick up).
    pub fn add_fake_dummy(&self, ns: &Ns, name: &str) -> Result<()> {
        ns.ip(&["link", "add", name, "type", "ifb"])?;
        ns.ip(&["link", "set", name, "up"])?;
        Ok(())
    }

    /// A veth pair between `ns` (interface `mgmt0`) and the root namespace
    /// (interface `pm<pid>x<n>`) on a /30 from 172.31.0.0/16 that is free on
    /// the host. `ns` reaches services listening on the host (e.g. on
    /// 0.0.0.0) at [`MgmtLink::host_addr`]. No default route is added.
    pub fn management_link(&self, ns: &Ns) -> Result<MgmtLink> {
        let host_if = format!(
            "{}{}x{}",
            host::MGMT_PREFIX,
            std::process::id(),
            MGMT_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let node_if = "mgmt0".to_owned();
        let (host_addr, node_addr) = {
            let _guard = host::global_lock()?;
            let (h, n) = host::alloc_mgmt_subnet()?;
            cmd::host(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &node_if, "netns",
                &ns.netns,
            ])?;
            self.shared.state().host_links.push(host_if.clone());
            cmd::host(&["ip", "addr", "add", &format!("{h}/30"), "dev", &host_if])?;
            cmd::host(&["ip", "link", "set", &host_if, "up"])?;
            (h, n)
        };
        ns.add_addr(&node_if, &format!("{node_addr}/30"))?;
        ns.ip(&["link", "set", &node_if, "up"])?;
        Ok(MgmtLink {
            netns: ns.netns.clone(),
            host_if,
            node_if,
            host_addr,
            node_addr,
        })
    }

    /// Starts FRR (zebra, staticd, bgpd) in `ns` with `config` (one
    /// integrated frr.conf text, checked with `vtysh -C` first). Returns once
    /// every daemon answers vtysh.
    pub fn frr(&self, ns: &Ns, config: &str) -> Result<Frr> {
        Frr::start(ns, config)
    }

    /// Starts BIRD 2 in `ns` with `config` (checked with `bird -p` first).
    /// Returns once `birdc` answers.
    pub fn bird(&self, ns: &Ns, config: &str) -> Result<Bird> {
        Bird::start(ns, config)
    }

    /// Starts gobgpd in `ns` with a TOML `config` (checked with `gobgpd -d`
    /// first), its gRPC API on a unix socket in the lab dir. Returns once
    /// `gobgp` answers.
    pub fn gobgp(&self, ns: &Ns, config: &str) -> Result<Gobgp> {
        Gobgp::start(ns, config)
    }

    /// Pids of every process the lab started (running or not).
    pub fn pids(&self) -> Vec<u32> {
        self.shared.state().procs.iter().map(|p| p.pid).collect()
    }

    /// Names of the lab's namespaces as `ip netns list` shows them.
    pub fn netns_names(&self) -> Vec<String> {
        self.shared.state().netns.clone()
    }

    fn teardown(&self) {
        let (mut procs, netns, host_links) = {
            let mut st = self.shared.state();
            if st.closed {
                return;
            }
            st.closed = true;
            (
                std::mem::take(&mut st.procs),
                std::mem::take(&mut st.netns),
                std::mem::take(&mut st.host_links),
            )
        };
        if std::thread::panicking() || std::env::var("NETLAB_LOGS").as_deref() == Ok("1") {
            for p in &mut procs {
                dump_log_tail(p);
            }
        }
        stop_procs(&mut procs, Duration::from_secs(2));
        for ns in &netns {
            host::kill_netns_processes(ns);
        }
        for link in &host_links {
            // Usually gone already with its peer; deleting it here makes the
            // removal synchronous rather than waiting for netns cleanup.
            let _ = cmd::host(&["ip", "link", "delete", link]);
        }
        for ns in &netns {
            if let Err(e) = cmd::host(&["ip", "netns", "delete", ns]) {
                eprintln!("netlab: {e:#}");
            }
        }
        let tempdir = self
            .shared
            .tempdir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(dir) = tempdir {
            if std::env::var("NETLAB_KEEP").as_deref() == Ok("1") {
                eprintln!("netlab: keeping {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("netlab: removing temp dir: {e}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn dump_log_tail(p: &ProcEntry) {
    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(25)..];
    eprintln!(
        "---- netlab: last lines of {} in {} (pid {}, {}) ----",
        p.name,
        p.netns,
        p.pid,
        p.log.display()
    );
    for l in tail {
        eprintln!("{l}");
    }
}

fn signal_group(pid: u32, sig: i32) {
    // SAFETY: plain syscall; the process group id is the pid we spawned with
    // process_group(0).
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// SIGTERM to each process group, SIGKILL to what is left after `grace`,
/// and reap.
fn stop_procs(procs: &mut [ProcEntry], grace: Duration) {
    // Only groups whose leader was unreaped when we started: a pid reaped
    // long ago may since name someone else's process group.
    let live: Vec<bool> = procs.iter_mut().map(|p| p.poll().is_none()).collect();
    for (p, &live) in procs.iter().zip(&live) {
        if live {
            signal_group(p.pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while procs.iter_mut().any(|p| p.poll().is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (p, &live) in procs.iter_mut().zip(&live) {
        if live {
            // Even if the leader has exited: children may remain.
            signal_group(p.pid, libc::SIGKILL);
        }
        if p.exit.is_none()
            && let Ok(st) = p.child.wait()
        {
            p.exit = Some(st);
        }
    }
}

/// Addresses for the two ends of a [`Lab::link`]. IPv6 addresses are added
/// with `nodad`, so they are usable at once.
#[derive(Debug, Clone, Default)]
pub struct LinkSpec {
    a: Vec<String>,
    b: Vec<String>,
}

impl LinkSpec {
    /// No addresses (IPv6 link-locals only).
    pub fn new() -> Self {
        Self::default()
    }

    /// IPv4 `addr/len` for end `a` and end `b`.
    pub fn v4(mut self, a: &str, b: &str) -> Self {
        self.a.push(a.to_owned());
        self.b.push(b.to_owned());
        self
    }

    /// IPv6 `addr/len` for end `a` and end `b`.
    pub fn v6(self, a: &str, b: &str) -> Self {
        self.v4(a, b)
    }
}

/// A veth pair made by [`Lab::link`].
#[derive(Clone)]
pub struct Link {
    a: Ns,
    a_if: String,
    b: Ns,
    b_if: String,
}

impl Link {
    /// Interface name at end `a` (in the first namespace given to `link`).
    pub fn a_if(&self) -> &str {
        &self.a_if
    }

    /// Interface name at end `b`.
    pub fn b_if(&self) -> &str {
        &self.b_if
    }

    /// Sets both ends down (`false`) or up (`true`): a cable pull.
    pub fn set_up(&self, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        self.a.ip(&["link", "set", &self.a_if, state])?;
        self.b.ip(&["link", "set", &self.b_if, state])?;
        Ok(())
    }
}

/// An L2 segment made by [`Lab::lan`].
#[derive(Clone)]
pub struct Lan {
    ns: Ns,
}

impl Lan {
    /// Connects `ns` to the segment with a veth whose `ns` end (named
    /// `eth<k>`, returned) gets `addrs` (`addr/len`, IPv4 or IPv6) and is up.
    pub fn attach(&self, ns: &Ns, addrs: &[&str]) -> Result<String> {
        let port = ns.shared.next_if(&self.ns.netns, "p");
        let ifname = ns.shared.next_if(&ns.netns, "eth");
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", &ifname, "netns", &ns.netns,
        ])?;
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"])?;
        for a in addrs {
            ns.add_addr(&ifname, a)?;
        }
        ns.ip(&["link", "set", &ifname, "up"])?;
        Ok(ifname)
    }

    /// Connects `ns` to the segment with a veth whose bridge port is `port`
    /// and whose `ns` end is `ifname` (up, no addresses).
    pub fn attach_named(&self, ns: &Ns, port: &str, ifname: &str) -> Result<()> {
        self.ns.ip(&[
            "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", &ns.netns,
        ])?;
        self.ns.ip(&["link", "set", port, "master", "br0", "up"])?;
        ns.ip(&["link", "set", ifname, "up"])?;
        Ok(())
    }

    /// The namespace holding the bridge `br0`.
    pub fn ns(&self) -> &Ns {
        &self.ns
    }
}

/// A node's link to the host, made by [`Lab::management_link`].
#[derive(Debug, Clone)]
pub struct MgmtLink {
    netns: String,
    host_if: String,
    node_if: String,
    host_addr: Ipv4Addr,
    node_addr: Ipv4Addr,
}

const CUT_TABLE: &str = "plb_mgmt_cut";

impl MgmtLink {
    /// The host's address on the link: what the node uses to reach the
    /// host (e.g. `https://<host_addr>:<apiserver port>`).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The node's address on the link.
    pub fn node_addr(&self) -> Ipv4Addr {
        self.node_addr
    }

    /// Interface name in the root namespace.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// Interface name in the node namespace (`mgmt0`).
    pub fn node_if(&self) -> &str {
        &self.node_if
    }

    /// Partitions the node from the host: an nftables table in the node
    /// namespace drops every packet in or out of the management interface.
    /// Outgoing packets are dropped after routing and NAT, so traffic to a
    /// Service address that kube-proxy rewrites to an address behind the
    /// link is cut too. The link stays up, so new connections time out and
    /// established ones hang, as in a real partition. Idempotent.
    pub fn cut(&self) -> Result<()> {
        let rules = format!(
            "table inet {t} {{}}\n\
             delete table inet {t}\n\
             table inet {t} {{\n\
               chain input {{ type filter hook prerouting priority -300; policy accept; iifname \"{i}\" drop; }}\n\
               chain output {{ type filter hook postrouting priority 300; policy accept; oifname \"{i}\" drop; }}\n\
             }}\n",
            t = CUT_TABLE,
            i = self.node_if
        );
        self.nft(&rules)
    }

    /// Undoes [`cut`](Self::cut). Idempotent.
    pub fn restore(&self) -> Result<()> {
        self.nft(&format!(
            "table inet {CUT_TABLE} {{}}\ndelete table inet {CUT_TABLE}\n"
        ))
    }

    fn nft(&self, rules: &str) -> Result<()> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "nft", "-f", "-"]);
        cmd::run_with_input(&mut c, Some(rules.as_bytes()))?;
        Ok(())
    }
}

/// A namespace of a [`Lab`]. Cheap to clone; only valid while the lab lives.
#[derive(Clone)]
pub struct Ns {
    name: String,
    netns: String,
    role: Role,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ns")
            .field("name", &self.name)
            .field("netns", &self.netns)
            .finish()
    }
}

impl Ns {
    /// The name given to [`Lab::node`] / [`Lab::router`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's name for `ip netns` (`plb-<pid>-<lab>-<role>-<name>`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// This namespace's directory under the lab dir (daemon files, logs).
    pub fn dir(&self) -> PathBuf {
        self.shared.dir.join(&self.name)
    }

    /// A `Command` running `argv` in the namespace with `nsenter --net`,
    /// which, unlike `ip netns exec`, leaves `/sys` (and so the cgroup
    /// mounts a kubelet needs) as the host has it.
    pub fn nsenter_command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .args(argv);
        c
    }

    /// A `Command` running `argv` in the namespace (`ip netns exec`).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).args(argv);
        c
    }

    /// Runs `argv` in the namespace and returns its stdout; a non-zero exit
    /// is an error with the command line and stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        cmd::run(&mut self.command(argv))
    }

    /// Runs `argv` in the namespace; a non-zero exit is not an error.
    pub fn output(&self, argv: &[&str]) -> Result<CmdOutput> {
        cmd::output(&mut self.command(argv), None)
    }

    /// `ip -n <netns> args...` (no `ip netns exec` needed), returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["-n", &self.netns]).args(args);
        cmd::run(&mut c)
    }

    /// Adds `addr/len` (IPv4, or IPv6 with `nodad`) to `ifname`.
    pub fn add_addr(&self, ifname: &str, addr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", addr, "dev", ifname];
        if addr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args)?;
        Ok(())
    }

    /// `ip route replace <dst> via <via>` (IPv4 or IPv6; `dst` may be
    /// `default`, which is IPv4 unless `via` is IPv6).
    pub fn add_route(&self, dst: &str, via: &str) -> Result<()> {
        let fam = if via.contains(':') { "-6" } else { "-4" };
        self.ip(&[fam, "route", "replace", dst, "via", via])?;
        Ok(())
    }

    /// `ip route replace <dst> dev <ifname>`.
    pub fn add_dev_route(&self, dst: &str, ifname: &str) -> Result<()> {
        let fam = if dst.contains(':') { "-6" } else { "-4" };
        self.ip(&[fam, "route", "replace", dst, "dev", ifname])?;
        Ok(())
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Starts `argv` in the namespace in its own process group, stdout and
    /// stderr to `<ns dir>/<name>.log`. The lab kills it on teardown.
    pub fn spawn(&self, name: &str, argv: &[&str]) -> Result<Proc> {
        self.spawn_env(name, argv, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_env(&self, name: &str, argv: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
        let mut c = self.command(argv);
        c.envs(env.iter().copied());
        self.spawn_command(name, c)
    }

    /// Starts a command made with [`command`](Self::command) (and adjusted by
    /// the caller), as [`spawn`](Self::spawn) does.
    pub fn spawn_command(&self, name: &str, c: Command) -> Result<Proc> {
        self.spawn_inner(name, c, false)
    }

    /// [`spawn_command`](Self::spawn_command) for a process that exits when
    /// its stdin closes (kubeenv's servers): the lab holds the write end, so
    /// the process goes when the lab does, or when the test process dies.
    pub fn spawn_with_lifeline(&self, name: &str, c: Command) -> Result<Proc> {
        self.spawn_inner(name, c, true)
    }

    fn spawn_inner(&self, name: &str, mut c: Command, lifeline: bool) -> Result<Proc> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("dup log file")?;
        c.stdin(if lifeline {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(out)
        .stderr(err)
        .process_group(0);
        let desc = cmd::describe(&c);
        let mut st = self.shared.state();
        if st.closed {
            bail!("lab already torn down");
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot start `{desc}`"))?;
        let pid = child.id();
        let lifeline = child.stdin.take();
        st.procs.push(ProcEntry {
            pid,
            name: name.to_owned(),
            netns: self.netns.clone(),
            log: log.clone(),
            child,
            exit: None,
            _lifeline: lifeline,
        });
        Ok(Proc {
            pid,
            name: name.to_owned(),
            log,
            shared: self.shared.clone(),
        })
    }

    /// Runs `f` on a fresh thread that has entered this namespace, so the
    /// sockets it creates live there (they stay there when returned).
    /// A panic in `f` is resumed in the caller.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        run_in_netns(&self.netns, f)
    }

    /// Runs the future `f` builds on a current-thread tokio runtime on a thread inside this
    /// namespace, so the sockets it opens (netlink included) live there.
    pub fn block_on<R, F, Fut>(&self, f: F) -> Result<R>
    where
        R: Send,
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = Result<R>>,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(f())
        })?
    }

    /// A TCP connection made from inside the namespace.
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.run(|| TcpStream::connect_timeout(&addr, timeout))?
            .with_context(|| format!("connecting to {addr} from {}", self.name))
    }
}

/// Runs `f` on a fresh thread inside the network namespace `netns` (a name
/// `ip netns list` shows), as [`Ns::run`] does, for a namespace this process
/// did not make (another process's lab).
pub fn run_in_netns<R: Send>(netns: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    let joined = std::thread::scope(|s| {
        s.spawn(|| -> Result<R> {
            // SAFETY: setns on a valid fd; only this thread changes
            // namespace, and it exits right after `f`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns into {path}"));
            }
            Ok(f())
        })
        .join()
    });
    match joined {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A process started by [`Ns::spawn`]. Dropping the handle does not stop it;
/// the lab does at teardown.
#[derive(Clone)]
pub struct Proc {
    pid: u32,
    name: String,
    log: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .finish()
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.seek(SeekFrom::Start(0));
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// `None` while running, else its exit status.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut st = self.shared.state();
        match st.procs.iter_mut().find(|p| p.pid == self.pid) {
            Some(p) => p.poll(),
            // Torn down with the lab: it was reaped.
            None => Some(ExitStatus::default()),
        }
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGTERM to its process group, SIGKILL after 5 s; waits for it.
    pub fn stop(&self) -> Result<()> {
        self.stop_within(Duration::from_secs(5))
    }

    /// SIGKILL to its process group; waits for it.
    pub fn kill(&self) -> Result<()> {
        self.stop_within(Duration::ZERO)
    }

    fn stop_within(&self, grace: Duration) -> Result<()> {
        let mut st = self.shared.state();
        let p = st
            .procs
            .iter_mut()
            .find(|p| p.pid == self.pid)
            .ok_or_else(|| anyhow!("process {} ({}) is not in the lab", self.pid, self.name))?;
        stop_procs(std::slice::from_mut(p), grace);
        Ok(())
    }

    /// Fails, with the log's tail, if the process has exited.
    pub(crate) fn ensure_running(&self) -> Result<()> {
        if let Some(st) = self.exit_status() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            bail!("{} exited ({st}); its log ends:\n{tail}", self.name);
        }
        Ok(())
    }
}
