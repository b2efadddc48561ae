//! The whole BGP path on the real cluster (see `on_cluster`): every node's
//! lbnodeagent pod (with its embedded speaker) peered with the lab's FRR
//! router (eBGP, ECMP) by the lab's BGPConfiguration, a client behind the
//! router. A remote Service's address goes onto every node's `kube-lb0`,
//! becomes a BGP route with a next hop per node, follows aggregation,
//! `externalTrafficPolicy: Local` and agent restarts, carries traffic from the
//! client to a backend pod, and is withdrawn when the Service goes. Needs root
//! (fails instead of skipping under CI=true).

mod on_cluster;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::api::Api;
use on_cluster::*;
use purelb_api::crd::BGPConfiguration;
use purelb_api::crd::bgp_node_status::BGPNodeStatus;
use serde_json::{Value, json};
use testbed::cluster::Cluster;
use testbed::cluster::workload::Families;
use testbed::netlab::Frr;

/// The next hops the router should have for a prefix announced by `nodes`.
fn node_ips(c: &Cluster, nodes: &[usize], v6: bool) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .map(|i| {
            if v6 {
                node_v6(c, *i).to_string()
            } else {
                node_v4(c, *i).to_string()
            }
        })
        .collect();
    v.sort();
    v
}

fn wait_next_hops(c: &Cluster, frr: &Frr, prefix: &str, nodes: &[usize]) -> Result<()> {
    let want = node_ips(c, nodes, prefix.contains(':'));
    wait_for(
        TIMEOUT,
        &format!("{prefix} via {want:?} in the router's RIB"),
        || {
            let got = frr.rib_next_hops(prefix)?;
            Ok((got == want).then_some(()))
        },
    )
    .with_context(|| {
        format!(
            "{}\n{}",
            frr.vtysh("show bgp ipv4 unicast").unwrap_or_default(),
            agent_logs_about(c, prefix.split('/').next().unwrap_or(prefix))
        )
    })
}

/// Every session of the router with the nodes Established.
fn wait_sessions(c: &Cluster, frr: &Frr, v6: bool) -> Result<()> {
    for peer in node_ips(c, &(0..c.nodes.len()).collect::<Vec<_>>(), v6) {
        frr.wait_established(&peer, TIMEOUT)?;
    }
    Ok(())
}

fn node_statuses(k: &Kube, c: &Cluster) -> Result<Vec<BGPNodeStatus>> {
    let api: Api<BGPNodeStatus> = Api::all(k.client.clone());
    let mut out = Vec::new();
    for n in &c.nodes {
        if let Some(s) = k.rt.block_on(api.get_opt(&n.name))? {
            out.push(s);
        }
    }
    Ok(out)
}

fn bgp_configs(k: &Kube) -> Api<BGPConfiguration> {
    Api::namespaced(k.client.clone(), INSTALL_NS)
}

/// Watches `node`'s BGPNodeStatus until stopped; whether a condition with
/// `reason` was ever seen.
struct ConditionWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<bool>,
}

impl ConditionWatch {
    fn start(c: &Cluster, node: &str, reason: &'static str) -> ConditionWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let kubeenv = c.control_plane().kubeenv_bin().to_owned();
        let kubeconfig = c.control_plane().kubeconfig_path().to_owned();
        let node = node.to_owned();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let out = std::process::Command::new(&kubeenv)
                    .arg("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args([
                        "get",
                        "bgpns",
                        &node,
                        "-o",
                        "jsonpath={.status.conditions[*].reason}",
                    ])
                    .output();
                if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(reason)) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        ConditionWatch { stop, thread }
    }

    fn finish(self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(false)
    }
}

#[test]
fn remote_service_routes_reach_the_router_and_carry_traffic() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Alone: it stops an agent.
    let (c, k, ns, pools) = alone("bgp")?;
    let n = ns.name.as_str();
    let frr = c.router()?.clone();
    wait_sessions(&c, &frr, false)?;
    let all: Vec<usize> = (0..c.nodes.len()).collect();

    k.create_service(n, "web", &pools.remote, &["IPv4"], json!({}))?;
    let vip = k.wait_ingress(n, "web", 1)?[0];
    wait_holders(&c, vip, &all)?;
    // The pool aggregates to /30: the router learns the /30 from every node.
    let IpAddr::V4(v4) = vip else {
        anyhow::bail!("IPv4 VIP expected, got {vip}");
    };
    let net30 = std::net::Ipv4Addr::from(u32::from(v4) & !3);
    wait_next_hops(&c, &frr, &format!("{net30}/30"), &all)?;

    // Aggregation /32: one host route per VIP, still from every node.
    ns.group(
        &k,
        &pools.remote,
        json!({"remote": {"v4pools": [{"pool": pools.remote_v4_subnet(), "subnet": pools.remote_v4_subnet(), "aggregation": "/32"}]}}),
    )?;
    let host = format!("{vip}/32");
    wait_next_hops(&c, &frr, &host, &all)?;
    wait_next_hops(&c, &frr, &format!("{net30}/30"), &[])?;

    // kubectl get bgpns: every node's neighbours Established, the IPv4 one
    // with the route sent.
    wait_for(TIMEOUT, "BGPNodeStatus of every node Established", || {
        let statuses = node_statuses(&k, &c)?;
        let ok = statuses.len() == c.nodes.len()
            && statuses.iter().all(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.neighbors.as_ref().is_some_and(|neighbours| {
                        !neighbours.is_empty()
                            && neighbours.iter().all(|n| n.state == "Established")
                            && neighbours
                                .iter()
                                .any(|n| !n.address.contains(':') && n.prefixes_sent >= 1)
                    }) && st.healthy == Some(true)
                })
            });
        Ok(ok.then_some(()))
    })?;
    let table = c.kubectl_text(&["get", "bgpns", "-o", "wide"])?;
    for node in &c.nodes {
        ensure!(
            table
                .lines()
                .any(|l| l.starts_with(&node.name) && l.contains("true")),
            "{} not healthy in:\n{table}",
            node.name
        );
    }

    // ETP Local: only nodes with a ready endpoint advertise, and the set follows them.
    let node = |i: usize| c.nodes[i].name.as_str();
    k.set_endpoints(n, "web", &[(node(0), true)])?;
    k.patch_service(
        n,
        "web",
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )?;
    wait_next_hops(&c, &frr, &host, &[0])?;
    k.set_endpoints(n, "web", &[(node(0), true), (node(2), true)])?;
    wait_next_hops(&c, &frr, &host, &[0, 2])?;

    // Traffic from the client, routed by the BGP route, to a backend pod on
    // the only node with an endpoint.
    c.deploy_web_on(
        n,
        "pod",
        1,
        &format!("{{kubernetes.io/hostname: {}}}", node(0)),
    )?;
    let pod_ip = c.lb_service(&service(
        n,
        "pod",
        "pod",
        &pools.remote,
        Families::Ipv4,
        "Local",
    ))?[0];
    wait_next_hops(&c, &frr, &format!("{pod_ip}/32"), &[0])?;
    let pod = answer_from(&c, Some(c.host("client")?), pod_ip)?;
    ensure!(pods_of(&c, n, "pod")?.contains(&pod), "{pod} answered");

    // Back to Cluster; a gracefully stopped agent takes only its own next hop away.
    k.patch_service(
        n,
        "web",
        json!({"spec": {"externalTrafficPolicy": "Cluster"}}),
    )?;
    wait_next_hops(&c, &frr, &host, &all)?;
    let shutdown = ConditionWatch::start(&c, node(1), "AgentShutdown");
    let agent = agent_pod_on(&c, node(1))?;
    c.kubectl(&["-n", INSTALL_NS, "delete", "pod", &agent, "--wait=false"])?;
    let without_1: Vec<usize> = all.iter().copied().filter(|i| *i != 1).collect();
    let gone = wait_next_hops(&c, &frr, &host, &without_1);
    let said_shutdown = shutdown.finish();
    gone?;
    ensure!(
        said_shutdown,
        "{}'s BGPNodeStatus never said AgentShutdown",
        node(1)
    );
    // The DaemonSet's replacement brings the next hop back.
    wait_agents_rolled_out(&c)?;
    wait_next_hops(&c, &frr, &host, &all)?;

    // Deleting the Service withdraws the route everywhere.
    k.delete_service(n, "web")?;
    wait_next_hops(&c, &frr, &host, &[])?;
    let bgp_config: Value =
        serde_json::to_value(k.rt.block_on(bgp_configs(&k).get("default"))?.status)?;
    ensure!(
        bgp_config["conditions"][0]["status"] == "True",
        "BGPConfiguration status: {bgp_config}"
    );
    Ok(())
}

/// The Ready condition of the BGPConfiguration `name`, once `accept` takes it.
fn wait_ready(
    k: &Kube,
    name: &str,
    what: &str,
    accept: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    wait_for(TIMEOUT, what, || {
        let s = k.rt.block_on(bgp_configs(k).get(name))?.status;
        Ok(s.and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready" && accept(c)))
    })
}

/// A bad BGPConfiguration (a community out of range) is refused with Ready=False and a message
/// naming the field; the sessions of the last good one stay up.
#[test]
fn a_bad_bgp_configuration_keeps_the_last_good_one() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Alone: it changes the cluster's BGPConfiguration.
    let c = cluster_mut();
    wait_agents_steady(&c)?;
    let k = Kube::new(&c)?;
    let frr = c.router()?.clone();
    wait_sessions(&c, &frr, false)?;
    // A field of its own added to the lab's configuration, by a manager of its own.
    let bad = json!({
        "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"policyDefinitions": [{"name": "p", "statements": [{"name": "s",
            "conditions": {}, "actions": {"routeAction": "accept",
            "community": {"type": "add", "communities": ["65000:99999"]}}}]}]},
    });
    k.apply::<BGPConfiguration>("bgp-e2e-bad", &bad)?;
    let result = (|| -> Result<()> {
        let status = wait_ready(&k, "default", "Ready=False on the BGPConfiguration", |c| {
            c.status == "False"
        })?;
        ensure!(status.reason == "ConfigurationInvalid", "{status:?}");
        ensure!(status.message.contains("65000:99999"), "{status:?}");
        k.wait_event(INSTALL_NS, "default", "ConfigurationInvalid", "65000:99999")
            .context("Warning event on the BGPConfiguration")?;
        // A second, newer BGPConfiguration is refused with a condition naming the one in effect.
        let second = json!({
            "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
            "metadata": {"name": "second"},
            "spec": {"global": {"asn": 64999},
                     "neighbors": [{"config": {"neighborAddress": "172.30.250.99", "peerAsn": 64998}}]},
        });
        k.apply::<BGPConfiguration>("bgp-e2e", &second)?;
        let superseded = wait_ready(
            &k,
            "second",
            "Ready=False/Superseded on the second BGPConfiguration",
            |c| c.reason == "Superseded",
        )?;
        ensure!(
            superseded
                .message
                .contains(&format!("{INSTALL_NS}/default")),
            "{superseded:?}"
        );
        std::thread::sleep(Duration::from_secs(3));
        for peer in node_ips(&c, &(0..c.nodes.len()).collect::<Vec<_>>(), false) {
            ensure!(
                frr.bgp_state(&peer)?.as_deref() == Some("Established"),
                "{peer}'s session went down"
            );
        }
        Ok(())
    })();
    // The lab's configuration as it was: the bad field's manager gives it up.
    k.apply::<BGPConfiguration>(
        "bgp-e2e-bad",
        &json!({"apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
                "metadata": {"name": "default"}}),
    )?;
    let _ = c.kubectl(&[
        "-n",
        INSTALL_NS,
        "delete",
        "bgpconfiguration",
        "second",
        "--ignore-not-found",
    ]);
    result?;
    wait_ready(&k, "default", "Ready=True again", |c| c.status == "True")?;
    Ok(())
}

/// An IPv6 Service over IPv6 sessions: the router learns the pool's /64 (aggregation
/// `default`) from every node with their IPv6 next hops, then a /128 once aggregation is /128.
#[test]
fn ipv6_service_routes_over_ipv6_sessions() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (c, k, ns, pools) = together("bgp6")?;
    let n = ns.name.as_str();
    let frr = c.router()?.clone();
    wait_sessions(&c, &frr, true)?;
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    k.create_service(n, "web6", &pools.remote, &["IPv6"], json!({}))?;
    let vip = k.wait_ingress(n, "web6", 1)?[0];
    wait_holders(&c, vip, &all)?;
    wait_next_hops(&c, &frr, &pools.remote_v6_subnet(), &all)?;
    ns.group(
        &k,
        &pools.remote,
        json!({"remote": {
            "v4pools": [{"pool": pools.remote_v4_subnet(), "subnet": pools.remote_v4_subnet(), "aggregation": "/30"}],
            "v6pools": [{"pool": pools.remote_v6_pool(), "subnet": pools.remote_v6_subnet(), "aggregation": "/128"}],
        }}),
    )?;
    wait_next_hops(&c, &frr, &format!("{vip}/128"), &all)?;
    k.delete_service(n, "web6")?;
    wait_next_hops(&c, &frr, &format!("{vip}/128"), &[])?;
    Ok(())
}
