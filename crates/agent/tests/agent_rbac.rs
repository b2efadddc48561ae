//! The node agent under its own ServiceAccount: the deploy RBAC is applied
//! to this binary's control plane with server-side apply, exactly as deploy/README.md says
//! (`deploy`, then `deploy/defaults`), and one real `lbnodeagent` runs in a node namespace
//! with a kubeconfig holding a token of `purelb-system/lbnodeagent` (TokenRequest) and
//! nothing else. It then does all of its work with that token: its election Lease, a remote
//! VIP on `kube-lb0` advertised to FRR over a TCP-MD5 session whose password comes from a
//! Secret, a local VIP with the announcing annotation and the `externalTrafficPolicy`
//! rewrite, Events, BGPNodeStatus and the BGPConfiguration's status; at a graceful stop it
//! deletes its Lease and writes `AgentShutdown`. Its log must hold no refusal.
//!
//! The allocator runs in-process with admin credentials (the allocator's own RBAC is run
//! under its token in crates/allocator/tests/deploy_rbac.rs).
//!
//! Everything lands in `purelb-system` of this binary's own control plane, so this file
//! holds one test (and a lock, should another be added). Needs root; fails instead of
//! skipping under CI=true.

mod on_cluster;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use on_cluster::{DUMMY, addresses, annotation, ingress, require_root, tail, wait_for};
use purelb_api::crd::BGPConfiguration;
use purelb_api::crd::bgp_node_status::BGPNodeStatus;
use serde_json::{Value, json};
use testbed::controlplane::{self, ControlPlane};
use testbed::netlab::{Frr, Lab, LinkSpec, Proc};

const NS: &str = "purelb-system";
const SA: &str = "lbnodeagent";
const NODE: &str = "agent-rbac-n1";
const ROUTER_V4: &str = "198.51.100.1";
const NODE_V4: &str = "198.51.100.2";
const LAN: &str = "/28";
const ROUTER_AS: u32 = 65001;
const NODE_AS: u32 = 65000;
const SECRET: &str = "agent-rbac-bgp-auth";
const PASSWORD: &str = "rbac-Md5-s3cret";
const REMOTE_GROUP: &str = "agent-rbac-remote";
const LOCAL_GROUP: &str = "agent-rbac-local";
const FIELD_MANAGER: &str = "agent-rbac-test";
const TIMEOUT: Duration = Duration::from_secs(30);
/// A short lease, so that a renewal shows within seconds (renewed every 2 s).
const LEASE_DURATION: &str = "4s";

/// Everything here shares `purelb-system`: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `kubectl apply --server-side -k deploy`, the CRDs Established, then
/// `kubectl apply --server-side -k deploy/defaults`; kubectl's reports.
fn install(cp: &ControlPlane) -> Result<String> {
    let apply = |dir: &str| -> Result<String> {
        let path = deploy_dir().join(dir);
        let out = cp.kubectl(&[
            "apply".as_ref(),
            "--server-side".as_ref(),
            "-k".as_ref(),
            path.as_os_str(),
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut report = apply(".")?;
    let crds = deploy_dir().join("crds");
    cp.kubectl(&[
        "wait".as_ref(),
        "--for=condition=Established".as_ref(),
        "--timeout=60s".as_ref(),
        "-f".as_ref(),
        crds.as_os_str(),
    ])?;
    report.push_str(&apply("defaults")?);
    Ok(report)
}

/// A kubeconfig for a process in a node namespace: the admin one `kubeconfig_for` writes
/// (server at the management link's host address, `tls-server-name: localhost`, the CA),
/// with its user replaced by a fresh token of `purelb-system/lbnodeagent`.
fn service_account_kubeconfig(cp: &ControlPlane, host: IpAddr) -> Result<PathBuf> {
    let out = cp.kubectl(&["create", "token", SA, "-n", NS, "--duration=1h"])?;
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    ensure!(!token.is_empty(), "empty token");
    let admin = std::fs::read_to_string(cp.kubeconfig_for(host))?;
    let mut kubeconfig: Value = serde_json::from_str(&admin).context("kubeconfig is JSON")?;
    kubeconfig["users"] = json!([{"name": SA, "user": {"token": token}}]);
    kubeconfig["contexts"][0]["context"]["user"] = json!(SA);
    let path = cp.dir().join(format!("kubeconfig-sa-{SA}-{host}"));
    std::fs::write(&path, kubeconfig.to_string())?;
    Ok(path)
}

/// The user a kubeconfig authenticates as (SelfSubjectReview).
async fn whoami(path: &Path) -> Result<String> {
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &KubeConfigOptions::default())
            .await?;
    let client = Client::try_from(config)?;
    let review: SelfSubjectReview = serde_json::from_value(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )?;
    let me = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &review)
        .await?;
    me.status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .context("SelfSubjectReview without a user")
}

async fn apply<K>(api: &Api<K>, name: &str, body: Value) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}

/// The FRR router: eBGP with the node, which must sign every segment with `PASSWORD`.
fn router(lab: &Lab, ns: &testbed::netlab::Ns) -> Result<Frr> {
    let conf = format!(
        "frr defaults traditional\n\
         router bgp {ROUTER_AS}\n\
         \x20bgp router-id {ROUTER_V4}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20neighbor {NODE_V4} remote-as {NODE_AS}\n\
         \x20neighbor {NODE_V4} password {PASSWORD}\n\
         \x20neighbor {NODE_V4} timers connect 1\n\
         \x20neighbor {NODE_V4} advertisement-interval 0\n\
         \x20address-family ipv4 unicast\n\
         \x20 neighbor {NODE_V4} activate\n\
         \x20exit-address-family\n"
    );
    lab.frr(ns, &conf)
}

/// Events on `name` in `namespace`, as (reason, message).
async fn events(client: &Client, namespace: &str, name: &str) -> Result<Vec<(String, String)>> {
    let list = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

/// Whether a log mentions a refusal: "forbidden" in any case, or a 403 standing alone (not
/// part of a longer number, a timestamp's fraction or a duration).
fn refusals(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            if line.to_ascii_lowercase().contains("forbidden")
                || line.to_ascii_lowercase().contains("unauthorized")
            {
                return true;
            }
            line.match_indices("403").any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = line[i + 3..].chars().next();
                !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                    && !after.is_some_and(|c| c.is_ascii_digit())
            })
        })
        .collect()
}

fn ensure_running(agent: &Proc) -> Result<()> {
    if !agent.is_running() {
        bail!("the agent exited:\n{}", tail(&agent.log(), 40));
    }
    Ok(())
}

#[test]
fn the_agent_does_all_its_work_under_its_service_account() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let cp = controlplane::shared();

    // The install, as a user would apply it. The agent's RBAC is part of it.
    let report = install(cp)?;
    for object in [
        "serviceaccount/lbnodeagent",
        "clusterrole.rbac.authorization.k8s.io/purelb:lbnodeagent",
        "clusterrolebinding.rbac.authorization.k8s.io/purelb:lbnodeagent",
        "role.rbac.authorization.k8s.io/purelb:lbnodeagent",
        "rolebinding.rbac.authorization.k8s.io/purelb:lbnodeagent",
        "lbnodeagent.purelb.io/default",
    ] {
        ensure!(
            report
                .lines()
                .any(|l| l == format!("{object} serverside-applied")),
            "{object} not applied:\n{report}"
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let admin = rt.block_on(cp.client())?;
    let tenant = rt.block_on(cp.test_namespace("agent-rbac"))?;

    // The objects the agent reads, all in the install namespace but the Node.
    rt.block_on(async {
        apply(
            &Api::<Secret>::namespaced(admin.clone(), NS),
            SECRET,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
                   "stringData": {"password": PASSWORD}}),
        )
        .await?;
        let groups = Api::<purelb_api::crd::ServiceGroup>::namespaced(admin.clone(), NS);
        apply(
            &groups,
            REMOTE_GROUP,
            json!({
                "apiVersion": "purelb.io/v2", "kind": "ServiceGroup",
                "metadata": {"name": REMOTE_GROUP},
                "spec": {"remote": {"v4pools": [{"subnet": "203.0.113.0/28",
                    "pool": "203.0.113.4-203.0.113.7", "aggregation": "/32"}]}},
            }),
        )
        .await?;
        apply(
            &groups,
            LOCAL_GROUP,
            json!({
                "apiVersion": "purelb.io/v2", "kind": "ServiceGroup",
                "metadata": {"name": LOCAL_GROUP},
                "spec": {"local": {"v4pools": [{"subnet": format!("198.51.100.0{LAN}"),
                    "pool": "198.51.100.8-198.51.100.9", "aggregation": "default"}]}},
            }),
        )
        .await?;
        apply(
            &Api::<BGPConfiguration>::namespaced(admin.clone(), NS),
            "default",
            json!({
                "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
                "metadata": {"name": "default"},
                "spec": {
                    "global": {"asn": NODE_AS, "routerID": ""},
                    "netlinkImport": {"enabled": true, "interfaceList": [DUMMY]},
                    "neighbors": [{
                        "config": {"neighborAddress": ROUTER_V4, "peerAsn": ROUTER_AS,
                                   "authPasswordSecretRef": {"name": SECRET, "key": "password"}},
                        "afiSafis": [{"family": "ipv4-unicast", "enabled": true}],
                        "timers": {"config": {"connectRetry": 1}},
                    }],
                },
            }),
        )
        .await?;
        let nodes = Api::<Node>::all(admin.clone());
        apply(
            &nodes,
            NODE,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}),
        )
        .await?;
        let status = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": NODE_V4},
            {"type": "Hostname", "address": NODE},
        ]}});
        nodes
            .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        anyhow::Ok(())
    })?;
    let _allocator = InProcessAllocator::start(NS)?;

    // The network: the node behind the router (its default gateway), kube-lb0, and a
    // management link to the apiserver.
    let lab = Lab::new()?;
    let rtr = lab.router("rtr")?;
    let node = lab.node("n1")?;
    let link = lab.link(
        &rtr,
        &node,
        LinkSpec::new().v4(&format!("{ROUTER_V4}{LAN}"), &format!("{NODE_V4}{LAN}")),
    )?;
    node.add_route("default", ROUTER_V4)?;
    lab.add_fake_dummy(&node, DUMMY)?;
    let mgmt = lab.management_link(&node)?;
    let frr = router(&lab, &rtr)?;

    // The agent's only credential: the ServiceAccount's token.
    let kubeconfig = service_account_kubeconfig(cp, IpAddr::V4(mgmt.host_addr()))?;
    let user = rt.block_on(whoami(&kubeconfig))?;
    ensure!(user == format!("system:serviceaccount:{NS}:{SA}"), "{user}");
    let kubeconfig_text = std::fs::read_to_string(&kubeconfig)?;
    ensure!(
        !kubeconfig_text.contains("client-certificate")
            && !kubeconfig_text.contains("client-key")
            && !kubeconfig_text.contains("\"admin\""),
        "the agent's kubeconfig must carry the token only"
    );

    let uid = format!("{NODE}-uid-1");
    let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
    let agent = node.spawn_env(
        "agent",
        &[
            env!("CARGO_BIN_EXE_lbnodeagent"),
            "--namespace",
            NS,
            "--node-name",
            NODE,
            "--kubeconfig",
            &kubeconfig_arg,
            "--pod-uid",
            &uid,
            "--lease-duration",
            LEASE_DURATION,
        ],
        &[
            ("PURELB_LOG_LEVEL", "debug"),
            ("RUST_BACKTRACE", "1"),
            // Nothing but the flag may point it at credentials.
            ("KUBECONFIG", "/nonexistent"),
        ],
    )?;
    let with_log = |e: anyhow::Error| e.context(format!("agent log:\n{}", tail(&agent.log(), 40)));

    // Its election Lease: created with its instance, then renewed.
    let leases = Api::<Lease>::namespaced(admin.clone(), NS);
    let lease_name = purelb_api::lease::lease_name(NODE);
    let first_renewal = wait_for(TIMEOUT, "the agent's Lease", || {
        ensure_running(&agent)?;
        let Some(lease) = rt.block_on(leases.get_opt(&lease_name))? else {
            return Ok(None);
        };
        let instance = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(purelb_api::lease::INSTANCE_ANNOTATION).cloned());
        ensure!(instance.as_deref() == Some(uid.as_str()), "{lease:?}");
        Ok(lease.spec.and_then(|s| s.renew_time))
    })
    .map_err(with_log)?;
    wait_for(TIMEOUT, "a renewal of the agent's Lease", || {
        ensure_running(&agent)?;
        let lease = rt.block_on(leases.get(&lease_name))?;
        Ok((lease.spec.and_then(|s| s.renew_time) != Some(first_renewal.clone())).then_some(()))
    })
    .map_err(with_log)?;

    // A remote Service: its address on kube-lb0 and, over the MD5 session, in FRR.
    let services = Api::<Service>::namespaced(admin.clone(), tenant.name());
    let service = |name: &str, group: &str, etp: &str| -> Result<Service> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"purelb.io/service-group": group}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                     "ports": [{"name": "tcp-80", "protocol": "TCP", "port": 80}],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "allocateLoadBalancerNodePorts": false},
        }))?)
    };
    rt.block_on(services.create(
        &PostParams::default(),
        &service("remote", REMOTE_GROUP, "Cluster")?,
    ))?;
    let vip = wait_for(TIMEOUT, "the remote Service's address", || {
        Ok(ingress(&rt.block_on(services.get("remote"))?)
            .first()
            .copied())
    })?;
    wait_for(TIMEOUT, &format!("{vip}/32 on {DUMMY}"), || {
        ensure_running(&agent)?;
        Ok(addresses(&node)?
            .iter()
            .any(|a| a.ip == vip && a.ifname == DUMMY && a.prefix_len == 32)
            .then_some(()))
    })
    .map_err(with_log)?;
    frr.wait_established(NODE_V4, TIMEOUT).map_err(with_log)?;
    let paths = frr
        .wait_route(&format!("{vip}/32"), TIMEOUT)
        .map_err(with_log)?;
    ensure!(
        paths.to_string().contains(NODE_V4),
        "{vip}/32 not via {NODE_V4}: {paths}"
    );
    // The session is signed: FRR's socket for this neighbour carries the key, and the
    // kernel drops every unsigned or wrongly signed segment, so Established proves the
    // agent read the password from the Secret.
    let neighbor = frr.vtysh_json(&format!("show bgp neighbors {NODE_V4} json"))?;
    ensure!(neighbor[NODE_V4]["bgpState"] == "Established", "{neighbor}");
    let out = rtr.exec(&["ss", "-tniH", "state", "established"])?;
    ensure!(
        out.contains("md5"),
        "no TCP-MD5 on the router's BGP socket:\n{out}"
    );

    // A local Service with ETP Local: the agent claims the announcing annotation and
    // rewrites the policy (Service patch), and records Events.
    rt.block_on(services.create(
        &PostParams::default(),
        &service("local", LOCAL_GROUP, "Local")?,
    ))?;
    let local = wait_for(TIMEOUT, "the local Service announced and rewritten", || {
        ensure_running(&agent)?;
        let svc = rt.block_on(services.get("local"))?;
        let etp = svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.clone());
        let announcing = annotation(&svc, "purelb.io/announcing-IPv4");
        Ok((etp.as_deref() == Some("Cluster")
            && announcing
                .as_deref()
                .is_some_and(|a| a.starts_with(&format!("{NODE},"))))
        .then_some(svc))
    })
    .map_err(with_log)?;
    let local_vip = ingress(&local)[0];
    ensure!(
        addresses(&node)?
            .iter()
            .any(|a| a.ip == local_vip && a.ifname == link.b_if()),
        "{local_vip} not on {}",
        link.b_if()
    );
    for (service_name, reason) in [
        ("remote", "AnnouncingNonLocal"),
        ("local", "AnnouncingLocal"),
        ("local", "LocalOverride"),
    ] {
        wait_for(
            TIMEOUT,
            &format!("Event {reason} on {service_name}"),
            || {
                Ok(rt
                    .block_on(events(&admin, tenant.name(), service_name))?
                    .iter()
                    .any(|(r, m)| r == reason && (reason == "LocalOverride" || m.contains(NODE)))
                    .then_some(()))
            },
        )
        .map_err(with_log)?;
    }
    wait_for(
        TIMEOUT,
        "Event RouterIDResolved on the BGPConfiguration",
        || {
            Ok(rt
                .block_on(events(&admin, NS, "default"))?
                .iter()
                .any(|(r, m)| r == "RouterIDResolved" && m.contains(NODE_V4))
                .then_some(()))
        },
    )
    .map_err(with_log)?;

    // BGPNodeStatus, owned by the Node, Established with the route sent.
    let statuses = Api::<BGPNodeStatus>::all(admin.clone());
    wait_for(TIMEOUT, "BGPNodeStatus Established", || {
        ensure_running(&agent)?;
        let Some(s) = rt.block_on(statuses.get_opt(NODE))? else {
            return Ok(None);
        };
        let owned = s
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Node" && o.name == NODE);
        let st = s.status.unwrap_or_default();
        let up =
            st.neighbors.iter().flatten().any(|n| {
                n.address == ROUTER_V4 && n.state == "Established" && n.prefixes_sent >= 1
            });
        Ok((owned && up && st.healthy == Some(true)).then_some(()))
    })
    .map_err(with_log)?;

    // The BGPConfiguration's status: Ready=True, one neighbour, Established.
    let configs = Api::<BGPConfiguration>::namespaced(admin.clone(), NS);
    wait_for(TIMEOUT, "BGPConfiguration Ready=True", || {
        let status = serde_json::to_value(rt.block_on(configs.get("default"))?.status)?;
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(
            (ready && status["establishedNeighbors"] == 1 && status["neighborCount"] == 1)
                .then_some(()),
        )
    })
    .map_err(with_log)?;

    let log = agent.log();
    let refused = refusals(&log);
    ensure!(
        refused.is_empty(),
        "the agent was refused something:\n{}",
        refused.join("\n")
    );

    // Graceful stop: Lease deleted, AgentShutdown written, route withdrawn.
    agent.stop()?;
    let exit = agent.exit_status().context("the agent still runs")?;
    ensure!(
        exit.success(),
        "the agent exited with {exit}:\n{}",
        tail(&agent.log(), 40)
    );
    ensure!(
        rt.block_on(leases.get_opt(&lease_name))?.is_none(),
        "the Lease survived the agent:\n{}",
        tail(&agent.log(), 40)
    );
    let status = rt.block_on(statuses.get(NODE))?.status.unwrap_or_default();
    ensure!(
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.reason == "AgentShutdown"),
        "no AgentShutdown in {status:?}"
    );
    wait_for(TIMEOUT, &format!("{vip}/32 withdrawn from FRR"), || {
        Ok(frr.bgp_route(&format!("{vip}/32"))?.is_none().then_some(()))
    })?;
    let log = agent.log();
    let refused = refusals(&log);
    ensure!(
        refused.is_empty(),
        "the agent was refused something while stopping:\n{}",
        refused.join("\n")
    );
    ensure!(log.contains("lease deleted"), "{}", tail(&log, 40));
    eprintln!("agent_rbac: {:?}", started.elapsed());
    Ok(())
}

#[test]
fn refusals_are_found_and_numbers_are_not() {
    let log = "{\"timestamp\":\"2026-01-01T00:00:00.403000Z\",\"pid\":14035}\n\
               {\"message\":\"watch failed\",\"error\":\"ApiError: secrets is forbidden: User cannot list: Forbidden (ErrorResponse { code: 403 })\"}\n\
               {\"status\":403}\n\
               {\"elapsed\":\"0.403s\",\"rv\":\"40312\"}\n";
    let found = refusals(log);
    assert_eq!(found.len(), 2, "{found:?}");
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
