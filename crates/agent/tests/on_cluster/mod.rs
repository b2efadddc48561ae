//! The real cluster the whole-path suites run on, and what they ask of it.
//!
//! One cluster per test binary (`testbed/topology/purelb.clab.yml`: four
//! kubelets with containerd and kube-proxy on two LANs, an FRR router, a
//! client), PureLB installed from `deploy/` with the images of `make images`
//! and the lab's configuration applied; started on first use, stopped when the
//! binary exits. A test that only adds its own objects takes [`cluster`] (many
//! at once); one that stops agents, changes the cluster-wide configuration or
//! counts cluster-wide metrics takes [`cluster_mut`] (alone).
//!
//! Each test has a namespace of its own ([`TestNs`]) and, when it needs
//! addresses of its own, ServiceGroups with pools no other test uses
//! ([`TestNs::groups`]).

#![allow(dead_code, reason = "each suite uses a different part of this module")]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use testbed::cluster::Cluster;
use testbed::cluster::workload::{LbService, answering_pod, ask};
use testbed::netlab::Ns;

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const INSTALL_NS: &str = "purelb-system";
pub const DUMMY: &str = "kube-lb0";
/// The agents' lease duration (deploy/base/lbnodeagent.yaml): what a lost
/// handover would cost a client.
pub const LEASE_DURATION: Duration = Duration::from_secs(10);

static CLUSTER: OnceLock<Result<RwLock<Option<Cluster>>, String>> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(Ok(lock)) = CLUSTER.get() {
        let cluster = lock.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(cluster);
    }
}

fn shared() -> &'static RwLock<Option<Cluster>> {
    let started = CLUSTER.get_or_init(|| {
        let start = || -> Result<Cluster> {
            let (c, install) = Cluster::start_with_purelb()?;
            eprintln!(
                "cluster up in {:?} ({}), PureLB installed in {install:?}",
                c.startup_time,
                c.describe()
            );
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

/// The cluster, shared with the other tests that only add objects of their own.
pub fn cluster() -> ClusterRef {
    ClusterRef(shared().read().unwrap_or_else(|e| e.into_inner()))
}

/// The cluster, alone.
pub fn cluster_mut() -> ClusterMut {
    ClusterMut(shared().write().unwrap_or_else(|e| e.into_inner()))
}

pub struct ClusterRef(RwLockReadGuard<'static, Option<Cluster>>);
pub struct ClusterMut(RwLockWriteGuard<'static, Option<Cluster>>);

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

/// The cluster alone (after waiting for its agents to be steady), an API
/// client, and a namespace and pools of the test's own. Bind them in this
/// order: the namespace then goes before the lock does.
pub fn alone(prefix: &str) -> Result<(ClusterMut, Kube, TestNs, TestPools)> {
    let c = cluster_mut();
    wait_agents_steady(&c)?;
    let (k, ns, pools) = own_objects(&c, prefix)?;
    Ok((c, k, ns, pools))
}

/// [`alone`], but sharing the cluster with the other tests that only add
/// objects of their own.
pub fn together(prefix: &str) -> Result<(ClusterRef, Kube, TestNs, TestPools)> {
    let c = cluster();
    let (k, ns, pools) = own_objects(&c, prefix)?;
    Ok((c, k, ns, pools))
}

fn own_objects(c: &Cluster, prefix: &str) -> Result<(Kube, TestNs, TestPools)> {
    let k = Kube::new(c)?;
    let ns = TestNs::new(c, prefix)?;
    let pools = ns.groups(&k)?;
    Ok((k, ns, pools))
}

/// A namespace of its own for a test, deleted at the end with the
/// ServiceGroups it made.
pub struct TestNs {
    pub name: String,
    /// A number no other test of this binary has: it picks the test's pools.
    pub slot: u32,
    groups: std::cell::RefCell<Vec<String>>,
    kubeenv: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNs {
    pub fn new(c: &Cluster, prefix: &str) -> Result<TestNs> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let slot = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(slot <= 20, "at most 20 test namespaces per binary");
        let name = format!("{prefix}-{slot}");
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
            slot,
            groups: Default::default(),
            kubeenv: c.control_plane().kubeenv_bin().to_owned(),
            kubeconfig: c.control_plane().kubeconfig_path().to_owned(),
        })
    }

    /// Two ServiceGroups of this test: `<ns>-local` with addresses from lan1
    /// (six IPv4, 256 IPv6) and `<ns>-remote` (a /28 aggregated to /30, and a
    /// /64), each range used by no other test.
    pub fn groups(&self, k: &Kube) -> Result<TestPools> {
        let pools = TestPools::for_slot(&self.name, self.slot);
        self.group(
            k,
            &pools.local,
            json!({"local": {
                "v4pools": [{"pool": pools.local_v4_pool(), "subnet": LAN1_V4, "aggregation": "default"}],
                "v6pools": [{"pool": pools.local_v6_pool(), "subnet": LAN1_V6, "aggregation": "default"}],
            }}),
        )?;
        self.group(
            k,
            &pools.remote,
            json!({"remote": {
                "v4pools": [{"pool": pools.remote_v4_subnet(), "subnet": pools.remote_v4_subnet(), "aggregation": "/30"}],
                "v6pools": [{"pool": pools.remote_v6_pool(), "subnet": pools.remote_v6_subnet(), "aggregation": "default"}],
            }}),
        )?;
        Ok(pools)
    }

    /// Creates or replaces the ServiceGroup `name` (deleted with the namespace).
    pub fn group(&self, k: &Kube, name: &str, spec: Value) -> Result<()> {
        let api: Api<purelb_api::crd::ServiceGroup> = Api::namespaced(k.client.clone(), INSTALL_NS);
        let body = json!({"apiVersion": "purelb.io/v2", "kind": "ServiceGroup",
            "metadata": {"name": name}, "spec": spec});
        k.rt.block_on(api.patch(
            name,
            &PatchParams::apply("purelb-tests").force(),
            &Patch::Apply(&body),
        ))?;
        let mut groups = self.groups.borrow_mut();
        if !groups.iter().any(|g| g == name) {
            groups.push(name.to_owned());
        }
        Ok(())
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let kubectl = |args: &[&str]| {
            let _ = std::process::Command::new(&self.kubeenv)
                .arg("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .output();
        };
        // The Services first, and waited for: a test that comes next and
        // counts what the agents do must not see this one's addresses go.
        kubectl(&[
            "-n",
            &self.name,
            "delete",
            "services",
            "--all",
            "--timeout=60s",
        ]);
        kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        for g in self.groups.borrow().iter() {
            kubectl(&[
                "-n",
                INSTALL_NS,
                "delete",
                "servicegroup",
                g,
                "--wait=false",
            ]);
        }
    }
}

/// lan1 of the topology, where the tests' local pools are.
pub const LAN1_V4: &str = "172.30.250.0/24";
pub const LAN1_V6: &str = "2001:db8:250::/64";

/// The address ranges of one test's ServiceGroups.
#[derive(Debug, Clone)]
pub struct TestPools {
    pub local: String,
    pub remote: String,
    slot: u32,
}

impl TestPools {
    fn for_slot(ns: &str, slot: u32) -> TestPools {
        TestPools {
            local: format!("{ns}-local"),
            remote: format!("{ns}-remote"),
            slot,
        }
    }

    /// Six addresses of lan1, below the lab's own pool (.200-.220).
    pub fn local_v4_pool(&self) -> String {
        let first = 20 + 6 * self.slot;
        format!("172.30.250.{first}-172.30.250.{}", first + 5)
    }

    pub fn local_v6_pool(&self) -> String {
        format!(
            "2001:db8:250::1:{s:x}00-2001:db8:250::1:{s:x}ff",
            s = self.slot
        )
    }

    /// A /28 of 10.255.0.0/16 (the lab's remote range), away from the lab's
    /// own remote pool (10.255.1.0/24).
    pub fn remote_v4_subnet(&self) -> String {
        format!("10.255.{}.0/28", 10 + self.slot)
    }

    pub fn remote_v6_subnet(&self) -> String {
        format!("fd00:10:255:{:x}::/64", 0x10 + self.slot)
    }

    pub fn remote_v6_pool(&self) -> String {
        let s = 0x10 + self.slot;
        format!("fd00:10:255:{s:x}::100-fd00:10:255:{s:x}::1ff")
    }
}

/// An API client on a runtime of its own, for a test's calls.
pub struct Kube {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
}

impl Kube {
    pub fn new(c: &Cluster) -> Result<Kube> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let client = rt.block_on(c.client())?;
        Ok(Kube { rt, client })
    }

    fn services(&self, ns: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates a LoadBalancer Service without a selector (its endpoints are
    /// [`set_endpoints`](Self::set_endpoints)' or nobody's) in `ns` from `group`,
    /// with `extra` merged into the object.
    pub fn create_service(
        &self,
        ns: &str,
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
        self.rt
            .block_on(self.services(ns).create(&PostParams::default(), &svc))?;
        Ok(())
    }

    pub fn delete_service(&self, ns: &str, name: &str) -> Result<()> {
        self.rt
            .block_on(self.services(ns).delete(name, &DeleteParams::default()))?;
        Ok(())
    }

    pub fn service(&self, ns: &str, name: &str) -> Result<Service> {
        Ok(self.rt.block_on(self.services(ns).get(name))?)
    }

    pub fn patch_service(&self, ns: &str, name: &str, patch: Value) -> Result<()> {
        self.rt.block_on(self.services(ns).patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))?;
        Ok(())
    }

    /// Waits for `count` ingress addresses.
    pub fn wait_ingress(&self, ns: &str, name: &str, count: usize) -> Result<Vec<IpAddr>> {
        wait_for(TIMEOUT, &format!("{count} addresses on {name}"), || {
            let ips = ingress(&self.service(ns, name)?);
            Ok((ips.len() == count).then_some(ips))
        })
    }

    /// Events on the object `name` in `ns`, as (type, reason, message).
    pub fn events(&self, ns: &str, name: &str) -> Result<Vec<(String, String, String)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
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

    /// Waits for an event `reason` whose message contains `text` on `name`;
    /// returns its type and message.
    pub fn wait_event(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        text: &str,
    ) -> Result<(String, String)> {
        wait_for(
            TIMEOUT,
            &format!("event {reason} ~ {text:?} on {name}"),
            || {
                Ok(self
                    .events(ns, name)?
                    .into_iter()
                    .find(|(_, r, m)| r == reason && m.contains(text))
                    .map(|(t, _, m)| (t, m)))
            },
        )
    }

    /// Writes (creates or replaces) the EndpointSlice of Service `service`
    /// with one endpoint per (node, ready), as a controller of endpoints for a
    /// Service without a selector would.
    pub fn set_endpoints(&self, ns: &str, service: &str, endpoints: &[(&str, bool)]) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let eps: Vec<Value> = endpoints
            .iter()
            .enumerate()
            .map(|(k, (node, ready))| {
                json!({"addresses": [format!("10.244.250.{}", k + 10)],
                       "conditions": {"ready": ready, "serving": ready, "terminating": false},
                       "nodeName": node})
            })
            .collect();
        let name = format!("{service}-test");
        let body = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "purelb-tests"}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "tcp-80", "port": 8080, "protocol": "TCP"}],
        });
        self.rt.block_on(api.patch(
            &name,
            &PatchParams::apply("purelb-tests").force(),
            &Patch::Apply(&body),
        ))?;
        Ok(())
    }

    /// Deletes the pod `name` of the install namespace (gracefully, without
    /// waiting for it to go).
    pub fn delete_pod(&self, name: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), INSTALL_NS);
        self.rt
            .block_on(pods.delete(name, &DeleteParams::default()))?;
        Ok(())
    }

    /// The election Lease of `node`.
    pub fn lease(&self, node: &str) -> Result<Option<Lease>> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), INSTALL_NS);
        Ok(self
            .rt
            .block_on(api.get_opt(&purelb_api::lease::lease_name(node)))?)
    }

    /// Server-side applies `body` (a namespaced object of kind `K` in the
    /// install namespace) as `manager`.
    pub fn apply<K>(&self, manager: &str, body: &Value) -> Result<()>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = body["metadata"]["name"]
            .as_str()
            .context("the object has no name")?;
        let api: Api<K> = Api::namespaced(self.client.clone(), INSTALL_NS);
        self.rt.block_on(api.patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(body),
        ))?;
        Ok(())
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

/// The subnets of the node's LAN interfaces (its permanent global addresses
/// on them), as `a.b.c.d/len`: what an agent advertises in its Lease when
/// its `localInterface` selects every one of them.
pub fn node_subnets(ns: &Ns) -> Result<BTreeSet<String>> {
    subnets_on(ns, |ifname| ifname.starts_with("eth"))
}

/// The subnets of the node's default-route interfaces (one per family): what
/// an agent advertises with `localInterface: default`.
pub fn default_route_subnets(ns: &Ns) -> Result<BTreeSet<String>> {
    let mut interfaces = BTreeSet::new();
    for family in ["-4", "-6"] {
        let routes: Value =
            serde_json::from_str(&ns.ip(&["-j", family, "route", "show", "default"])?)
                .context("ip -j route")?;
        interfaces.extend(
            routes
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["dev"].as_str().map(str::to_owned)),
        );
    }
    subnets_on(ns, |ifname| interfaces.contains(ifname))
}

fn subnets_on(ns: &Ns, interface: impl Fn(&str) -> bool) -> Result<BTreeSet<String>> {
    Ok(addresses(ns)?
        .into_iter()
        .filter(|a| {
            interface(&a.ifname)
                && a.valid_lifetime.is_none()
                && !a.noprefixroute
                && !matches!(a.ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
        })
        .filter_map(|a| {
            let net = ipnet_of(a.ip, a.prefix_len);
            Some(format!("{net}/{}", a.prefix_len)).filter(|_| a.prefix_len > 0)
        })
        .collect())
}

fn ipnet_of(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// The nodes (indices into `c.nodes`) whose interfaces hold `ip`, with the
/// address details.
pub fn holders(c: &Cluster, ip: IpAddr) -> Result<Vec<(usize, AddrInfo)>> {
    let mut out = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        for a in addresses(&n.ns)? {
            if a.ip == ip {
                out.push((i, a));
            }
        }
    }
    Ok(out)
}

/// Waits until exactly the nodes `want` hold `ip`; returns their details.
pub fn wait_holders(c: &Cluster, ip: IpAddr, want: &[usize]) -> Result<Vec<(usize, AddrInfo)>> {
    wait_for(TIMEOUT, &format!("{ip} on exactly nodes {want:?}"), || {
        let h = holders(c, ip)?;
        let mut idx: Vec<usize> = h.iter().map(|(i, _)| *i).collect();
        idx.sort();
        idx.dedup();
        Ok((idx == want).then_some(h))
    })
    .with_context(|| agent_logs_about(c, &ip.to_string()))
}

/// Waits until exactly one node holds `ip`; returns it.
pub fn wait_single_holder(c: &Cluster, ip: IpAddr) -> Result<(usize, AddrInfo)> {
    wait_for(TIMEOUT, &format!("{ip} on exactly one node"), || {
        let h = holders(c, ip)?;
        Ok((h.len() == 1).then(|| h[0].clone()))
    })
    .with_context(|| agent_logs_about(c, &ip.to_string()))
}

/// The node whose interfaces (not `kube-lb0`) hold `ip`, if any.
pub fn holder(c: &Cluster, ip: IpAddr) -> Result<Option<String>> {
    holder_other_than(c, ip, "")
}

/// A node other than `not` whose interfaces (not `kube-lb0`) hold `ip` (a
/// dead node keeps its addresses, as a machine that lost power does).
pub fn holder_other_than(c: &Cluster, ip: IpAddr, not: &str) -> Result<Option<String>> {
    for (i, a) in holders(c, ip)? {
        if a.ifname != DUMMY && c.nodes[i].name != not {
            return Ok(Some(c.nodes[i].name.clone()));
        }
    }
    Ok(None)
}

/// The nodes of lan1 (indices), where the tests' local addresses live: the
/// candidates of their elections.
pub fn lan1_nodes(c: &Cluster) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        if node_subnets(&n.ns)?.contains(LAN1_V4) {
            out.push(i);
        }
    }
    Ok(out)
}

/// The node's interface on lan1.
pub fn lan1_interface(c: &Cluster, i: usize) -> Result<String> {
    addresses(&c.nodes[i].ns)?
        .into_iter()
        .find(|a| a.valid_lifetime.is_none() && ipnet_of(a.ip, 24).to_string() == "172.30.250.0")
        .map(|a| a.ifname)
        .context("no lan1 interface")
}

/// The node's IPv4 address (its first InternalIP).
pub fn node_v4(c: &Cluster, i: usize) -> IpAddr {
    *c.nodes[i]
        .node_ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .expect("every lab node has an IPv4 address")
}

pub fn node_v6(c: &Cluster, i: usize) -> IpAddr {
    *c.nodes[i]
        .node_ips
        .iter()
        .find(|ip| ip.is_ipv6())
        .expect("every lab node has an IPv6 address")
}

/// `GET path` on the agent of node `i` (its port 7472), as a Prometheus on
/// the network would: from the router, which reaches every node over its LAN
/// even while a test has cut the node's management link (where the node's
/// answers to the host go).
pub fn agent_http(c: &Cluster, i: usize, path: &str) -> Result<String> {
    testbed::cluster::http_get(
        Some(c.router()?.ns().netns()),
        SocketAddr::new(node_v4(c, i), 7472),
        path,
        Duration::from_secs(5),
    )
}

pub fn metrics(c: &Cluster, i: usize) -> Result<String> {
    agent_http(c, i, "/metrics")
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

/// The pods of `app` in `ns` (their names).
pub fn pods_of(c: &Cluster, ns: &str, app: &str) -> Result<BTreeSet<String>> {
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
pub fn answer_from(c: &Cluster, from: Option<&Ns>, ip: IpAddr) -> Result<String> {
    let body = ask(from.map(Ns::netns), ip, TIMEOUT).with_context(|| {
        let router = c.router().map(|r| r.ns().clone());
        format!(
            "{ip} is on {:?}; the router's neighbours: {}; routes: {}\n{}",
            holder(c, ip),
            router
                .as_ref()
                .map(|r| r.ip(&["neigh"]).unwrap_or_default())
                .unwrap_or_default(),
            router
                .as_ref()
                .map(|r| r.ip(&["route", "get", &ip.to_string()]).unwrap_or_default())
                .unwrap_or_default(),
            agent_logs_about(c, &ip.to_string()),
        )
    })?;
    answering_pod(&body).with_context(|| format!("no pod in {body:?}"))
}

/// A LoadBalancer Service in front of the pods of `app`.
pub fn service<'a>(
    ns: &'a str,
    name: &'a str,
    app: &'a str,
    group: &'a str,
    families: testbed::cluster::workload::Families,
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

/// The agent pod on `node`.
pub fn agent_pod_on(c: &Cluster, node: &str) -> Result<String> {
    let name = c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "pods",
        "-l",
        "component=lbnodeagent",
        "--field-selector",
        &format!("spec.nodeName={node}"),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    Ok(name.trim().to_owned())
}

/// `kubectl logs` of the agent on `node` (its current container).
pub fn agent_log(c: &Cluster, node: &str) -> Result<String> {
    let pod = agent_pod_on(c, node)?;
    // Bounded: the kubelet serving it may be frozen or cut off by the test.
    c.kubectl_text(&["-n", INSTALL_NS, "logs", "--request-timeout=10s", &pod])
}

/// What every agent logged about `needle` (an address, a Service), and the
/// Services' events: for a failure's context.
pub fn agent_logs_about(c: &Cluster, needle: &str) -> String {
    let mut out = String::new();
    for n in &c.nodes {
        for line in agent_log(c, &n.name)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
        {
            out.push_str(&format!("{}: {line}\n", n.name));
        }
    }
    out.push_str(
        &c.kubectl_text(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.kind=Service",
        ])
        .unwrap_or_default(),
    );
    out
}

/// Every agent's log tail, for a failure's context.
pub fn agent_log_tails(c: &Cluster) -> String {
    let mut out = String::new();
    for n in &c.nodes {
        let log = agent_log(c, &n.name).unwrap_or_else(|e| format!("{e:#}"));
        out.push_str(&format!("--- {} ---\n{}\n", n.name, tail(&log, 25)));
    }
    out
}

/// `kubectl logs -f` of a pod on a thread of its own, so what a pod that is
/// being deleted logged until it exited can be read afterwards.
pub struct LogFollower {
    child: std::process::Child,
    thread: Option<std::thread::JoinHandle<String>>,
}

impl LogFollower {
    pub fn start(c: &Cluster, pod: &str) -> Result<LogFollower> {
        use std::io::Read as _;
        let mut child = std::process::Command::new(c.control_plane().kubeenv_bin())
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(c.control_plane().kubeconfig_path())
            .args(["-n", INSTALL_NS, "logs", "-f", pod])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut stdout = child.stdout.take().context("kubectl logs stdout")?;
        let thread = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Ok(LogFollower {
            child,
            thread: Some(thread),
        })
    }

    /// Waits (at most `timeout`) for the pod's log to end; returns it.
    pub fn finish(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// The agent instance (pod uid) in `node`'s election Lease; empty when there is no Lease.
pub fn lease_instance(c: &Cluster, node: &str) -> Result<String> {
    Ok(c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "lease",
        &purelb_api::lease::lease_name(node),
        "--ignore-not-found",
        "-o",
        r#"jsonpath={.metadata.annotations.purelb\.io/instance}"#,
    ])?
    .trim()
    .to_owned())
}

/// The uid of the pod `name` in the install namespace.
pub fn pod_uid(c: &Cluster, name: &str) -> Result<String> {
    Ok(c.kubectl_text(&[
        "-n",
        INSTALL_NS,
        "get",
        "pod",
        name,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?
    .trim()
    .to_owned())
}

/// Both allocator replicas available (again, after a test stopped one).
pub fn wait_allocators_available(c: &Cluster) -> Result<()> {
    wait_for(
        Duration::from_secs(120),
        "both allocator replicas available",
        || {
            let available = c.kubectl_text(&[
                "-n",
                INSTALL_NS,
                "get",
                "deployment",
                "allocator",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ])?;
            Ok((available.trim() == "2").then_some(()))
        },
    )
}

/// Every agent running and ready again, after a test stopped some.
pub fn wait_agents_rolled_out(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "rollout",
        "status",
        "daemonset/lbnodeagent",
        "--timeout=180s",
    ])?;
    let nodes = c.nodes.len().to_string();
    wait_for(TIMEOUT, "every agent ready", || {
        let ready = c.kubectl_text(&[
            "-n",
            INSTALL_NS,
            "get",
            "daemonset",
            "lbnodeagent",
            "-o",
            "jsonpath={.status.numberReady}",
        ])?;
        Ok((ready.trim() == nodes).then_some(()))
    })
}

/// Every agent running, ready and seeing every node's live lease: the
/// steady state a test that counts what the agents do starts from.
pub fn wait_agents_steady(c: &Cluster) -> Result<()> {
    wait_agents_rolled_out(c)?;
    for i in 0..c.nodes.len() {
        wait_for(
            TIMEOUT,
            &format!("{} to see every node's lease", c.nodes[i].name),
            || {
                let m = metrics(c, i)?;
                Ok(
                    (metric_value(&m, "purelb_election_member_count")
                        == Some(c.nodes.len() as f64)
                        && metric_value(&m, "purelb_election_lease_healthy") == Some(1.0))
                    .then_some(()),
                )
            },
        )?;
    }
    Ok(())
}

/// The `/proc/<pid>/status` of the process running `exe` in a container on
/// `node` (of the pod with uid `pod`, when given).
pub fn container_process_status(
    c: &Cluster,
    node: &str,
    exe: &str,
    pod: Option<&str>,
) -> Result<String> {
    let node = c.node(node)?;
    // Closed by a slash: `…-worker` must not match `…-worker2`.
    let cgroup_root = format!("/{}-{}/", c.lab().prefix(), node.name);
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
            if !cgroup.contains(&cgroup_root) {
                continue;
            }
            if let Some(uid) = pod
                && !cgroup.contains(&format!("pod{uid}"))
            {
                continue;
            }
            return Ok(Some(std::fs::read_to_string(path.join("status"))?));
        }
        Ok(None)
    })
}

pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
}

/// The host pid of the agent on `node`.
pub fn agent_pid(c: &Cluster, node: &str) -> Result<i32> {
    let status = container_process_status(c, node, "/usr/local/bin/lbnodeagent", None)?;
    Ok(status_field(&status, "Pid:").parse()?)
}

/// SIGKILL to the agent on `node`: no shutdown at all. Returns once it has exited.
pub fn kill_agent(c: &Cluster, node: &str) -> Result<()> {
    let pid = agent_pid(c, node)?;
    // SAFETY: kill(2) on a pid read from /proc just now.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error()).context("killing the agent");
    }
    wait_exited(pid, TIMEOUT)?;
    Ok(())
}

/// Polls until process `pid` has exited (gone, or a zombie its parent has not
/// reaped yet); returns when it saw that.
pub fn wait_exited(pid: i32, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let running = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !status_field(&s, "State:").starts_with('Z'));
        if !running {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("process {pid} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// (RSS KiB, peak RSS KiB, CPU seconds) of a process.
pub fn usage(pid: i32) -> Result<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status_field(&status, name)
            .split_whitespace()
            .next()
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

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub use testbed::netlab::{require_root, wait_for};
