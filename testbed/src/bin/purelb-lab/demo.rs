//! `make demo` and `make demo-down`: the lab's cluster with PureLB installed,
//! left running in a background process, and what a user would look at.

use std::fs;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use testbed::cluster::Cluster;
use testbed::cluster::workload::{Families, LbService, ask};

pub const DEFAULT_STATE_DIR: &str = "/var/tmp/purelb-demo";
const NAMESPACE: &str = "demo";
/// Start-up on a cold machine: cluster, install, Deployment, Services.
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// What `serve` tells `demo` once the cluster is up.
#[derive(Serialize, Deserialize)]
struct Ready {
    pid: u32,
    kubeenv: PathBuf,
    kubeconfig: PathBuf,
    client_netns: String,
    router_netns: String,
    router_vty: PathBuf,
    local: Vec<IpAddr>,
    remote: Vec<IpAddr>,
    startup_seconds: f64,
    install_seconds: f64,
}

/// Starts `serve` in the background and shows the result.
pub fn demo(state: &Path) -> Result<()> {
    if running_pid(state).is_some() {
        println!("==> a demo is running: stopping it first");
        down(state)?;
    }
    fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let _ = fs::remove_file(state.join("ready.json"));
    let log = state.join("serve.log");
    let out = fs::File::create(&log)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid in the child before exec touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting purelb-lab serve")?;
    fs::write(state.join("pid"), child.id().to_string())?;
    println!(
        "==> starting the cluster: control plane, four nodes (containerd, kubelet, kube-proxy), \
         FRR, a client; then PureLB from deploy/ (log: {})",
        log.display()
    );
    let started = Instant::now();
    let ready: Ready = loop {
        if let Ok(text) = fs::read_to_string(state.join("ready.json")) {
            break serde_json::from_str(&text)?;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the cluster did not come up ({status}); the end of {}:\n{}",
                log.display(),
                tail(&fs::read_to_string(&log).unwrap_or_default(), 40)
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "the cluster was not up within {START_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    show(&ready)
}

fn show(r: &Ready) -> Result<()> {
    let kubectl = |args: &[&str]| -> Result<String> {
        let out = Command::new(&r.kubeenv)
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&r.kubeconfig)
            .args(args)
            .output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    println!(
        "\n==> up: cluster in {:.1} s, PureLB installed and Services answering {:.1} s later",
        r.startup_seconds, r.install_seconds
    );
    println!("\n==> kubectl get nodes,pods -A -o wide");
    print!("{}", kubectl(&["get", "nodes,pods", "-A", "-o", "wide"])?);
    println!("\n==> kubectl -n {NAMESPACE} get services");
    print!(
        "{}",
        kubectl(&["-n", NAMESPACE, "get", "services", "-o", "wide"])?
    );
    println!("\n==> kubectl get bgpns -A (BGPNodeStatus: each node's sessions)");
    print!("{}", kubectl(&["get", "bgpns", "-A"])?);
    println!("\n==> the router's routes to the remote addresses (ECMP over the nodes)");
    for ip in &r.remote {
        let show = if ip.is_ipv4() {
            format!("show ip route {ip}")
        } else {
            format!("show ipv6 route {ip}")
        };
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&r.router_vty)
            .args(["-c", &show])
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!("\n==> requests from the client (behind the router) and from this host");
    for ip in r.local.iter().chain(&r.remote) {
        for (who, netns) in [("client", Some(r.client_netns.as_str())), ("host", None)] {
            for _ in 0..3 {
                let answer = ask(netns, *ip, Duration::from_secs(30))?;
                println!("  {who:6} -> {ip:<24} {answer}");
            }
        }
    }
    let kubectl_hint = format!(
        "{} kubectl --kubeconfig {}",
        r.kubeenv.display(),
        r.kubeconfig.display()
    );
    println!(
        "\n==> it keeps running. Look around:\n  \
         {kubectl_hint} get pods -A\n  \
         {kubectl_hint} -n purelb-system logs daemonset/lbnodeagent\n  \
         vtysh --vty_socket {vty} -c 'show bgp summary'\n  \
         ip netns exec {client} curl -s http://{addr}/\n  \
         curl -s http://{addr}/\n\
         Remove it all with: make demo-down",
        vty = r.router_vty.display(),
        client = r.client_netns,
        addr = r.remote.first().map(|a| bracket(*a)).unwrap_or_default(),
    );
    Ok(())
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The background process: builds the cluster, installs PureLB and the
/// demo's objects, writes `ready.json`, and holds it all until SIGTERM.
pub fn serve(state: &Path) -> Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let installing = Instant::now();
    let (cluster, _) = Cluster::start_with_purelb()?;
    eprintln!(
        "serve: cluster up in {:?}: {}",
        cluster.startup_time,
        cluster.describe()
    );
    cluster.kubectl(&["create", "namespace", NAMESPACE])?;
    cluster.deploy_web(NAMESPACE, "web", 4)?;
    let service = |name, group| LbService {
        namespace: NAMESPACE,
        name,
        app: "web",
        group,
        families: Families::Dual,
        external_traffic_policy: "Cluster",
    };
    let local = cluster.lb_service(&service("web-local", "default"))?;
    let remote = cluster.lb_service(&service("web-remote", "remote"))?;
    let client = cluster.host("client")?;
    for ip in local.iter().chain(&remote) {
        ask(Some(client.netns()), *ip, Duration::from_secs(60))?;
    }
    let kubeconfig = state.join("kubeconfig");
    fs::copy(cluster.control_plane().kubeconfig_path(), &kubeconfig)?;
    let router = cluster.router()?;
    let ready = Ready {
        pid: std::process::id(),
        kubeenv: cluster.control_plane().kubeenv_bin().to_owned(),
        kubeconfig,
        client_netns: client.netns().to_owned(),
        router_netns: router.ns().netns().to_owned(),
        router_vty: router.dir().to_owned(),
        local,
        remote,
        startup_seconds: cluster.startup_time.as_secs_f64(),
        install_seconds: (installing.elapsed() - cluster.startup_time).as_secs_f64(),
    };
    let tmp = state.join("ready.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(&ready)?)?;
    fs::rename(&tmp, state.join("ready.json"))?;
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("serve: stopping");
    drop(cluster);
    let _ = fs::remove_file(state.join("ready.json"));
    Ok(())
}

/// The pid of a running `serve`, if any.
fn running_pid(state: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(state.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_serve = cmdline.split(|b| *b == 0).any(|a| a == b"serve");
    (is_serve && !testbed::controlplane::process_gone(pid)).then_some(pid)
}

/// Stops `serve` (SIGTERM: it tears the cluster down), SIGKILL after 2
/// minutes, then removes what a killed one left.
pub fn down(state: &Path) -> Result<()> {
    if let Some(pid) = running_pid(state) {
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while !testbed::controlplane::process_gone(pid) {
            if Instant::now() > deadline {
                // SAFETY: plain syscall.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("stopped the demo (pid {pid})");
    } else {
        println!("no demo is running");
    }
    // A new lab removes what dead ones left behind (namespaces, mounts, cgroups).
    drop(testbed::netlab::Lab::new()?);
    for file in ["pid", "ready.json", "kubeconfig"] {
        let _ = fs::remove_file(state.join(file));
    }
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
