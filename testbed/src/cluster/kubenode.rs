//! A Kubernetes node in a lab namespace: its own containerd, a kubelet and
//! kube-proxy (nftables mode), CNI bridge networking on the node's pod ranges,
//! a cgroup root of its own, and the lab's images imported.
//!
//! What this machine needs that a real node does not: the kubelet is entered
//! with `nsenter --net` (so `/sys` keeps its cgroup mounts), containerd
//! clamps oom_score_adj to its own (`restrict_oom_score_adj`), since root here
//! cannot lower it (no CAP_SYS_RESOURCE), and `kube-lb0` is made beforehand
//! as an `ifb` link where the kernel has no `dummy` links.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::log_tail;
use super::topology::KubeNodePlan;
use crate::netlab::{MgmtLink, Ns, Proc, wait_until};

/// The v1 hierarchies a kubelet's cgroup root must exist in.
const CGROUP_HIERARCHIES: &[&str] = &[
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd",
];
const CGROUP_FS: &str = "/sys/fs/cgroup";
/// Debian's containernetworking-plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The nftables tables that make a killed node silent.
const DEAD_TABLE: &str = "plb_dead_node";
/// The dummy interface of the lab's LBNodeAgent (`deploy/defaults`).
const DUMMY_INTERFACE: &str = "kube-lb0";
/// Where every kubelet serves device plugins, whatever its root directory.
const DEVICE_PLUGIN_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
/// The sandbox image every node imports (the lab's `pause`).
pub const PAUSE_IMAGE: &str = "localhost/purelb-lab/pause:1";

/// A running node. Its processes belong to the lab, which stops them.
pub struct KubeNode {
    pub name: String,
    pub ns: Ns,
    pub node_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<String>,
    pub node_labels: Vec<String>,
    pub mgmt: MgmtLink,
    /// How long importing the images into its containerd took.
    pub image_import_time: Duration,
    pub(crate) dir: PathBuf,
    pub(crate) cgroup: String,
    pub(crate) containerd: Proc,
    pub(crate) kubelet: Option<Proc>,
    pub(crate) proxy: Option<Proc>,
}

/// What every node of a cluster shares.
pub(crate) struct NodeContext<'a> {
    pub kubeenv: &'a Path,
    /// A kubeconfig whose server is the apiserver as nodes reach it.
    pub kubeconfig: &'a Path,
    pub ca_file: &'a Path,
    pub cluster_cidrs: &'a str,
    /// OCI archives imported into every node's containerd.
    pub images: &'a [PathBuf],
}

impl KubeNode {
    /// Configures and starts the node's containerd (with the images imported),
    /// kubelet and kube-proxy. `cgroup` is a name unique on the host.
    pub(crate) fn start(
        plan: &KubeNodePlan,
        ns: Ns,
        mgmt: MgmtLink,
        cgroup: String,
        ctx: &NodeContext<'_>,
    ) -> Result<KubeNode> {
        let dir = ns.dir().join("k8s");
        for sub in ["containerd", "cni", "cni-ipam", "kubelet", "pod-logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        make_cgroup(&cgroup)?;
        add_dummy_stand_in(&ns)?;
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            // kube-proxy sees pod-to-Service traffic that the bridge carries.
            "net.bridge.bridge-nf-call-iptables=1",
            "net.bridge.bridge-nf-call-ip6tables=1",
        ])
        .or_else(|_| {
            ns.exec(&[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ])
        })?;
        write(&dir.join("cni/10-lab.conflist"), &cni_config(plan, &dir))?;
        let (containerd, image_import_time) = start_containerd(&ns, &dir, ctx.images)
            .with_context(|| format!("node {}", plan.ns.name))?;
        let mut node = KubeNode {
            name: plan.ns.name.clone(),
            ns,
            node_ips: plan.node_ips.clone(),
            pod_cidrs: plan.pod_cidrs.clone(),
            node_labels: plan.node_labels.clone(),
            mgmt,
            image_import_time,
            dir,
            cgroup,
            containerd,
            kubelet: None,
            proxy: None,
        };
        node.start_kubelet(ctx)?;
        node.start_proxy(ctx)?;
        Ok(node)
    }

    /// Starts containerd, the kubelet and kube-proxy again after [`kill`](Self::kill).
    pub(crate) fn restart(&mut self, ctx: &NodeContext<'_>) -> Result<()> {
        for family in ["arp", "inet"] {
            let _ = self
                .ns
                .exec(&["nft", &format!("delete table {family} {DEAD_TABLE}")]);
        }
        make_cgroup(&self.cgroup)?;
        self.containerd = start_containerd(&self.ns, &self.dir, &[])?.0;
        self.start_kubelet(ctx)?;
        self.start_proxy(ctx)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Starts (or restarts) the kubelet.
    pub(crate) fn start_kubelet(&mut self, ctx: &NodeContext<'_>) -> Result<()> {
        let config = self.dir.join("kubelet/config.yaml");
        write(&config, &self.kubelet_config(ctx))?;
        let node_ips: Vec<String> = self.node_ips.iter().map(IpAddr::to_string).collect();
        let mut argv = vec![
            path(ctx.kubeenv),
            "kubelet".into(),
            format!("--config={}", path(&config)),
            format!("--kubeconfig={}", path(ctx.kubeconfig)),
            format!("--root-dir={}", path(&self.dir.join("kubelet/root"))),
            format!("--cert-dir={}", path(&self.dir.join("kubelet/pki"))),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", node_ips.join(",")),
        ];
        if !self.node_labels.is_empty() {
            argv.push(format!("--node-labels={}", self.node_labels.join(",")));
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // Every kubelet on this host binds the same device-plugin socket (its path
        // is fixed, not under --root-dir), replacing the last one's file: two at
        // once race between the unlink and the bind, and the loser exits. One at a
        // time, each until its socket is there.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let before = socket_identity(DEVICE_PLUGIN_SOCKET);
        let kubelet = self
            .ns
            .spawn_with_lifeline("kubelet", self.ns.nsenter_command(&argv))?;
        let bound = wait_until(
            Duration::from_secs(30),
            &format!(
                "the kubelet of {} to bind its device-plugin socket",
                self.name
            ),
            || {
                if !kubelet.is_running() {
                    anyhow::bail!("the kubelet exited:\n{}", log_tail(&kubelet.log(), 20));
                }
                let now = socket_identity(DEVICE_PLUGIN_SOCKET);
                Ok(now.is_some() && now != before)
            },
        );
        self.kubelet = Some(kubelet);
        bound
    }

    fn start_proxy(&mut self, ctx: &NodeContext<'_>) -> Result<()> {
        let config = self.dir.join("kube-proxy.yaml");
        write(
            &config,
            &format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
                 kind: KubeProxyConfiguration\n\
                 mode: nftables\n\
                 clientConnection:\n  kubeconfig: {kubeconfig}\n\
                 hostnameOverride: {name}\n\
                 clusterCIDR: {cidrs}\n\
                 metricsBindAddress: 127.0.0.1:10249\n\
                 healthzBindAddress: 127.0.0.1:10256\n\
                 oomScoreAdj: 0\n\
                 conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n",
                kubeconfig = path(ctx.kubeconfig),
                name = self.name,
                cidrs = ctx.cluster_cidrs,
            ),
        )?;
        let argv = [
            path(ctx.kubeenv),
            "proxy".into(),
            format!("--config={}", path(&config)),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.proxy = Some(
            self.ns
                .spawn_with_lifeline("kube-proxy", self.ns.nsenter_command(&argv))?,
        );
        Ok(())
    }

    fn kubelet_config(&self, ctx: &NodeContext<'_>) -> String {
        let address = self
            .node_ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             failCgroupV1: false\n\
             cgroupDriver: cgroupfs\n\
             cgroupRoot: /{cgroup}\n\
             failSwapOn: false\n\
             containerRuntimeEndpoint: unix://{socket}\n\
             podLogsDir: {logs}\n\
             resolvConf: \"\"\n\
             enforceNodeAllocatable: []\n\
             evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}}\n\
             imageGCHighThresholdPercent: 100\n\
             imageGCLowThresholdPercent: 99\n\
             address: {address}\n\
             readOnlyPort: 0\n\
             healthzBindAddress: 127.0.0.1\n\
             authentication:\n  anonymous: {{enabled: false}}\n  webhook: {{enabled: true}}\n  x509: {{clientCAFile: {ca}}}\n\
             authorization: {{mode: Webhook}}\n\
             shutdownGracePeriod: 0s\n\
             nodeStatusUpdateFrequency: 2s\n",
            cgroup = self.cgroup,
            socket = path(&self.socket()),
            logs = path(&self.dir.join("pod-logs")),
            ca = path(ctx.ca_file),
        )
    }

    /// Kills the node as a power cut would: kubelet, kube-proxy, containerd
    /// and every process of its pods at once, and from then on the node
    /// neither sends nor answers anything (ARP and NDP included), though the
    /// addresses its agent held stay on its interfaces, as on a dead machine.
    pub fn kill(&mut self) -> Result<()> {
        self.ns.exec(&[
            "nft",
            &format!(
                "add table arp {DEAD_TABLE}; \
                 add chain arp {DEAD_TABLE} in {{ type filter hook input priority -300; policy drop; }}; \
                 add chain arp {DEAD_TABLE} out {{ type filter hook output priority -300; policy drop; }}; \
                 add table inet {DEAD_TABLE}; \
                 add chain inet {DEAD_TABLE} in {{ type filter hook prerouting priority -300; policy drop; }}; \
                 add chain inet {DEAD_TABLE} out {{ type filter hook output priority -300; policy drop; }}"
            ),
        ])?;
        self.stop_processes()
    }

    pub(crate) fn stop_processes(&mut self) -> Result<()> {
        for p in [self.kubelet.take(), self.proxy.take()]
            .into_iter()
            .flatten()
        {
            p.kill()?;
        }
        self.containerd.kill()?;
        kill_cgroup(&self.cgroup);
        crate::netlab::host::kill_netns_processes(self.ns.netns());
        Ok(())
    }

    /// Freezes the kubelet (SIGSTOP), or thaws it: while frozen it neither
    /// restarts a container that died nor reports to the API server, as a
    /// hung kubelet, so a test can keep a killed container down for a while.
    pub fn freeze_kubelet(&self, frozen: bool) -> Result<()> {
        let kubelet = self
            .kubelet
            .as_ref()
            .context("the kubelet is not running")?;
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: killpg(2) on the process group the lab started the kubelet in.
        if unsafe { libc::killpg(kubelet.pid() as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signalling the kubelet");
        }
        Ok(())
    }

    /// The kubelet's log so far.
    pub fn kubelet_log(&self) -> String {
        self.kubelet.as_ref().map(Proc::log).unwrap_or_default()
    }
}

/// The link PureLB's agent puts remote addresses on: where this kernel cannot
/// make `dummy` links, an `ifb` link of the same name, which the agent uses
/// as it would the dummy it creates elsewhere.
fn add_dummy_stand_in(ns: &Ns) -> Result<()> {
    let probe = ns.output(&["ip", "link", "add", "plbprobe0", "type", "dummy"])?;
    if probe.status.success() {
        ns.ip(&["link", "delete", "plbprobe0"])?;
        return Ok(());
    }
    ns.ip(&["link", "add", DUMMY_INTERFACE, "type", "ifb"])?;
    ns.ip(&["link", "set", DUMMY_INTERFACE, "up"])?;
    Ok(())
}

/// Starts the node's containerd, waits for its socket and imports `images`;
/// returns it and how long the import took.
fn start_containerd(ns: &Ns, dir: &Path, images: &[PathBuf]) -> Result<(Proc, Duration)> {
    let socket = dir.join("containerd/containerd.sock");
    let config = dir.join("containerd/config.toml");
    write(&config, &containerd_config(dir, &socket))?;
    let containerd = ns.spawn_command(
        "containerd",
        ns.nsenter_command(&["containerd", "--config", &path(&config)]),
    )?;
    wait_until(Duration::from_secs(30), "containerd's socket", || {
        if let Some(st) = containerd.exit_status() {
            anyhow::bail!(
                "containerd exited ({st}): {}",
                log_tail(&containerd.log(), 20)
            );
        }
        Ok(ctr(&socket, &["version"]).is_ok())
    })?;
    let importing = std::time::Instant::now();
    for image in images {
        ctr(&socket, &["images", "import", &path(image)])
            .with_context(|| format!("importing {}", image.display()))?;
    }
    Ok((containerd, importing.elapsed()))
}

fn containerd_config(dir: &Path, socket: &Path) -> String {
    format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         oom_score = 0\n\
         [grpc]\n  address = \"{socket}\"\n\
         [ttrpc]\n  address = \"{socket}.ttrpc\"\n\
         [debug]\n  level = \"warn\"\n\
         [metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n\
         \x20 sandbox_image = \"{pause}\"\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 disable_apparmor = true\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20   bin_dir = \"{cni_bin}\"\n\
         \x20   conf_dir = \"{cni_conf}\"\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
         \x20   snapshotter = \"overlayfs\"\n\
         \x20   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         \x20     runtime_type = \"io.containerd.runc.v2\"\n",
        root = path(&dir.join("containerd/root")),
        state = path(&dir.join("containerd/state")),
        socket = path(socket),
        pause = PAUSE_IMAGE,
        cni_bin = CNI_BIN_DIR,
        cni_conf = path(&dir.join("cni")),
    )
}

fn cni_config(plan: &KubeNodePlan, dir: &Path) -> String {
    let ranges: Vec<serde_json::Value> = plan
        .pod_cidrs
        .iter()
        .map(|c| serde_json::json!([{ "subnet": c }]))
        .collect();
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "lab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": ranges,
                    "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }],
                    "dataDir": path(&dir.join("cni-ipam")),
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
    .to_string()
}

/// `ctr` against one node's containerd, in the namespace its images live in.
fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    let mut c = std::process::Command::new("ctr");
    c.arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io"])
        .args(args);
    crate::netlab::cmd::run(&mut c)
}

/// The node's cgroup root in every v1 hierarchy, cpuset seeded from its parent.
fn make_cgroup(name: &str) -> Result<()> {
    for h in CGROUP_HIERARCHIES {
        let dir = Path::new(CGROUP_FS).join(h).join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if *h == "cpuset" {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = std::fs::read_to_string(Path::new(CGROUP_FS).join(h).join(file))?;
                std::fs::write(dir.join(file), parent.trim())
                    .with_context(|| format!("seeding {}/{file}", dir.display()))?;
            }
        }
    }
    Ok(())
}

/// SIGKILLs every process under the cgroup root `name`.
pub(crate) fn kill_cgroup(name: &str) {
    for _ in 0..50 {
        let mut found = false;
        for dir in cgroup_dirs(&Path::new(CGROUP_FS).join("memory").join(name)) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                found = true;
                // SAFETY: plain syscall on a pid.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the cgroup root `name` (its processes must be gone) from every hierarchy.
pub(crate) fn remove_cgroup(name: &str) {
    kill_cgroup(name);
    for h in CGROUP_HIERARCHIES {
        let mut dirs = cgroup_dirs(&Path::new(CGROUP_FS).join(h).join(name));
        // Children first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Names of the cgroup roots directly under the memory hierarchy (where
/// cluster nodes have theirs).
pub(crate) fn cgroup_roots() -> Vec<String> {
    std::fs::read_dir(Path::new(CGROUP_FS).join("memory"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `root` and every cgroup below it.
fn cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
        out.push(dir);
    }
    out
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// What tells one socket file at `path` from the next made there (an inode
/// number can be reused at once): its inode and change time, if there is one.
fn socket_identity(path: &str) -> Option<(u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}
