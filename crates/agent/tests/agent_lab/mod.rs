//! A small cluster for the node agent's end-to-end tests and benches: three node
//! namespaces on one LAN (a bridge), each with a management link to the host and a
//! Node object, each running the `lbnodeagent` binary against the shared test
//! control plane; a peer namespace on the LAN; and the allocator.
//!
//! The allocator runs in-process (its library's controller on a thread of its
//! own): `cargo test -p purelb-agent` does not build another package's binaries,
//! and the controller is the whole of the allocator binary but its flag parsing.
//!
//! Isolation: every cluster has its own install namespace (Leases, ServiceGroups,
//! its LBNodeAgent, its Services), its own allocator for that namespace, and its
//! own address slot — a /28 of 198.51.100.0/24 and a /64 under 2001:db8:1::/48 for
//! the LAN, a /28 of 203.0.113.0/24 and a /64 under 2001:db8:2::/48 for remote
//! pools — because every agent watches Services in all namespaces and must never
//! find another cluster's addresses local.

#![allow(
    dead_code,
    reason = "the tests and the benches use different parts of this module"
)]

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Event, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
use testbed::controlplane::{self, TestNamespace};
use testbed::netlab::{Lab, Lan, MgmtLink, Ns, Proc};

pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const LAB_LABEL: &str = "purelb-test/lab";
pub const DUMMY: &str = "kube-lb0";

/// The address slot of one cluster (0..16).
#[derive(Debug, Clone, Copy)]
pub struct Slot(pub u32);

impl Slot {
    fn next() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 16, "at most 16 agent clusters per test binary");
        Slot(n)
    }

    fn v4(&self, host: u32) -> String {
        format!("198.51.100.{}", self.0 * 16 + host)
    }

    /// Canonical spelling, as the agent writes it into the lease.
    fn v6(&self, host: &str) -> String {
        let text = format!("2001:db8:1:{:x}::{host}", self.0);
        text.parse::<std::net::Ipv6Addr>()
            .map_or(text, |a| a.to_string())
    }

    /// The node's IPv4 address on the LAN (node 0..3).
    pub fn node_v4(&self, i: usize) -> String {
        self.v4(1 + i as u32)
    }

    pub fn node_v6(&self, i: usize) -> String {
        self.v6(&format!("{:x}", 1 + i))
    }

    pub fn lan_v4(&self) -> String {
        format!("{}/28", self.v4(0))
    }

    pub fn lan_v6(&self) -> String {
        format!("{}/64", self.v6(""))
    }

    /// Six local IPv4 addresses, .4 to .9 of the /28.
    pub fn local_v4_pool(&self) -> String {
        format!("{}-{}", self.v4(4), self.v4(9))
    }

    pub fn local_v6_pool(&self) -> String {
        format!("{}-{}", self.v6("100"), self.v6("1ff"))
    }

    pub fn remote_v4_subnet(&self) -> String {
        format!("203.0.113.{}/28", self.0 * 16)
    }

    pub fn remote_v6_subnet(&self) -> String {
        format!("2001:db8:2:{:x}::/64", self.0)
    }

    pub fn remote_v6_pool(&self) -> String {
        format!("2001:db8:2:{:x}::100-2001:db8:2:{:x}::1ff", self.0, self.0)
    }

    pub fn peer_v4(&self) -> String {
        self.v4(12)
    }

    pub fn peer_v6(&self) -> String {
        self.v6("a")
    }
}

/// How a cluster is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// `spec.local` of the cluster's LBNodeAgent.
    pub local: Value,
    /// Extra agent flags.
    pub agent_args: Vec<String>,
    /// Start the agents at once.
    pub start_agents: bool,
    /// IPv6 pools of 65,536 addresses (a /112 each, local and remote) instead of
    /// 256, for the benches; IPv4 slots are too small for hundreds of Services.
    pub large_v6_pool: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            local: json!({"localInterface": "default", "dummyInterface": DUMMY}),
            agent_args: Vec::new(),
            start_agents: true,
            large_v6_pool: false,
        }
    }
}

/// One node: its namespace, LAN interface, management link and agent.
pub struct ClusterNode {
    pub name: String,
    pub ns: Ns,
    pub lan_if: String,
    pub mgmt: MgmtLink,
    pub kubeconfig: PathBuf,
    pub agent: Option<Proc>,
    pub starts: u32,
}

pub struct Cluster {
    // Dropped in this order: agents and namespaces first, then the API objects.
    pub lab: Lab,
    pub nodes: Vec<ClusterNode>,
    pub peer: Ns,
    pub peer_if: String,
    pub lan: Lan,
    pub slot: Slot,
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    allocator: Option<InProcessAllocator>,
    pub install: TestNamespace,
    options: Options,
}

pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lbnodeagent")
}

fn crds_installed() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        controlplane::shared()
            .install_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
            .expect("CRDs install");
    });
}

impl Cluster {
    pub fn new(options: Options) -> Result<Cluster> {
        crds_installed();
        let cp = controlplane::shared();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = rt.block_on(cp.client())?;
        let install = rt.block_on(cp.test_namespace("agent"))?;
        let slot = Slot::next();
        let lab = Lab::new()?;
        let lan = lab.lan("lan")?;
        let mut nodes = Vec::new();
        for i in 0..3 {
            let short = format!("n{}", i + 1);
            let ns = lab.node(&short)?;
            let lan_if = lan.attach(
                &ns,
                &[
                    &format!("{}/28", slot.node_v4(i)),
                    &format!("{}/64", slot.node_v6(i)),
                ],
            )?;
            ns.add_route("default", &slot.v4(14))?;
            ns.add_route("default", &slot.v6("fe"))?;
            lab.add_fake_dummy(&ns, DUMMY)?;
            let mgmt = lab.management_link(&ns)?;
            let kubeconfig = cp.kubeconfig_for(IpAddr::V4(mgmt.host_addr()));
            nodes.push(ClusterNode {
                name: format!("{}-{short}", install.name()),
                ns,
                lan_if,
                mgmt,
                kubeconfig,
                agent: None,
                starts: 0,
            });
        }
        let peer = lab.node("peer")?;
        let peer_if = lan.attach(
            &peer,
            &[
                &format!("{}/28", slot.peer_v4()),
                &format!("{}/64", slot.peer_v6()),
            ],
        )?;
        let mut cluster = Cluster {
            lab,
            nodes,
            peer,
            peer_if,
            lan,
            slot,
            rt,
            client,
            allocator: None,
            install,
            options,
        };
        cluster.create_nodes()?;
        cluster.apply_agent("default", cluster.options.local.clone())?;
        cluster.create_groups()?;
        cluster.allocator = Some(InProcessAllocator::start(cluster.install.name())?);
        if cluster.options.start_agents {
            for i in 0..3 {
                cluster.start_agent(i)?;
            }
            cluster.wait_members(3)?;
        }
        Ok(cluster)
    }

    pub fn ns(&self) -> &str {
        self.install.name()
    }

    pub fn local_group(&self) -> String {
        format!("{}-local", self.ns())
    }

    pub fn remote_group(&self) -> String {
        format!("{}-remote", self.ns())
    }

    fn create_nodes(&self) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        for (i, n) in self.nodes.iter().enumerate() {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": n.name, "labels": {LAB_LABEL: self.ns(), "kubernetes.io/hostname": n.name}},
            }))?;
            self.rt.block_on(async {
                api.create(&PostParams::default(), &node).await?;
                let status = json!({"status": {"addresses": [
                    {"type": "InternalIP", "address": self.slot.node_v4(i)},
                    {"type": "InternalIP", "address": self.slot.node_v6(i)},
                    {"type": "Hostname", "address": n.name},
                ]}});
                api.patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                anyhow::Ok(())
            })?;
        }
        Ok(())
    }

    /// Creates or replaces an LBNodeAgent in the install namespace that selects this
    /// cluster's nodes.
    pub fn apply_agent(&self, name: &str, local: Value) -> Result<()> {
        let api: Api<purelb_api::crd::LBNodeAgent> =
            Api::namespaced(self.client.clone(), self.ns());
        let body = json!({
            "apiVersion": "purelb.io/v2", "kind": "LBNodeAgent",
            "metadata": {"name": name},
            "spec": {"nodeSelector": {"matchLabels": {LAB_LABEL: self.ns()}}, "local": local},
        });
        self.rt.block_on(api.patch(
            name,
            &PatchParams::apply("agent-e2e").force(),
            &Patch::Apply(&body),
        ))?;
        Ok(())
    }

    fn create_groups(&self) -> Result<()> {
        let s = self.slot;
        let (v6_pool, remote_v6_pool) = if self.options.large_v6_pool {
            (
                format!("2001:db8:1:{:x}::1:0/112", s.0),
                format!("2001:db8:2:{:x}::1:0/112", s.0),
            )
        } else {
            (s.local_v6_pool(), s.remote_v6_pool())
        };
        self.apply_group(
            &self.local_group(),
            json!({"local": {
                "v4pools": [{"pool": s.local_v4_pool(), "subnet": s.lan_v4()}],
                "v6pools": [{"pool": v6_pool, "subnet": s.lan_v6()}],
            }}),
        )?;
        self.apply_group(
            &self.remote_group(),
            json!({"remote": {
                "v4pools": [{"pool": s.remote_v4_subnet(), "subnet": s.remote_v4_subnet(), "aggregation": "/30"}],
                "v6pools": [{"pool": remote_v6_pool, "subnet": s.remote_v6_subnet(), "aggregation": "default"}],
            }}),
        )
    }

    pub fn apply_group(&self, name: &str, spec: Value) -> Result<()> {
        let api: Api<purelb_api::crd::ServiceGroup> =
            Api::namespaced(self.client.clone(), self.ns());
        let body = json!({"apiVersion": "purelb.io/v2", "kind": "ServiceGroup", "metadata": {"name": name}, "spec": spec});
        self.rt.block_on(api.patch(
            name,
            &PatchParams::apply("agent-e2e").force(),
            &Patch::Apply(&body),
        ))?;
        Ok(())
    }

    /// Starts (or restarts) node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let extra = self.options.agent_args.clone();
        let install = self.ns().to_owned();
        let n = &mut self.nodes[i];
        n.starts += 1;
        let kubeconfig = n.kubeconfig.to_string_lossy().into_owned();
        let uid = format!("{}-uid-{}", n.name, n.starts);
        let mut argv: Vec<&str> = vec![
            agent_bin(),
            "--namespace",
            &install,
            "--node-name",
            &n.name,
            "--kubeconfig",
            &kubeconfig,
            "--pod-uid",
            &uid,
        ];
        argv.extend(extra.iter().map(String::as_str));
        let proc = n.ns.spawn_env(
            &format!("agent-{}", n.starts),
            &argv,
            &[("PURELB_LOG_LEVEL", "debug"), ("RUST_BACKTRACE", "1")],
        )?;
        n.agent = Some(proc);
        Ok(())
    }

    pub fn agent(&self, i: usize) -> &Proc {
        self.nodes[i].agent.as_ref().expect("agent started")
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop_agent(&mut self, i: usize) -> Result<()> {
        if let Some(p) = self.nodes[i].agent.take() {
            p.stop()?;
        }
        Ok(())
    }

    /// SIGKILL (no shutdown at all), then reap.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(p) = self.nodes[i].agent.take() {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe {
                libc::kill(p.pid() as libc::pid_t, libc::SIGKILL);
            }
            p.kill()?;
        }
        Ok(())
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Waits until every running agent sees `count` live leases (its metric).
    pub fn wait_members(&self, count: usize) -> Result<()> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.agent.is_none() {
                continue;
            }
            wait_for(
                TIMEOUT,
                &format!("{} to see {count} members", n.name),
                || {
                    self.ensure_agents_running()?;
                    let m = self.metrics(i)?;
                    Ok(
                        (metric_value(&m, "purelb_election_member_count") == Some(count as f64)
                            && metric_value(&m, "purelb_election_lease_healthy") == Some(1.0))
                        .then_some(()),
                    )
                },
            )?;
        }
        Ok(())
    }

    /// Fails with its log tail if an agent that should run has exited.
    pub fn ensure_agents_running(&self) -> Result<()> {
        for n in &self.nodes {
            if let Some(p) = &n.agent
                && !p.is_running()
            {
                bail!("agent of {} exited:\n{}", n.name, tail(&p.log(), 40));
            }
        }
        Ok(())
    }

    /// Every agent's log tail, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            if let Some(p) = &n.agent {
                out.push_str(&format!("--- {} ---\n{}\n", n.name, tail(&p.log(), 25)));
            }
        }
        out
    }

    /// `GET path` on node `i`'s agent (port 7472 in its namespace).
    pub fn http_get(&self, i: usize, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        let addr: std::net::SocketAddr = "127.0.0.1:7472".parse()?;
        let mut stream = self.nodes[i].ns.connect_tcp(addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    pub fn metrics(&self, i: usize) -> Result<String> {
        self.http_get(i, "/metrics")
    }

    /// Creates a LoadBalancer Service in the install namespace from `group`.
    pub fn create_service(
        &self,
        name: &str,
        group: &str,
        families: &[&str],
        extra: Value,
    ) -> Result<()> {
        let policy = if families.len() > 1 {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        let mut body = json!({
            "metadata": {"name": name, "annotations": {"purelb.io/service-group": group}},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "tcp-80", "protocol": "TCP", "port": 80}],
                     "ipFamilies": families, "ipFamilyPolicy": policy,
                     "allocateLoadBalancerNodePorts": false},
        });
        merge(&mut body, extra);
        let svc: Service = serde_json::from_value(body)?;
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        self.rt.block_on(api.create(&PostParams::default(), &svc))?;
        Ok(())
    }

    pub fn delete_service(&self, name: &str) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        self.rt
            .block_on(api.delete(name, &DeleteParams::default()))?;
        Ok(())
    }

    pub fn service(&self, name: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        Ok(self.rt.block_on(api.get(name))?)
    }

    pub fn patch_service(&self, name: &str, patch: Value) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        self.rt
            .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))?;
        Ok(())
    }

    /// Waits for `count` ingress addresses.
    pub fn wait_ingress(&self, name: &str, count: usize) -> Result<Vec<IpAddr>> {
        wait_for(TIMEOUT, &format!("{count} addresses on {name}"), || {
            let ips = ingress(&self.service(name)?);
            Ok((ips.len() == count).then_some(ips))
        })
    }

    /// The nodes (indices) whose namespace holds `ip`, with the address details.
    pub fn holders(&self, ip: IpAddr) -> Result<Vec<(usize, AddrInfo)>> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for a in addresses(&n.ns)? {
                if a.ip == ip {
                    out.push((i, a));
                }
            }
        }
        Ok(out)
    }

    /// Waits until exactly the nodes `want` hold `ip`; returns their details.
    pub fn wait_holders(&self, ip: IpAddr, want: &[usize]) -> Result<Vec<(usize, AddrInfo)>> {
        wait_for(TIMEOUT, &format!("{ip} on exactly nodes {want:?}"), || {
            self.ensure_agents_running()?;
            let h = self.holders(ip)?;
            let mut idx: Vec<usize> = h.iter().map(|(i, _)| *i).collect();
            idx.sort();
            idx.dedup();
            Ok((idx == want).then_some(h))
        })
        .with_context(|| self.logs())
    }

    /// Waits until exactly one node holds `ip`; returns it.
    pub fn wait_single_holder(&self, ip: IpAddr) -> Result<(usize, AddrInfo)> {
        wait_for(TIMEOUT, &format!("{ip} on exactly one node"), || {
            self.ensure_agents_running()?;
            let h = self.holders(ip)?;
            Ok((h.len() == 1).then(|| h[0].clone()))
        })
        .with_context(|| self.logs())
    }

    /// Events on an object in the install namespace, as (type, reason, message).
    pub fn events(&self, name: &str) -> Result<Vec<(String, String, String)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        let list = self.rt.block_on(
            api.list(&ListParams::default().fields(&format!("involvedObject.name={name}"))),
        )?;
        Ok(list
            .items
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect())
    }

    pub fn wait_event(&self, name: &str, reason: &str, text: &str) -> Result<(String, String)> {
        wait_for(
            TIMEOUT,
            &format!("event {reason} ~ {text:?} on {name}"),
            || {
                Ok(self
                    .events(name)?
                    .into_iter()
                    .find(|(_, r, m)| r == reason && m.contains(text))
                    .map(|(t, _, m)| (t, m)))
            },
        )
    }

    /// Writes (creates or replaces) an EndpointSlice for Service `service` with one
    /// endpoint per (node index, ready).
    pub fn set_endpoints(&self, service: &str, endpoints: &[(usize, bool)]) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), self.ns());
        let eps: Vec<Value> = endpoints
            .iter()
            .enumerate()
            .map(|(k, (node, ready))| {
                json!({"addresses": [format!("10.244.{node}.{}", k + 10)],
                       "conditions": {"ready": ready, "serving": ready, "terminating": false},
                       "nodeName": self.nodes[*node].name})
            })
            .collect();
        let body = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-test"), "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "agent-e2e"}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "tcp-80", "port": 8080, "protocol": "TCP"}],
        });
        self.rt.block_on(api.patch(
            &format!("{service}-test"),
            &PatchParams::apply("agent-e2e").force(),
            &Patch::Apply(&body),
        ))?;
        Ok(())
    }

    pub fn lease(&self, node: usize) -> Result<Option<k8s_openapi::api::coordination::v1::Lease>> {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), self.ns());
        Ok(self
            .rt
            .block_on(api.get_opt(&purelb_api::lease::lease_name(&self.nodes[node].name)))?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for n in &mut self.nodes {
            if let Some(p) = n.agent.take() {
                let _ = p.kill();
            }
        }
        self.allocator.take();
        let api: Api<Node> = Api::all(self.client.clone());
        for n in &self.nodes {
            let _ = self
                .rt
                .block_on(api.delete(&n.name, &DeleteParams::default()));
        }
    }
}

/// The allocator's controller on a thread and runtime of its own, stopped on drop.
pub struct InProcessAllocator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessAllocator {
    pub fn start(namespace: &str) -> Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let namespace = namespace.to_owned();
        let thread = std::thread::Builder::new()
            .name("allocator".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(client) = controlplane::shared().client().await else {
                        return;
                    };
                    let settings = purelb_allocator::controller::Settings {
                        namespace: Some(namespace),
                        default_announcer: true,
                    };
                    let run = purelb_allocator::controller::Controller::run(
                        client,
                        settings,
                        Arc::new(purelb_allocator::metrics::Metrics::new()),
                        Arc::new(purelb_kube_edge::http::Health::default()),
                        purelb_allocator::leader::Leadership::Always,
                    );
                    tokio::select! {
                        result = run => {
                            if let Err(e) = result {
                                eprintln!("in-process allocator stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for InProcessAllocator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One address as `ip -j addr` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AddrInfo {
    pub ifname: String,
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub noprefixroute: bool,
    pub nodad: bool,
    pub deprecated: bool,
    /// `None` = forever.
    pub valid_lifetime: Option<u64>,
    pub preferred_lifetime: Option<u64>,
}

/// Every address in `ns`.
pub fn addresses(ns: &Ns) -> Result<Vec<AddrInfo>> {
    let out = ns.ip(&["-j", "addr", "show"])?;
    let links: Value = serde_json::from_str(&out).context("ip -j addr")?;
    let mut result = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        let ifname = link["ifname"].as_str().unwrap_or_default().to_owned();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let Some(ip) = a["local"].as_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let life = |k: &str| a[k].as_u64().filter(|v| *v != u64::from(u32::MAX));
            result.push(AddrInfo {
                ifname: ifname.clone(),
                ip,
                prefix_len: a["prefixlen"].as_u64().unwrap_or_default() as u8,
                noprefixroute: a["noprefixroute"].as_bool().unwrap_or(false),
                nodad: a["nodad"].as_bool().unwrap_or(false),
                deprecated: a["deprecated"].as_bool().unwrap_or(false),
                valid_lifetime: life("valid_life_time"),
                preferred_lifetime: life("preferred_life_time"),
            });
        }
    }
    Ok(result)
}

pub fn ingress(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .iter()
        .flat_map(|s| s.load_balancer.iter())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

pub fn annotation(service: &Service, key: &str) -> Option<String> {
    service.annotations().get(key).cloned()
}

/// The value of an unlabelled metric line `name value`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of the first metric line starting with `prefix` (name + labels).
pub fn metric_line(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub use testbed::netlab::wait_for;

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// Annotations as a map.
pub fn annotations_of(service: &Service) -> BTreeMap<String, String> {
    service.annotations().clone()
}

const ETH_P_ALL: u16 = 0x0003;

/// A capture socket for every frame arriving on `ifname` in `ns`.
pub fn capture(ns: &Ns, ifname: &str) -> Result<Socket> {
    let ifname = ifname.to_owned();
    ns.run(move || -> Result<Socket> {
        let c = std::ffi::CString::new(ifname.clone())?;
        // SAFETY: a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            bail!("no interface {ifname}");
        }
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
        )?;
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_ll;
        // the fields are set below.
        let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
        ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
        ll.sll_protocol = ETH_P_ALL.to_be();
        ll.sll_ifindex = index as libc::c_int;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the storage holds a sockaddr_ll of `len` bytes.
        let addr = unsafe { SockAddr::new(storage, len) };
        sock.bind(&addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(sock)
    })?
}

/// Frames from `sock` that `keep` accepts, until `want` of them or `timeout`.
pub fn collect(
    sock: &Socket,
    timeout: Duration,
    mut keep: impl FnMut(&[u8]) -> bool,
    want: usize,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while Instant::now() < deadline && frames.len() < want {
        match sock.recv(&mut buf) {
            Ok(n) => {
                // SAFETY: recv initialised the first n bytes.
                let frame: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if keep(&frame) {
                    frames.push(frame);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("capture failed: {e}"),
        }
    }
    frames
}

/// The MAC of `ifname` in `ns`.
pub fn mac_of(ns: &Ns, ifname: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out)?;
    let text = v[0]["address"].as_str().context("no address")?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()?;
    <[u8; 6]>::try_from(bytes.as_slice()).map_err(|_| anyhow::anyhow!("bad MAC {text}"))
}

/// (RSS KiB, peak RSS KiB, CPU seconds) of a process.
pub fn usage(pid: u32) -> Result<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (ticks(11) + ticks(12)) as f64 / hz;
    Ok((field("VmRSS:"), field("VmHWM:"), cpu))
}
