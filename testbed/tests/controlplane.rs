//! Tests of the shared control plane harness (`testbed::controlplane`).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use testbed::controlplane::{self, process_gone};

#[tokio::test]
async fn starts_and_serves_configmaps() -> anyhow::Result<()> {
    let cp = controlplane::shared();
    let v = cp.versions();
    eprintln!(
        "control plane: Kubernetes {}, etcd {}, started in {:?}",
        v.kubernetes,
        v.etcd,
        cp.startup_time()
    );
    assert!(v.kubernetes.starts_with("v1.36"), "{v:?}");
    assert!(v.etcd.starts_with("3.6"), "{v:?}");

    let ns = cp.test_namespace("crud").await?;
    let cms = Api::<ConfigMap>::namespaced(cp.client().await?, ns.name());
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "hello" },
        "data": { "greeting": "hi" },
    }))?;
    cms.create(&PostParams::default(), &cm).await?;
    let got = cms.get("hello").await?;
    assert_eq!(got.data.unwrap_or_default()["greeting"], "hi");

    let out = cp.kubectl(&["get", "configmap", "hello", "-n", ns.name(), "-o", "name"])?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/hello"
    );

    cms.delete("hello", &DeleteParams::default()).await?;
    assert!(cms.get_opt("hello").await?.is_none());
    Ok(())
}

/// No kubelet runs, so the test plays its part: a Node, a Pod bound to it and
/// the Pod's status; the real endpointslice controller does the rest.
#[tokio::test]
async fn endpointslice_controller_publishes_ready_pod() -> anyhow::Result<()> {
    let cp = controlplane::shared();
    let ns = cp.test_namespace("eps").await?;
    let client = cp.client().await?;
    let pp = PostParams::default();

    let node_name = format!("node-{}", ns.name());
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": node_name } }))?;
    let nodes = Api::<Node>::all(client.clone());
    nodes.create(&pp, &node).await?;

    let services = Api::<Service>::namespaced(client.clone(), ns.name());
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "selector": { "app": "web" },
            "ipFamilyPolicy": "RequireDualStack",
            "ports": [{ "port": 80, "targetPort": 8080 }],
        },
    }))?;
    let svc = services.create(&pp, &svc).await?;
    let cluster_ips = svc.spec.and_then(|s| s.cluster_ips).unwrap_or_default();
    assert_eq!(
        cluster_ips.len(),
        2,
        "dual-stack ClusterIPs: {cluster_ips:?}"
    );

    let pods = Api::<Pod>::namespaced(client.clone(), ns.name());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web-0", "labels": { "app": "web" } },
        "spec": {
            "nodeName": node_name,
            "containers": [{ "name": "web", "image": "example.invalid/web:never-pulled" }],
        },
    }))?;
    pods.create(&pp, &pod).await?;
    // A pod IP is only data here: nothing listens there and nothing is sent to it.
    let pod_ip = "10.244.1.5";
    let status = json!({ "status": {
        "phase": "Running",
        "podIP": pod_ip,
        "podIPs": [{ "ip": pod_ip }],
        "conditions": [
            { "type": "Ready", "status": "True" },
            { "type": "ContainersReady", "status": "True" },
        ],
    }});
    pods.patch_status("web-0", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns.name());
    let by_service = ListParams::default().labels("kubernetes.io/service-name=web");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = slices.list(&by_service).await?.items.iter().any(|s| {
            s.endpoints.iter().any(|e| {
                e.addresses.iter().any(|a| a == pod_ip)
                    && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
            })
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ready endpoint {pod_ip} in the EndpointSlices of web"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    pods.delete("web-0", &DeleteParams::default().grace_period(0))
        .await?;
    nodes.delete(&node_name, &DeleteParams::default()).await?;
    Ok(())
}

/// Dropping the guard deletes the namespace, and the namespace controller
/// finishes the job even with a pod bound to a node that has no kubelet.
#[tokio::test]
async fn test_namespace_is_deleted_on_drop() -> anyhow::Result<()> {
    let cp = controlplane::shared();
    let client = cp.client().await?;
    let ns = cp.test_namespace("drop").await?;
    let name = ns.name().to_owned();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "bound" },
        "spec": {
            "nodeName": "no-such-node",
            "containers": [{ "name": "c", "image": "example.invalid/none" }],
        },
    }))?;
    Api::<Pod>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &pod)
        .await?;
    drop(ns);

    let namespaces = Api::<Namespace>::all(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(left) = namespaces.get_opt(&name).await? {
        assert!(
            Instant::now() < deadline,
            "namespace {name} still there: {:?}",
            left.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// 127.0.0.2 and ::1 are not in the serving certificate, so this only passes
/// if `tls-server-name` is honoured, by kube-rs and by kubectl. ::1 also shows
/// the apiserver listens on IPv6 too.
#[tokio::test]
async fn kubeconfig_for_other_host_address() -> anyhow::Result<()> {
    let cp = controlplane::shared();
    let hosts = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for host in hosts {
        let path = cp.kubeconfig_for(host);
        let kubeconfig = Kubeconfig::read_from(&path)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let authority = SocketAddr::new(host, 0).to_string();
        let expected_host = authority.trim_end_matches(":0");
        assert_eq!(config.cluster_url.host(), Some(expected_host));
        let client = Client::try_from(config)?;
        let names: Vec<_> = Api::<Namespace>::all(client)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.iter().any(|n| n == "default"), "{names:?}");

        let out = Command::new(cp.kubeenv_bin())
            .args(["kubectl", "--kubeconfig"])
            .arg(&path)
            .args(["get", "namespace", "default", "-o", "name"])
            .output()?;
        assert!(
            out.status.success(),
            "kubectl via {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

const CHILD_ENV: &str = "CONTROLPLANE_SIGKILL_CHILD";

/// Started by `no_process_left_behind_after_sigkill` in a child copy of this
/// test binary: starts a control plane, reports, and waits to be killed.
#[test]
#[ignore = "run by no_process_left_behind_after_sigkill"]
fn sigkill_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cp = controlplane::shared();
    println!("CHILD_READY {}", cp.dir().display());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn no_process_left_behind_after_sigkill() -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["sigkill_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(dir) = line.strip_prefix("CHILD_READY ") {
                let _ = tx.send(dir.to_owned());
            }
        }
    });
    let dir = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(dir) => dir,
        Err(e) => {
            let _ = child.kill();
            panic!("child control plane did not come up: {e}");
        }
    };

    let pids = children_of(child.id());
    assert!(
        pids.len() >= 3,
        "expected etcd, apiserver, controller-manager: {pids:?}"
    );
    child.kill()?; // SIGKILL
    child.wait()?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&p| process_gone(p)) {
        assert!(Instant::now() < deadline, "left behind: {:?}", {
            pids.iter()
                .filter(|&&p| !process_gone(p))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(100));
    }

    assert!(std::path::Path::new(&dir).exists());
    controlplane::remove_stale_dirs();
    assert!(
        !std::path::Path::new(&dir).exists(),
        "stale {dir} not removed"
    );
    Ok(())
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
