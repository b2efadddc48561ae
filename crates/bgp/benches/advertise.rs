//! Advertise and withdraw 100,000 IPv4 /32s to FRR: our speaker (`bgp-speak`) against gobgpd.
//!
//! One netlab: FRR (AS 65000, `no bgp ebgp-requires-policy`, graceful restart disabled, defaults
//! otherwise) in router namespace `r1`, with two neighbours, both AS 65001 and both configured
//! `shutdown` at start: `bgp-speak` in node namespace `ours` (198.51.100.2) and gobgpd 3.10 in node
//! namespace `gobgp` (198.51.100.6). Both originate the same routes, 10.0.0.0/32 upward, with
//! ORIGIN IGP and next-hop-self, and both are passive (FRR opens the sessions), so each
//! measurement is the same sequence: FRR connects, OPENs, the routes flow.
//!
//! Routes are loaded before any timing: `bgp-speak --routes N` at start (the log says when),
//! gobgpd from an MRT TABLE_DUMP_V2 file written here (PEER_INDEX_TABLE + RIB_IPV4_UNICAST
//! records, RFC 6396) with `gobgp mrt inject global FILE`. GoBGP 3.10's CLI drops the last ~1% of
//! the records (it exits before the stream is flushed), so the file ends with 10% of the records
//! again; re-adding an identical path changes nothing, and the RIB is checked to hold exactly N.
//!
//! Then, for each speaker alone (ours first; the other stays shut down):
//! - advertise: `vtysh -c 'conf t' -c 'router bgp 65000' -c 'no neighbor X shutdown'`, time
//!   until `show bgp ipv4 unicast summary json` gives `peers.X.pfxRcd` = N (polled every 50 ms);
//!   then `neighbor X shutdown` and wait until FRR's BGP table and zebra hold none of them;
//! - withdraw: bring the neighbour up, wait for N and for zebra to have installed them, then
//!   withdraw everything (ours: SIGUSR1 to bgp-speak; gobgpd: `gobgp global rib -a ipv4 del
//!   all`) and time until pfxRcd = 0.
//!
//! Memory: VmHWM and VmRSS (`/proc/<pid>/status`) of bgp-speak and gobgpd right after their
//! advertise run. CPU: user+system seconds the speaker and FRR's bgpd spent in each phase (bgpd
//! busy for most of the phase means FRR, not the speaker, sets the pace). The advertise time is
//! also given from FRR's Established on ("transfer"): FRR waits about a second (its start timer)
//! before it connects, the same for both speakers.
//!
//! Prints one JSON object with every figure, then a summary. Needs root (skips otherwise).
//!
//! ```text
//! nice -n 5 cargo bench -p purelb-bgp --bench advertise
//! ```
//!
//! `cargo bench` builds `bgp-speak` with the bench profile (release settings) for this target
//! and passes its path in `CARGO_BIN_EXE_bgp-speak` (`BGP_SPEAK_BIN` overrides it, e.g. to
//! compare another build). Environment: `ADVERTISE_ROUTES` (default
//! 100000), `ADVERTISE_ROUNDS` (advertise runs per speaker, default 1; the median is reported).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use testbed::netlab::{Frr, Gobgp, Lab, LinkSpec, require_root, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_bgp-speak");

const FRR_IP: &str = "198.51.100.1";
const OURS_IP: &str = "198.51.100.2";
const FRR_IP_B: &str = "198.51.100.5";
const GOBGP_IP: &str = "198.51.100.6";
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);

/// How long any one phase may take.
const PHASE: Duration = Duration::from_secs(600);
/// FRR is asked this often.
const POLL: Duration = Duration::from_millis(50);

fn frr_conf() -> String {
    format!(
        "frr defaults traditional\n\
         hostname r1\n\
         router bgp 65000\n\
         \x20bgp router-id {FRR_IP}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20bgp graceful-restart-disable\n\
         \x20neighbor {OURS_IP} remote-as 65001\n\
         \x20neighbor {OURS_IP} shutdown\n\
         \x20neighbor {GOBGP_IP} remote-as 65001\n\
         \x20neighbor {GOBGP_IP} shutdown\n"
    )
}

fn ours_conf() -> String {
    format!(
        "asn: 65001\n\
         routerId: {OURS_IP}\n\
         listenAddresses: [{OURS_IP}]\n\
         neighbors:\n\
         \x20 - address: {FRR_IP}\n\
         \x20   peerAsn: 65000\n\
         \x20   passive: true\n\
         \x20   families: [ipv4-unicast]\n"
    )
}

fn gobgp_conf() -> String {
    format!(
        r#"[global.config]
  as = 65001
  router-id = "{GOBGP_IP}"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{FRR_IP_B}"
    peer-as = 65000
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
    )
}

// ------------------------------------------------------------------ MRT ---

const TABLE_DUMP_V2: u16 = 13;
const PEER_INDEX_TABLE: u16 = 1;
const RIB_IPV4_UNICAST: u16 = 2;

fn mrt_record(out: &mut Vec<u8>, timestamp: u32, subtype: u16, body: &[u8]) {
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&TABLE_DUMP_V2.to_be_bytes());
    out.extend_from_slice(&subtype.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// An RFC 6396 TABLE_DUMP_V2 file: a PEER_INDEX_TABLE with one peer (AS 0, so gobgp injects the
/// paths as locally originated, as `gobgp global rib add` would), then one RIB_IPV4_UNICAST
/// record per /32 from `first` up, each with one entry: ORIGIN IGP, an empty AS_PATH (gobgpd
/// prepends its AS toward eBGP peers, as we do) and NEXT_HOP `next_hop`. The first `pad` records
/// are repeated at the end (see the module documentation).
fn mrt_file(first: Ipv4Addr, n: u32, pad: u32, next_hop: Ipv4Addr) -> Vec<u8> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let mut out = Vec::with_capacity((n + pad) as usize * 46 + 64);
    let mut body = Vec::with_capacity(64);
    // Collector BGP ID, view name (empty), peer count, then the peer: type (IPv4 address,
    // 4-octet AS), BGP ID, address, AS.
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(0b10);
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&0u32.to_be_bytes());
    mrt_record(&mut out, timestamp, PEER_INDEX_TABLE, &body);

    let mut attributes = vec![
        0x40, 1, 1, 0, // ORIGIN IGP
        0x40, 2, 0, // AS_PATH, empty
        0x40, 3, 4, // NEXT_HOP
    ];
    attributes.extend_from_slice(&next_hop.octets());
    let start = u32::from(first);
    for seq in 0..n + pad {
        let i = seq % n;
        body.clear();
        body.extend_from_slice(&seq.to_be_bytes());
        body.push(32);
        body.extend_from_slice(&(start + i).to_be_bytes());
        body.extend_from_slice(&1u16.to_be_bytes()); // entry count
        body.extend_from_slice(&0u16.to_be_bytes()); // peer index
        body.extend_from_slice(&timestamp.to_be_bytes()); // originated time
        body.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        body.extend_from_slice(&attributes);
        mrt_record(&mut out, timestamp, RIB_IPV4_UNICAST, &body);
    }
    out
}

// ----------------------------------------------------------- FRR state ---

/// One sample of FRR's view of a neighbour.
#[derive(Debug, Clone)]
struct PeerSample {
    state: String,
    pfx_rcd: u64,
    rib_count: u64,
}

fn sample(frr: &Frr, peer: &str) -> Result<PeerSample> {
    let v = frr.vtysh_json("show bgp ipv4 unicast summary json")?;
    let p = &v["peers"][peer];
    Ok(PeerSample {
        state: p["state"].as_str().unwrap_or("").to_string(),
        pfx_rcd: p["pfxRcd"].as_u64().unwrap_or(0),
        rib_count: v["ribCount"].as_u64().unwrap_or(0),
    })
}

/// BGP routes in zebra: (in the RIB, in the FIB).
fn zebra_bgp(frr: &Frr) -> Result<(u64, u64)> {
    let v = frr.vtysh_json("show ip route summary json")?;
    let mut rib = 0;
    let mut fib = 0;
    for r in v["routes"].as_array().into_iter().flatten() {
        if r["type"].as_str().is_some_and(|t| t.contains("bgp")) {
            rib += r["rib"].as_u64().unwrap_or(0);
            fib += r["fib"].as_u64().unwrap_or(0);
        }
    }
    Ok((rib, fib))
}

/// The result of a timed phase.
#[derive(Debug, Clone)]
struct Timed {
    /// Until FRR said Established (advertise only).
    established: Option<Duration>,
    done: Duration,
    samples: usize,
}

/// Polls FRR from `t0` until `done(sample)`; records when the session was first seen
/// Established after being down.
fn time_until(
    frr: &Frr,
    peer: &str,
    t0: Instant,
    done: impl Fn(&PeerSample) -> bool,
) -> Result<Timed> {
    let mut established = None;
    let mut was_down = false;
    let mut samples = 0;
    loop {
        let s = sample(frr, peer)?;
        samples += 1;
        let now = t0.elapsed();
        if s.state != "Established" {
            was_down = true;
        } else if was_down && established.is_none() {
            established = Some(now);
        }
        if done(&s) {
            return Ok(Timed {
                established,
                done: now,
                samples,
            });
        }
        if now > PHASE {
            bail!("timed out: FRR's view of {peer} is {s:?}");
        }
        std::thread::sleep(POLL);
    }
}

fn set_shutdown(frr: &Frr, peer: &str, shut: bool) -> Result<()> {
    let line = if shut {
        format!("neighbor {peer} shutdown")
    } else {
        format!("no neighbor {peer} shutdown")
    };
    frr.configure(&["router bgp 65000", &line])
}

/// Shuts `peer` down and waits until FRR (bgpd and zebra) holds none of its routes.
fn shut_and_drain(frr: &Frr, peer: &str) -> Result<Duration> {
    let t0 = Instant::now();
    set_shutdown(frr, peer, true)?;
    wait_until(PHASE, &format!("FRR to drop {peer}'s routes"), || {
        let s = sample(frr, peer)?;
        let (rib, _) = zebra_bgp(frr)?;
        Ok(s.pfx_rcd == 0 && s.rib_count == 0 && rib == 0)
    })?;
    Ok(t0.elapsed())
}

/// Brings `peer` up and waits for all `n` routes in bgpd and in the kernel (through zebra).
fn up_and_settle(frr: &Frr, peer: &str, n: u64) -> Result<()> {
    set_shutdown(frr, peer, false)?;
    wait_until(PHASE, &format!("{n} routes from {peer} installed"), || {
        let s = sample(frr, peer)?;
        let (_, fib) = zebra_bgp(frr)?;
        Ok(s.pfx_rcd == n && fib >= n)
    })
}

/// FRR's best path for the first prefix: AS path and next hop (to show both speakers send the
/// same thing).
fn first_path(frr: &Frr) -> Result<Value> {
    let v = frr.vtysh_json(&format!("show bgp ipv4 unicast {FIRST}/32 json"))?;
    let p = &v["paths"][0];
    Ok(json!({
        "asPath": p["aspath"]["string"],
        "segment": p["aspath"]["segments"][0]["type"],
        "nextHop": p["nexthops"][0]["ip"],
        "origin": p["origin"],
    }))
}

// ------------------------------------------------------------- process ---

#[derive(Debug, Clone, Copy)]
struct Mem {
    hwm_kib: u64,
    rss_kib: u64,
}

fn mem(pid: u32) -> Result<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Mem {
        hwm_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
    })
}

/// User + system CPU seconds of `pid` so far (all threads).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which ends with the last ')'): state is field 3, utime 14.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11) + ticks(12)) as f64 / hz)
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) on a process this bench started.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        (a / b * 1000.0).round() / 1000.0
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn env_u32(name: &str, default: u32) -> Result<u32> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------- main ---

struct Speaker<'a> {
    name: &'static str,
    peer: &'static str,
    pid: u32,
    withdraw: Box<dyn Fn() -> Result<()> + 'a>,
}

/// The pid of FRR's bgpd.
fn bgpd_pid(frr: &Frr) -> Result<u32> {
    frr.procs()
        .iter()
        .find(|p| p.name().ends_with("bgpd"))
        .map(|p| p.pid())
        .context("no bgpd among FRR's processes")
}

/// The pid of FRR's zebra.
fn zebra_pid(frr: &Frr) -> Result<u32> {
    frr.procs()
        .iter()
        .find(|p| p.name().ends_with("zebra"))
        .map(|p| p.pid())
        .context("no zebra among FRR's processes")
}

/// The machine's busy fraction (1 - idle - iowait) between two `/proc/stat` readings.
fn cpu_totals() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total, idle))
}

fn busy_between(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.0.saturating_sub(a.0);
    let idle = b.1.saturating_sub(a.1);
    if total == 0 {
        0.0
    } else {
        1.0 - idle as f64 / total as f64
    }
}

/// One timed phase: its timing, the CPU seconds the speaker, FRR's bgpd and zebra spent in it,
/// and how busy the whole machine was (other jobs included).
struct Run {
    t: Timed,
    cpu: f64,
    bgpd_cpu: f64,
    zebra_cpu: f64,
    machine_busy: f64,
}

/// Runs `act` at time zero and polls FRR until `done`, measuring the CPU used meanwhile.
fn measured(
    frr: &Frr,
    s: &Speaker,
    act: impl FnOnce() -> Result<()>,
    done: impl Fn(&PeerSample) -> bool,
) -> Result<Run> {
    let (bgpd, zebra) = (bgpd_pid(frr)?, zebra_pid(frr)?);
    let (cpu0, bgpd0, zebra0) = (cpu_seconds(s.pid)?, cpu_seconds(bgpd)?, cpu_seconds(zebra)?);
    let m0 = cpu_totals()?;
    let t0 = Instant::now();
    act()?;
    let t = time_until(frr, s.peer, t0, done)?;
    Ok(Run {
        t,
        cpu: cpu_seconds(s.pid)? - cpu0,
        bgpd_cpu: cpu_seconds(bgpd)? - bgpd0,
        zebra_cpu: cpu_seconds(zebra)? - zebra0,
        machine_busy: busy_between(m0, cpu_totals()?),
    })
}

fn describe(run: &Run) -> String {
    let established = run
        .t
        .established
        .map(|d| format!("Established at {:.3} s, ", d.as_secs_f64()))
        .unwrap_or_default();
    format!(
        "{:.3} s ({established}{} samples; CPU s: speaker {:.2}, bgpd {:.2}, zebra {:.2}; machine {:.0}% busy)",
        run.t.done.as_secs_f64(),
        run.t.samples,
        run.cpu,
        run.bgpd_cpu,
        run.zebra_cpu,
        run.machine_busy * 100.0
    )
}

fn advertise_run(frr: &Frr, s: &Speaker, n: u64) -> Result<Run> {
    measured(
        frr,
        s,
        || set_shutdown(frr, s.peer, false),
        |x| x.pfx_rcd >= n,
    )
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` / `--all-targets` does not, and this
    // takes minutes, so it only builds there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("advertise: skipped (run it with `cargo bench -p purelb-bgp --bench advertise`)");
        return Ok(());
    }
    if !require_root() {
        return Ok(());
    }
    let n = env_u32("ADVERTISE_ROUTES", 100_000)?;
    let rounds = env_u32("ADVERTISE_ROUNDS", 1)?.max(1);
    let n64 = u64::from(n);
    let bin = std::env::var("BGP_SPEAK_BIN").unwrap_or_else(|_| BIN.to_string());
    if !bin.contains("/release/") {
        eprintln!("warning: {bin} is not a release build; run this through `cargo bench`");
    }
    eprintln!("advertise bench: {n} routes, {rounds} advertise round(s), bgp-speak = {bin}");

    let lab = Lab::new()?;
    let r1 = lab.router("r1")?;
    let ours_ns = lab.node("ours")?;
    let gobgp_ns = lab.node("gobgp")?;
    lab.link(
        &r1,
        &ours_ns,
        LinkSpec::new().v4(&format!("{FRR_IP}/30"), &format!("{OURS_IP}/30")),
    )?;
    lab.link(
        &r1,
        &gobgp_ns,
        LinkSpec::new().v4(&format!("{FRR_IP_B}/30"), &format!("{GOBGP_IP}/30")),
    )?;
    let frr = lab.frr(&r1, &frr_conf())?;

    // Our speaker: routes loaded at start.
    let conf = lab.dir().join("ours.yaml");
    std::fs::write(&conf, ours_conf())?;
    let conf_s = conf.to_string_lossy().into_owned();
    let start = FIRST.to_string();
    let count = n.to_string();
    let t0 = Instant::now();
    let ours = ours_ns.spawn(
        "bgp-speak",
        &[
            &bin,
            "--config",
            &conf_s,
            "--routes",
            &count,
            "--route-start",
            &start,
            "--log",
            "info",
        ],
    )?;
    let loaded_line = testbed::netlab::wait_for(PHASE, "bgp-speak to load its routes", || {
        if !ours.is_running() {
            bail!("bgp-speak exited:\n{}", ours.log());
        }
        Ok(ours
            .log()
            .lines()
            .find(|l| l.contains("routes loaded"))
            .map(str::to_owned))
    })?;
    let load_ours = t0.elapsed();
    let load_ours_internal_ms = serde_json::from_str::<Value>(&loaded_line)
        .ok()
        .and_then(|v| v["fields"]["elapsed_ms"].as_f64());

    // gobgpd: routes injected from an MRT file.
    let gobgp: Gobgp = lab.gobgp(&gobgp_ns, &gobgp_conf())?;
    let mrt = lab.dir().join("routes.mrt");
    let t_gen = Instant::now();
    std::fs::write(
        &mrt,
        mrt_file(FIRST, n, (n / 10).max(1000).min(n), GOBGP_IP.parse()?),
    )?;
    let mrt_gen = t_gen.elapsed();
    let mrt_s = mrt.to_string_lossy().into_owned();
    let t0 = Instant::now();
    gobgp.gobgp(&["mrt", "inject", "global", &mrt_s])?;
    let inject_cli = t0.elapsed();
    wait_until(PHASE, "gobgpd's RIB to hold every route", || {
        let v = gobgp.gobgp_json(&["global", "rib", "summary", "-a", "ipv4"])?;
        Ok(v["num_destination"].as_u64() == Some(n64))
    })?;
    let load_gobgp = t0.elapsed();
    let v = gobgp.gobgp_json(&["global", "rib", "summary", "-a", "ipv4"])?;
    if v["num_destination"].as_u64() != Some(n64) {
        bail!("gobgpd holds {v} routes, not {n}");
    }
    let gobgp_pid = gobgp.proc().pid();
    let mem_loaded = (mem(ours.pid())?, mem(gobgp_pid)?);
    eprintln!(
        "loaded: ours {:.3} s, gobgpd {:.3} s (inject CLI {:.3} s)",
        load_ours.as_secs_f64(),
        load_gobgp.as_secs_f64(),
        inject_cli.as_secs_f64()
    );

    let ours_pid = ours.pid();
    let gobgp_ref = &gobgp;
    let speakers = [
        Speaker {
            name: "ours",
            peer: OURS_IP,
            pid: ours_pid,
            withdraw: Box::new(move || signal(ours_pid, libc::SIGUSR1)),
        },
        Speaker {
            name: "gobgpd",
            peer: GOBGP_IP,
            pid: gobgp_pid,
            withdraw: Box::new(move || {
                gobgp_ref
                    .gobgp(&["global", "rib", "-a", "ipv4", "del", "all"])
                    .map(|_| ())
            }),
        },
    ];

    // Advertise, each alone.
    let mut adv: Vec<Vec<Run>> = vec![Vec::new(), Vec::new()];
    let mut mem_after_adv = Vec::new();
    let mut paths = Vec::new();
    let mut drains = Vec::new();
    for round in 0..rounds {
        for (i, s) in speakers.iter().enumerate() {
            let run = advertise_run(&frr, s, n64)?;
            eprintln!(
                "advertise {} round {}: {}",
                s.name,
                round + 1,
                describe(&run)
            );
            if round == 0 {
                mem_after_adv.push(mem(s.pid)?);
                paths.push(first_path(&frr)?);
            }
            adv[i].push(run);
            drains.push(secs(shut_and_drain(&frr, s.peer)?));
        }
    }

    // Withdraw, each alone.
    let mut wd = Vec::new();
    for s in &speakers {
        up_and_settle(&frr, s.peer, n64)?;
        std::thread::sleep(Duration::from_secs(1));
        let run = measured(&frr, s, || (s.withdraw)(), |x| x.pfx_rcd == 0)?;
        eprintln!("withdraw {}: {}", s.name, describe(&run));
        wd.push(run);
        shut_and_drain(&frr, s.peer)?;
    }
    let mem_end = (mem(ours_pid)?, mem(gobgp_pid)?);

    let med = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
        adv.iter()
            .map(|runs| median(runs.iter().map(f).collect()))
            .collect()
    };
    let adv_med = med(&|r| r.t.done.as_secs_f64());
    let adv_cpu = med(&|r| r.cpu);
    let adv_bgpd = med(&|r| r.bgpd_cpu);
    let adv_zebra = med(&|r| r.zebra_cpu);
    let adv_busy = med(&|r| r.machine_busy);
    let est = med(&|r| r.t.established.map_or(f64::NAN, |d| d.as_secs_f64()));
    // From FRR's Established to the last prefix: the transfer itself.
    let xfer = med(&|r| r.t.done.as_secs_f64() - r.t.established.map_or(0.0, |d| d.as_secs_f64()));
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let mb = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    let report = json!({
        "routes": n,
        "rounds": rounds,
        "bgpSpeak": bin,
        "advertise": {
            "oursSeconds": r3(adv_med[0]),
            "gobgpSeconds": r3(adv_med[1]),
            "ratio": ratio(adv_med[0], adv_med[1]),
            "oursEstablishedSeconds": r3(est[0]),
            "gobgpEstablishedSeconds": r3(est[1]),
            "oursTransferSeconds": r3(xfer[0]),
            "gobgpTransferSeconds": r3(xfer[1]),
            "transferRatio": ratio(xfer[0], xfer[1]),
            "oursRuns": adv[0].iter().map(|r| secs(r.t.done)).collect::<Vec<_>>(),
            "gobgpRuns": adv[1].iter().map(|r| secs(r.t.done)).collect::<Vec<_>>(),
            "oursCpuSeconds": r2(adv_cpu[0]),
            "gobgpCpuSeconds": r2(adv_cpu[1]),
            "frrBgpdCpuSecondsOurs": r2(adv_bgpd[0]),
            "frrBgpdCpuSecondsGobgp": r2(adv_bgpd[1]),
            "frrZebraCpuSecondsOurs": r2(adv_zebra[0]),
            "frrZebraCpuSecondsGobgp": r2(adv_zebra[1]),
            "machineBusyOurs": r2(adv_busy[0]),
            "machineBusyGobgp": r2(adv_busy[1]),
            "frrDrainSeconds": drains,
            "firstPathInFrr": { "ours": paths.first(), "gobgp": paths.get(1) },
        },
        "withdraw": {
            "oursSeconds": secs(wd[0].t.done),
            "gobgpSeconds": secs(wd[1].t.done),
            "ratio": ratio(wd[0].t.done.as_secs_f64(), wd[1].t.done.as_secs_f64()),
            "oursCpuSeconds": r2(wd[0].cpu),
            "gobgpCpuSeconds": r2(wd[1].cpu),
            "frrBgpdCpuSecondsOurs": r2(wd[0].bgpd_cpu),
            "frrBgpdCpuSecondsGobgp": r2(wd[1].bgpd_cpu),
            "frrZebraCpuSecondsOurs": r2(wd[0].zebra_cpu),
            "frrZebraCpuSecondsGobgp": r2(wd[1].zebra_cpu),
            "machineBusyOurs": r2(wd[0].machine_busy),
            "machineBusyGobgp": r2(wd[1].machine_busy),
        },
        "memoryMiB": {
            "afterAdvertise": {
                "oursRss": mb(mem_after_adv[0].rss_kib),
                "oursPeak": mb(mem_after_adv[0].hwm_kib),
                "gobgpRss": mb(mem_after_adv[1].rss_kib),
                "gobgpPeak": mb(mem_after_adv[1].hwm_kib),
                "rssRatio": ratio(mem_after_adv[0].rss_kib as f64, mem_after_adv[1].rss_kib as f64),
                "peakRatio": ratio(mem_after_adv[0].hwm_kib as f64, mem_after_adv[1].hwm_kib as f64),
            },
            "afterLoad": {
                "oursRss": mb(mem_loaded.0.rss_kib),
                "gobgpRss": mb(mem_loaded.1.rss_kib),
            },
            "atEnd": {
                "oursRss": mb(mem_end.0.rss_kib),
                "oursPeak": mb(mem_end.0.hwm_kib),
                "gobgpRss": mb(mem_end.1.rss_kib),
                "gobgpPeak": mb(mem_end.1.hwm_kib),
            },
        },
        "routeLoad": {
            "oursSeconds": secs(load_ours),
            "oursInternalMs": load_ours_internal_ms,
            "gobgpSeconds": secs(load_gobgp),
            "gobgpInjectCliSeconds": secs(inject_cli),
            "mrtGenerateSeconds": secs(mrt_gen),
            "mrtBytes": std::fs::metadata(Path::new(&mrt)).map(|m| m.len()).unwrap_or(0),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let a = &report["advertise"];
    let w = &report["withdraw"];
    let m = &report["memoryMiB"]["afterAdvertise"];
    println!();
    println!(
        "{n} IPv4 /32s to FRR 8.4 (each speaker alone; ours = bgp-speak, gobgp = gobgpd 3.10)"
    );
    println!(
        "  advertise: ours {} s, gobgpd {} s, ratio {} (target < 0.5)",
        a["oursSeconds"], a["gobgpSeconds"], a["ratio"]
    );
    println!(
        "  advertise after FRR's Established (transfer only): ours {} s, gobgpd {} s, ratio {}; CPU ours {} s, gobgpd {} s, FRR bgpd {} / {} s",
        a["oursTransferSeconds"],
        a["gobgpTransferSeconds"],
        a["transferRatio"],
        a["oursCpuSeconds"],
        a["gobgpCpuSeconds"],
        a["frrBgpdCpuSecondsOurs"],
        a["frrBgpdCpuSecondsGobgp"]
    );
    println!(
        "  withdraw:  ours {} s, gobgpd {} s, ratio {}",
        w["oursSeconds"], w["gobgpSeconds"], w["ratio"]
    );
    println!(
        "  memory after advertise: ours RSS {} MiB (peak {}), gobgpd RSS {} MiB (peak {}), RSS ratio {}, peak ratio {} (target < 0.25)",
        m["oursRss"], m["oursPeak"], m["gobgpRss"], m["gobgpPeak"], m["rssRatio"], m["peakRatio"]
    );
    println!(
        "  route load: ours {} s (set_routes {} ms), gobgpd {} s (mrt inject)",
        report["routeLoad"]["oursSeconds"],
        report["routeLoad"]["oursInternalMs"],
        report["routeLoad"]["gobgpSeconds"]
    );
    ours.stop()?;
    drop(lab);
    Ok(())
}
