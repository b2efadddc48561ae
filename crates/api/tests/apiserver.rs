//! The generated CRDs on a real kube-apiserver: they install, PureLB's own objects
//! apply unchanged, the validation rules reject what the spec says with its
//! messages, and kubectl prints the spec's columns.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use purelb_api::crd::{BGPConfiguration, BGPNodeStatus, LBNodeAgent, ServiceGroup};
use serde_json::{Value, json};

/// Applies every CRD of `deploy/crds` (idempotent) and waits until each is Established.
fn install_crds() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crds"));
    testbed::controlplane::shared()
        .install_crds(dir)
        .expect("CRDs install and become Established");
}

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "ServiceGroup" => ApiResource::erase::<ServiceGroup>(&()),
        "LBNodeAgent" => ApiResource::erase::<LBNodeAgent>(&()),
        "BGPConfiguration" => ApiResource::erase::<BGPConfiguration>(&()),
        "BGPNodeStatus" => ApiResource::erase::<BGPNodeStatus>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        other => panic!("no test mapping for kind {other}"),
    }
}

fn api_for(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = resource_of(kind);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// True when every field of `sent` is in `stored` with the same value (defaults may be added).
fn is_kept(sent: &Value, stored: &Value) -> bool {
    match (sent, stored) {
        (Value::Object(sent), Value::Object(stored)) => sent
            .iter()
            .all(|(key, value)| stored.get(key).is_some_and(|kept| is_kept(value, kept))),
        (Value::Array(sent), Value::Array(stored)) => {
            sent.len() == stored.len() && sent.iter().zip(stored).all(|(a, b)| is_kept(a, b))
        }
        _ => sent == stored,
    }
}

#[tokio::test]
async fn all_four_crds_install_and_become_established() {
    let client = testbed::controlplane::shared()
        .client()
        .await
        .expect("client");
    install_crds();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut names = Vec::new();
    for crd in purelb_api::crd::all().expect("CRDs serialise") {
        let name = crd.metadata.name.expect("CRDs are named");
        let stored = crds.get(&name).await.expect("CRD installed");
        let conditions = stored.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is Established"
        );
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "bgpnodestatuses.bgp.purelb.io",
            "configs.bgp.purelb.io",
            "lbnodeagents.purelb.io",
            "servicegroups.purelb.io"
        ]
    );
}

#[tokio::test]
async fn every_upstream_sample_applies_unchanged() {
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    install_crds();
    let ns = cp.test_namespace("samples").await.expect("namespace");
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    let mut applied = 0;
    for file in [
        "local-lbnodeagent.yaml",
        "local-servicegroup.yaml",
        "sample-bgpconfig.yaml",
        "sample-nginx-lb.yaml",
    ] {
        let text = std::fs::read_to_string(samples.join(file)).expect("sample readable");
        for document in text
            .split("\n---")
            .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
        {
            let sent: Value = serde_saphyr::from_str(document).expect("sample is YAML");
            let kind = sent["kind"].as_str().expect("sample has a kind").to_owned();
            let mut object: DynamicObject =
                serde_json::from_value(sent.clone()).expect("sample is an object");
            // The samples name purelb-system; each test gets its own namespace instead.
            object.metadata.namespace = Some(ns.name().to_owned());
            let api = api_for(&client, &kind, Some(ns.name()));
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{file}: {kind} rejected: {e}"));
            let name = object.metadata.name.clone().expect("sample is named");
            let stored =
                serde_json::to_value(api.get(&name).await.expect("read back")).expect("json");
            assert!(
                is_kept(&sent["spec"], &stored["spec"]),
                "{file}: {kind} lost fields\nsent:   {}\nstored: {}",
                sent["spec"],
                stored["spec"]
            );
            applied += 1;
        }
    }
    assert_eq!(applied, 4);
}

/// Creates `object` with dry run; `Ok` when accepted, else the apiserver's message.
async fn dry_run(client: &Client, namespace: &str, object: Value) -> Result<Value, String> {
    let kind = object["kind"]
        .as_str()
        .expect("test object has a kind")
        .to_owned();
    let scoped = if kind == "BGPNodeStatus" {
        None
    } else {
        Some(namespace)
    };
    let api = api_for(client, &kind, scoped);
    let object: DynamicObject = serde_json::from_value(object).expect("test object is an object");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&params, &object).await {
        Ok(created) => Ok(serde_json::to_value(created).expect("json")),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(other) => panic!("transport error: {other}"),
    }
}

fn service_group(spec: Value) -> Value {
    json!({"apiVersion": "purelb.io/v2", "kind": "ServiceGroup", "metadata": {"name": "sg"}, "spec": spec})
}

fn lb_node_agent(spec: Value) -> Value {
    json!({"apiVersion": "purelb.io/v2", "kind": "LBNodeAgent", "metadata": {"name": "lbna"}, "spec": spec})
}

fn bgp_configuration(spec: Value) -> Value {
    json!({"apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration", "metadata": {"name": "bgp"}, "spec": spec})
}

fn v4_local() -> Value {
    json!({"v4pools": [{"pool": "192.168.1.240/29", "subnet": "192.168.1.0/24"}]})
}

#[tokio::test]
async fn validation_rejects_what_the_spec_rejects_with_its_messages() {
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    install_crds();
    let ns = cp.test_namespace("validation").await.expect("namespace");
    let one_of = "exactly one of local, remote, netbox or external must be specified";
    let pool = |aggregation: &str| {
        service_group(
            json!({"remote": {"v4pool": {"pool": "10.0.0.1-10.0.0.9", "subnet": "10.0.0.0/24", "aggregation": aggregation}}}),
        )
    };
    let rejected: Vec<(&str, Value, &str)> = vec![
        ("no pool type", service_group(json!({})), one_of),
        (
            "local and remote",
            service_group(json!({"local": v4_local(), "remote": v4_local()})),
            one_of,
        ),
        (
            "netbox and external",
            service_group(
                json!({"netbox": {"url": "https://netbox", "tenant": "t"}, "external": {"provider": "p", "announce": "local"}}),
            ),
            one_of,
        ),
        (
            "enforceNamespaces without namespaces",
            service_group(json!({"local": v4_local(), "enforceNamespaces": true})),
            "enforceNamespaces requires a non-empty namespaces list, otherwise it silently enforces nothing",
        ),
        (
            "namespaceDefault with an empty list",
            service_group(json!({"local": v4_local(), "namespaceDefault": true, "namespaces": []})),
            "namespaceDefault requires a non-empty namespaces list, otherwise it defaults nothing",
        ),
        (
            "namespace not a DNS label",
            service_group(json!({"local": v4_local(), "namespaces": ["Bad_NS"]})),
            "spec.namespaces[0]",
        ),
        (
            "namespace longer than 63",
            service_group(json!({"local": v4_local(), "namespaces": ["a".repeat(64)]})),
            "spec.namespaces[0]",
        ),
        (
            "more than 1024 namespaces",
            service_group(
                json!({"local": v4_local(), "namespaces": (0..1025).map(|i| format!("ns{i}")).collect::<Vec<_>>()}),
            ),
            "spec.namespaces: Too many",
        ),
        (
            "aggregation without slash",
            pool("24"),
            "spec.remote.v4pool.aggregation",
        ),
        (
            "aggregation /7",
            pool("/7"),
            "spec.remote.v4pool.aggregation",
        ),
        (
            "aggregation /129",
            pool("/129"),
            "spec.remote.v4pool.aggregation",
        ),
        (
            "pool without subnet",
            service_group(json!({"local": {"v4pool": {"pool": "10.0.0.1/32"}}})),
            "spec.local.v4pool.subnet: Required value",
        ),
        (
            "netbox without tenant",
            service_group(json!({"netbox": {"url": "https://netbox"}})),
            "spec.netbox.tenant: Required value",
        ),
        (
            "netbox with empty url",
            service_group(json!({"netbox": {"url": "", "tenant": "t"}})),
            "spec.netbox.url",
        ),
        (
            "external without provider",
            service_group(json!({"external": {"announce": "local"}})),
            "spec.external.provider: Required value",
        ),
        (
            "external with empty provider",
            service_group(json!({"external": {"provider": "", "announce": "local"}})),
            "spec.external.provider",
        ),
        (
            "external announce not local/remote",
            service_group(json!({"external": {"provider": "p", "announce": "both"}})),
            "spec.external.announce: Unsupported value",
        ),
        (
            "garp count 0",
            lb_node_agent(json!({"local": {"garpConfig": {"count": 0}}})),
            "spec.local.garpConfig.count",
        ),
        (
            "garp count 11",
            lb_node_agent(json!({"local": {"garpConfig": {"count": 11}}})),
            "spec.local.garpConfig.count",
        ),
        (
            "negative lifetime",
            lb_node_agent(
                json!({"local": {"addressConfig": {"localInterface": {"validLifetime": -1}}}}),
            ),
            "spec.local.addressConfig.localInterface.validLifetime",
        ),
        (
            "BGP without global",
            bgp_configuration(json!({})),
            "spec.global: Required value",
        ),
        (
            "ASN above 32 bits",
            bgp_configuration(json!({"global": {"asn": 4_294_967_296u64}})),
            "spec.global.asn",
        ),
        (
            "negative peer ASN",
            bgp_configuration(
                json!({"global": {"asn": 65000}, "neighbors": [{"config": {"peerAsn": -1}}]}),
            ),
            "spec.neighbors[0].config.peerAsn",
        ),
        (
            "BGP global without asn",
            bgp_configuration(json!({"global": {}})),
            "spec.global.asn: Required value",
        ),
        (
            "neighbor without peerAsn",
            bgp_configuration(
                json!({"global": {"asn": 65000}, "neighbors": [{"config": {"neighborAddress": "192.0.2.1"}}]}),
            ),
            "spec.neighbors[0].config.peerAsn: Required value",
        ),
        (
            "heartbeat below 10",
            bgp_configuration(
                json!({"global": {"asn": 65000, "nodeStatus": {"heartbeatSeconds": 5}}}),
            ),
            "spec.global.nodeStatus.heartbeatSeconds",
        ),
        (
            "bad community",
            bgp_configuration(
                json!({"global": {"asn": 65000}, "netlinkExport": {"rules": [{"name": "r", "communityList": ["65000:abc"]}]}}),
            ),
            "spec.netlinkExport.rules[0].communityList[0]",
        ),
        (
            "bad large community",
            bgp_configuration(
                json!({"global": {"asn": 65000}, "vrfs": [{"name": "v", "netlinkExport": {"largeCommunityList": ["1:2"]}}]}),
            ),
            "spec.vrfs[0].netlinkExport.largeCommunityList[0]",
        ),
    ];
    let mut failures = Vec::new();
    for (case, object, expected) in rejected {
        match dry_run(&client, ns.name(), object).await {
            Ok(_) => failures.push(format!("{case}: accepted, expected {expected:?}")),
            Err(message) if message.contains(expected) => {}
            Err(message) => {
                failures.push(format!("{case}: message {message:?} lacks {expected:?}"))
            }
        }
    }

    let accepted: Vec<(&str, Value)> = vec![
        ("local pool", service_group(json!({"local": v4_local()}))),
        (
            "netbox pool",
            service_group(
                json!({"netbox": {"url": "https://netbox", "tenant": "t", "aggregation": "/32"}}),
            ),
        ),
        (
            "external pool",
            service_group(json!({"external": {"provider": "p", "announce": "remote"}})),
        ),
        ("aggregation default", pool("default")),
        ("aggregation /8", pool("/8")),
        ("aggregation /128", pool("/128")),
        (
            "enforced namespaces",
            service_group(
                json!({"local": v4_local(), "enforceNamespaces": true, "namespaceDefault": true, "namespaces": ["team-a"]}),
            ),
        ),
        ("empty LBNodeAgent", lb_node_agent(json!({}))),
        (
            "garp count 10",
            lb_node_agent(json!({"local": {"garpConfig": {"count": 10}}})),
        ),
        (
            "4-byte ASN",
            bgp_configuration(
                json!({"global": {"asn": 4_200_000_000u32}, "neighbors": [{"config": {"neighborAddress": "192.0.2.1", "peerAsn": 4_200_000_001u32}}]}),
            ),
        ),
        (
            "communities",
            bgp_configuration(
                json!({"global": {"asn": 65000}, "netlinkExport": {"rules": [{"name": "r", "communityList": ["65000:100"], "largeCommunityList": ["65000:1:2"]}]}}),
            ),
        ),
    ];
    for (case, object) in accepted {
        if let Err(message) = dry_run(&client, ns.name(), object).await {
            failures.push(format!("{case}: rejected: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "validation differs from the spec:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn schema_defaults_are_the_specs() {
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    install_crds();
    let ns = cp.test_namespace("defaults").await.expect("namespace");

    let agent = dry_run(
        &client,
        ns.name(),
        lb_node_agent(json!({"local": {"garpConfig": {}}})),
    )
    .await
    .expect("accepted");
    let local = &agent["spec"]["local"];
    assert_eq!(local["localInterface"], "default");
    assert_eq!(local["dummyInterface"], "kube-lb0");
    assert_eq!(
        local["garpConfig"],
        json!({"enabled": true, "initialDelay": "100ms", "count": 3, "interval": "500ms", "verifyBeforeSend": true})
    );
    let bare = dry_run(&client, ns.name(), lb_node_agent(json!({"local": {}})))
        .await
        .expect("accepted");
    assert!(
        bare["spec"]["local"].get("garpConfig").is_none(),
        "no garpConfig unless asked for"
    );

    let group = dry_run(
        &client,
        ns.name(),
        service_group(json!({"external": {"provider": "p", "announce": "local"}})),
    )
    .await
    .expect("accepted");
    assert_eq!(
        group["spec"]["external"]["socket"],
        "/var/run/purelb/ipam.sock"
    );
    assert_eq!(group["spec"]["enforceNamespaces"], false);
    assert_eq!(group["spec"]["namespaceDefault"], false);

    let bgp = dry_run(
        &client,
        ns.name(),
        bgp_configuration(json!({"global": {"asn": 65000}, "neighbors": [{"config": {"peerAsn": 1, "authPasswordSecretRef": {"key": "k"}}}]})),
    )
    .await
    .expect("accepted");
    assert_eq!(
        bgp["spec"]["neighbors"][0]["config"]["authPasswordSecretRef"],
        json!({"name": "", "key": "k"})
    );
}

/// The header line of `kubectl get`, split into column names.
fn header(output: &str) -> Vec<String> {
    output
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn kubectl_prints_the_specs_columns() {
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    install_crds();
    let ns = cp.test_namespace("columns").await.expect("namespace");
    let status_apply = PatchParams::apply("purelb-allocator").force();

    let groups: Api<ServiceGroup> = Api::namespaced(client.clone(), ns.name());
    let group: ServiceGroup = serde_json::from_value(service_group(
        json!({"local": v4_local(), "namespaces": ["team-a"]}),
    ))
    .expect("sg");
    groups
        .create(&PostParams::default(), &group)
        .await
        .expect("sg created");
    let status = json!({
        "apiVersion": ServiceGroup::api_version(&()), "kind": ServiceGroup::kind(&()),
        "status": {"announce": "Local", "ipam": "Cluster", "addresses": ["192.168.1.240/29"],
                   "allocatedIPv4": 2, "allocatedIPv6": 0, "availableIPv4": 6, "boundNamespaces": ["team-a"]}
    });
    groups
        .patch_status("sg", &status_apply, &Patch::Apply(&status))
        .await
        .expect("sg status");

    let agents: Api<LBNodeAgent> = Api::namespaced(client.clone(), ns.name());
    agents
        .create(
            &PostParams::default(),
            &serde_json::from_value(lb_node_agent(json!({"local": {}}))).expect("lbna"),
        )
        .await
        .expect("lbna created");
    let configs: Api<BGPConfiguration> = Api::namespaced(client.clone(), ns.name());
    configs
        .create(
            &PostParams::default(),
            &serde_json::from_value(bgp_configuration(json!({"global": {"asn": 65000}})))
                .expect("bgp"),
        )
        .await
        .expect("bgpconfig created");
    let node_statuses: Api<BGPNodeStatus> = Api::all(client.clone());
    let node = format!("{}-node", ns.name());
    node_statuses
        .create(
            &PostParams::default(),
            &BGPNodeStatus::new(&node, Default::default()),
        )
        .await
        .expect("bgpns created");
    let status = json!({
        "apiVersion": BGPNodeStatus::api_version(&()), "kind": BGPNodeStatus::kind(&()),
        "status": {"nodeName": node, "routerID": "192.0.2.7", "healthy": true, "neighborCount": 2,
                   "lastUpdated": "2026-01-01T00:00:00Z"}
    });
    node_statuses
        .patch_status(&node, &status_apply, &Patch::Apply(&status))
        .await
        .expect("bgpns status");

    let get = |args: &[&str]| {
        let output = cp.kubectl(args).expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let sg = get(&["get", "sg", "-n", ns.name()]);
    assert_eq!(
        header(&sg),
        [
            "NAME",
            "ANNOUNCE",
            "IPAM",
            "ALLOCATED-V4",
            "ALLOCATED-V6",
            "AGE"
        ],
        "{sg}"
    );
    assert!(
        sg.lines().nth(1).is_some_and(|row| row
            .split_whitespace()
            .take(5)
            .eq(["sg", "Local", "Cluster", "2", "0"])),
        "{sg}"
    );
    let wide = get(&["get", "sgs", "-n", ns.name(), "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "ANNOUNCE",
            "IPAM",
            "ALLOCATED-V4",
            "ALLOCATED-V6",
            "ADDRESSES",
            "AVAILABLE-V4",
            "AVAILABLE-V6",
            "NAMESPACES",
            "ENFORCED",
            "BOUND",
            "AGE"
        ],
        "{wide}"
    );
    let lbna = get(&["get", "lbna", "-n", ns.name()]);
    assert_eq!(header(&lbna), ["NAME", "AGE"], "{lbna}");
    assert_eq!(
        header(&get(&["get", "lbnas", "-n", ns.name()])),
        ["NAME", "AGE"]
    );
    let bgpconfig = get(&["get", "bgpconfig", "-n", ns.name()]);
    assert_eq!(header(&bgpconfig), ["NAME", "AGE"], "{bgpconfig}");
    let bgpns = get(&["get", "bgpns", &node]);
    assert_eq!(
        header(&bgpns),
        [
            "NAME",
            "NODE",
            "ROUTERID",
            "HEALTHY",
            "NEIGHBORS",
            "LASTUPDATED",
            "AGE"
        ],
        "{bgpns}"
    );
    assert!(
        bgpns
            .lines()
            .nth(1)
            .is_some_and(|row| row.split_whitespace().take(5).eq([
                node.as_str(),
                node.as_str(),
                "192.0.2.7",
                "true",
                "2"
            ])),
        "{bgpns}"
    );
}
