//! The whole path of issue 6: three node namespaces each running `lbnodeagent` (with its
//! embedded speaker), the allocator, one FRR router peered with all three (eBGP, ECMP) and a
//! client namespace behind the router. A remote Service's address goes onto every node's
//! `kube-lb0`, becomes a BGP route with a next hop per node, follows aggregation,
//! `externalTrafficPolicy: Local` and agent restarts, carries TCP from the client to a server in
//! a node, and is withdrawn when the Service goes. Needs root (fails instead of skipping under
//! CI=true).

mod agent_lab;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use agent_lab::*;
use anyhow::{Context, Result, ensure};
use kube::api::{Api, Patch, PatchParams};
use purelb_api::crd::bgp_node_status::BGPNodeStatus;
use serde_json::{Value, json};
use testbed::netlab::{Frr, LinkSpec, Ns, require_root};

const ROUTER_AS: u32 = 65001;
const NODE_AS: u32 = 65000;

/// FRR on the lab's peer namespace, peered with the three nodes over IPv4 (and, with `v6`,
/// over IPv6 for IPv6 unicast), ECMP over them.
fn router_with(c: &Cluster, v6: bool) -> Result<Frr> {
    let neighbor = |n: String| {
        format!(
            " neighbor {n} remote-as {NODE_AS}\n neighbor {n} timers connect 1\n neighbor {n} advertisement-interval 0\n"
        )
    };
    let mut neighbors: String = (0..3).map(|i| neighbor(c.slot.node_v4(i))).collect();
    let mut v6_family = String::new();
    if v6 {
        neighbors.extend((0..3).map(|i| neighbor(c.slot.node_v6(i))));
        v6_family.push_str(" address-family ipv6 unicast\n  maximum-paths 8\n");
        for i in 0..3 {
            v6_family.push_str(&format!("  neighbor {} activate\n", c.slot.node_v6(i)));
        }
        v6_family.push_str(" exit-address-family\n");
    }
    let no_v6_on_v4: String = (0..3)
        .map(|i| format!("  no neighbor {} activate\n", c.slot.node_v6(i)))
        .filter(|_| v6)
        .collect();
    let conf = format!(
        "frr defaults traditional\n\
         router bgp {ROUTER_AS}\n\
         \x20bgp router-id {}\n\
         \x20no bgp ebgp-requires-policy\n\
         {neighbors}\
         \x20address-family ipv4 unicast\n\
         \x20 maximum-paths 8\n\
         {no_v6_on_v4}\
         \x20exit-address-family\n\
         {v6_family}",
        c.slot.peer_v4()
    );
    c.lab.frr(&c.peer, &conf)
}

fn router(c: &Cluster) -> Result<Frr> {
    router_with(c, false)
}

/// The router also answers as the nodes' default gateway, and forwards.
fn make_router_the_gateway(c: &Cluster) -> Result<()> {
    c.peer
        .add_addr(&c.peer_if, &format!("198.51.100.{}/28", c.slot.0 * 16 + 14))?;
    c.peer.sysctl("net.ipv4.ip_forward", "1")?;
    Ok(())
}

/// A client namespace behind the router (100.64.<slot>.0/30, shared address space, only
/// inside this lab).
fn client(c: &Cluster) -> Result<Ns> {
    let ns = c.lab.node("client")?;
    let s = c.slot.0;
    c.lab.link(
        &c.peer,
        &ns,
        LinkSpec::new().v4(&format!("100.64.{s}.1/30"), &format!("100.64.{s}.2/30")),
    )?;
    ns.add_route("default", &format!("100.64.{s}.1"))?;
    Ok(ns)
}

fn apply_bgp_config(c: &Cluster) -> Result<()> {
    apply_bgp_config_with(c, false)
}

/// AS 65000 on every node, importing `kube-lb0`; the router as an IPv4 neighbour for IPv4
/// unicast and, with `v6`, as an IPv6 neighbour for IPv6 unicast.
fn apply_bgp_config_with(c: &Cluster, v6: bool) -> Result<()> {
    let api: Api<purelb_api::crd::BGPConfiguration> = Api::namespaced(c.client.clone(), c.ns());
    let neighbor = |address: String, family: &str| {
        json!({
            "config": {"neighborAddress": address, "peerAsn": ROUTER_AS},
            "afiSafis": [{"family": family, "enabled": true}],
            "timers": {"config": {"connectRetry": 1}},
        })
    };
    let mut neighbors = vec![neighbor(c.slot.peer_v4(), "ipv4-unicast")];
    if v6 {
        neighbors.push(neighbor(c.slot.peer_v6(), "ipv6-unicast"));
    }
    let body = json!({
        "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {
            "global": {"asn": NODE_AS, "routerID": ""},
            "netlinkImport": {"enabled": true, "interfaceList": [DUMMY]},
            "neighbors": neighbors,
        },
    });
    c.rt.block_on(api.patch(
        "default",
        &PatchParams::apply("bgp-e2e").force(),
        &Patch::Apply(&body),
    ))?;
    Ok(())
}

fn node_ips(c: &Cluster, nodes: &[usize], v6: bool) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .map(|i| {
            if v6 {
                c.slot.node_v6(*i)
            } else {
                c.slot.node_v4(*i)
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
            c.ensure_agents_running()?;
            let got = frr.rib_next_hops(prefix)?;
            Ok((got == want).then_some(()))
        },
    )
    .with_context(|| {
        format!(
            "{}\n{}",
            frr.vtysh("show bgp ipv4 unicast").unwrap_or_default(),
            c.logs()
        )
    })
}

fn node_statuses(c: &Cluster) -> Result<Vec<BGPNodeStatus>> {
    let api: Api<BGPNodeStatus> = Api::all(c.client.clone());
    let mut out = Vec::new();
    for n in &c.nodes {
        if let Some(s) = c.rt.block_on(api.get_opt(&n.name))? {
            out.push(s);
        }
    }
    Ok(out)
}

/// A TCP server bound to `vip:port` in `ns` that answers one connection with `reply`.
fn serve_once(
    ns: &Ns,
    vip: IpAddr,
    port: u16,
    reply: &'static str,
) -> Result<std::thread::JoinHandle<()>> {
    let listener = ns.run(|| TcpListener::bind((vip, port)))??;
    Ok(std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply.as_bytes());
        }
    }))
}

#[test]
fn remote_service_routes_reach_the_router_and_carry_traffic() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut c = Cluster::new(Options::default())?;
    make_router_the_gateway(&c)?;
    let frr = router(&c)?;
    let client = client(&c)?;
    apply_bgp_config(&c)?;
    for i in 0..3 {
        frr.wait_established(&c.slot.node_v4(i), TIMEOUT)
            .with_context(|| c.logs())?;
    }

    c.create_service("web", &c.remote_group(), &["IPv4"], json!({}))?;
    let vip = c.wait_ingress("web", 1)?[0];
    c.wait_holders(vip, &[0, 1, 2])?;
    // The pool aggregates to /30: the router learns the /30 from every node.
    let IpAddr::V4(v4) = vip else {
        anyhow::bail!("IPv4 VIP expected, got {vip}");
    };
    let net30 = std::net::Ipv4Addr::from(u32::from(v4) & !3);
    wait_next_hops(&c, &frr, &format!("{net30}/30"), &[0, 1, 2])?;

    // Aggregation /32: one host route per VIP, still from every node.
    let s = c.slot;
    c.apply_group(
        &c.remote_group(),
        json!({"remote": {"v4pools": [{"pool": s.remote_v4_subnet(), "subnet": s.remote_v4_subnet(), "aggregation": "/32"}]}}),
    )?;
    let host = format!("{vip}/32");
    wait_next_hops(&c, &frr, &host, &[0, 1, 2])?;
    wait_next_hops(&c, &frr, &format!("{net30}/30"), &[])?;

    // kubectl get bgpns: every node's neighbour Established with the route sent.
    wait_for(TIMEOUT, "BGPNodeStatus of every node Established", || {
        let all = node_statuses(&c)?;
        let ok = all.len() == 3
            && all.iter().all(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.neighbors.as_ref().is_some_and(|n| {
                        n.len() == 1 && n[0].state == "Established" && n[0].prefixes_sent >= 1
                    }) && st.healthy == Some(true)
                })
            });
        Ok(ok.then_some(()))
    })?;
    let out = testbed::controlplane::shared().kubectl(&["get", "bgpns", "-o", "wide"])?;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for n in &c.nodes {
        ensure!(
            table
                .lines()
                .any(|l| l.starts_with(&n.name) && l.contains("true")),
            "{} not healthy in:\n{table}",
            n.name
        );
    }

    // ETP Local: only nodes with a ready endpoint advertise, and the set follows them.
    c.set_endpoints("web", &[(0, true)])?;
    c.patch_service("web", json!({"spec": {"externalTrafficPolicy": "Local"}}))?;
    wait_next_hops(&c, &frr, &host, &[0])?;

    // TCP from the client, routed by the BGP route, to a server on node 0.
    let server = serve_once(&c.nodes[0].ns, vip, 8080, "n1")?;
    let mut stream = client.connect_tcp(SocketAddr::new(vip, 8080), Duration::from_secs(5))?;
    stream.write_all(b"ping")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    ensure!(reply == "n1", "reply {reply:?}");
    let _ = server.join();

    c.set_endpoints("web", &[(0, true), (2, true)])?;
    wait_next_hops(&c, &frr, &host, &[0, 2])?;

    // Back to Cluster; a gracefully stopped agent takes only its own next hop away.
    c.patch_service("web", json!({"spec": {"externalTrafficPolicy": "Cluster"}}))?;
    wait_next_hops(&c, &frr, &host, &[0, 1, 2])?;
    c.stop_agent(1)?;
    wait_next_hops(&c, &frr, &host, &[0, 2])?;
    let stopped = node_statuses(&c)?
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(c.nodes[1].name.as_str()))
        .and_then(|s| s.status)
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    ensure!(
        stopped.iter().any(|c| c.reason == "AgentShutdown"),
        "{stopped:?}"
    );
    c.start_agent(1)?;
    wait_next_hops(&c, &frr, &host, &[0, 1, 2])?;

    // Deleting the Service withdraws the route everywhere.
    c.delete_service("web")?;
    wait_next_hops(&c, &frr, &host, &[])?;
    let bgp_config: Value = serde_json::to_value(
        c.rt.block_on(
            Api::<purelb_api::crd::BGPConfiguration>::namespaced(c.client.clone(), c.ns())
                .get("default"),
        )?
        .status,
    )?;
    ensure!(
        bgp_config["conditions"][0]["status"] == "True",
        "BGPConfiguration status: {bgp_config}"
    );
    Ok(())
}

/// A bad BGPConfiguration (a community out of range) is refused with Ready=False and a message
/// naming the field; the sessions of the last good one stay up.
#[test]
fn a_bad_bgp_configuration_keeps_the_last_good_one() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    make_router_the_gateway(&c)?;
    let frr = router(&c)?;
    apply_bgp_config(&c)?;
    for i in 0..3 {
        frr.wait_established(&c.slot.node_v4(i), TIMEOUT)
            .with_context(|| c.logs())?;
    }
    let api: Api<purelb_api::crd::BGPConfiguration> = Api::namespaced(c.client.clone(), c.ns());
    let bad = json!({
        "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"policyDefinitions": [{"name": "p", "statements": [{"name": "s",
            "conditions": {}, "actions": {"routeAction": "accept",
            "community": {"type": "add", "communities": ["65000:99999"]}}}]}]},
    });
    c.rt.block_on(api.patch(
        "default",
        &PatchParams::apply("bgp-e2e-bad").force(),
        &Patch::Apply(&bad),
    ))?;
    let status = wait_for(TIMEOUT, "Ready=False on the BGPConfiguration", || {
        let s = c.rt.block_on(api.get("default"))?.status;
        let ready = s
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        Ok(ready.filter(|r| r.status == "False"))
    })?;
    ensure!(status.reason == "ConfigurationInvalid", "{status:?}");
    ensure!(status.message.contains("65000:99999"), "{status:?}");
    c.wait_event("default", "ConfigurationInvalid", "65000:99999")
        .context("Warning event on the BGPConfiguration")?;
    // A second, newer BGPConfiguration is refused with a condition naming the one in effect.
    let second = json!({
        "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "second"},
        "spec": {"global": {"asn": 64999},
                 "neighbors": [{"config": {"neighborAddress": "198.51.100.99", "peerAsn": 64998}}]},
    });
    c.rt.block_on(api.patch(
        "second",
        &PatchParams::apply("bgp-e2e").force(),
        &Patch::Apply(&second),
    ))?;
    let superseded = wait_for(
        TIMEOUT,
        "Ready=False/Superseded on the second BGPConfiguration",
        || {
            let s = c.rt.block_on(api.get("second"))?.status;
            let ready = s
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == "Superseded");
            Ok(ready)
        },
    )?;
    ensure!(
        superseded.message.contains(&format!("{}/default", c.ns())),
        "{superseded:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        ensure!(
            frr.bgp_state(&c.slot.node_v4(i))?.as_deref() == Some("Established"),
            "node {i}'s session went down"
        );
    }
    Ok(())
}

/// An IPv6 Service over IPv6 sessions: the router learns the pool's /64 (aggregation
/// `default`) from every node with their IPv6 next hops, then a /128 once aggregation is /128.
#[test]
fn ipv6_service_routes_over_ipv6_sessions() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = Cluster::new(Options::default())?;
    make_router_the_gateway(&c)?;
    let frr = router_with(&c, true)?;
    apply_bgp_config_with(&c, true)?;
    for i in 0..3 {
        frr.wait_established(&c.slot.node_v6(i), TIMEOUT)
            .with_context(|| c.logs())?;
    }
    c.create_service("web6", &c.remote_group(), &["IPv6"], json!({}))?;
    let vip = c.wait_ingress("web6", 1)?[0];
    c.wait_holders(vip, &[0, 1, 2])?;
    wait_next_hops(&c, &frr, &c.slot.remote_v6_subnet(), &[0, 1, 2])?;
    let s = c.slot;
    c.apply_group(
        &c.remote_group(),
        json!({"remote": {
            "v4pools": [{"pool": s.remote_v4_subnet(), "subnet": s.remote_v4_subnet(), "aggregation": "/30"}],
            "v6pools": [{"pool": s.remote_v6_pool(), "subnet": s.remote_v6_subnet(), "aggregation": "/128"}],
        }}),
    )?;
    wait_next_hops(&c, &frr, &format!("{vip}/128"), &[0, 1, 2])?;
    c.delete_service("web6")?;
    wait_next_hops(&c, &frr, &format!("{vip}/128"), &[])?;
    Ok(())
}
