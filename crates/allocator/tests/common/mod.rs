//! What the allocator's control-plane tests share: the CRDs installed, an
//! allocator process under test, and small helpers to create objects and wait
//! for what the allocator writes.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use purelb_api::crd::ServiceGroup;
use serde_json::{Value, json};
use testbed::process::BoundChild;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Installs the CRDs of `deploy/crds` and creates the install namespace.
pub fn prepare(install_namespace: &str) {
    let cp = testbed::controlplane::shared();
    cp.install_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
        .expect("CRDs install");
    let exists = cp.kubectl(&["get", "namespace", install_namespace]).is_ok();
    if !exists {
        cp.kubectl(&["create", "namespace", install_namespace])
            .expect("install namespace");
    }
}

/// An allocator process under test; its log is kept for failure messages.
pub struct Allocator {
    pub child: BoundChild,
    pub log: PathBuf,
    pub port: u16,
}

impl Allocator {
    /// Starts the allocator binary against the test control plane.
    pub fn start(install_namespace: &str, identity: &str, env: &[(&str, &str)]) -> Allocator {
        let cp = testbed::controlplane::shared();
        let port = free_port();
        let log = cp.dir().join(format!("allocator-{identity}-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("allocator log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_allocator"));
        command
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args([
                "--namespace",
                install_namespace,
                "--port",
                &port.to_string(),
                "--identity",
                identity,
            ])
            .env_remove("KUBECONFIG")
            .env("DEFAULT_ANNOUNCER", "PureLB")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file);
        let child = BoundChild::spawn(command).expect("allocator starts");
        Allocator { child, log, port }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await
    }

    /// The whole HTTP/1.0 response (status line, headers, body) to `GET path`.
    pub async fn get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("metrics port");
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Creates (or replaces the spec of) a ServiceGroup.
pub async fn apply_group(client: &Client, namespace: &str, name: &str, spec: Value) {
    let groups: Api<ServiceGroup> = Api::namespaced(client.clone(), namespace);
    let group = json!({"apiVersion": "purelb.io/v2", "kind": "ServiceGroup", "metadata": {"name": name}, "spec": spec});
    let params = kube::api::PatchParams::apply("test").force();
    groups
        .patch(name, &params, &kube::api::Patch::Apply(&group))
        .await
        .expect("ServiceGroup applies");
}

/// A LoadBalancer Service as the tests need it.
pub struct ServiceSpec<'a> {
    pub annotations: BTreeMap<&'a str, &'a str>,
    pub ports: Vec<(&'a str, i32)>,
    pub families: Vec<&'a str>,
    pub class: Option<&'a str>,
    /// `allocateLoadBalancerNodePorts`: the NodePort range holds only 2,768 ports.
    pub node_ports: bool,
}

impl Default for ServiceSpec<'_> {
    fn default() -> Self {
        Self {
            annotations: BTreeMap::new(),
            ports: vec![("TCP", 80)],
            families: vec!["IPv4"],
            class: None,
            node_ports: true,
        }
    }
}

impl<'a> ServiceSpec<'a> {
    pub fn group(group: &'a str) -> Self {
        let mut spec = Self::default();
        spec.annotations.insert("purelb.io/service-group", group);
        spec
    }

    pub fn with(mut self, key: &'a str, value: &'a str) -> Self {
        self.annotations.insert(key, value);
        self
    }
}

pub async fn create_service(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: ServiceSpec<'_>,
) -> Service {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|(protocol, port)| json!({"name": format!("{}-{port}", protocol.to_lowercase()), "protocol": protocol, "port": port}))
        .collect();
    let policy = if spec.families.len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    let mut body = json!({
        "metadata": {"name": name, "annotations": spec.annotations},
        "spec": {"type": "LoadBalancer", "ports": ports, "ipFamilies": spec.families, "ipFamilyPolicy": policy,
                 "selector": {"app": name}}
    });
    body["spec"]["allocateLoadBalancerNodePorts"] = json!(spec.node_ports);
    if let Some(class) = spec.class {
        body["spec"]["loadBalancerClass"] = json!(class);
    }
    let service: Service = serde_json::from_value(body).expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("Service created")
}

/// The ingress IPs of a Service now.
pub async fn ingress(client: &Client, namespace: &str, name: &str) -> Vec<IpAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = services.get(name).await.expect("Service exists");
    ingress_of(&service)
}

pub fn ingress_of(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .iter()
        .flat_map(|s| s.load_balancer.iter())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// Polls every 50 ms until `check` gives a value, or fails after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the Service has `count` ingress addresses.
pub async fn wait_for_addresses(
    client: &Client,
    namespace: &str,
    name: &str,
    count: usize,
) -> Vec<IpAddr> {
    eventually(
        &format!("{count} address(es) on {namespace}/{name}"),
        || async {
            let ips = ingress(client, namespace, name).await;
            (ips.len() == count).then_some(ips)
        },
    )
    .await
}

/// The events recorded on an object, as (reason, message).
pub async fn events(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
    events
        .list(&params)
        .await
        .expect("events list")
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits for an event with `reason` whose message contains `text`; returns the message.
pub async fn wait_for_event(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    text: &str,
) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let seen = events(client, namespace, name).await;
        if let Some((_, message)) = seen.iter().find(|(r, m)| r == reason && m.contains(text)) {
            return message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for event {reason} containing {text:?} on {namespace}/{name}; events: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn annotation(service: &Service, key: &str) -> Option<String> {
    service.annotations().get(key).cloned()
}

/// The reference external-IPAM sidecar serving `pools` (`NAME=RANGE`) on `socket`.
pub fn start_sidecar(socket: &Path, pools: &[&str]) -> BoundChild {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipam-sidecar"));
    command
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for pool in pools {
        command.arg("--pool").arg(pool);
    }
    let child = BoundChild::spawn(command).expect("ipam-sidecar starts");
    let deadline = Instant::now() + TIMEOUT;
    // The socket file appears at bind(2), a moment before listen(2).
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "ipam-sidecar never listened on {socket:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
