//! Smoke tests of `testbed::netlab`: each test builds its own lab (they run
//! in parallel) and needs root (skipped without it, failing under CI=true).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;
use testbed::netlab::{Lab, LinkSpec, require_root, wait_until};

const T: Duration = Duration::from_secs(60);

/// FRR config for an eBGP speaker with one neighbor, fast timers.
fn frr_conf(asn: u32, id: &str, peer: &str, peer_as: u32, extra_global: &str, af: &str) -> String {
    format!(
        "frr defaults traditional\n\
         hostname as{asn}\n\
         {extra_global}\
         router bgp {asn}\n\
         \x20bgp router-id {id}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20neighbor {peer} remote-as {peer_as}\n\
         \x20neighbor {peer} timers connect 5\n\
         \x20neighbor {peer} advertisement-interval 0\n\
         \x20address-family ipv4 unicast\n\
         {af}\
         \x20exit-address-family\n"
    )
}

fn first_path(routes: &serde_json::Value) -> &serde_json::Value {
    routes
        .as_array()
        .and_then(|a| a.iter().find(|p| p["bestpath"] == true).or(a.first()))
        .expect("route has paths")
}

#[test]
fn frr_to_frr_ebgp_exchanges_a_route() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let r1 = lab.router("r1")?;
    let r2 = lab.router("r2")?;
    let link = lab.link(
        &r1,
        &r2,
        LinkSpec::new()
            .v4("198.51.100.1/24", "198.51.100.2/24")
            .v6("2001:db8:1::1/64", "2001:db8:1::2/64"),
    )?;
    assert_eq!((link.a_if(), link.b_if()), ("eth0", "eth0"));

    let f1 = lab.frr(
        &r1,
        &frr_conf(
            65001,
            "198.51.100.1",
            "198.51.100.2",
            65002,
            "ip route 203.0.113.0/24 blackhole\n",
            "  network 203.0.113.0/24\n",
        ),
    )?;
    let f2 = lab.frr(
        &r2,
        &frr_conf(65002, "198.51.100.2", "198.51.100.1", 65001, "", ""),
    )?;
    f1.wait_established("198.51.100.2", T)?;
    f2.wait_established("198.51.100.1", T)?;

    let paths = f2.wait_route("203.0.113.0/24", T)?;
    let best = first_path(&paths);
    assert_eq!(best["path"], "65001", "AS path of {best}");
    assert_eq!(best["valid"], true);
    assert_eq!(best["nexthops"][0]["ip"], "198.51.100.1");

    // The whole table as asked for in the brief, straight from vtysh.
    let table = f2.vtysh_json("show bgp ipv4 unicast json")?;
    assert!(table["routes"]["203.0.113.0/24"].is_array(), "{table}");
    let summary = f2.vtysh_json("show bgp summary json")?;
    assert_eq!(
        summary["ipv4Unicast"]["peers"]["198.51.100.1"]["state"],
        "Established"
    );

    // zebra installed it into r2's kernel table.
    wait_until(T, "203.0.113.0/24 in r2's kernel table", || {
        Ok(r2
            .ip(&["route", "show", "203.0.113.0/24"])?
            .contains("via 198.51.100.1"))
    })?;
    // Runtime config through vtysh.
    f1.configure(&[
        "router bgp 65001",
        "address-family ipv4 unicast",
        "network 203.0.113.128/25",
    ])?;
    assert!(
        f1.configure(&["router bgp 65001", "netwrk 1.2.3.0/24"])
            .is_err()
    );
    f1.configure(&["ip route 203.0.113.128/25 blackhole"])?;
    let paths = f2.wait_route("203.0.113.128/25", T)?;
    assert_eq!(first_path(&paths)["path"], "65001");

    // IPv6 on the link is usable at once (no DAD).
    let addrs = r1.ip(&["-6", "addr", "show", "dev", "eth0"])?;
    assert!(!addrs.contains("tentative"), "{addrs}");
    Ok(())
}

#[test]
fn gobgp_peers_with_frr() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let r1 = lab.router("r1")?;
    let g = lab.router("g")?;
    lab.link(
        &r1,
        &g,
        LinkSpec::new().v4("198.51.100.1/24", "198.51.100.2/24"),
    )?;
    let frr = lab.frr(
        &r1,
        &frr_conf(65001, "198.51.100.1", "198.51.100.2", 65010, "", ""),
    )?;
    let gobgp = lab.gobgp(
        &g,
        r#"
[global.config]
  as = 65010
  router-id = "198.51.100.2"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.51.100.1"
    peer-as = 65001
  [neighbors.timers.config]
    connect-retry = 5
"#,
    )?;
    gobgp.wait_established("198.51.100.1", T)?;
    frr.wait_established("198.51.100.2", T)?;

    gobgp.gobgp(&["global", "rib", "add", "-a", "ipv4", "203.0.113.128/25"])?;
    let rib = gobgp.gobgp_json(&["global", "rib"])?;
    assert!(rib.get("203.0.113.128/25").is_some(), "{rib}");

    let paths = frr.wait_route("203.0.113.128/25", T)?;
    let best = first_path(&paths);
    assert_eq!(best["path"], "65010", "AS path of {best}");
    assert_eq!(best["nexthops"][0]["ip"], "198.51.100.2");
    Ok(())
}

#[test]
fn bird_peers_with_frr() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let r1 = lab.router("r1")?;
    let b = lab.router("b")?;
    lab.link(
        &r1,
        &b,
        LinkSpec::new().v4("198.51.100.1/24", "198.51.100.3/24"),
    )?;
    let frr = lab.frr(
        &r1,
        &frr_conf(
            65001,
            "198.51.100.1",
            "198.51.100.3",
            65020,
            "ip route 203.0.113.0/26 blackhole\n",
            "  network 203.0.113.0/26\n",
        ),
    )?;
    let bird_conf = r#"
router id 198.51.100.3;
protocol device {}
protocol static s4 {
  ipv4;
  route 203.0.113.64/26 blackhole;
}
protocol bgp frr {
  local 198.51.100.3 as 65020;
  neighbor 198.51.100.1 as 65001;
  connect retry time 5;
  ipv4 { import all; export where proto = "s4"; };
}
"#;
    let bird = lab.bird(&b, bird_conf)?;
    bird.wait_established("frr", T)?;
    frr.wait_established("198.51.100.3", T)?;

    let paths = frr.wait_route("203.0.113.64/26", T)?;
    let best = first_path(&paths);
    assert_eq!(best["path"], "65020", "AS path of {best}");

    // And the other way: FRR's network statement reached BIRD.
    wait_until(T, "203.0.113.0/26 in BIRD", || {
        Ok(bird
            .birdc("show route 203.0.113.0/26 all")?
            .contains("BGP.as_path: 65001"))
    })?;
    // Reconfigure the running BIRD with one more static route.
    bird.reconfigure(&bird_conf.replace(
        "route 203.0.113.64/26 blackhole;",
        "route 203.0.113.64/26 blackhole;\n  route 203.0.113.192/26 blackhole;",
    ))?;
    let paths = frr.wait_route("203.0.113.192/26", T)?;
    assert_eq!(first_path(&paths)["path"], "65020");

    let protos = bird.protocols()?;
    assert!(
        protos.iter().any(|p| p.name == "s4" && p.state == "up"),
        "{protos:?}"
    );
    Ok(())
}

#[test]
fn lan_and_fake_dummy_carry_traffic() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let r1 = lab.router("r1")?;
    let n1 = lab.node("n1")?;
    let n2 = lab.node("n2")?;
    let lan = lab.lan("lan")?;
    assert_eq!(
        lan.attach(&r1, &["198.51.100.1/24", "2001:db8:2::1/64"])?,
        "eth0"
    );
    lan.attach(&n1, &["198.51.100.11/24", "2001:db8:2::11/64"])?;
    lan.attach(&n2, &["198.51.100.12/24", "2001:db8:2::12/64"])?;
    lab.add_fake_dummy(&n1, "kube-lb0")?;
    n1.add_addr("kube-lb0", "203.0.113.10/32")?;
    n1.add_addr("kube-lb0", "2001:db8:5::10/128")?;
    r1.add_route("203.0.113.10/32", "198.51.100.11")?;
    r1.add_route("2001:db8:5::10/128", "2001:db8:2::11")?;
    n2.add_route("default", "198.51.100.1")?;

    // Listeners in n1 on the fake dummy's addresses; clients in r1 and n2
    // (n2 goes through r1, which forwards).
    let l4 = n1.run(|| TcpListener::bind("203.0.113.10:8080"))??;
    let l6 = n1.run(|| TcpListener::bind("[2001:db8:5::10]:8080"))??;
    let to = Duration::from_secs(3);
    r1.connect_tcp(l4.local_addr()?, to)?;
    r1.connect_tcp(l6.local_addr()?, to)?;
    n2.connect_tcp(l4.local_addr()?, to)?;
    // A neighbour on the LAN answers at once over IPv6 too (no DAD).
    let err = n2
        .connect_tcp("[2001:db8:2::1]:1".parse()?, to)
        .expect_err("nothing listens on r1 port 1");
    let kind = err
        .root_cause()
        .downcast_ref::<std::io::Error>()
        .map(|e| e.kind());
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused), "{err:#}");
    let link = n1.ip(&["-d", "link", "show", "kube-lb0"])?;
    assert!(link.contains("ifb"), "{link}");
    Ok(())
}

#[test]
fn bad_daemon_configs_are_reported() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let r = lab.router("r")?;
    let err = lab
        .frr(&r, "router bgp 65001\n netwrk 203.0.113.0/24\n")
        .expect_err("typo accepted");
    assert!(format!("{err:#}").contains("netwrk"), "{err:#}");
    eprintln!("{err:#}");
    let err = lab
        .bird(&r, "protocol bgp {\n")
        .expect_err("bad bird.conf accepted");
    assert!(format!("{err:#}").contains("bird -p"), "{err:#}");
    let err = lab
        .gobgp(&r, "[global.config]\n  as = \"x\"\n")
        .expect_err("bad gobgpd.toml accepted");
    assert!(format!("{err:#}").contains("gobgpd -d"), "{err:#}");
    Ok(())
}

/// Connects from a process (bash) in `ns` to `addr`; true on success.
fn process_connects(ns: &testbed::netlab::Ns, addr: SocketAddr) -> anyhow::Result<bool> {
    let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
    let out = ns.output(&["timeout", "3", "bash", "-c", &script])?;
    Ok(out.status.success())
}

#[test]
fn management_link_reaches_host_and_can_be_cut() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = lab.node("n1")?;
    let mgmt = lab.management_link(&n1)?;
    let host_addr = mgmt.host_addr();
    assert_eq!(host_addr.octets()[..2], [172, 31]);
    let host_side = testbed_ip(&["-4", "addr", "show", "dev", mgmt.host_if()])?;
    assert!(
        host_side.contains(&format!("{host_addr}/30")),
        "{host_side}"
    );

    // A listener on the host side address only (not 0.0.0.0).
    let listener = TcpListener::bind((host_addr, 0))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let drain = |l: &TcpListener| while l.accept().is_ok() {};

    assert!(process_connects(&n1, addr)?, "node cannot reach {addr}");
    drain(&listener);

    // An established connection, to see it hang across the cut.
    let mut from_node = n1.connect_tcp(addr, Duration::from_secs(3))?;
    from_node.set_read_timeout(Some(Duration::from_millis(1500)))?;
    let mut at_host = {
        listener.set_nonblocking(false)?;
        let (s, _) = listener.accept()?;
        listener.set_nonblocking(true)?;
        s
    };

    mgmt.cut()?;
    mgmt.cut()?; // idempotent
    assert!(
        !process_connects(&n1, addr)?,
        "connection to {addr} succeeded through a cut link"
    );
    assert!(n1.connect_tcp(addr, Duration::from_secs(1)).is_err());
    at_host.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    let err = from_node.read_exact(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "read across the cut: {err}"
    );

    mgmt.restore()?;
    mgmt.restore()?; // idempotent
    assert!(process_connects(&n1, addr)?, "no connection after restore");
    // The data sent during the cut arrives by retransmission.
    from_node.set_read_timeout(Some(Duration::from_secs(20)))?;
    from_node.read_exact(&mut buf)?;
    assert_eq!(&buf, b"ping");
    drain(&listener);

    let host_if = mgmt.host_if().to_owned();
    drop(lab);
    assert!(
        testbed_ip(&["link", "show", "dev", &host_if]).is_err(),
        "host link {host_if} survived the lab"
    );
    Ok(())
}

#[test]
fn lab_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lab>();
    check::<testbed::netlab::Ns>();
    check::<testbed::netlab::Frr>();
    check::<testbed::netlab::Bird>();
    check::<testbed::netlab::Gobgp>();
    check::<testbed::netlab::MgmtLink>();
}

fn testbed_ip(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn netns_list() -> anyhow::Result<String> {
    testbed_ip(&["netns", "list"])
}

fn pid_alive(pid: u32) -> bool {
    // Reaped children have no /proc entry; a zombie would still count.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn teardown_removes_namespaces_and_processes() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Normal drop.
    let lab = Lab::new()?;
    let r1 = lab.router("r1")?;
    let n1 = lab.node("n1")?;
    lab.link(
        &r1,
        &n1,
        LinkSpec::new().v4("198.51.100.1/24", "198.51.100.2/24"),
    )?;
    lab.add_fake_dummy(&n1, "kube-lb0")?;
    n1.add_addr("kube-lb0", "203.0.113.10/32")?;
    n1.add_addr("kube-lb0", "2001:db8:5::10/128")?;
    let local = n1.ip(&["route", "show", "table", "local"])?;
    assert!(local.contains("local 203.0.113.10 dev kube-lb0"), "{local}");
    let frr = lab.frr(
        &r1,
        "router bgp 65001\n bgp router-id 198.51.100.1\n neighbor 198.51.100.2 remote-as 65002\n",
    )?;
    let sleeper = n1.spawn("sleeper", &["sleep", "600"])?;
    assert!(sleeper.is_running());
    let mgmt = lab.management_link(&n1)?;
    let pids = lab.pids();
    assert_eq!(pids.len(), 4, "zebra, staticd, bgpd, sleep");
    let names = lab.netns_names();
    let dir = lab.dir().to_owned();
    assert!(netns_list()?.contains(&names[0]));
    drop(frr);
    drop(lab);
    let list = netns_list()?;
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} survived: {list}");
    }
    for pid in &pids {
        assert!(!pid_alive(*pid), "pid {pid} survived");
    }
    assert!(!dir.exists(), "{} survived", dir.display());
    assert!(testbed_ip(&["link", "show", "dev", mgmt.host_if()]).is_err());
    assert!(!sleeper.is_running());

    // Drop while a test panics.
    let (names, pids) = {
        let grab = std::sync::Mutex::new((Vec::new(), Vec::new()));
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let lab = Lab::new().expect("lab");
            let n = lab.node("n1").expect("node");
            n.spawn("sleeper", &["sleep", "600"]).expect("spawn");
            *grab.lock().unwrap() = (lab.netns_names(), lab.pids());
            panic!("deliberate panic with a live lab");
        }));
        assert!(res.is_err());
        grab.into_inner().unwrap()
    };
    assert_eq!((names.len(), pids.len()), (1, 1));
    assert!(!netns_list()?.contains(&names[0]));
    assert!(!pid_alive(pids[0]));
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    // A pid that is certainly dead: a child we reaped.
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    let stale = format!("plb-{pid}-0-node-stale");
    testbed_ip(&["netns", "add", &stale])?;
    // A process still running inside it, as a SIGKILLed test leaves. (A
    // parallel test's Lab::new may already clean it up meanwhile.)
    let mut inside = std::process::Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "600"])
        .spawn()?;
    wait_until(T, "sleep inside the stale namespace", || {
        Ok(inside.try_wait()?.is_some()
            || !testbed_ip(&["netns", "pids", &stale])?.trim().is_empty())
    })?;

    let _lab = Lab::new()?;
    assert!(
        !netns_list()?.contains(&stale),
        "stale namespace survived Lab::new"
    );
    let status = inside.wait()?;
    assert!(!status.success(), "sleeper was not killed: {status}");
    Ok(())
}
