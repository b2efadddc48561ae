//! A real Kubernetes cluster on this machine, built from the lab's
//! containerlab topology (`testbed/topology/purelb.clab.yml`): node namespaces
//! with containerd, kubelet and kube-proxy, FRR routers, clients, LANs, a link
//! from the router to the host, and a control plane of the
//! [`Flavour::Cluster`] kind on the host.
//!
//! ```text
//!   host ── purelb-host ── router (FRR) ── client
//!    │ apiserver            │  │
//!    │ (mgmt links)       lan1  lan2 ── nodes: containerd, kubelet, kube-proxy, pods
//!    └──────── mgmt0 ─────── every node
//! ```
//!
//! Routing: the host reaches the LANs, the client network and the announced
//! ranges through the router, and each node's pod range through that node's
//! management link, where the node also reaches the apiserver. Nodes route
//! each other's pod ranges over a shared LAN, or through the router, which
//! routes every pod range to its node. A [`guard`] drops every packet to a
//! lab range that would leave through an interface the lab did not make, so
//! no reply follows the host's default route.
//!
//! One cluster runs on the machine at a time (it owns host routes and the
//! `purelb-host` link): [`Cluster::start`] fails at once, naming the owner,
//! while another runs. Dropping the cluster stops everything it started.

mod guard;
pub mod image;
pub(crate) mod kubenode;
pub mod topology;
pub mod workload;

pub use guard::Guard;
pub use kubenode::{KubeNode, PAUSE_IMAGE};
pub use topology::{Endpoint, LabPlan};

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::controlplane::{ControlPlane, Flavour};
use crate::netlab::{self, Frr, Lab, Lan, Ns};

/// Service ranges of the control plane (both families).
pub const SERVICE_CIDRS: &[&str] = &["10.96.0.0/16", "fd00:10:96::/108"];
/// The cluster's pod ranges, which every node's range lies in (kind's
/// `podSubnet` in `testbed/topology/kind-config.yaml`).
pub const POD_CIDRS: &[&str] = &["10.244.0.0/16", "fd00:10:244::/56"];
/// Where the management links live (see `netlab`).
const MGMT_RANGE: &str = "172.31.0.0/16";
/// The lock that makes one cluster per machine.
const CLUSTER_LOCK: &str = "/run/purelb-netlab/cluster.lock";

/// The default topology, next to this crate.
pub fn default_topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/purelb.clab.yml")
}

/// The OCI archives `make images` writes, in the workspace's `target/images/`.
pub fn default_images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images")
}

/// The images `make images` writes, which the lab's nodes import.
pub fn lab_images() -> Vec<PathBuf> {
    ["allocator", "lbnodeagent", "pause", "web"]
        .iter()
        .map(|i| default_images_dir().join(format!("{i}.tar")))
        .collect()
}

/// The workspace's root (where `deploy/` is).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running cluster; see the module docs.
pub struct Cluster {
    pub plan: LabPlan,
    pub nodes: Vec<KubeNode>,
    pub routers: BTreeMap<String, Frr>,
    /// Plain namespaces (clients) by name.
    pub hosts: BTreeMap<String, Ns>,
    /// The LAN bridges by name.
    pub lans: BTreeMap<String, Lan>,
    pub startup_time: Duration,
    node_kubeconfig: PathBuf,
    images: Vec<PathBuf>,
    guard: Option<Guard>,
    // Dropped in this order: the lab (and with it every process and
    // namespace), the control plane, the lock.
    lab: Lab,
    control_plane: ControlPlane,
    _lock: File,
}

impl Cluster {
    /// Builds the topology at `topology`, with the OCI archives `images`
    /// imported on every node, and waits until every node is Ready.
    pub fn start(topology: &Path, images: &[PathBuf]) -> Result<Cluster> {
        let started = Instant::now();
        let plan = LabPlan::load(topology)?;
        for image in images {
            if !image.is_file() {
                bail!(
                    "image archive {} is missing: run `make images`",
                    image.display()
                );
            }
        }
        let lock = take_cluster_lock()?;
        let router = plan
            .routers
            .iter()
            .find(|r| !r.host_addrs.is_empty())
            .context("no router carries the host link's addresses (purelb.lab/host-addrs)")?;
        let api_addr: Ipv4Addr = router
            .host_addrs
            .iter()
            .find_map(|a| a.split('/').next()?.parse().ok())
            .context("the host link has no IPv4 address")?;
        let control_plane = ControlPlane::start(Flavour::Cluster { api_addr })?;
        let node_kubeconfig = control_plane.kubeconfig_for(IpAddr::V4(api_addr));
        let lab = Lab::new()?;
        remove_pod_netns();

        let mut lans = BTreeMap::new();
        for name in &plan.bridges {
            lans.insert(name.clone(), lab.lan(name)?);
        }
        let mut namespaces: BTreeMap<String, Ns> = BTreeMap::new();
        for n in &plan.kube_nodes {
            namespaces.insert(n.ns.name.clone(), lab.node(&n.ns.name)?);
        }
        for r in &plan.routers {
            namespaces.insert(r.ns.name.clone(), lab.router(&r.ns.name)?);
        }
        for h in &plan.hosts {
            namespaces.insert(h.name.clone(), lab.node(&h.name)?);
        }
        let mut host_links = Vec::new();
        for link in &plan.links {
            let (node, ifname, other) = match (&link.a, &link.b) {
                (Endpoint::Node { node, ifname }, other) => (node, ifname, other),
                (other, Endpoint::Node { node, ifname }) => (node, ifname, other),
                _ => bail!("link {link:?} has no node end"),
            };
            let ns = &namespaces[node];
            match other {
                Endpoint::Node {
                    node: peer,
                    ifname: peer_if,
                } => lab.veth(ns, ifname, &namespaces[peer], peer_if)?,
                Endpoint::Bridge { bridge, port } => lans[bridge].attach_named(ns, port, ifname)?,
                Endpoint::Host { ifname: host_if } => {
                    lab.host_veth(ns, ifname, host_if)?;
                    host_links.push((node.clone(), host_if.clone()));
                }
            }
        }
        for ns_plan in plan
            .kube_nodes
            .iter()
            .map(|n| &n.ns)
            .chain(plan.routers.iter().map(|r| &r.ns))
            .chain(&plan.hosts)
        {
            let ns = &namespaces[&ns_plan.name];
            for argv in &ns_plan.exec {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                ns.exec(&argv)
                    .with_context(|| format!("exec on {}", ns_plan.name))?;
            }
        }

        // The host's side: its link addresses, routes into the lab, the guard.
        let mut guard_ranges: Vec<String> = plan.subnets();
        let mut host_ifs = vec![];
        for (router_name, host_if) in &host_links {
            let r = plan
                .routers
                .iter()
                .find(|r| &r.ns.name == router_name)
                .context("the host link must end on a router")?;
            for addr in &r.host_addrs {
                netlab::cmd::host(&["ip", "addr", "add", addr, "dev", host_if, "nodad"])
                    .or_else(|_| netlab::cmd::host(&["ip", "addr", "add", addr, "dev", host_if]))?;
            }
            let router_ns = &namespaces[router_name];
            let gateways = link_peer_addrs(router_ns, &r.host_addrs)?;
            let mut routed: Vec<String> = plan.subnets();
            routed.extend(r.announced.iter().cloned());
            // IPv6 pod ranges too (IPv4 ones go over the management links).
            for n in &plan.kube_nodes {
                routed.extend(n.pod_cidrs.iter().filter(|c| c.contains(':')).cloned());
            }
            guard_ranges.extend(r.announced.iter().cloned());
            for net in routed {
                let v6 = net.contains(':');
                let Some(gw) = gateways.iter().find(|g| g.is_ipv6() == v6) else {
                    continue;
                };
                if r.host_addrs
                    .iter()
                    .any(|a| topology::network_of(a).as_deref() == Some(net.as_str()))
                {
                    continue;
                }
                let fam = if v6 { "-6" } else { "-4" };
                netlab::cmd::host(&[
                    "ip",
                    fam,
                    "route",
                    "replace",
                    &net,
                    "via",
                    &gw.to_string(),
                    "dev",
                    host_if,
                ])?;
            }
            host_ifs.push(host_if.clone());
        }
        guard_ranges.extend(POD_CIDRS.iter().map(|s| s.to_string()));
        guard_ranges.extend(SERVICE_CIDRS.iter().map(|s| s.to_string()));
        guard_ranges.push(MGMT_RANGE.into());
        let guard = Guard::install(&guard_ranges, &host_ifs)?;

        // Routers: FRR, and every pod range towards its node.
        let mut routers = BTreeMap::new();
        for r in &plan.routers {
            let ns = &namespaces[&r.ns.name];
            for n in &plan.kube_nodes {
                for (cidr, ip) in pod_routes(n) {
                    ns.add_route(&cidr, &ip.to_string())?;
                }
            }
            let config = std::fs::read_to_string(&r.frr_conf)
                .with_context(|| format!("reading {}", r.frr_conf.display()))?;
            routers.insert(r.ns.name.clone(), lab.frr(ns, &config)?);
        }

        // Nodes: management link, routes, then containerd, kubelet, kube-proxy.
        let cluster_cidrs = POD_CIDRS.join(",");
        let mut mgmts = Vec::new();
        for n in &plan.kube_nodes {
            let ns = &namespaces[&n.ns.name];
            let mgmt = lab.management_link(ns)?;
            ns.ip(&[
                "route",
                "replace",
                &format!("{api_addr}/32"),
                "via",
                &mgmt.host_addr().to_string(),
                "dev",
                mgmt.node_if(),
            ])?;
            for cidr in n.pod_cidrs.iter().filter(|c| !c.contains(':')) {
                netlab::cmd::host(&[
                    "ip",
                    "route",
                    "replace",
                    cidr,
                    "via",
                    &mgmt.node_addr().to_string(),
                    "dev",
                    mgmt.host_if(),
                ])?;
            }
            // Other nodes' pods: directly over a shared LAN, else via the default route.
            for other in plan.kube_nodes.iter().filter(|o| o.ns.name != n.ns.name) {
                for (cidr, ip) in pod_routes(other) {
                    if on_link(ns, ip)? {
                        ns.add_route(&cidr, &ip.to_string())?;
                    }
                }
            }
            mgmts.push(mgmt);
        }
        let kubeenv = control_plane.kubeenv_bin().to_owned();
        let ca_file = control_plane.certs_dir().join("ca.crt");
        let ctx = kubenode::NodeContext {
            kubeenv: &kubeenv,
            kubeconfig: &node_kubeconfig,
            ca_file: &ca_file,
            cluster_cidrs: &cluster_cidrs,
            images,
        };
        let nodes: Vec<KubeNode> = std::thread::scope(|s| {
            let handles: Vec<_> = plan
                .kube_nodes
                .iter()
                .zip(mgmts)
                .map(|(n, mgmt)| {
                    let ns = namespaces[&n.ns.name].clone();
                    let cgroup = format!("{}-{}", lab.prefix(), n.ns.name);
                    let ctx = &ctx;
                    s.spawn(move || KubeNode::start(n, ns, mgmt, cgroup, ctx))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("node start-up panicked")))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let hosts = plan
            .hosts
            .iter()
            .map(|h| (h.name.clone(), namespaces[&h.name].clone()))
            .collect();
        let mut cluster = Cluster {
            plan,
            nodes,
            routers,
            hosts,
            lans,
            startup_time: Duration::ZERO,
            node_kubeconfig,
            images: images.to_vec(),
            guard: Some(guard),
            lab,
            control_plane,
            _lock: lock,
        };
        cluster.wait_nodes_ready(Duration::from_secs(120))?;
        cluster.startup_time = started.elapsed();
        Ok(cluster)
    }

    /// The default topology with the lab's images, PureLB installed from the
    /// workspace's `deploy/` as a user installs it, and the lab's PureLB
    /// configuration (`testbed/topology/purelb-config.yaml`) applied; returns
    /// the cluster and how long the install took.
    pub fn start_with_purelb() -> Result<(Cluster, Duration)> {
        let cluster = Cluster::start(&default_topology(), &lab_images())?;
        let installing = Instant::now();
        cluster.install_purelb(&workspace().join("deploy"))?;
        let install = installing.elapsed();
        cluster.apply_file(&workspace().join("testbed/topology/purelb-config.yaml"))?;
        Ok((cluster, install))
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// A new admin client (one per runtime).
    pub async fn client(&self) -> Result<Client> {
        self.control_plane.client().await
    }

    /// `kubectl` with the admin kubeconfig; an error (with stderr) if it fails.
    pub fn kubectl(&self, args: &[impl AsRef<OsStr>]) -> Result<Output> {
        self.control_plane.kubectl(args)
    }

    /// `kubectl`'s stdout as text.
    pub fn kubectl_text(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.kubectl(args)?.stdout).into_owned())
    }

    /// Installs PureLB as a user does, from the manifests in `deploy`:
    /// `kubectl apply --server-side -k deploy`, the CRDs Established, then
    /// `-k deploy/defaults`, and waits until the allocator Deployment and the
    /// lbnodeagent DaemonSet have rolled out.
    pub fn install_purelb(&self, deploy: &Path) -> Result<()> {
        let deploy_s = deploy.display().to_string();
        self.kubectl(&["apply", "--server-side", "-k", &deploy_s])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &deploy.join("crds").display().to_string(),
        ])?;
        self.kubectl(&[
            "apply",
            "--server-side",
            "-k",
            &deploy.join("defaults").display().to_string(),
        ])?;
        for workload in ["deployment/allocator", "daemonset/lbnodeagent"] {
            self.kubectl(&[
                "-n",
                "purelb-system",
                "rollout",
                "status",
                workload,
                "--timeout=180s",
            ])
            .with_context(|| {
                let pods = self
                    .kubectl_text(&["get", "pods", "-A", "-o", "wide"])
                    .unwrap_or_default();
                format!("{workload} did not roll out; pods:\n{pods}")
            })?;
        }
        Ok(())
    }

    /// `kubectl apply --server-side -f <file>`.
    pub fn apply_file(&self, file: &Path) -> Result<()> {
        self.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])?;
        Ok(())
    }

    /// `kubectl apply --server-side -f -` with `yaml` on stdin.
    pub fn apply_yaml(&self, yaml: &str) -> Result<()> {
        let mut c = std::process::Command::new(self.control_plane.kubeenv_bin());
        c.arg("kubectl")
            .arg("--kubeconfig")
            .arg(self.control_plane.kubeconfig_path())
            .args(["apply", "--server-side", "-f", "-"]);
        netlab::cmd::run_with_input(&mut c, Some(yaml.as_bytes()))?;
        Ok(())
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&KubeNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut KubeNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    /// The only router (the default topology has one).
    pub fn router(&self) -> Result<&Frr> {
        self.routers
            .values()
            .next()
            .context("the topology has no router")
    }

    /// The plain namespace `name` (e.g. `client`).
    pub fn host(&self, name: &str) -> Result<&Ns> {
        self.hosts
            .get(name)
            .with_context(|| format!("the topology has no host {name}"))
    }

    /// The guard against lab traffic leaving the machine.
    pub fn guard(&self) -> &Guard {
        self.guard
            .as_ref()
            .expect("the guard lives as long as the cluster")
    }

    /// Restarts a node that [`KubeNode::kill`] killed: it talks again, and
    /// containerd, the kubelet and kube-proxy come back; the kubelet recreates
    /// its pods.
    pub fn restart_node(&mut self, name: &str) -> Result<()> {
        let kubeenv = self.control_plane.kubeenv_bin().to_owned();
        let ca_file = self.control_plane.certs_dir().join("ca.crt");
        let cluster_cidrs = POD_CIDRS.join(",");
        let ctx = kubenode::NodeContext {
            kubeenv: &kubeenv,
            kubeconfig: &self.node_kubeconfig,
            ca_file: &ca_file,
            cluster_cidrs: &cluster_cidrs,
            images: &self.images,
        };
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))?;
        node.restart(&ctx)
    }

    /// Waits until every node reports Ready.
    pub fn wait_nodes_ready(&self, timeout: Duration) -> Result<()> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(self.client())?;
        let api = Api::<Node>::all(client);
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = rt.block_on(api.list(&ListParams::default()))?;
            let ready: Vec<String> = nodes
                .items
                .iter()
                .filter(|n| node_ready(n))
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            if names.iter().all(|n| ready.contains(n)) {
                return Ok(());
            }
            for node in &self.nodes {
                if let Some(k) = &node.kubelet
                    && let Some(st) = k.exit_status()
                {
                    bail!(
                        "the kubelet of {} exited ({st}); its log ends:\n{}",
                        node.name,
                        log_tail(&k.log(), 30)
                    );
                }
            }
            if Instant::now() > deadline {
                let missing: Vec<&String> = names.iter().filter(|n| !ready.contains(n)).collect();
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| missing.contains(&&n.name))
                    .map(|n| format!("{}:\n{}", n.name, log_tail(&n.kubelet_log(), 15)))
                    .collect();
                bail!(
                    "nodes {missing:?} not Ready within {timeout:?}; kubelet logs:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Where the cluster's files are: the lab's dir (per node: containerd,
    /// kubelet, pod logs) and the control plane's.
    pub fn describe(&self) -> String {
        format!(
            "lab {} (dir {}), control plane {}",
            self.lab.prefix(),
            self.lab.dir().display(),
            self.control_plane.dir().display()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.stop_processes();
        }
        for node in &self.nodes {
            kubenode::remove_cgroup(&node.cgroup);
        }
        remove_pod_netns();
        unmount_below(self.lab.dir());
        self.guard.take();
        let _ = writeln!(std::io::stderr(), "cluster: stopped {}", self.lab.prefix());
    }
}

/// One HTTP/1.0 GET of `path` at `addr`, from inside the network namespace
/// `from` (a name `ip netns list` shows; the host when `None`), returning the
/// body of a 200 answer.
pub fn http_get(
    from: Option<&str>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String> {
    use std::io::Read as _;
    let connect = || TcpStream::connect_timeout(&addr, timeout);
    let mut stream = match from {
        Some(netns) => netlab::run_in_netns(netns, connect)?,
        None => connect(),
    }
    .with_context(|| format!("connecting to {addr} from {}", from.unwrap_or("the host")))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer from {addr}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP answer from {addr}: {response:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {addr}{path}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pod ranges of `node` with the node address (same family) to route them to.
fn pod_routes(node: &topology::KubeNodePlan) -> Vec<(String, IpAddr)> {
    node.pod_cidrs
        .iter()
        .filter_map(|cidr| {
            let v6 = cidr.contains(':');
            let ip = node.node_ips.iter().find(|ip| ip.is_ipv6() == v6)?;
            Some((cidr.clone(), *ip))
        })
        .collect()
}

/// Whether `ip` is on a connected subnet of `ns`.
fn on_link(ns: &Ns, ip: IpAddr) -> Result<bool> {
    let out = ns.ip(&["route", "get", &ip.to_string()])?;
    Ok(!out.contains(" via "))
}

/// The addresses on the far side of the host link: the router's own, in the
/// subnets of `host_addrs`.
fn link_peer_addrs(router: &Ns, host_addrs: &[String]) -> Result<Vec<IpAddr>> {
    let nets: Vec<String> = host_addrs
        .iter()
        .filter_map(|a| topology::network_of(a))
        .collect();
    let out = router.ip(&["-o", "addr", "show"])?;
    let mut peers = Vec::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            if (pair[0] == "inet" || pair[0] == "inet6")
                && let Some(net) = topology::network_of(pair[1])
                && nets.contains(&net)
                && let Some(Ok(ip)) = pair[1].split('/').next().map(str::parse)
            {
                peers.push(ip);
            }
        }
    }
    if peers.is_empty() {
        bail!("the router has no address on the host link ({host_addrs:?})");
    }
    Ok(peers)
}

/// One cluster per machine: a lock held for the cluster's life.
fn take_cluster_lock() -> Result<File> {
    std::fs::create_dir_all("/run/purelb-netlab")?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(CLUSTER_LOCK)
        .with_context(|| format!("opening {CLUSTER_LOCK}"))?;
    if file.try_lock().is_err() {
        let owner = std::fs::read_to_string(CLUSTER_LOCK).unwrap_or_default();
        bail!(
            "another lab cluster runs on this machine (pid {}); stop it first (`make demo-down` \
             for the demo)",
            owner.trim()
        );
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Removes pod network namespaces (`cni-*`) no process uses any more: what a
/// killed node's containerd could not clean. Only with the cluster lock held.
fn remove_pod_netns() {
    let Ok(names) = netlab::host::list_netns() else {
        return;
    };
    for ns in names.iter().filter(|n| n.starts_with("cni-")) {
        if netlab::host::netns_pids(ns).is_empty() {
            let _ = netlab::cmd::host(&["ip", "netns", "delete", ns]);
        }
    }
}

/// Lazily unmounts everything mounted below `dir` (container root
/// filesystems, pod volumes), deepest first, so the directory can go.
pub(crate) fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = netlab::cmd::host(&["umount", "-l", p]);
    }
}

/// The last `n` lines of a log.
pub(crate) fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
