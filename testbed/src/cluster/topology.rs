//! The lab's topology as a containerlab file says it, resolved into what the
//! testbed builds: pure, a file's text in and a [`LabPlan`] out.
//!
//! What containerlab kinds mean here:
//! - `k8s-kind`: the Kubernetes cluster; its nodes are the `ext-container`
//!   nodes named `<cluster>-control-plane` and `<cluster>-worker[N]`, as kind
//!   names its node containers. Each becomes a node namespace with containerd,
//!   a kubelet and kube-proxy; its labels give its addresses and pod ranges.
//! - `linux` with an FRR image: a router namespace running FRR with the
//!   `frr.conf` its binds name.
//! - `linux` otherwise: a plain namespace (a client).
//! - `bridge`: an L2 segment.
//! - the `host` endpoint: a veth into the root namespace (the operator's
//!   workstation), addressed from the router's `purelb.lab/host-addrs` label.
//!
//! `exec` lines run inside their node once its links exist, as containerlab
//! runs them; only `ip` and `sysctl` commands are accepted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A node's Kubernetes addresses (`--node-ip`), comma-separated.
pub const NODE_IP_LABEL: &str = "purelb.lab/node-ip";
/// A node's pod ranges, one per family, comma-separated.
pub const POD_CIDR_LABEL: &str = "purelb.lab/pod-cidr";
/// A node's Kubernetes labels (`key=value`, comma-separated).
pub const NODE_LABELS_LABEL: &str = "purelb.lab/node-labels";
/// On the node linked to `host`: the host end's addresses.
pub const HOST_ADDRS_LABEL: &str = "purelb.lab/host-addrs";
/// On a router: ranges it learns from the nodes, which the host routes through it.
pub const ANNOUNCED_LABEL: &str = "purelb.lab/announced";

#[derive(Debug, Deserialize)]
struct File {
    name: String,
    topology: Topology,
}

#[derive(Debug, Deserialize)]
struct Topology {
    nodes: BTreeMap<String, NodeDef>,
    #[serde(default)]
    links: Vec<LinkDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct NodeDef {
    kind: String,
    image: Option<String>,
    #[serde(default)]
    binds: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    exec: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct LinkDef {
    endpoints: [String; 2],
}

/// What the testbed builds.
#[derive(Debug, Clone, PartialEq)]
pub struct LabPlan {
    pub name: String,
    pub kube_nodes: Vec<KubeNodePlan>,
    pub routers: Vec<RouterPlan>,
    /// Plain namespaces (clients).
    pub hosts: Vec<NamespacePlan>,
    /// L2 segments.
    pub bridges: Vec<String>,
    pub links: Vec<LinkPlan>,
}

/// A namespace with the commands that configure it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespacePlan {
    pub name: String,
    pub exec: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KubeNodePlan {
    pub ns: NamespacePlan,
    pub node_ips: Vec<IpAddr>,
    /// Per family, `addr/len`.
    pub pod_cidrs: Vec<String>,
    /// `key=value` labels the kubelet registers the node with.
    pub node_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouterPlan {
    pub ns: NamespacePlan,
    /// The FRR configuration bound to `/etc/frr/frr.conf`.
    pub frr_conf: PathBuf,
    /// The host end's addresses (`addr/len`) when linked to the host.
    pub host_addrs: Vec<String>,
    /// Ranges the router learns from the nodes.
    pub announced: Vec<String>,
}

/// One end of a link: a node's interface, a bridge's port, or the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Node { node: String, ifname: String },
    Bridge { bridge: String, port: String },
    Host { ifname: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    pub a: Endpoint,
    pub b: Endpoint,
}

impl LabPlan {
    /// Reads and resolves a topology file; relative binds are relative to it.
    pub fn load(path: &Path) -> Result<LabPlan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading topology {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        LabPlan::parse(&text, dir).with_context(|| format!("topology {}", path.display()))
    }

    /// Resolves a topology's text; `dir` is where relative binds start.
    pub fn parse(text: &str, dir: &Path) -> Result<LabPlan> {
        let file: File = serde_saphyr::from_str(text).context("not a containerlab topology")?;
        let nodes = &file.topology.nodes;
        let clusters: Vec<&String> = nodes
            .iter()
            .filter(|(_, n)| n.kind == "k8s-kind")
            .map(|(name, _)| name)
            .collect();
        let is_kube_node = |name: &str| {
            clusters.iter().any(|c| {
                name.strip_prefix(c.as_str()).is_some_and(|rest| {
                    rest == "-control-plane"
                        || rest
                            .strip_prefix("-worker")
                            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                })
            })
        };
        let mut plan = LabPlan {
            name: file.name.clone(),
            kube_nodes: Vec::new(),
            routers: Vec::new(),
            hosts: Vec::new(),
            bridges: Vec::new(),
            links: Vec::new(),
        };
        for (name, node) in nodes {
            let ns = || -> Result<NamespacePlan> {
                Ok(NamespacePlan {
                    name: name.clone(),
                    exec: node
                        .exec
                        .iter()
                        .map(|line| exec_argv(line))
                        .collect::<Result<_>>()
                        .with_context(|| format!("node {name}"))?,
                })
            };
            match node.kind.as_str() {
                "k8s-kind" => {}
                "bridge" => plan.bridges.push(name.clone()),
                "ext-container" if is_kube_node(name) => {
                    let label = |key: &str| {
                        node.labels
                            .get(key)
                            .with_context(|| format!("Kubernetes node {name} has no label {key}"))
                    };
                    let node_ips = list(label(NODE_IP_LABEL)?)
                        .map(|ip| {
                            ip.parse()
                                .with_context(|| format!("node {name}: bad node IP {ip:?}"))
                        })
                        .collect::<Result<Vec<IpAddr>>>()?;
                    let pod_cidrs: Vec<String> =
                        list(label(POD_CIDR_LABEL)?).map(str::to_owned).collect();
                    let node_labels = node
                        .labels
                        .get(NODE_LABELS_LABEL)
                        .map(|v| list(v).map(str::to_owned).collect())
                        .unwrap_or_default();
                    plan.kube_nodes.push(KubeNodePlan {
                        ns: ns()?,
                        node_ips,
                        pod_cidrs,
                        node_labels,
                    });
                }
                "ext-container" => {
                    bail!("node {name}: an ext-container must be a node of a k8s-kind cluster")
                }
                "linux" if node.image.as_deref().is_some_and(|i| i.contains("frr")) => {
                    let frr_conf = node
                        .binds
                        .iter()
                        .find_map(|b| {
                            let (src, dst) = b.split_once(':')?;
                            dst.starts_with("/etc/frr/frr.conf").then(|| dir.join(src))
                        })
                        .with_context(|| format!("router {name} binds no /etc/frr/frr.conf"))?;
                    let label_list = |key: &str| -> Vec<String> {
                        node.labels
                            .get(key)
                            .map(|v| list(v).map(str::to_owned).collect())
                            .unwrap_or_default()
                    };
                    plan.routers.push(RouterPlan {
                        ns: ns()?,
                        frr_conf,
                        host_addrs: label_list(HOST_ADDRS_LABEL),
                        announced: label_list(ANNOUNCED_LABEL),
                    });
                }
                "linux" => plan.hosts.push(ns()?),
                other => bail!("node {name}: kind {other:?} is not one the testbed builds"),
            }
        }
        for link in &file.topology.links {
            let [a, b] = &link.endpoints;
            let a = plan.endpoint(a)?;
            let b = plan.endpoint(b)?;
            if !matches!(a, Endpoint::Node { .. }) && !matches!(b, Endpoint::Node { .. }) {
                bail!("link {:?}: one end must be a node", link.endpoints);
            }
            plan.links.push(LinkPlan { a, b });
        }
        if plan.kube_nodes.is_empty() {
            bail!("no Kubernetes nodes (ext-container nodes of a k8s-kind cluster)");
        }
        Ok(plan)
    }

    fn endpoint(&self, text: &str) -> Result<Endpoint> {
        let (node, ifname) = text
            .split_once(':')
            .with_context(|| format!("link endpoint {text:?} is not node:interface"))?;
        if ifname.is_empty() || ifname.len() > 15 {
            bail!("link endpoint {text:?}: interface names are 1 to 15 characters");
        }
        let (node, ifname) = (node.to_owned(), ifname.to_owned());
        if node == "host" {
            return Ok(Endpoint::Host { ifname });
        }
        if self.bridges.contains(&node) {
            return Ok(Endpoint::Bridge {
                bridge: node,
                port: ifname,
            });
        }
        if self.namespace_names().any(|n| n == node) {
            return Ok(Endpoint::Node { node, ifname });
        }
        bail!("link endpoint {text:?} names no node of the topology")
    }

    /// Every subnet an `ip addr add` line of the plan configures, as `addr/len`
    /// with the host bits cleared.
    pub fn subnets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let all = self
            .kube_nodes
            .iter()
            .map(|n| &n.ns)
            .chain(self.routers.iter().map(|r| &r.ns))
            .chain(&self.hosts);
        for ns in all {
            for argv in &ns.exec {
                let is_add = argv.len() > 3
                    && argv[0] == "ip"
                    && argv[1..].iter().take(2).any(|w| w == "addr")
                    && argv.iter().any(|w| w == "add");
                if !is_add {
                    continue;
                }
                if let Some(net) = argv.iter().find_map(|w| network_of(w))
                    && !out.contains(&net)
                {
                    out.push(net);
                }
            }
        }
        out
    }

    /// Every namespace the plan makes for a node (not bridges).
    pub fn namespace_names(&self) -> impl Iterator<Item = &str> {
        self.kube_nodes
            .iter()
            .map(|n| &n.ns)
            .chain(self.routers.iter().map(|r| &r.ns))
            .chain(&self.hosts)
            .map(|n| n.name.as_str())
    }
}

/// `192.0.2.7/24` → `192.0.2.0/24`; `None` for anything else.
pub fn network_of(cidr: &str) -> Option<String> {
    let (addr, len) = cidr.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    let addr: IpAddr = addr.parse().ok()?;
    let net = match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
        _ => return None,
    };
    Some(format!("{net}/{len}"))
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// An exec line as argv; only `ip` and `sysctl`, which are all a lab node's
/// configuration needs and which mean the same in a namespace as in a container.
fn exec_argv(line: &str) -> Result<Vec<String>> {
    let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    match argv.first().map(String::as_str) {
        Some("ip" | "sysctl") => Ok(argv),
        _ => bail!("exec {line:?}: only `ip` and `sysctl` commands are run by the testbed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../topology/purelb.clab.yml");

    fn plan() -> LabPlan {
        LabPlan::parse(DEFAULT, Path::new("/t")).expect("default topology")
    }

    #[test]
    fn the_default_topology_has_four_kube_nodes_a_router_and_a_client() {
        let plan = plan();
        let names: Vec<&str> = plan.kube_nodes.iter().map(|n| n.ns.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "purelb-control-plane",
                "purelb-worker",
                "purelb-worker2",
                "purelb-worker3"
            ]
        );
        assert_eq!(plan.routers.len(), 1);
        assert_eq!(plan.routers[0].frr_conf, Path::new("/t/router/frr.conf"));
        assert_eq!(
            plan.routers[0].host_addrs,
            ["172.30.254.1/30", "2001:db8:254::1/64"]
        );
        assert_eq!(plan.hosts.len(), 1);
        assert_eq!(plan.bridges, ["lan1", "lan2"]);
        let worker = &plan.kube_nodes[1];
        assert_eq!(
            worker.node_ips,
            [
                "172.30.250.12".parse::<IpAddr>().unwrap(),
                "2001:db8:250::12".parse().unwrap()
            ]
        );
        assert_eq!(worker.pod_cidrs, ["10.244.2.0/24", "fd00:10:244:2::/64"]);
        assert_eq!(worker.node_labels, ["lab.purelb.io/lan=lan1"]);
    }

    #[test]
    fn links_resolve_to_nodes_bridges_and_the_host() {
        let plan = plan();
        assert!(plan.links.contains(&LinkPlan {
            a: Endpoint::Node {
                node: "purelb-worker".into(),
                ifname: "eth2".into()
            },
            b: Endpoint::Bridge {
                bridge: "lan2".into(),
                port: "w1-eth2".into()
            },
        }));
        assert!(plan.links.iter().any(|l| l.b
            == Endpoint::Host {
                ifname: "purelb-host".into()
            }));
    }

    #[test]
    fn subnets_are_those_the_exec_lines_address() {
        let subnets = plan().subnets();
        for net in [
            "172.30.250.0/24",
            "2001:db8:250::/64",
            "172.30.251.0/24",
            "172.30.100.0/24",
            "2001:db8:100::/64",
            "172.30.254.0/30",
        ] {
            assert!(subnets.iter().any(|s| s == net), "{net} in {subnets:?}");
        }
        assert_eq!(subnets.len(), 8, "{subnets:?}");
    }

    #[test]
    fn exec_lines_other_than_ip_and_sysctl_are_refused() {
        let text = DEFAULT.replace("- ip route replace default via 172.30.100.1", "- rm -rf /");
        let err = LabPlan::parse(&text, Path::new("/t")).unwrap_err();
        assert!(
            format!("{err:#}").contains("only `ip` and `sysctl`"),
            "{err:#}"
        );
    }

    #[test]
    fn a_link_to_an_unknown_node_is_an_error() {
        let text = DEFAULT.replace("\"router:eth3\"", "\"nowhere:eth3\"");
        let err = LabPlan::parse(&text, Path::new("/t")).unwrap_err();
        assert!(format!("{err:#}").contains("names no node"), "{err:#}");
    }

    #[test]
    fn a_kube_node_without_its_addresses_is_an_error() {
        let text = DEFAULT.replace("purelb.lab/node-ip: 172.30.251.14", "other: 172.30.251.14");
        let err = LabPlan::parse(&text, Path::new("/t")).unwrap_err();
        assert!(format!("{err:#}").contains("purelb.lab/node-ip"), "{err:#}");
    }
}
