//! The `bgp-speak` binary on loopback addresses (no root needed): three processes, A
//! (127.0.3.1, AS 65001, YAML, routes from the file plus `--routes 100`), B (127.0.3.2, AS
//! 65002, JSON, passive) and C (127.0.3.3, AS 65003, passive, not in A's first file). Checked
//! through `--status-json`: A and B reach Established and B counts A's 102 prefixes; SIGUSR1 on
//! A withdraws them all; SIGHUP with C added to A's file brings C up (and the routes back); a
//! SIGHUP with a broken file keeps the running configuration; SIGTERM exits 0. Files with an
//! unknown field or a bad community, and bad flags, exit non-zero naming the culprit.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::process::BoundChild;

const BIN: &str = env!("CARGO_BIN_EXE_bgp-speak");
const T: Duration = Duration::from_secs(30);

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 2);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 3);

/// A port free on `ip` now.
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((IpAddr::V4(ip), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One running bgp-speak, its files, and its status.
struct Speak {
    name: &'static str,
    child: BoundChild,
    status: PathBuf,
    log: PathBuf,
}

impl Speak {
    fn start(dir: &Path, name: &'static str, config: &Path, extra: &[&str]) -> Speak {
        let status = dir.join(format!("{name}.status.json"));
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config)
            .arg("--status-json")
            .arg(&status)
            .args(["--log", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out);
        let child = BoundChild::spawn(cmd).expect("bgp-speak starts");
        Speak {
            name,
            child,
            status,
            log,
        }
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill {sig}");
    }

    fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn peer(&self, ip: Ipv4Addr) -> Option<Value> {
        let s = self.status()?;
        s["peers"]
            .as_array()?
            .iter()
            .find(|p| p["address"] == ip.to_string())
            .cloned()
    }

    /// Waits until `f` holds for the status file; panics with the status and log otherwise.
    fn wait(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.status()
                && f(&s)
            {
                return s;
            }
            if Instant::now() > deadline || self.child.has_exited() {
                panic!(
                    "{}: {what}: timed out or exited\nstatus: {}\nlog:\n{}",
                    self.name,
                    self.status()
                        .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
                        .unwrap_or_else(|| "none".into()),
                    tail(&self.log())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_peer(&mut self, ip: Ipv4Addr, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let s = self.wait(what, |s| {
            s["peers"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["address"] == ip.to_string()))
                .is_some_and(&f)
        });
        self.peer(ip)
            .unwrap_or_else(|| panic!("{what}: peer {ip} gone from {s}"))
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn established(p: &Value) -> bool {
    p["state"] == "Established"
}

fn a_config(a_port: u16, b_port: u16, c: Option<u16>) -> String {
    let mut s = format!(
        "asn: 65001\n\
         routerId: {A}\n\
         listenPort: {a_port}\n\
         listenAddresses: [{A}]\n\
         neighbors:\n\
         \x20 - address: {B}\n\
         \x20   port: {b_port}\n\
         \x20   peerAsn: 65002\n\
         \x20   description: b\n\
         \x20   localAddress: {A}\n\
         \x20   connectRetry: 1\n\
         \x20   holdTime: 9\n"
    );
    if let Some(c_port) = c {
        s.push_str(&format!(
            "\x20 - address: {C}\n\
             \x20   port: {c_port}\n\
             \x20   peerAsn: 65003\n\
             \x20   description: c\n\
             \x20   localAddress: {A}\n\
             \x20   connectRetry: 1\n"
        ));
    }
    s.push_str(
        "routes:\n\
         \x20 - prefix: 203.0.113.10/32\n\
         \x20   communities: [\"65001:100\"]\n\
         \x20   largeCommunities: [\"65001:1:2\"]\n\
         \x20   med: 10\n\
         \x20 - prefix: 2001:db8:ff::10/128\n",
    );
    s
}

/// A passive speaker (JSON file) with A as its only neighbour.
fn passive_config(asn: u32, ip: Ipv4Addr, port: u16, a_port: u16) -> String {
    format!(
        r#"{{"asn": {asn}, "routerId": "{ip}", "listenPort": {port}, "listenAddresses": ["{ip}"],
            "neighbors": [{{"address": "{A}", "port": {a_port}, "peerAsn": 65001,
                            "passive": true, "holdTime": 9}}]}}"#
    )
}

/// Routes from the file (one IPv4, one IPv6 with next-hop-self) plus `--routes 100`.
const ROUTES: u64 = 102;

#[test]
fn two_speakers_signals_and_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a_port, b_port, c_port) = (free_port(A), free_port(B), free_port(C));
    let a_file = dir.path().join("a.yaml");
    let b_file = dir.path().join("b.json");
    let c_file = dir.path().join("c.json");
    std::fs::write(&a_file, a_config(a_port, b_port, None)).unwrap();
    std::fs::write(&b_file, passive_config(65002, B, b_port, a_port)).unwrap();
    std::fs::write(&c_file, passive_config(65003, C, c_port, a_port)).unwrap();

    let mut b = Speak::start(dir.path(), "b", &b_file, &[]);
    let mut c = Speak::start(dir.path(), "c", &c_file, &[]);
    let mut a = Speak::start(
        dir.path(),
        "a",
        &a_file,
        &["--routes", "100", "--route-start", "10.0.0.0"],
    );

    // Established both ways; B has every route of A.
    let pa = a.wait_peer(B, "A established with B", |p| {
        established(p) && p["prefixesSent"] == ROUTES
    });
    assert_eq!(pa["peerAsn"], 65002, "{pa}");
    assert_eq!(pa["description"], "b", "{pa}");
    assert_eq!(pa["peerId"], B.to_string(), "{pa}");
    assert!(pa["uptimeSeconds"].is_u64(), "{pa}");
    let s = a.status().unwrap();
    assert_eq!(s["routes"], ROUTES, "{s}");
    assert_eq!(s["listening"][0], format!("{A}:{a_port}"), "{s}");
    let pb = b.wait_peer(A, "B received A's routes", |p| {
        established(p) && p["prefixesReceived"] == ROUTES
    });
    assert_eq!(pb["peerAsn"], 65001, "{pb}");
    // C is not A's neighbour yet: A refuses nothing, C waits.
    assert!(a.peer(C).is_none());
    assert_ne!(
        c.peer(A).map(|p| p["state"].clone()),
        Some("Established".into())
    );

    // SIGUSR1: every route withdrawn.
    a.signal(libc::SIGUSR1);
    b.wait_peer(A, "B's routes withdrawn", |p| {
        established(p) && p["prefixesReceived"] == 0
    });
    let s = a.wait("A reports the withdrawal", |s| s["withdrawn"] == true);
    assert_eq!(s["routes"], 0, "{s}");

    // SIGHUP with C added: C comes up, the routes return everywhere.
    std::fs::write(&a_file, a_config(a_port, b_port, Some(c_port))).unwrap();
    a.signal(libc::SIGHUP);
    let s = a.wait("A reloaded", |s| s["reloads"] == 1);
    let r = &s["lastReload"];
    assert_eq!(r["ok"], true, "{s}");
    assert_eq!(r["added"], serde_json::json!([C.to_string()]), "{s}");
    assert_eq!(r["removed"], serde_json::json!([]), "{s}");
    assert_eq!(r["reset"], serde_json::json!([]), "{s}");
    let pc = a.wait_peer(C, "A established with C", established);
    assert_eq!(pc["description"], "c", "{pc}");
    c.wait_peer(A, "C received A's routes", |p| {
        established(p) && p["prefixesReceived"] == ROUTES
    });
    b.wait_peer(A, "B received A's routes again", |p| {
        established(p) && p["prefixesReceived"] == ROUTES
    });

    // SIGHUP with a broken file: logged, the running configuration stays.
    std::fs::write(
        &a_file,
        a_config(a_port, b_port, Some(c_port)) + "bogusField: 1\n",
    )
    .unwrap();
    a.signal(libc::SIGHUP);
    let s = a.wait("A refused the broken file", |s| s["reloads"] == 2);
    assert_eq!(s["lastReload"]["ok"], false, "{s}");
    let err = s["lastReload"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("bogusField"), "{err}");
    assert!(a.log().contains("reload failed"), "{}", tail(&a.log()));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!a.child.has_exited(), "A exited after a bad reload");
    let pc = a.peer(C).expect("C still configured");
    assert!(established(&pc), "{pc}");
    assert_eq!(a.status().unwrap()["routes"], ROUTES);

    // SIGTERM: a clean exit, Cease to the peers.
    let status: ExitStatus = a.child.terminate().expect("A stops");
    assert!(
        status.success(),
        "A exited with {status}\n{}",
        tail(&a.log())
    );
    let s = a.status().unwrap();
    assert_eq!(s["running"], false, "{s}");
    b.wait_peer(A, "B's session with A down", |p| !established(p));
    let pb = b.peer(A).unwrap();
    assert_eq!(pb["prefixesReceived"], 0, "{pb}");
    assert!(
        pb["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("NotificationReceived") && e.contains("code: 6")),
        "B's last error should be A's Cease: {pb}"
    );
    drop(c);
}

/// Runs bgp-speak to completion (10 s at most); returns its exit status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bgp-speak starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bgp-speak {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_files_and_flags_exit_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };

    let unknown = path(
        "unknown.yaml",
        "asn: 65001\nrouterId: 127.0.3.9\nlistenPort: 0\nneighbors:\n  - address: 127.0.3.8\n    peerAsn: 65000\n    holdtime: 30\n",
    );
    let (st, err) = run_to_exit(&["--config", &unknown]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("holdtime"), "{err}");

    let community = path(
        "community.json",
        r#"{"asn": 65001, "routerId": "127.0.3.9", "listenPort": 0,
            "routes": [{"prefix": "203.0.113.1/32", "communities": ["65001:70000"]}]}"#,
    );
    let (st, err) = run_to_exit(&["--config", &community]);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("routes[0].communities[0]") && err.contains("65001:70000"),
        "{err}"
    );

    let large = path(
        "large.yaml",
        "asn: 65001\nrouterId: 127.0.3.9\nlistenPort: 0\nroutes:\n  - prefix: 203.0.113.1/32\n    largeCommunities: ['1:2']\n",
    );
    let (st, err) = run_to_exit(&["--config", &large]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("routes[0].largeCommunities[0]"), "{err}");

    let policy = path(
        "policy.yaml",
        "asn: 65001\nrouterId: 127.0.3.9\nlistenPort: 0\nneighbors:\n  - address: 127.0.3.8\n    peerAsn: 65000\n    exportPolicy: {policies: [missing]}\n",
    );
    let (st, err) = run_to_exit(&["--config", &policy]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("missing"), "{err}");

    let good = path(
        "good.json",
        r#"{"asn": 65001, "routerId": "127.0.3.9", "listenPort": 0}"#,
    );
    let (st, err) = run_to_exit(&["--config", &good, "--routes", "many"]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("--routes"), "{err}");
    let (st, err) = run_to_exit(&["--config", &good, "--route-start", "10.0.0.300"]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("--route-start"), "{err}");
    let (st, err) = run_to_exit(&[
        "--config",
        &good,
        "--routes",
        "10",
        "--route-start",
        "255.255.255.250",
    ]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("--route-start"), "{err}");
    let (st, err) = run_to_exit(&["--config", &good, "--log", "nonsense[["]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("--log"), "{err}");
    let (st, err) = run_to_exit(&["--config", &good, "--frobnicate"]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("--frobnicate"), "{err}");
    let (st, err) = run_to_exit(&[
        "--config",
        &dir.path().join("absent.yaml").to_string_lossy(),
    ]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("absent.yaml"), "{err}");
}
