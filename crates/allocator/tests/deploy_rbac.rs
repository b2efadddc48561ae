//! The deployment in `deploy/` on a real control plane: it renders with
//! kustomize (kubectl's), applies with server-side apply, follows the project's
//! deployment rules (names, labels, security contexts), and its RBAC lets each
//! component do exactly what it does: an access matrix per service account,
//! asked with that account's own token, and the allocator binary run under
//! that token. The node agent cannot run yet, so its RBAC is checked as a
//! matrix only. Last, the mechanism that lets the agent run as non-root with
//! its three capabilities is shown on this kernel.
//!
//! Everything lands in `purelb-system` of this binary's own control plane;
//! applying is idempotent, so the tests here run in parallel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{ServiceSpec, apply_group, create_service, eventually, wait_for_addresses};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use purelb_api::crd::ServiceGroup;
use serde_json::{Value, json};
use testbed::controlplane::{ControlPlane, shared};
use testbed::process::BoundChild;

const NS: &str = "purelb-system";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `kubectl kustomize <deploy/dir>`, one JSON value per object.
fn kustomize(dir: &str) -> Vec<Value> {
    kustomize_path(&deploy_dir().join(dir))
}

fn kustomize_path(path: &Path) -> Vec<Value> {
    let out = shared()
        .kubectl(&["kustomize".as_ref(), path.as_os_str()])
        .unwrap_or_else(|e| panic!("kustomize {}: {e:#}", path.display()));
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("kustomize output of {} parses: {e}", path.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Installs as deploy/README.md says, once per test binary: the whole of
/// `deploy/`, then (CRDs Established) `deploy/defaults` and `deploy/samples`,
/// each with server-side apply. Returns kubectl's report of each step.
fn install() -> &'static Vec<String> {
    static INSTALLED: OnceLock<Vec<String>> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let cp = shared();
        let apply = |dir: &str| {
            let path = deploy_dir().join(dir);
            let out = cp
                .kubectl(&[
                    "apply".as_ref(),
                    "--server-side".as_ref(),
                    "-k".as_ref(),
                    path.as_os_str(),
                ])
                .unwrap_or_else(|e| panic!("apply --server-side -k {}: {e:#}", path.display()));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut reports = vec![apply(".")];
        let crds = deploy_dir().join("crds");
        cp.kubectl(&[
            "wait".as_ref(),
            "--for=condition=Established".as_ref(),
            "--timeout=60s".as_ref(),
            "-f".as_ref(),
            crds.as_os_str(),
        ])
        .expect("CRDs Established");
        reports.push(apply("defaults"));
        reports.push(apply("samples"));
        reports
    })
}

fn id(object: &Value) -> (String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object["labels"].clone()).unwrap_or_default()
}

fn env_field(container: &Container, name: &str) -> Option<String> {
    let var = container.env.iter().flatten().find(|e| e.name == name)?;
    Some(
        var.value_from
            .as_ref()?
            .field_ref
            .as_ref()?
            .field_path
            .clone(),
    )
}

fn probe_path(probe: Option<&k8s_openapi::api::core::v1::Probe>) -> Option<&str> {
    probe?.http_get.as_ref()?.path.as_deref()
}

#[test]
fn the_install_renders_every_crd_the_namespace_rbac_and_both_workloads() {
    let objects = kustomize(".");
    let ids: BTreeSet<_> = objects.iter().map(id).collect();

    // Every generated CRD is part of the install (a new one must be listed in
    // deploy/kustomization.yaml).
    let mut crd_files = 0;
    for entry in std::fs::read_dir(deploy_dir().join("crds")).expect("deploy/crds") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("CRD file");
        let crd: Value = serde_saphyr::from_str(&text).expect("CRD YAML");
        let name = crd["metadata"]["name"]
            .as_str()
            .expect("CRD name")
            .to_owned();
        assert!(
            ids.contains(&(
                "CustomResourceDefinition".into(),
                String::new(),
                name.clone()
            )),
            "CRD {name} of deploy/crds is missing from deploy/kustomization.yaml"
        );
        crd_files += 1;
    }
    assert_eq!(crd_files, 4);

    let expected: BTreeSet<(String, String, String)> = [
        ("Namespace", "", NS),
        ("ServiceAccount", NS, "allocator"),
        ("ServiceAccount", NS, "lbnodeagent"),
        ("ClusterRole", "", "purelb:allocator"),
        ("ClusterRoleBinding", "", "purelb:allocator"),
        ("Role", NS, "purelb:allocator:leases"),
        ("RoleBinding", NS, "purelb:allocator:leases"),
        ("ClusterRole", "", "purelb:lbnodeagent"),
        ("ClusterRoleBinding", "", "purelb:lbnodeagent"),
        ("Role", NS, "purelb:lbnodeagent"),
        ("RoleBinding", NS, "purelb:lbnodeagent"),
        ("Deployment", NS, "allocator"),
        ("DaemonSet", NS, "lbnodeagent"),
    ]
    .iter()
    .map(|(k, ns, n)| (k.to_string(), ns.to_string(), n.to_string()))
    .collect();
    let others: BTreeSet<_> = ids
        .iter()
        .filter(|(kind, _, _)| kind != "CustomResourceDefinition")
        .cloned()
        .collect();
    assert_eq!(others, expected);
    for object in objects
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        assert_eq!(
            labels(&object["metadata"]).get("app").map(String::as_str),
            Some("purelb"),
            "label app=purelb on {:?}",
            id(object)
        );
    }

    // The RBAC subjects are the two service accounts in purelb-system.
    for object in objects.iter().filter(|o| {
        matches!(
            o["kind"].as_str(),
            Some("RoleBinding" | "ClusterRoleBinding")
        )
    }) {
        let subjects = object["subjects"].as_array().expect("subjects");
        assert_eq!(subjects.len(), 1, "{:?}", id(object));
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["namespace"], NS);
        assert_eq!(object["roleRef"]["name"], object["metadata"]["name"]);
    }
}

#[test]
fn the_allocator_runs_non_root_read_only_without_capabilities() {
    let objects = kustomize(".");
    let value = find(&objects, "Deployment", "allocator");
    let want = BTreeMap::from([
        ("app".to_owned(), "purelb".to_owned()),
        ("component".to_owned(), "allocator".to_owned()),
    ]);
    assert_eq!(labels(&value["metadata"]), want);
    let deployment: Deployment = serde_json::from_value(value.clone()).expect("Deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&want));
    let template = spec.template;
    assert_eq!(
        template.metadata.and_then(|m| m.labels).as_ref(),
        Some(&want)
    );
    let pod: PodSpec = template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("allocator"));
    assert_ne!(pod.host_network, Some(true));
    let pod_sc = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(pod_sc.run_as_user, Some(65534));
    assert_eq!(pod_sc.run_as_group, Some(65534));
    assert_eq!(
        pod_sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "allocator");
    let sc = c
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65534));
    assert_eq!(sc.run_as_group, Some(65534));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(caps.add, None);
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let ports: Vec<_> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [7472]);
    assert_eq!(
        env_field(c, "PURELB_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(env_field(c, "POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(probe_path(c.liveness_probe.as_ref()), Some("/healthz"));
    assert_eq!(probe_path(c.readiness_probe.as_ref()), Some("/readyz"));
    // No host access of any kind.
    assert!(pod.volumes.iter().flatten().all(|v| v.host_path.is_none()));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
}

#[test]
fn the_lbnodeagent_is_one_container_with_three_capabilities_and_nothing_else() {
    let objects = kustomize(".");
    let value = find(&objects, "DaemonSet", "lbnodeagent");
    let want = BTreeMap::from([
        ("app".to_owned(), "purelb".to_owned()),
        ("component".to_owned(), "lbnodeagent".to_owned()),
    ]);
    assert_eq!(labels(&value["metadata"]), want);
    let daemonset: DaemonSet = serde_json::from_value(value.clone()).expect("DaemonSet");
    let spec = daemonset.spec.expect("spec");
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&want));
    let template = spec.template;
    assert_eq!(
        template.metadata.and_then(|m| m.labels).as_ref(),
        Some(&want)
    );
    let pod: PodSpec = template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("lbnodeagent"));
    assert_eq!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    // One container: the BGP speaker is inside it, no k8gobgp sidecar.
    assert_eq!(pod.containers.len(), 1);
    assert!(pod.init_containers.is_none());
    assert!(pod.volumes.is_none(), "no volumes, host paths least of all");
    let c = &pod.containers[0];
    assert_eq!(c.name, "lbnodeagent");
    let sc = c
        .security_context
        .clone()
        .expect("container securityContext");
    let caps = sc.capabilities.expect("capabilities");
    let added: BTreeSet<_> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
    );
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert!(sc.proc_mount.is_none() && sc.se_linux_options.is_none());
    assert!(
        sc.app_armor_profile.is_none(),
        "AppArmor stays RuntimeDefault"
    );
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    // Non-root, through file capabilities on the binary (see
    // agent_capabilities_reach_a_non_root_process_through_file_capabilities).
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65534));
    let pod_sc = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(pod_sc.run_as_user, Some(65534));
    assert_eq!(
        pod_sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    // The downward API gives it its identity.
    for (var, field) in [
        ("PURELB_NODE_NAME", "spec.nodeName"),
        ("PURELB_POD_UID", "metadata.uid"),
        ("PURELB_NAMESPACE", "metadata.namespace"),
        ("PURELB_HOST", "status.hostIP"),
    ] {
        assert_eq!(env_field(c, var).as_deref(), Some(field), "{var}");
    }
    assert_eq!(probe_path(c.liveness_probe.as_ref()), Some("/healthz"));
    assert_eq!(probe_path(c.readiness_probe.as_ref()), Some("/readyz"));
    let monitoring = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("monitoring"))
        .expect("monitoring port");
    assert_eq!(monitoring.container_port, 7472);
}

#[test]
fn defaults_and_samples_render_into_the_install_namespace() {
    let defaults = kustomize("defaults");
    assert_eq!(
        defaults.iter().map(id).collect::<Vec<_>>(),
        [("LBNodeAgent".into(), NS.into(), "default".into())]
    );
    let samples = kustomize("samples");
    let ids: BTreeSet<_> = samples.iter().map(id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            ("BGPConfiguration".into(), NS.into(), "default".into()),
            ("ServiceGroup".into(), NS.into(), "default".into()),
            ("ServiceGroup".into(), NS.into(), "remote".into()),
        ])
    );
}

#[tokio::test]
async fn everything_applies_server_side_and_reads_back() {
    let reports = install();
    let cp = shared();
    let objects: Vec<Value> = [".", "defaults", "samples"]
        .iter()
        .flat_map(|dir| kustomize(dir))
        .collect();
    let report = reports.join("");
    let applied = report
        .lines()
        .filter(|l| l.ends_with(" serverside-applied"))
        .count();
    assert_eq!(applied, objects.len(), "{report}");
    for object in &objects {
        let (kind, _, name) = id(object);
        assert!(
            report.contains(&format!("/{name} serverside-applied")),
            "{kind} {name} not applied:\n{report}"
        );
    }
    // The apiserver holds every object (validation was strict: kubectl's
    // server-side apply sends fieldValidation=Strict, so an unknown field
    // would have failed the apply).
    for dir in [".", "defaults", "samples"] {
        let path = deploy_dir().join(dir);
        let out = cp
            .kubectl(&[
                "get".as_ref(),
                "-k".as_ref(),
                path.as_os_str(),
                "-o".as_ref(),
                "name".as_ref(),
            ])
            .expect("get -k");
        let names = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            names.lines().count(),
            kustomize(dir).len(),
            "{dir}: {names}"
        );
    }
    // What the server stored is what we wrote: no admission plugin widened
    // the agent's privileges.
    let client = cp.client().await.expect("client");
    let ds = Api::<DaemonSet>::namespaced(client.clone(), NS)
        .get("lbnodeagent")
        .await
        .expect("DaemonSet");
    let pod = ds.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(pod.containers.len(), 1);
    let caps = pod.containers[0]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .expect("capabilities");
    assert_eq!(caps.add.map(|a| a.len()), Some(3));
    let ns = cp
        .kubectl(&["get", "namespace", NS, "-o", "jsonpath={.metadata.labels}"])
        .expect("namespace");
    assert!(
        String::from_utf8_lossy(&ns.stdout)
            .contains("\"pod-security.kubernetes.io/enforce\":\"privileged\"")
    );
}

/// The fallback for images without file capabilities: an overlay of the
/// user's (here in a temporary directory) with `components/agent-as-root`
/// changes the agent's user to 0 and nothing else, and the apiserver accepts
/// the result (server-side dry run).
#[tokio::test]
async fn the_agent_as_root_component_changes_only_the_user() {
    install();
    let cp = shared();
    let overlay = tempfile::tempdir().expect("tempdir");
    // kustomize takes only relative paths to other kustomizations.
    let up = overlay
        .path()
        .canonicalize()
        .expect("tempdir")
        .components()
        .count()
        - 1;
    let deploy = deploy_dir().canonicalize().expect("deploy dir");
    let relative = format!(
        "{}{}",
        "../".repeat(up),
        deploy.display().to_string().trim_start_matches('/')
    );
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!("resources: [{relative}]\ncomponents: [{relative}/components/agent-as-root]\n"),
    )
    .expect("overlay");
    let patched = kustomize_path(overlay.path());
    let plain = kustomize(".");
    assert_eq!(patched.len(), plain.len());

    let daemonset = |objects: &[Value]| -> PodSpec {
        let ds: DaemonSet =
            serde_json::from_value(find(objects, "DaemonSet", "lbnodeagent").clone())
                .expect("DaemonSet");
        ds.spec.expect("spec").template.spec.expect("pod spec")
    };
    let (root, nonroot) = (daemonset(&patched), daemonset(&plain));
    let sc = root.containers[0]
        .security_context
        .clone()
        .expect("securityContext");
    assert_eq!(
        (sc.run_as_user, sc.run_as_group, sc.run_as_non_root),
        (Some(0), Some(0), Some(false))
    );
    let pod_sc = root.security_context.clone().expect("pod securityContext");
    assert_eq!(
        (pod_sc.run_as_user, pod_sc.run_as_non_root),
        (Some(0), Some(false))
    );
    // Everything else is as in the non-root DaemonSet.
    let mut normalised = root.clone();
    normalised.security_context = nonroot.security_context.clone();
    normalised.containers[0].security_context = nonroot.containers[0].security_context.clone();
    assert_eq!(normalised, nonroot);
    for object in plain.iter().filter(|o| o["kind"] != "DaemonSet") {
        assert!(patched.contains(object), "{:?} changed", id(object));
    }

    let rendered = overlay.path().join("rendered.json");
    std::fs::write(
        &rendered,
        json!({"apiVersion": "v1", "kind": "List", "items": patched}).to_string(),
    )
    .expect("rendered");
    cp.kubectl(&[
        "apply".as_ref(),
        "--server-side".as_ref(),
        "--dry-run=server".as_ref(),
        "-f".as_ref(),
        rendered.as_os_str(),
    ])
    .expect("the apiserver accepts the agent-as-root variant");
}

// ----------------------------------------------------------------------------
// RBAC

/// A client authenticated as `system:serviceaccount:purelb-system:<sa>` with a
/// fresh token (TokenRequest), and the kubeconfig file it came from.
async fn service_account_client(cp: &ControlPlane, sa: &str, tag: &str) -> (Client, PathBuf) {
    let out = cp
        .kubectl(&["create", "token", sa, "-n", NS, "--duration=1h"])
        .expect("token for the service account");
    let token = String::from_utf8(out.stdout)
        .expect("token")
        .trim()
        .to_owned();
    let admin = std::fs::read_to_string(cp.kubeconfig_path()).expect("admin kubeconfig");
    let mut kubeconfig: Value = serde_json::from_str(&admin).expect("kubeconfig is JSON");
    kubeconfig["users"] = json!([{ "name": sa, "user": { "token": token } }]);
    kubeconfig["contexts"][0]["context"]["user"] = json!(sa);
    let path = cp.dir().join(format!("kubeconfig-sa-{sa}-{tag}"));
    std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
    let file = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    let review: SelfSubjectReview = serde_json::from_value(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .expect("review");
    let me = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectReview");
    let user = me.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(
        user.as_deref(),
        Some(format!("system:serviceaccount:{NS}:{sa}").as_str())
    );
    (client, path)
}

/// One request: verb, API group, `resource[/subresource]`, namespace (empty:
/// all namespaces, or a cluster-scoped resource), name (empty: any).
type Access = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Asks the apiserver (SelfSubjectAccessReview, as the client's user) about
/// every entry; returns the entries whose answer differs from `allowed`.
async fn mismatches(client: &Client, entries: &[Access], allowed: bool) -> Vec<String> {
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let asks = entries
        .iter()
        .map(|&(verb, group, resource, namespace, name)| {
            let api = api.clone();
            async move {
                let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
                let review: SelfSubjectAccessReview = serde_json::from_value(json!({
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {
                        "verb": verb, "group": group, "resource": resource,
                        "subresource": subresource, "namespace": namespace, "name": name,
                    }},
                }))
                .expect("review");
                let answer = api
                    .create(&PostParams::default(), &review)
                    .await
                    .expect("SelfSubjectAccessReview");
                let status = answer.status.expect("status");
                (status.allowed != allowed).then(|| {
                    format!(
                        "{} {verb} {group}/{resource}{}{} in {:?} name {name:?} ({})",
                        if allowed { "DENIED" } else { "ALLOWED" },
                        if subresource.is_empty() { "" } else { "/" },
                        subresource,
                        namespace,
                        status.reason.unwrap_or_default()
                    )
                })
            }
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn check_matrix(sa: &str, allowed: &[Access], denied: &[Access]) {
    install();
    let cp = shared();
    let (client, _) = service_account_client(cp, sa, "matrix").await;
    let mut wrong = mismatches(&client, allowed, true).await;
    wrong.extend(mismatches(&client, denied, false).await);
    assert!(wrong.is_empty(), "RBAC of {sa}:\n{}", wrong.join("\n"));
}

/// What crates/allocator does in the API, and nothing more.
#[rustfmt::skip]
const ALLOCATOR_ALLOWED: &[Access] = &[
    // Services of every namespace: watched, annotations and status patched.
    ("list", "", "services", "", ""),
    ("watch", "", "services", "", ""),
    ("get", "", "services", "tenant-a", "web"),
    ("patch", "", "services", "tenant-a", "web"),
    ("patch", "", "services/status", "tenant-a", "web"),
    // ServiceGroups of every namespace (out-of-scope ones are reported).
    ("list", "purelb.io", "servicegroups", "", ""),
    ("watch", "purelb.io", "servicegroups", "", ""),
    ("get", "purelb.io", "servicegroups", NS, "default"),
    ("patch", "purelb.io", "servicegroups/status", NS, "default"),
    ("patch", "purelb.io", "servicegroups/status", "tenant-a", "mine"),
    // Events on Services in their namespaces.
    ("create", "", "events", "tenant-a", ""),
    // Node Leases (multi-pool) and its election Lease, in the install namespace.
    ("list", "coordination.k8s.io", "leases", NS, ""),
    ("watch", "coordination.k8s.io", "leases", NS, ""),
    ("get", "coordination.k8s.io", "leases", NS, "purelb-allocator"),
    ("create", "coordination.k8s.io", "leases", NS, ""),
    ("update", "coordination.k8s.io", "leases", NS, "purelb-allocator"),
];

#[rustfmt::skip]
const ALLOCATOR_DENIED: &[Access] = &[
    ("patch", "", "events", "tenant-a", "web.1"),
    ("get", "", "secrets", NS, "netbox-client"),
    ("list", "", "secrets", NS, ""),
    ("list", "", "secrets", "", ""),
    ("create", "", "services", "tenant-a", ""),
    ("delete", "", "services", "tenant-a", "web"),
    ("update", "", "services", "tenant-a", "web"),
    ("update", "", "services/status", "tenant-a", "web"),
    ("create", "purelb.io", "servicegroups", NS, ""),
    ("update", "purelb.io", "servicegroups", NS, "default"),
    ("patch", "purelb.io", "servicegroups", NS, "default"),
    ("delete", "purelb.io", "servicegroups", NS, "default"),
    ("list", "purelb.io", "lbnodeagents", "", ""),
    // Leases: no other Lease written, none deleted, none outside its namespace.
    ("update", "coordination.k8s.io", "leases", NS, "purelb-node-n1"),
    ("patch", "coordination.k8s.io", "leases", NS, "purelb-allocator"),
    ("delete", "coordination.k8s.io", "leases", NS, "purelb-allocator"),
    ("delete", "coordination.k8s.io", "leases", NS, "purelb-node-n1"),
    ("list", "coordination.k8s.io", "leases", "", ""),
    ("create", "coordination.k8s.io", "leases", "kube-system", ""),
    ("update", "coordination.k8s.io", "leases", "default", "purelb-allocator"),
    ("get", "", "nodes", "", "n1"),
    ("list", "discovery.k8s.io", "endpointslices", "", ""),
    ("list", "", "pods", "", ""),
    ("list", "bgp.purelb.io", "configs", NS, ""),
    ("create", "bgp.purelb.io", "bgpnodestatuses", "", ""),
    ("create", "", "serviceaccounts/token", NS, "lbnodeagent"),
    ("create", "", "pods/exec", NS, "x"),
    ("create", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "purelb:allocator"),
    ("impersonate", "", "users", "", "admin"),
];

/// What lbnodeagent (with the embedded BGP speaker) does in the API: the
/// brief's list, checked against crates/agent as it is being written (it
/// renews its Lease with a merge patch, reads ServiceGroups in the install
/// namespace only, and writes BGP status with server-side apply).
#[rustfmt::skip]
const AGENT_ALLOWED: &[Access] = &[
    ("get", "", "services", "tenant-a", "web"),
    ("list", "", "services", "", ""),
    ("watch", "", "services", "", ""),
    ("patch", "", "services", "tenant-a", "web"),
    ("get", "discovery.k8s.io", "endpointslices", "tenant-a", "web-x"),
    ("list", "discovery.k8s.io", "endpointslices", "", ""),
    ("watch", "discovery.k8s.io", "endpointslices", "", ""),
    ("get", "", "nodes", "", "n1"),
    ("list", "", "nodes", "", ""),
    ("watch", "", "nodes", "", ""),
    ("get", "purelb.io", "servicegroups", NS, "default"),
    ("list", "purelb.io", "servicegroups", NS, ""),
    ("watch", "purelb.io", "servicegroups", NS, ""),
    ("get", "purelb.io", "lbnodeagents", "tenant-a", "mine"),
    ("list", "purelb.io", "lbnodeagents", "", ""),
    ("watch", "purelb.io", "lbnodeagents", "", ""),
    ("create", "", "events", "tenant-a", ""),
    // The election: its own Lease and every node's, in the install namespace.
    ("get", "coordination.k8s.io", "leases", NS, "purelb-node-n1"),
    ("list", "coordination.k8s.io", "leases", NS, ""),
    ("watch", "coordination.k8s.io", "leases", NS, ""),
    ("create", "coordination.k8s.io", "leases", NS, ""),
    ("patch", "coordination.k8s.io", "leases", NS, "purelb-node-n1"),
    ("delete", "coordination.k8s.io", "leases", NS, "purelb-node-n1"),
    // BGPConfiguration in the install namespace, and its status.
    ("get", "bgp.purelb.io", "configs", NS, "default"),
    ("list", "bgp.purelb.io", "configs", NS, ""),
    ("watch", "bgp.purelb.io", "configs", NS, ""),
    ("patch", "bgp.purelb.io", "configs/status", NS, "default"),
    // Its node's BGPNodeStatus (cluster-scoped).
    ("get", "bgp.purelb.io", "bgpnodestatuses", "", "n1"),
    ("create", "bgp.purelb.io", "bgpnodestatuses", "", ""),
    ("patch", "bgp.purelb.io", "bgpnodestatuses", "", "n1"),
    ("get", "bgp.purelb.io", "bgpnodestatuses/status", "", "n1"),
    ("patch", "bgp.purelb.io", "bgpnodestatuses/status", "", "n1"),
    // MD5 passwords (authPasswordSecretRef), in the install namespace.
    ("get", "", "secrets", NS, "bgp-auth"),
    ("list", "", "secrets", NS, ""),
    ("watch", "", "secrets", NS, ""),
];

#[rustfmt::skip]
const AGENT_DENIED: &[Access] = &[
    // Writes it never makes: everything goes through patches (merge or server-side apply).
    ("update", "", "services", "tenant-a", "web"),
    ("patch", "", "events", "tenant-a", "web.1"),
    ("update", "coordination.k8s.io", "leases", NS, "purelb-node-n1"),
    ("update", "bgp.purelb.io", "configs/status", NS, "default"),
    ("update", "bgp.purelb.io", "bgpnodestatuses", "", "n1"),
    ("update", "bgp.purelb.io", "bgpnodestatuses/status", "", "n1"),
    ("create", "", "services", "tenant-a", ""),
    ("delete", "", "services", "tenant-a", "web"),
    ("patch", "", "services/status", "tenant-a", "web"),
    ("update", "", "services/status", "tenant-a", "web"),
    ("get", "", "secrets", "tenant-a", "bgp-auth"),
    ("get", "", "secrets", "kube-system", "bgp-auth"),
    ("list", "", "secrets", "", ""),
    ("create", "", "secrets", NS, ""),
    ("update", "", "secrets", NS, "bgp-auth"),
    ("delete", "", "nodes", "", "n1"),
    ("update", "", "nodes", "", "n1"),
    ("patch", "", "nodes", "", "n1"),
    ("patch", "", "nodes/status", "", "n1"),
    // ServiceGroups: read in the install namespace only, never written.
    ("list", "purelb.io", "servicegroups", "", ""),
    ("get", "purelb.io", "servicegroups", "tenant-a", "mine"),
    ("create", "purelb.io", "servicegroups", NS, ""),
    ("update", "purelb.io", "servicegroups", NS, "default"),
    ("patch", "purelb.io", "servicegroups", NS, "default"),
    ("delete", "purelb.io", "servicegroups", NS, "default"),
    ("patch", "purelb.io", "servicegroups/status", NS, "default"),
    ("create", "purelb.io", "lbnodeagents", NS, ""),
    ("update", "purelb.io", "lbnodeagents", NS, "default"),
    ("delete", "purelb.io", "lbnodeagents", NS, "default"),
    ("get", "coordination.k8s.io", "leases", "kube-system", "kube-controller-manager"),
    ("update", "coordination.k8s.io", "leases", "kube-node-lease", "n1"),
    ("list", "coordination.k8s.io", "leases", "", ""),
    ("create", "bgp.purelb.io", "configs", NS, ""),
    ("update", "bgp.purelb.io", "configs", NS, "default"),
    ("delete", "bgp.purelb.io", "configs", NS, "default"),
    ("get", "bgp.purelb.io", "configs", "tenant-a", "default"),
    ("delete", "bgp.purelb.io", "bgpnodestatuses", "", "n1"),
    ("list", "", "pods", "", ""),
    ("create", "", "pods/exec", NS, "x"),
    ("get", "", "configmaps", NS, "x"),
    ("create", "", "serviceaccounts/token", NS, "allocator"),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin"),
    ("impersonate", "", "users", "", "admin"),
];

#[tokio::test]
async fn the_allocator_service_account_may_do_what_the_allocator_does_and_no_more() {
    check_matrix("allocator", ALLOCATOR_ALLOWED, ALLOCATOR_DENIED).await;
}

/// The agent cannot run yet (it is being written), so its RBAC is checked as
/// this matrix only.
#[tokio::test]
async fn the_lbnodeagent_service_account_may_do_what_the_agent_does_and_no_more() {
    check_matrix("lbnodeagent", AGENT_ALLOWED, AGENT_DENIED).await;
}

/// The allocator binary, as the `allocator` service account, with leader
/// election on: it takes and renews its Lease, reads Services, ServiceGroups
/// and Leases, brands and addresses a Service, records an Event and writes
/// the ServiceGroup's status; nothing is refused.
#[tokio::test]
async fn the_allocator_allocates_under_its_service_account() {
    install();
    let cp = shared();
    let admin = cp.client().await.expect("admin client");
    let (_, kubeconfig) = service_account_client(cp, "allocator", "run").await;
    let ns = cp.test_namespace("deploy-rbac").await.expect("namespace");

    let group = "deploy-rbac";
    apply_group(
        &admin,
        NS,
        group,
        json!({"local": {"v4pools": [
            {"subnet": "198.18.200.0/24", "pool": "198.18.200.10-198.18.200.20"}]}}),
    )
    .await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = cp.dir().join(format!("allocator-deploy-rbac-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_allocator"));
    command
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", NS, "--port", &port.to_string()])
        .args(["--identity", "deploy-rbac", "--lease-duration", "3"])
        .env_remove("KUBECONFIG")
        .env("DEFAULT_ANNOUNCER", "PureLB")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file);
    let _allocator = BoundChild::spawn(command).expect("allocator starts");
    let _show_log = LogOnPanic(log.clone());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    create_service(&admin, ns.name(), "web", ServiceSpec::group(group)).await;
    let ips = wait_for_addresses(&admin, ns.name(), "web", 1).await;
    assert_eq!(
        ips,
        ["198.18.200.10".parse::<std::net::IpAddr>().unwrap()],
        "{}",
        log_text()
    );
    let web = Api::<Service>::namespaced(admin.clone(), ns.name())
        .get("web")
        .await
        .expect("Service");
    assert_eq!(
        common::annotation(&web, "purelb.io/allocated-by").as_deref(),
        Some("PureLB")
    );
    common::wait_for_event(&admin, ns.name(), "web", "AddressAssigned", "198.18.200.10").await;

    let groups: Api<ServiceGroup> = Api::namespaced(admin.clone(), NS);
    eventually("the ServiceGroup's status", || async {
        let g = groups.get(group).await.ok()?;
        let status = serde_json::to_value(g.status?).ok()?;
        (status["allocatedIPv4"] == 1).then_some(())
    })
    .await;

    // Its Lease: created, then renewed (an update by name).
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let first = eventually("the allocator's Lease", || async {
        let spec = leases.get_opt("purelb-allocator").await.ok()??.spec?;
        (spec.holder_identity.as_deref() == Some("deploy-rbac")).then_some(spec.renew_time?)
    })
    .await;
    eventually("a renewal of the allocator's Lease", || async {
        let spec = leases.get_opt("purelb-allocator").await.ok()??.spec?;
        (spec.renew_time? != first).then_some(())
    })
    .await;

    let text = log_text();
    for refused in ["forbidden", "Forbidden", "403"] {
        assert!(
            !text.contains(refused),
            "the allocator was refused something:\n{text}"
        );
    }
}

/// Prints a process's log when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "last lines of {}:\n{}",
                self.0.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

// ----------------------------------------------------------------------------
// The agent's privilege model on this kernel

const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const AGENT_CAPS: [u32; 3] = [CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE];

fn mask(caps: &[u32]) -> u32 {
    caps.iter().fold(0, |m, c| m | 1 << c)
}

/// `setcap <caps>=ep`: a `vfs_cap_data` revision 2 in `security.capability`.
fn set_file_capabilities(path: &Path, caps: &[u32]) {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;
    let words = [
        VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
        mask(caps),
        0,
        0,
        0,
    ];
    let value: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: both strings are NUL-terminated and value outlives the call.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

/// Execs `binary /proc/self/status` the way runc starts a container process
/// for `runAsUser: 65534`, `capabilities: {drop: [ALL], add: <bounding>}` and
/// `allowPrivilegeEscalation: false`: bounding set = the added capabilities,
/// user 65534 keeping them as permitted and effective (containerd, CRI-O and
/// Docker all put added capabilities there), no_new_privs, execve. Returns
/// the child's status file, or the exec error.
fn exec_like_a_container_runtime(binary: &Path, bounding: &[u32]) -> std::io::Result<String> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let bounding: Vec<u32> = bounding.to_vec();
    let keep = mask(&bounding);
    let mut command = Command::new(binary);
    command.arg("/proc/self/status").stdin(Stdio::null());
    // SAFETY: only raw system calls between fork and exec, no allocation.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_long| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            for cap in 0..64u32 {
                if cap >= 32 || keep & (1 << cap) == 0 {
                    // Past the kernel's last capability this is EINVAL: ignored.
                    libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
                }
            }
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into())?;
            check(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534))?;
            check(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534))?;
            let header = CapHeader {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [
                CapData {
                    effective: keep,
                    permitted: keep,
                    inheritable: 0,
                },
                CapData {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
            ];
            check(libc::syscall(
                libc::SYS_capset,
                &header as *const CapHeader,
                data.as_ptr(),
            ))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())
        });
    }
    let out = command.output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
}

/// Why deploy/base/lbnodeagent.yaml can say `runAsNonRoot: true` and
/// `allowPrivilegeEscalation: false` and still give the agent its three
/// capabilities: a binary with file capabilities (as the Dockerfile makes it)
/// gets them as user 65534 under no_new_privs; the same binary without them
/// gets nothing; and a DaemonSet that forgot one in `add` fails to start
/// instead of running crippled.
#[test]
fn agent_capabilities_reach_a_non_root_process_through_file_capabilities() {
    if !testbed::netlab::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let with_caps = dir.path().join("lbnodeagent");
    let without = dir.path().join("plain");
    for path in [&with_caps, &without] {
        std::fs::copy("/bin/cat", path).expect("a binary to stand in for the agent");
    }
    set_file_capabilities(&with_caps, &AGENT_CAPS);

    let status = exec_like_a_container_runtime(&with_caps, &AGENT_CAPS).expect("exec");
    assert_eq!(
        status_field(&status, "Uid").split_whitespace().next(),
        Some("65534")
    );
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    let effective = u64::from_str_radix(&status_field(&status, "CapEff"), 16).expect("hex");
    assert_eq!(effective, u64::from(mask(&AGENT_CAPS)), "{status}");

    let status = exec_like_a_container_runtime(&without, &AGENT_CAPS).expect("exec");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");

    let missing = exec_like_a_container_runtime(&with_caps, &[CAP_NET_RAW, CAP_NET_BIND_SERVICE])
        .expect_err("exec must fail without NET_ADMIN in the bounding set");
    assert_eq!(missing.raw_os_error(), Some(libc::EPERM), "{missing}");
}
