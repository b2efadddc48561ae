//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager from Kubernetes 1.36, run by the Go helper in
//! `testbed/kubeenv/` (`make kubeenv` builds it).
//!
//! One control plane is started per test binary, on first use, by [`shared`];
//! each test gets its own namespace from [`ControlPlane::test_namespace`].
//! That one has no kubelet, scheduler or kube-proxy: pods never run. Tests
//! create Node objects and patch Pod status (podIP, Ready) themselves, and the
//! real endpointslice controller turns those into EndpointSlices.
//!
//! [`ControlPlane::start`] with [`Flavour::Cluster`] starts the control plane
//! of a cluster with real nodes (see [`crate::cluster`]): kube-scheduler too,
//! the controller-manager's workload, node and service-account controllers,
//! the ServiceAccount admission plugin, a serving certificate valid for the
//! `kubernetes` Service and the address nodes use, and the `kubernetes`
//! endpoints pointing there.
//!
//! Every process gets a piped stdin whose write end only this process holds;
//! the helper exits on EOF, so when the test binary dies for any reason
//! (even SIGKILL) the kernel closes the pipe and the control plane goes with
//! it. Each run works in `$TMPDIR/purelb-controlplane/run-<pid>/` (certs, etcd
//! data, kubeconfigs, one log per process); it is left behind for a developer
//! to read and removed by the next run once its owner pid is dead.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Versions actually running, as reported by the servers themselves.
#[derive(Clone, Debug)]
pub struct Versions {
    /// kube-apiserver's `/version` gitVersion, e.g. `v1.36.3`.
    pub kubernetes: String,
    /// etcd's `/version` etcdserver, e.g. `3.6.8`.
    pub etcd: String,
}

/// What the control plane serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// API objects only: no scheduler, no workload controllers, no pods.
    ApiOnly,
    /// The control plane of a cluster with real kubelets, which reach the
    /// apiserver at `api_addr` (a host address on a link the lab made).
    Cluster { api_addr: Ipv4Addr },
}

/// Controllers of [`Flavour::ApiOnly`]: what turns API objects into others.
const API_CONTROLLERS: &str = "endpointslice-controller,endpoints-controller,namespace-controller,\
                               garbage-collector-controller,serviceaccount-controller";

/// Controllers of [`Flavour::Cluster`]: those, plus what runs workloads on
/// nodes and notices when a node goes away.
const CLUSTER_CONTROLLERS: &str = "endpointslice-controller,endpoints-controller,\
    namespace-controller,garbage-collector-controller,serviceaccount-controller,\
    serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
    deployment-controller,replicaset-controller,daemonset-controller,\
    node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller";

/// A running control plane. Get the one of this test binary with [`shared`].
pub struct ControlPlane {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    token: String,
    ca_data: String,
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    versions: Versions,
    startup_time: Duration,
    flavour: Flavour,
    /// Held only so the pipes stay open: dropping them stops the processes.
    _procs: Vec<Proc>,
}

/// A started helper process. Its stdin write end is its lifeline.
struct Proc {
    name: &'static str,
    child: Child,
    _stdin: ChildStdin,
    log: PathBuf,
}

/// The control plane of this test binary, started on first call (blocking,
/// a few seconds to a minute). Callable from sync code and from inside
/// `#[tokio::test]`. Panics with the failing process's log tail if it cannot
/// start; every later call panics with the same message instead of retrying.
pub fn shared() -> &'static ControlPlane {
    static CP: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let cp = CP.get_or_init(|| {
        // A thread of its own: start-up needs a tokio runtime, and we may be
        // called from inside one, where blocking on another would panic.
        std::thread::spawn(|| ControlPlane::start(Flavour::ApiOnly).map_err(|e| format!("{e:#}")))
            .join()
            .unwrap_or_else(|_| Err("control plane start-up panicked".into()))
    });
    match cp {
        Ok(cp) => cp,
        Err(e) => panic!("test control plane failed to start: {e}"),
    }
}

impl ControlPlane {
    /// A new client for the admin user (group `system:masters`). Make one per
    /// test: a client must not outlive the tokio runtime that created it.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from(self.kubeconfig.clone()).await
    }

    /// Creates a namespace named `<prefix>-<n>` (`prefix` must be a DNS label)
    /// and returns a guard that deletes it, best effort, when dropped.
    pub async fn test_namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }
        }))?;
        let client = self.client().await?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        if self.flavour != Flavour::ApiOnly {
            // The ServiceAccount admission plugin refuses pods until the
            // namespace's `default` ServiceAccount exists.
            let accounts = Api::<ServiceAccount>::namespaced(client, &name);
            let deadline = Instant::now() + Duration::from_secs(30);
            while accounts.get_opt("default").await?.is_none() {
                if Instant::now() > deadline {
                    bail!("namespace {name} got no default ServiceAccount within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(TestNamespace {
            name,
            kubeconfig: self.kubeconfig.clone(),
        })
    }

    /// Runs `kubeenv kubectl --kubeconfig <admin kubeconfig> <args>`; an error
    /// (with stderr) if it exits non-zero.
    pub fn kubectl(&self, args: &[impl AsRef<OsStr>]) -> anyhow::Result<Output> {
        let out = Command::new(&self.bin)
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubeenv kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {:?} failed ({}): {}",
                args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Applies every CRD in `dir` with server-side apply and waits until each
    /// is Established. Idempotent, so every test may call it.
    pub fn install_crds(&self, dir: &Path) -> anyhow::Result<()> {
        self.kubectl(&[
            OsStr::new("apply"),
            OsStr::new("--server-side"),
            OsStr::new("-f"),
            dir.as_os_str(),
        ])?;
        self.kubectl(&[
            OsStr::new("wait"),
            OsStr::new("--for=condition=Established"),
            OsStr::new("--timeout=60s"),
            OsStr::new("-f"),
            dir.as_os_str(),
        ])?;
        Ok(())
    }

    /// The admin kubeconfig (server `https://127.0.0.1:<port>`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes (if needed) and returns an admin kubeconfig that reaches the
    /// apiserver at `https://<server_host>:<port>`, e.g. from another network
    /// namespace through a management veth. The serving certificate names only
    /// 127.0.0.1 and localhost, so it sets `tls-server-name: localhost`, which
    /// both client-go and kube-rs (rustls) use for SNI and verification.
    pub fn kubeconfig_for(&self, server_host: IpAddr) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{server_host}"));
        if !path.exists() {
            let server = format!("https://{}", SocketAddr::new(server_host, self.port));
            let cfg = kubeconfig_json(&server, Some("localhost"), &self.ca_data, &self.token);
            // Write then rename, so a concurrent caller never reads half a file.
            let tmp = self.dir.join(format!(
                "kubeconfig-{server_host}.{:?}.tmp",
                std::thread::current().id()
            ));
            fs::write(&tmp, cfg.to_string())
                .and_then(|()| fs::rename(&tmp, &path))
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        path
    }

    /// The Kubernetes and etcd versions actually running.
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// How long start-up took, from the first process spawned to ready.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The certificates: `ca.crt`, `ca.key`, `serving.crt`, `kubelet-client.crt` ...
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The kubeenv helper binary (e.g. to run kubectl with another kubeconfig).
    pub fn kubeenv_bin(&self) -> &Path {
        &self.bin
    }

    /// The run directory: certificates, kubeconfigs and one log per process.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a control plane of its own (most tests want [`shared`]), in
    /// `$TMPDIR/purelb-controlplane/run-<pid>[-<n>]/`. Its processes stop when
    /// it is dropped.
    pub fn start(flavour: Flavour) -> anyhow::Result<ControlPlane> {
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let bin = kubeenv_bin()?;
        remove_stale_dirs();
        let dir = match STARTS.fetch_add(1, Ordering::Relaxed) {
            0 => base_dir().join(format!("run-{}", std::process::id())),
            n => base_dir().join(format!("run-{}-{n}", std::process::id())),
        };
        // Only a dead process with our pid could have left this one behind.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = writeln!(
            io::stderr(),
            "controlplane: starting etcd, kube-apiserver and kube-controller-manager; logs in {}",
            dir.display()
        );
        let started = Instant::now();

        let certs = dir.join("certs");
        let mut certs_cmd = Command::new(&bin);
        certs_cmd.arg("certs").arg(&certs);
        if let Flavour::Cluster { api_addr } = flavour {
            certs_cmd.arg(api_addr.to_string());
        }
        let out = certs_cmd.output()?;
        if !out.status.success() {
            bail!(
                "kubeenv certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ca_pem = fs::read(certs.join("ca.crt")).context("reading ca.crt")?;
        let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let token = random_token()?;
        let tokens = dir.join("tokens.csv");
        fs::write(&tokens, format!("{token},admin,admin,system:masters\n"))?;

        // Free ports: hold all the listeners until every port is chosen, so none
        // is picked twice. `[::]` checks both families, as the apiserver listens
        // on both; fall back to IPv4 on a host without IPv6.
        let etcd = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let peer = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let api = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0))
            .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)))?;
        let (etcd_port, peer_port, port) = (
            etcd.local_addr()?.port(),
            peer.local_addr()?.port(),
            api.local_addr()?.port(),
        );
        drop((etcd, peer, api));
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");

        let kubeconfig_json =
            kubeconfig_json(&format!("https://127.0.0.1:{port}"), None, &ca_data, &token);
        let kubeconfig_path = dir.join("kubeconfig");
        fs::write(&kubeconfig_path, kubeconfig_json.to_string())?;
        let kubeconfig: Kubeconfig = serde_json::from_value(kubeconfig_json)?;

        let mut procs = Vec::new();
        let spawn = |name, args: Vec<String>| Proc::spawn(&bin, &dir, name, args);

        procs.push(spawn(
            "etcd",
            vec![
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--client-url={etcd_url}"),
                format!("--peer-url=http://127.0.0.1:{peer_port}"),
            ],
        )?);
        let etcd_version = wait_for(&mut procs[0], Duration::from_secs(30), || {
            let health = http_get_json(etcd_port, "/health").ok()?;
            (health["health"] == "true").then_some(())?;
            let v = http_get_json(etcd_port, "/version").ok()?;
            v["etcdserver"].as_str().map(str::to_owned)
        })?;

        let cert = |f: &str| certs.join(f).display().to_string();
        let mut apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            // All interfaces, so node namespaces reach it via management links.
            "--bind-address=0.0.0.0".into(),
            format!("--secure-port={port}"),
            // A loopback advertise address is only accepted when the apiserver
            // does not write its own address into the `kubernetes` Endpoints.
            "--advertise-address=127.0.0.1".into(),
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", cert("serving.crt")),
            format!("--tls-private-key-file={}", cert("serving.key")),
            format!("--client-ca-file={}", cert("ca.crt")),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", cert("sa.pub")),
            format!("--service-account-signing-key-file={}", cert("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/108".into(),
            // Like kubeadm: privileged pod templates (our DaemonSet) validate.
            "--allow-privileged=true".into(),
        ];
        match flavour {
            // No pod ever runs, so none needs a token.
            Flavour::ApiOnly => {
                apiserver_args.push("--disable-admission-plugins=ServiceAccount".into())
            }
            Flavour::Cluster { .. } => apiserver_args.extend([
                format!(
                    "--kubelet-client-certificate={}",
                    cert("kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", cert("kubelet-client.key")),
                // `kubectl logs` reaches a kubelet at the node's address.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]),
        }
        procs.push(spawn("apiserver", apiserver_args)?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(client_from(kubeconfig.clone()))?;
        wait_for(&mut procs[1], Duration::from_secs(180), || {
            let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
            let ok = rt.block_on(client.request_text(req)).ok()?;
            (ok.trim() == "ok").then_some(())
        })?;
        let namespaces = Api::<Namespace>::all(client.clone());
        wait_for(&mut procs[1], Duration::from_secs(30), || {
            rt.block_on(namespaces.get_opt("default")).ok()?.map(drop)
        })?;
        let kubernetes_version = rt.block_on(client.apiserver_version())?.git_version;

        let mut manager_args = vec![
            format!("--kubeconfig={}", kubeconfig_path.display()),
            "--leader-elect=false".into(),
            // No serving: nothing scrapes it, and it would need its own certs.
            "--secure-port=0".into(),
        ];
        match flavour {
            Flavour::ApiOnly => manager_args.push(format!("--controllers={API_CONTROLLERS}")),
            Flavour::Cluster { .. } => manager_args.extend([
                format!("--controllers={CLUSTER_CONTROLLERS}"),
                format!("--service-account-private-key-file={}", cert("sa.key")),
                format!("--root-ca-file={}", cert("ca.crt")),
            ]),
        }
        procs.push(spawn("controller-manager", manager_args)?);
        // The serviceaccount controller creating `default` in `default` shows the
        // controller-manager is up and its informers have synced.
        let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
        wait_for(&mut procs[2], Duration::from_secs(60), || {
            rt.block_on(service_accounts.get_opt("default"))
                .ok()?
                .map(drop)
        })?;

        if let Flavour::Cluster { api_addr } = flavour {
            procs.push(spawn(
                "scheduler",
                vec![
                    format!("--kubeconfig={}", kubeconfig_path.display()),
                    "--leader-elect=false".into(),
                    "--secure-port=0".into(),
                ],
            )?);
            rt.block_on(write_kubernetes_endpoints(client.clone(), api_addr, port))?;
        }

        Ok(ControlPlane {
            bin,
            dir,
            port,
            token,
            ca_data,
            kubeconfig,
            kubeconfig_path,
            versions: Versions {
                kubernetes: kubernetes_version,
                etcd: etcd_version,
            },
            startup_time: started.elapsed(),
            flavour,
            _procs: procs,
        })
    }
}

/// A namespace for one test; deleted (best effort) when dropped.
pub struct TestNamespace {
    name: String,
    kubeconfig: Kubeconfig,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (name, kubeconfig) = (self.name.clone(), self.kubeconfig.clone());
        // Drop cannot await, and the test's runtime may be shutting down: use a
        // thread with a runtime of its own and wait for it.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let cleanup = async {
                let client = client_from(kubeconfig).await.ok()?;
                // With no kubelet, pods bound to a node would stay Terminating
                // (and so the namespace) unless deleted with grace period 0.
                let _ = Api::<Pod>::namespaced(client.clone(), &name)
                    .delete_collection(
                        &DeleteParams::default().grace_period(0),
                        &ListParams::default(),
                    )
                    .await;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await
                    .ok()
            };
            // The timer must be created inside the runtime, hence the async block.
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), cleanup).await })
                .ok()
        });
        let _ = cleanup.join();
    }
}

impl Proc {
    fn spawn(
        bin: &Path,
        dir: &Path,
        name: &'static str,
        args: Vec<String>,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        fs::write(dir.join(format!("{name}.args")), args.join("\n"))?;
        // Not PR_SET_PDEATHSIG: it fires when the spawning *thread* exits, and
        // start-up runs on a short-lived thread. Our end of the pipe is
        // close-on-exec, so no other child inherits it and keeps it open.
        let mut child = Command::new(bin)
            .arg(name)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning kubeenv {name}"))?;
        let stdin = child.stdin.take().context("child stdin was not piped")?;
        Ok(Proc {
            name,
            child,
            _stdin: stdin,
            log,
        })
    }

    /// An error with the end of the log, for a process that failed.
    fn failure(&self, what: &str) -> anyhow::Error {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        anyhow::anyhow!(
            "kubeenv {} {what}; last lines of {}:\n{tail}",
            self.name,
            self.log.display()
        )
    }
}

/// Polls `ready` until it returns `Some`, failing early if `proc` exits.
fn wait_for<T>(
    proc: &mut Proc,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if let Some(status) = proc.child.try_wait()? {
            return Err(proc.failure(&format!("exited ({status})")));
        }
        if Instant::now() > deadline {
            return Err(proc.failure(&format!("was not ready within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `default/kubernetes` Endpoints and EndpointSlice, which the apiserver
/// does not write with `--endpoint-reconciler-type=none`: kube-proxy then
/// sends in-cluster clients of `kubernetes.default` (10.96.0.1:443) to
/// `api_addr:port`.
async fn write_kubernetes_endpoints(
    client: Client,
    api_addr: Ipv4Addr,
    port: u16,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Patch, PatchParams};
    let apply = PatchParams::apply("testbed").force();
    let endpoints: Endpoints = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default" },
        "subsets": [{
            "addresses": [{ "ip": api_addr.to_string() }],
            "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
        }],
    }))?;
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .patch("kubernetes", &apply, &Patch::Apply(&endpoints))
        .await
        .context("writing the kubernetes Endpoints")?;
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes", "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "testbed",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [api_addr.to_string()], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
    }))?;
    Api::<EndpointSlice>::namespaced(client, "default")
        .patch("kubernetes", &apply, &Patch::Apply(&slice))
        .await
        .context("writing the kubernetes EndpointSlice")?;
    Ok(())
}

async fn client_from(kubeconfig: Kubeconfig) -> anyhow::Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// An admin kubeconfig as JSON (which is YAML, so kubectl reads it too). The
/// CA goes in certificate-authority-data: rustls rejects a leaf used as a CA.
fn kubeconfig_json(
    server: &str,
    tls_server_name: Option<&str>,
    ca_data: &str,
    token: &str,
) -> serde_json::Value {
    let mut cluster = serde_json::json!({
        "server": server,
        "certificate-authority-data": ca_data,
    });
    if let Some(name) = tls_server_name {
        cluster["tls-server-name"] = name.into();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "kubeenv", "cluster": cluster }],
        "users": [{ "name": "admin", "user": { "token": token } }],
        "contexts": [{ "name": "kubeenv", "context": { "cluster": "kubeenv", "user": "admin" } }],
        "current-context": "kubeenv",
    })
}

/// `KUBEENV_BIN`, else `<workspace>/target/kubeenv/kubeenv`.
fn kubeenv_bin() -> anyhow::Result<PathBuf> {
    let bin = match std::env::var_os("KUBEENV_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kubeenv/kubeenv"),
    };
    if !bin.is_file() {
        bail!(
            "the kubeenv helper is missing at {}: run `make kubeenv` (or set KUBEENV_BIN)",
            bin.display()
        );
    }
    Ok(bin.canonicalize().unwrap_or(bin))
}

fn base_dir() -> PathBuf {
    std::env::temp_dir().join("purelb-controlplane")
}

/// Removes run directories whose owner process is gone. [`shared`] calls it;
/// public so a test can check it.
pub fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(base_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-")?.parse().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && process_gone(pid)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether `pid` no longer runs (absent, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A plain HTTP/1.0 GET against etcd's client port, returning the JSON body.
fn http_get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(serde_json::from_str(body)?)
}
