//! PureLB as its users run it: the allocator Deployment and the lbnodeagent
//! DaemonSet, from the images `make images` builds, installed with the
//! project's own manifests on a real cluster (four kubelets with containerd
//! and kube-proxy, an FRR router, a client; `testbed/topology/purelb.clab.yml`),
//! and traffic to LoadBalancer addresses reaching backend pods through
//! kube-proxy.
//!
//! One cluster serves every test of this binary; each test has its own
//! namespace and Services. Needs root (and fails under `CI=true` without it).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testbed::cluster::workload::{Families, LbService, answering_pod, ask};
use testbed::cluster::{self, Cluster};
use testbed::netlab::{self, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_NS: &str = "purelb-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static CLUSTER: OnceLock<Result<RwLock<Option<Cluster>>, String>> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(Ok(lock)) = CLUSTER.get() {
        let cluster = lock.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(cluster);
    }
}

/// The cluster of this test binary, with PureLB installed and the lab's
/// configuration applied; started on first use, stopped when the binary exits.
fn shared() -> &'static RwLock<Option<Cluster>> {
    let started = CLUSTER.get_or_init(|| {
        let start = || -> Result<Cluster> {
            let images: Vec<PathBuf> = ["allocator", "lbnodeagent", "pause", "web"]
                .iter()
                .map(|i| cluster::default_images_dir().join(format!("{i}.tar")))
                .collect();
            let c = Cluster::start(&cluster::default_topology(), &images)?;
            eprintln!(
                "cluster_e2e: cluster up in {:?} ({})",
                c.startup_time,
                c.describe()
            );
            let t = Instant::now();
            c.install_purelb(&repo().join("deploy"))?;
            c.apply_file(&repo().join("testbed/topology/purelb-config.yaml"))?;
            eprintln!("cluster_e2e: PureLB installed in {:?}", t.elapsed());
            Ok(c)
        };
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(stop_cluster);
        }
        start()
            .map(|c| RwLock::new(Some(c)))
            .map_err(|e| format!("{e:#}"))
    });
    match started {
        Ok(lock) => lock,
        Err(e) => panic!("the test cluster did not start: {e}"),
    }
}

fn cluster() -> ClusterRef {
    ClusterRef(shared().read().unwrap_or_else(|e| e.into_inner()))
}

fn cluster_mut() -> ClusterMut {
    ClusterMut(shared().write().unwrap_or_else(|e| e.into_inner()))
}

struct ClusterRef(RwLockReadGuard<'static, Option<Cluster>>);
struct ClusterMut(RwLockWriteGuard<'static, Option<Cluster>>);

impl std::ops::Deref for ClusterRef {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.0
            .as_ref()
            .expect("the cluster runs until the binary exits")
    }
}

impl std::ops::Deref for ClusterMut {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.0
            .as_ref()
            .expect("the cluster runs until the binary exits")
    }
}

impl std::ops::DerefMut for ClusterMut {
    fn deref_mut(&mut self) -> &mut Cluster {
        self.0
            .as_mut()
            .expect("the cluster runs until the binary exits")
    }
}

/// A namespace of its own for a test, deleted at the end.
struct TestNs {
    name: String,
    kubeenv: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNs {
    fn new(c: &Cluster, prefix: &str) -> Result<TestNs> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let name = format!(
            "{prefix}-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        c.kubectl(&["create", "namespace", &name])?;
        wait_for(TIMEOUT, "the namespace's default ServiceAccount", || {
            Ok(
                c.kubectl(&["-n", &name, "get", "serviceaccount", "default"])
                    .is_ok()
                    .then_some(()),
            )
        })?;
        Ok(TestNs {
            name,
            kubeenv: c.control_plane().kubeenv_bin().to_owned(),
            kubeconfig: c.control_plane().kubeconfig_path().to_owned(),
        })
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.kubeenv)
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// The pods of `app` (their names).
fn pods_of(c: &Cluster, ns: &str, app: &str) -> Result<BTreeSet<String>> {
    let out = c.kubectl_text(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// The pod that answers `ip:80` from `from` (a lab namespace, or the host).
fn answer_from(c: &Cluster, from: Option<&netlab::Ns>, ip: IpAddr) -> Result<String> {
    let body = ask(from.map(netlab::Ns::netns), ip, TIMEOUT).with_context(|| {
        let router = c.router().map(|r| r.ns().clone());
        format!(
            "{ip} is on {:?}; the router's neighbours: {}; routes: {}",
            holder(c, ip),
            router
                .as_ref()
                .map(|r| r.ip(&["neigh"]).unwrap_or_default())
                .unwrap_or_default(),
            router
                .as_ref()
                .map(|r| r.ip(&["route", "get", &ip.to_string()]).unwrap_or_default())
                .unwrap_or_default(),
        )
    })?;
    answering_pod(&body).with_context(|| format!("no pod in {body:?}"))
}

fn service<'a>(
    ns: &'a str,
    name: &'a str,
    app: &'a str,
    group: &'a str,
    families: Families,
    etp: &'a str,
) -> LbService<'a> {
    LbService {
        namespace: ns,
        name,
        app,
        group,
        families,
        external_traffic_policy: etp,
    }
}

#[test]
fn the_install_runs_as_pods_on_ready_nodes() -> Result<()> {
    if !netlab::require_root() {
        return Ok(());
    }
    let c = cluster();
    let nodes = c.kubectl_text(&["get", "nodes", "-o", "wide"])?;
    for n in &c.nodes {
        assert!(nodes.contains(&n.name), "{nodes}");
    }
    let nodes_count = c.nodes.len().to_string();
    wait_for(TIMEOUT, "an agent ready on every node", || {
        let ready = c.kubectl_text(&[
            "-n",
            INSTALL_NS,
            "get",
            "daemonset",
            "lbnodeagent",
            "-o",
            "jsonpath={.status.numberReady}",
        ])?;
        Ok((ready.trim() == nodes_count).then_some(()))
    })?;
    let available = c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "deployment",
        "allocator",
        "-o",
        "jsonpath={.status.availableReplicas}",
    ])?;
    assert_eq!(available.trim(), "2", "allocator replicas available");
    // The agents run on the nodes' network: their pod addresses are the nodes'.
    let agent_ips = c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "pods",
        "-l",
        "component=lbnodeagent",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ])?;
    for n in &c.nodes {
        let v4 = n
            .node_ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .context("node IPv4")?;
        assert!(agent_ips.contains(&v4.to_string()), "{agent_ips}");
    }
    // Logs come from the kubelets: the allocator (on the pod network, through
    // kube-proxy to the apiserver) elected a leader.
    let logs = wait_for(TIMEOUT, "the allocators' logs", || {
        let logs = c.kubectl_text(&[
            "-n",
            INSTALL_NS,
            "logs",
            "-l",
            "component=allocator",
            "--tail=-1",
        ])?;
        Ok((!logs.is_empty()).then_some(logs))
    })?;
    assert!(logs.contains('{'), "JSON logs from the allocator: {logs}");
    Ok(())
}

/// The status of the process running `exe` in a container on `node`.
fn container_process_status(c: &Cluster, node: &str, exe: &str) -> Result<String> {
    let node = c.node(node)?;
    wait_for(TIMEOUT, &format!("{exe} running on {}", node.name), || {
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let path = entry.path();
            let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
                continue;
            };
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            if argv0 != exe.as_bytes() {
                continue;
            }
            let cgroup = std::fs::read_to_string(path.join("cgroup")).unwrap_or_default();
            if !cgroup.contains(&format!("/{}", node_cgroup(c, &node.name))) {
                continue;
            }
            return Ok(Some(std::fs::read_to_string(path.join("status"))?));
        }
        Ok(None)
    })
}

fn node_cgroup(c: &Cluster, node: &str) -> String {
    format!("{}-{node}", c.lab().prefix())
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
}

#[test]
fn the_agent_runs_as_nobody_with_exactly_three_capabilities_and_the_allocator_with_none()
-> Result<()> {
    if !netlab::require_root() {
        return Ok(());
    }
    let c = cluster();
    let node = c.nodes[0].name.clone();
    let agent = container_process_status(&c, &node, "/usr/local/bin/lbnodeagent")?;
    assert_eq!(status_field(&agent, "Uid:"), "65534\t65534\t65534\t65534");
    // NET_BIND_SERVICE (10), NET_ADMIN (12), NET_RAW (13).
    assert_eq!(
        status_field(&agent, "CapEff:"),
        "0000000000003400",
        "{agent}"
    );
    assert_eq!(
        status_field(&agent, "CapPrm:"),
        "0000000000003400",
        "{agent}"
    );
    assert_eq!(status_field(&agent, "NoNewPrivs:"), "1", "{agent}");

    let allocator_node = c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "pods",
        "-l",
        "component=allocator",
        "-o",
        "jsonpath={.items[0].spec.nodeName}",
    ])?;
    let allocator =
        container_process_status(&c, allocator_node.trim(), "/usr/local/bin/allocator")?;
    assert_eq!(
        status_field(&allocator, "Uid:"),
        "65534\t65534\t65534\t65534"
    );
    assert_eq!(status_field(&allocator, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(&allocator, "CapPrm:"), "0000000000000000");
    Ok(())
}

#[test]
fn local_and_remote_addresses_carry_traffic_to_backend_pods() -> Result<()> {
    if !netlab::require_root() {
        return Ok(());
    }
    let c = cluster();
    let ns = TestNs::new(&c, "traffic")?;
    c.deploy_web(&ns.name, "web", 3)?;
    let pods = pods_of(&c, &ns.name, "web")?;
    let n = &ns.name;
    let mut ips = c.lb_service(&service(
        n,
        "local4",
        "web",
        "default",
        Families::Ipv4,
        "Cluster",
    ))?;
    ips.extend(c.lb_service(&service(
        n,
        "local6",
        "web",
        "default",
        Families::Ipv6,
        "Cluster",
    ))?);
    ips.extend(c.lb_service(&service(
        n,
        "remote",
        "web",
        "remote",
        Families::Dual,
        "Cluster",
    ))?);
    let client = c.host("client")?;
    let other_node = &c.nodes[3].ns;
    for ip in &ips {
        for from in [Some(client), None, Some(other_node)] {
            let pod = answer_from(&c, from, *ip)?;
            assert!(
                pods.contains(&pod),
                "{pod} answered {ip}, not one of {pods:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn with_etp_local_only_nodes_with_a_ready_endpoint_announce() -> Result<()> {
    if !netlab::require_root() {
        return Ok(());
    }
    let c = cluster();
    let ns = TestNs::new(&c, "etplocal")?;
    // On lan1, whose pool the local address comes from.
    c.deploy_web_on(&ns.name, "one", 1, "{lab.purelb.io/lan: lan1}")?;
    let pod_node = c.kubectl_text(&[
        "-n",
        &ns.name,
        "get",
        "pods",
        "-l",
        "app=one",
        "-o",
        "jsonpath={.items[0].spec.nodeName}",
    ])?;
    let node = c.node(pod_node.trim())?;
    let node_v4 = node.node_ips.iter().find(|ip| ip.is_ipv4()).context("v4")?;
    let n = &ns.name;
    let ip = c.lb_service(&service(
        n,
        "remote",
        "one",
        "remote",
        Families::Ipv4,
        "Local",
    ))?[0];
    let prefix = format!("{ip}/32");
    let router = c.router()?;
    wait_for(TIMEOUT, &format!("{prefix} via {node_v4} only"), || {
        Ok((router.rib_next_hops(&prefix)? == [node_v4.to_string()]).then_some(()))
    })
    .with_context(|| {
        format!(
            "the router's RIB: {:?}\n{}",
            router.rib_next_hops(&prefix),
            router.vtysh("show bgp ipv4 unicast").unwrap_or_default()
        )
    })?;
    let pod = answer_from(&c, Some(c.host("client")?), ip)?;
    assert!(pod.starts_with("one-"), "{pod}");

    // Local address, ETP Local: announced by the node with the endpoint.
    let local = c.lb_service(&service(
        n,
        "local",
        "one",
        "default",
        Families::Ipv4,
        "Local",
    ))?[0];
    wait_for(TIMEOUT, &format!("{local} on {}", node.name), || {
        let addrs = node.ns.ip(&["-o", "addr", "show"])?;
        Ok(addrs.contains(&format!(" {local}/")).then_some(()))
    })?;
    let pod = answer_from(&c, Some(c.host("client")?), local)?;
    assert!(pod.starts_with("one-"), "{pod}");
    Ok(())
}

/// The node whose interfaces hold `ip`, if any.
fn holder(c: &Cluster, ip: IpAddr) -> Result<Option<String>> {
    for n in &c.nodes {
        let addrs = n.ns.ip(&["-o", "addr", "show"])?;
        if addrs
            .lines()
            .any(|l| l.contains(&format!(" {ip}/")) && !l.contains("kube-lb0"))
        {
            return Ok(Some(n.name.clone()));
        }
    }
    Ok(None)
}

#[test]
fn deleting_the_announcing_agent_pod_moves_the_local_address_at_once() -> Result<()> {
    if !netlab::require_root() {
        return Ok(());
    }
    // Alone: the other tests expect every agent to be running.
    let c = cluster_mut();
    let ns = TestNs::new(&c, "failover")?;
    c.deploy_web(&ns.name, "web", 3)?;
    let n = &ns.name;
    let ip = c.lb_service(&service(
        n,
        "local",
        "web",
        "default",
        Families::Ipv4,
        "Cluster",
    ))?[0];
    let client = c.host("client")?;
    answer_from(&c, Some(client), ip)?;
    let first = wait_for(TIMEOUT, &format!("a node holding {ip}"), || holder(&c, ip))?;
    let agent = c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "pods",
        "-l",
        "component=lbnodeagent",
        "--field-selector",
        &format!("spec.nodeName={first}"),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    let deleted = Instant::now();
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "delete",
        "pod",
        agent.trim(),
        "--wait=false",
    ])?;
    let second = wait_for(
        TIMEOUT,
        &format!("{ip} on a node other than {first}"),
        || Ok(holder(&c, ip)?.filter(|n| n != &first)),
    )?;
    let moved = deleted.elapsed();
    answer_from(&c, Some(client), ip)?;
    eprintln!(
        "failover on agent pod deletion: {ip} from {first} to {second} in {moved:?}, answering after {:?}",
        deleted.elapsed()
    );
    // The DaemonSet brings the agent back.
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "rollout",
        "status",
        "daemonset/lbnodeagent",
        "--timeout=120s",
    ])?;
    Ok(())
}

#[test]
fn the_guard_drops_lab_traffic_towards_interfaces_the_lab_did_not_make() -> Result<()> {
    if !netlab::require_root() {
        return Ok(());
    }
    let c = cluster();
    // Every lab range the host routes goes through an interface of the lab.
    for probe in [
        "172.30.250.11",
        "10.244.1.1",
        "10.255.1.7",
        "2001:db8:100::2",
    ] {
        let route = netlab_host_route(probe)?;
        assert!(
            !route.contains(" dev eth0"),
            "{probe} would leave through eth0: {route}"
        );
    }
    // A bait: a veth into a namespace of the lab that the guard does not
    // know, with a route for a pod address nothing else routes. A packet to
    // it must be dropped on the host, so it never reaches the bait's far end.
    let bait = c.lab().node("guard-bait")?;
    let host_if = format!("plbbait{}", std::process::id() % 10_000);
    c.lab().host_veth(&bait, "bait0", &host_if)?;
    let target = "10.244.250.9";
    netlab_host(&[
        "ip",
        "route",
        "replace",
        &format!("{target}/32"),
        "dev",
        &host_if,
    ])?;
    // The bait's far end counts IPv4 packets only (its own IPv6 link-local
    // traffic does not count).
    bait.exec(&[
        "nft",
        "add table ip bait; add chain ip bait input { type filter hook prerouting priority 0; }; \
         add rule ip bait input iifname bait0 counter",
    ])?;
    let received = || -> Result<u64> {
        let out = bait.exec(&["nft", "-j", "list", "table", "ip", "bait"])?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        Ok(json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["rule"]["expr"].as_array())
            .flatten()
            .find_map(|e| e["counter"]["packets"].as_u64())
            .unwrap_or(0))
    };
    let before = c.guard().dropped_packets()?;
    let sent = std::net::UdpSocket::bind("0.0.0.0:0")?.send_to(b"x", (target, 9));
    let after = c.guard().dropped_packets()?;
    let arrived = received()?;
    let _ = netlab_host(&["ip", "link", "delete", &host_if]);
    assert!(sent.is_err(), "the guard lets {target} through: {sent:?}");
    assert!(after > before, "guard counter {before} -> {after}");
    assert_eq!(arrived, 0, "packets reached the bait");
    Ok(())
}

fn netlab_host(argv: &[&str]) -> Result<String> {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    if !out.status.success() {
        bail!("{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn netlab_host_route(ip: &str) -> Result<String> {
    netlab_host(&["ip", "route", "get", ip])
}
