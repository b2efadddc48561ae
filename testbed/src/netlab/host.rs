//! Host-wide state shared by every lab on the machine: the lock directory,
//! the per-process owner lock, stale-lab cleanup and the management-subnet
//! allocator.

use super::cmd;
use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lock files live here (tmpfs: gone after a reboot, as are namespaces).
pub(crate) const LOCK_DIR: &str = "/run/purelb-netlab";
/// Every namespace a lab creates is named `plb-<pid>-<lab>-<role>-<name>`.
pub(crate) const NS_PREFIX: &str = "plb-";
/// Host ends of management links are named `pm<pid>x<n>`.
pub(crate) const MGMT_PREFIX: &str = "pm";
/// Management subnets are /30s carved out of 172.31.0.0/16.
const MGMT_BASE: u32 = u32::from_be_bytes([172, 31, 0, 0]);
const MGMT_SUBNETS: u32 = 1 << 14;

fn lock_dir() -> Result<&'static Path> {
    let dir = Path::new(LOCK_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {LOCK_DIR}"))?;
    Ok(dir)
}

fn owner_file(pid: u32) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("owner-{pid}.lock"))
}

/// The host-wide lock serialising namespace creation, stale cleanup and
/// management-subnet allocation across threads and processes. Released when
/// the returned file is dropped.
pub(crate) fn global_lock() -> Result<File> {
    open_locked(&lock_dir()?.join("lock"))
}

/// Opens (creating it if needed) and exclusively locks `path`, waiting for the lock.
fn open_locked(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

static OWNER: OnceLock<std::result::Result<File, String>> = OnceLock::new();

/// Takes this process's owner lock (held until the process dies, so other
/// processes can tell a live lab from a dead one even if the pid is reused)
/// and, the first time, removes what a dead process left behind — including
/// labs of an earlier process that had this same pid.
pub(crate) fn init_process() -> Result<()> {
    let owner = OWNER.get_or_init(|| {
        let inner = || -> Result<File> {
            lock_dir()?;
            let _guard = global_lock()?;
            let file = open_locked(&owner_file(std::process::id()))?;
            cleanup_stale(true);
            Ok(file)
        };
        inner().map_err(|e| format!("{e:#}"))
    });
    match owner {
        Ok(_) => {
            let _guard = global_lock()?;
            cleanup_stale(false);
            Ok(())
        }
        Err(e) => bail!("netlab initialisation failed: {e}"),
    }
}

/// Whether the labs of process `pid` are leftovers.
fn is_stale(pid: u32, include_self: bool) -> bool {
    if pid == std::process::id() {
        return include_self;
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return true;
    }
    // The pid is alive: it is the owner only if it holds its owner lock.
    match File::open(owner_file(pid)) {
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => false,
    }
}

/// `plb-<pid>-...` → pid.
fn pid_of(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Names from `ip netns list` (lines are `name` or `name (id: N)`).
pub(crate) fn list_netns() -> Result<Vec<String>> {
    let out = cmd::host(&["ip", "netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Pids of processes in network namespace `netns`.
pub(crate) fn netns_pids(netns: &str) -> Vec<i32> {
    cmd::host(&["ip", "netns", "pids", netns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process in `netns` and waits (bounded) until they are gone.
pub(crate) fn kill_netns_processes(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = netns_pids(netns);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            // SAFETY: plain syscall on a pid, no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes namespaces, host links and owner files of dead processes.
/// Best effort: errors are printed, not returned.
fn cleanup_stale(include_self: bool) {
    let mut dead = std::collections::BTreeSet::new();
    // Cluster nodes' cgroup roots (`plb-<pid>-...`) first: their pods'
    // processes live in namespaces of their own.
    for name in crate::cluster::kubenode::cgroup_roots() {
        if let Some(pid) = pid_of(&name, NS_PREFIX)
            && is_stale(pid, include_self)
        {
            dead.insert(pid);
            crate::cluster::kubenode::remove_cgroup(&name);
        }
    }
    match list_netns() {
        Ok(names) => {
            for ns in names {
                let Some(pid) = pid_of(&ns, NS_PREFIX) else {
                    continue;
                };
                if !is_stale(pid, include_self) {
                    continue;
                }
                dead.insert(pid);
                kill_netns_processes(&ns);
                if let Err(e) = cmd::host(&["ip", "netns", "delete", &ns]) {
                    eprintln!("netlab: removing stale namespace {ns}: {e:#}");
                }
            }
        }
        Err(e) => eprintln!("netlab: listing namespaces: {e:#}"),
    }
    for link in host_links() {
        if let Some(pid) = pid_of(&link, MGMT_PREFIX)
            && is_stale(pid, include_self)
        {
            dead.insert(pid);
            let _ = cmd::host(&["ip", "link", "delete", &link]);
        }
    }
    // Lab temp dirs are named `plb-<pid>-<lab>-XXXXXX`.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = pid_of(&name, NS_PREFIX)
                && (dead.contains(&pid) || is_stale(pid, include_self))
            {
                // A cluster node's container filesystems and pod volumes.
                crate::cluster::unmount_below(&e.path());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(LOCK_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = pid_of(&name, "owner-")
                && pid != std::process::id()
                && (dead.contains(&pid) || is_stale(pid, false))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Host (root namespace) links whose name starts with [`MGMT_PREFIX`].
fn host_links() -> Vec<String> {
    let Ok(out) = cmd::host(&["ip", "-o", "link", "show"]) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| pid_of(n, MGMT_PREFIX).is_some())
        .collect()
}

/// Every IPv4 address configured in the root namespace.
fn host_v4_addrs() -> Result<Vec<Ipv4Addr>> {
    let out = cmd::host(&["ip", "-4", "-o", "addr", "show"])?;
    let mut addrs = Vec::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inet"
                && let Some(cidr) = words.next()
                && let Ok(a) = cidr.split('/').next().unwrap_or(cidr).parse()
            {
                addrs.push(a);
            }
        }
    }
    Ok(addrs)
}

/// Picks a /30 in 172.31.0.0/16 none of whose addresses is on the host.
/// Call with [`global_lock`] held, and put the host address on a link
/// before releasing it. Returns (host address, node address).
pub(crate) fn alloc_mgmt_subnet() -> Result<(Ipv4Addr, Ipv4Addr)> {
    let used: Vec<u32> = host_v4_addrs()?.into_iter().map(u32::from).collect();
    for k in 0..MGMT_SUBNETS {
        let base = MGMT_BASE + 4 * k;
        if used.iter().any(|&a| a & !3 == base) {
            continue;
        }
        return Ok((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)));
    }
    bail!("no free management subnet left in 172.31.0.0/16")
}
