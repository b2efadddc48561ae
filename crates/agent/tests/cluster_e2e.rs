//! PureLB as its users run it: the allocator Deployment and the lbnodeagent
//! DaemonSet, from the images `make images` builds, installed with the
//! project's own manifests on a real cluster (four kubelets with containerd
//! and kube-proxy, an FRR router, a client; `testbed/topology/purelb.clab.yml`),
//! and traffic to LoadBalancer addresses reaching backend pods through
//! kube-proxy.
//!
//! One cluster serves every test of this binary; each test has its own
//! namespace and Services. Needs root (and fails under `CI=true` without it).

mod on_cluster;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use on_cluster::*;
use testbed::cluster::Cluster;
use testbed::cluster::workload::{Families, Prober};

#[test]
fn the_install_runs_as_pods_on_ready_nodes() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = cluster();
    let nodes = c.kubectl_text(&["get", "nodes", "-o", "wide"])?;
    for n in &c.nodes {
        assert!(nodes.contains(&n.name), "{nodes}");
    }
    wait_agents_rolled_out(&c)?;
    wait_allocators_available(&c)?;
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
    // `kubectl get bgpns` shows every node's speaker with its sessions up.
    wait_for(TIMEOUT, "a healthy BGPNodeStatus per node", || {
        let table = c.kubectl_text(&["get", "bgpns", "-A"])?;
        let healthy = c
            .nodes
            .iter()
            .filter(|n| {
                table.lines().any(|l| {
                    l.split_whitespace().nth(1) == Some(n.name.as_str()) && l.contains("true")
                })
            })
            .count();
        Ok((healthy == c.nodes.len()).then_some(()))
    })?;
    Ok(())
}

#[test]
fn the_agent_runs_as_nobody_with_exactly_three_capabilities_and_the_allocator_with_none()
-> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = cluster();
    let node = c.nodes[0].name.clone();
    let agent = container_process_status(&c, &node, "/usr/local/bin/lbnodeagent", None)?;
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
        container_process_status(&c, allocator_node.trim(), "/usr/local/bin/allocator", None)?;
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
    if !require_root() {
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
fn with_etp_local_only_nodes_with_a_ready_endpoint_announce_remote_addresses() -> Result<()> {
    if !require_root() {
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

    // A local address with ETP Local: PureLB overrides the policy to Cluster
    // (a local address lives on one node, which may have no endpoint), says so
    // in an Event, and the elected node announces it.
    let local = c.lb_service(&service(
        n,
        "local",
        "one",
        "default",
        Families::Ipv4,
        "Local",
    ))?[0];
    wait_for(
        TIMEOUT,
        "externalTrafficPolicy overridden to Cluster",
        || {
            let etp = c.kubectl_text(&[
                "-n",
                n,
                "get",
                "service",
                "local",
                "-o",
                "jsonpath={.spec.externalTrafficPolicy}",
            ])?;
            Ok((etp == "Cluster").then_some(()))
        },
    )?;
    let events = c.kubectl_text(&[
        "-n",
        n,
        "get",
        "events",
        "--field-selector",
        "reason=LocalOverride",
    ])?;
    assert!(events.contains("service/local"), "{events}");
    let pod = answer_from(&c, Some(c.host("client")?), local)
        .with_context(|| agent_logs_about(&c, &local.to_string()))?;
    assert!(pod.starts_with("one-"), "{pod}");
    Ok(())
}

/// A Deployment and a local IPv4 Service for a failover test; returns the
/// address once it answers and the node holding it.
fn failover_service(c: &Cluster, ns: &str, group: &str) -> Result<(IpAddr, String)> {
    c.deploy_web(ns, "web", 3)?;
    let ip = c.lb_service(&service(ns, "svc", "web", group, Families::Ipv4, "Cluster"))?[0];
    answer_from(c, Some(c.host("client")?), ip)?;
    let node = wait_for(TIMEOUT, &format!("a node holding {ip}"), || holder(c, ip))?;
    Ok((ip, node))
}

#[test]
fn graceful_agent_stops_hand_over_at_once_every_time() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Alone: the other tests expect every agent to be running.
    let c = cluster_mut();
    let ns = TestNs::new(&c, "graceful")?;
    let (ip, mut node) = failover_service(&c, &ns.name, "default")?;
    let client = c.host("client")?.netns().to_owned();
    for round in 1..=4 {
        let prober = Prober::start(Some(client.clone()), ip, Duration::from_millis(20));
        let agent = agent_pod_on(&c, &node)?;
        let instance = pod_uid(&c, &agent)?;
        assert_eq!(
            lease_instance(&c, &node)?,
            instance,
            "round {round}: the agent's Lease"
        );
        let deleted = Instant::now();
        c.kubectl(&["-n", INSTALL_NS, "delete", "pod", &agent, "--wait=false"])?;
        let next = wait_for(
            TIMEOUT,
            &format!("{ip} on a node other than {node}"),
            || Ok(holder(&c, ip)?.filter(|n| n != &node)),
        )?;
        let moved = deleted.elapsed();
        answer_from(&c, Some(c.host("client")?), ip)?;
        let seen = prober.finish();
        eprintln!(
            "graceful stop {round}: {ip} from {node} to {next} in {moved:?}; the client's longest gap {:?} ({} answered, {} failed)",
            seen.longest_gap, seen.answered, seen.failed
        );
        // The stopped agent's Lease does not stay behind for the other nodes
        // to wait out: it is deleted (or already renewed by the replacement,
        // which the DaemonSet starts at once) well before it could expire.
        wait_for(
            LEASE_DURATION / 2,
            &format!("round {round}: {node}'s Lease no longer the stopped agent's"),
            || Ok((lease_instance(&c, &node)? != instance).then_some(())),
        )?;
        wait_agents_rolled_out(&c)?;
        assert!(
            seen.longest_gap < LEASE_DURATION,
            "round {round}: the client waited {:?}, as for an expired lease",
            seen.longest_gap
        );
        node = next;
    }
    Ok(())
}

#[test]
fn a_noexecute_taint_moves_the_local_address() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = cluster_mut();
    let ns = TestNs::new(&c, "taint")?;
    let (ip, node) = failover_service(&c, &ns.name, "default")?;
    let prober = Prober::start(
        Some(c.host("client")?.netns().to_owned()),
        ip,
        Duration::from_millis(20),
    );
    let tainted = Instant::now();
    c.kubectl(&["taint", "node", &node, "purelb-test/drain=now:NoExecute"])?;
    let untaint = || c.kubectl(&["taint", "node", &node, "purelb-test/drain-"]);
    let next = wait_for(TIMEOUT, &format!("{ip} off tainted {node}"), || {
        Ok(holder(&c, ip)?.filter(|n| n != &node))
    });
    let moved = tainted.elapsed();
    let seen = prober.finish();
    untaint()?;
    let next = next?;
    eprintln!(
        "NoExecute taint: {ip} from {node} to {next} in {moved:?}; the client's longest gap {:?}",
        seen.longest_gap
    );
    assert!(seen.longest_gap < LEASE_DURATION, "{seen:?}");
    wait_agents_rolled_out(&c)?;
    Ok(())
}

#[test]
fn node_death_moves_local_and_remote_addresses() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut c = cluster_mut();
    let ns = TestNs::new(&c, "death")?;
    let (local, node) = failover_service(&c, &ns.name, "default")?;
    let remote = c.lb_service(&service(
        &ns.name,
        "remote",
        "web",
        "remote",
        Families::Ipv4,
        "Cluster",
    ))?[0];
    let dead_v4 = c
        .node(&node)?
        .node_ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .context("node IPv4")?
        .to_string();
    let prefix = format!("{remote}/32");
    let router = c.router()?.clone();
    wait_for(TIMEOUT, &format!("{prefix} via {dead_v4}"), || {
        Ok(router
            .rib_next_hops(&prefix)?
            .contains(&dead_v4)
            .then_some(()))
    })?;
    let client = c.host("client")?.netns().to_owned();
    let local_probe = Prober::start(Some(client.clone()), local, Duration::from_millis(50));
    let killed = Instant::now();
    c.node_mut(&node)?.kill()?;
    let result = (|| -> Result<()> {
        let next = wait_for(
            Duration::from_secs(90),
            &format!("{local} off dead {node}"),
            || holder_other_than(&c, local, &node),
        )?;
        eprintln!(
            "node death: {local} from {node} to {next} in {:?}",
            killed.elapsed()
        );
        answer_from(&c, Some(c.host("client")?), local)?;
        wait_for(
            Duration::from_secs(90),
            &format!("{prefix} no longer via {dead_v4}"),
            || {
                let hops = router.rib_next_hops(&prefix)?;
                Ok((!hops.is_empty() && !hops.contains(&dead_v4)).then_some(()))
            },
        )?;
        eprintln!(
            "node death: the router dropped {dead_v4} for {prefix} after {:?}",
            killed.elapsed()
        );
        answer_from(&c, Some(c.host("client")?), remote)?;
        Ok(())
    })();
    let seen = local_probe.finish();
    eprintln!(
        "node death: the client's longest gap on {local}: {:?}",
        seen.longest_gap
    );
    c.restart_node(&node)?;
    c.wait_nodes_ready(Duration::from_secs(120))?;
    wait_agents_rolled_out(&c)?;
    result
}

#[test]
fn a_daemonset_rolling_update_keeps_every_address_reachable() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = cluster_mut();
    let ns = TestNs::new(&c, "rolling")?;
    let (local, _) = failover_service(&c, &ns.name, "default")?;
    let remote = c.lb_service(&service(
        &ns.name,
        "remote",
        "web",
        "remote",
        Families::Dual,
        "Cluster",
    ))?;
    let client = c.host("client")?.netns().to_owned();
    for ip in &remote {
        answer_from(&c, Some(c.host("client")?), *ip)?;
    }
    let probers: Vec<(IpAddr, Prober)> = std::iter::once(local)
        .chain(remote)
        .map(|ip| {
            (
                ip,
                Prober::start(Some(client.clone()), ip, Duration::from_millis(50)),
            )
        })
        .collect();
    let started = Instant::now();
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "patch",
        "daemonset",
        "lbnodeagent",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"purelb-test/rolled":"{}"}}}}}}}}}}"#,
            std::process::id()
        ),
    ])?;
    wait_agents_rolled_out(&c)?;
    let rolled = started.elapsed();
    for (ip, prober) in probers {
        let seen = prober.finish();
        eprintln!(
            "DaemonSet rolling update ({rolled:?}): {ip}: longest gap {:?}, {} answered, {} failed",
            seen.longest_gap, seen.answered, seen.failed
        );
        assert!(seen.longest_gap < LEASE_DURATION, "{ip}: {seen:?}");
    }
    Ok(())
}

/// Every address the Services in `ns` hold, by Service.
fn all_addresses(c: &Cluster, ns: &str) -> Result<Vec<(String, String)>> {
    let out = c.kubectl_text(&[
        "-n",
        ns,
        "get",
        "services",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}{" "}{.status.loadBalancer.ingress[*].ip}{"\n"}{end}"#,
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (name, ips) = l.split_once(' ')?;
            Some((name.to_owned(), ips.trim().to_owned()))
        })
        .collect())
}

#[test]
fn allocator_rolling_update_and_leader_kill_lose_and_duplicate_nothing() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let c = cluster_mut();
    let ns = TestNs::new(&c, "alloc")?;
    let create = |from: u32, to: u32| -> Result<()> {
        let mut yaml = String::new();
        for i in from..to {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {ns}, annotations: {{purelb.io/service-group: remote}}}}\n\
                 spec: {{type: LoadBalancer, selector: {{app: none}}, ports: [{{port: 80}}]}}\n",
                ns = ns.name
            ));
        }
        c.apply_yaml(&yaml)
    };
    create(0, 10)?;
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "patch",
        "deployment",
        "allocator",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"purelb-test/rolled":"{}"}}}}}}}}}}"#,
            std::process::id()
        ),
    ])?;
    create(10, 20)?;
    c.kubectl(&[
        "-n",
        INSTALL_NS,
        "rollout",
        "status",
        "deployment/allocator",
        "--timeout=180s",
    ])?;
    // The leader, killed outright: its standby takes over once the Lease lapses.
    // After the roll, once a new replica holds the Lease.
    let leader_pod = wait_for(
        Duration::from_secs(60),
        "a running allocator leading",
        || {
            let leader = c.kubectl_text(&[
                "-n",
                INSTALL_NS,
                "get",
                "lease",
                "purelb-allocator",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])?;
            let pod = c
            .kubectl_text(&[
                "-n",
                INSTALL_NS,
                "get",
                "pod",
                leader.trim(),
                "-o",
                r#"jsonpath={.spec.nodeName}{" "}{.metadata.uid}{" "}{.metadata.deletionTimestamp}"#,
            ])
            .unwrap_or_default();
            // Not one the roll is stopping.
            Ok((pod.split_whitespace().count() == 2).then_some(pod))
        },
    )?;
    let (leader_node, leader_uid) = leader_pod.trim().split_once(' ').context("node and uid")?;
    let status = container_process_status(
        &c,
        leader_node,
        "/usr/local/bin/allocator",
        Some(leader_uid.trim()),
    )?;
    let pid: i32 = status_field(&status, "Pid:").parse()?;
    // SAFETY: plain syscall on the allocator's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    create(20, 30)?;
    let addresses = wait_for(
        Duration::from_secs(120),
        "30 Services with an address",
        || {
            let all = all_addresses(&c, &ns.name)?;
            Ok((all.len() == 30 && all.iter().all(|(_, ips)| !ips.is_empty())).then_some(all))
        },
    )?;
    // The killed replica is back before the next test.
    wait_allocators_available(&c)?;
    let mut seen = BTreeSet::new();
    for (name, ips) in &addresses {
        for ip in ips.split_whitespace() {
            assert!(
                seen.insert(ip.to_owned()),
                "{ip} given twice ({name}): {addresses:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_guard_drops_lab_traffic_towards_interfaces_the_lab_did_not_make() -> Result<()> {
    if !require_root() {
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
