//! The allocator on a real control plane: one allocator process serves every
//! test here; each test has its own namespace, ServiceGroups and address ranges.

mod common;
#[path = "common/netbox_double.rs"]
mod netbox_double;

use std::net::IpAddr;
use std::sync::OnceLock;

use common::*;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use purelb_api::crd::ServiceGroup;
use serde_json::json;

const INSTALL_NAMESPACE: &str = "purelb-system";

fn allocator() -> &'static Allocator {
    static ALLOCATOR: OnceLock<Allocator> = OnceLock::new();
    ALLOCATOR.get_or_init(|| {
        prepare(INSTALL_NAMESPACE);
        Allocator::start(
            INSTALL_NAMESPACE,
            "shared",
            &[("NETBOX_USER_TOKEN", netbox_double::V1_TOKEN)],
        )
    })
}

/// A client, the test's namespace, and the running allocator.
async fn setup(prefix: &str) -> (Client, testbed::controlplane::TestNamespace) {
    allocator();
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.test_namespace(prefix).await.expect("namespace");
    (client, ns)
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP")
}

async fn service(client: &Client, namespace: &str, name: &str) -> Service {
    Api::<Service>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .expect("Service exists")
}

async fn group_status(client: &Client, name: &str) -> serde_json::Value {
    let groups: Api<ServiceGroup> = Api::namespaced(client.clone(), INSTALL_NAMESPACE);
    let group = groups.get(name).await.expect("ServiceGroup exists");
    serde_json::to_value(group.status).expect("json")
}

#[tokio::test]
async fn allocates_the_first_free_ipv4_address_and_brands_the_service() {
    let (client, ns) = setup("v4").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pools": [
        {"pool": "198.18.1.10-198.18.1.12", "subnet": "198.18.1.0/24"}]}}),
    )
    .await;
    create_service(&client, ns.name(), "web", ServiceSpec::group(&group)).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "web", 1).await,
        [ip("198.18.1.10")],
        "{}",
        allocator().log_tail()
    );

    let web = service(&client, ns.name(), "web").await;
    let entry = &web
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()[0];
    assert_eq!(entry.ip_mode.as_deref(), Some("VIP"));
    assert_eq!(
        annotation(&web, "purelb.io/allocated-by").as_deref(),
        Some("PureLB")
    );
    assert_eq!(
        annotation(&web, "purelb.io/allocated-from").as_deref(),
        Some(group.as_str())
    );
    assert_eq!(
        annotation(&web, "purelb.io/pool-type").as_deref(),
        Some("local")
    );
    wait_for_event(&client, ns.name(), "web", "AddressAssigned", "198.18.1.10").await;

    create_service(&client, ns.name(), "second", ServiceSpec::group(&group)).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "second", 1).await,
        [ip("198.18.1.11")]
    );
    let status = eventually("ServiceGroup status counts two", || async {
        let status = group_status(&client, &group).await;
        (status["allocatedIPv4"] == 2).then_some(status)
    })
    .await;
    assert_eq!(status["announce"], "Local");
    assert_eq!(status["ipam"], "Cluster");
    assert_eq!(status["availableIPv4"], 1);
    assert_eq!(status["addresses"], json!(["198.18.1.10-198.18.1.12"]));
}

#[tokio::test]
async fn dual_stack_gets_one_address_per_family_in_family_order() {
    let (client, ns) = setup("dual").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"remote": {
        "v4pool": {"pool": "198.18.2.0/30", "subnet": "198.18.2.0/24"},
        "v6pool": {"pool": "fd00:18:2::/126", "subnet": "fd00:18:2::/64"}}}),
    )
    .await;
    let mut spec = ServiceSpec::group(&group);
    spec.families = vec!["IPv6", "IPv4"];
    create_service(&client, ns.name(), "both", spec).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "both", 2).await,
        [ip("fd00:18:2::"), ip("198.18.2.0")],
        "{}",
        allocator().log_tail()
    );
    let both = service(&client, ns.name(), "both").await;
    assert_eq!(
        annotation(&both, "purelb.io/pool-type").as_deref(),
        Some("remote")
    );
}

#[tokio::test]
async fn specific_addresses_are_honoured_or_refused_with_a_reason() {
    let (client, ns) = setup("specific").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.3.0/28", "subnet": "198.18.3.0/24"}}}),
    )
    .await;
    create_service(
        &client,
        ns.name(),
        "pinned",
        ServiceSpec::default().with("purelb.io/addresses", "198.18.3.7"),
    )
    .await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "pinned", 1).await,
        [ip("198.18.3.7")]
    );
    let pinned = service(&client, ns.name(), "pinned").await;
    assert_eq!(
        annotation(&pinned, "purelb.io/allocated-from").as_deref(),
        Some(group.as_str())
    );

    create_service(
        &client,
        ns.name(),
        "outside",
        ServiceSpec::default().with("purelb.io/addresses", "198.51.100.99"),
    )
    .await;
    let message = wait_for_event(
        &client,
        ns.name(),
        "outside",
        "AllocationFailed",
        "198.51.100.99",
    )
    .await;
    assert!(
        message.contains("does not belong to any group"),
        "{message}"
    );

    create_service(
        &client,
        ns.name(),
        "taken",
        ServiceSpec::default().with("purelb.io/addresses", "198.18.3.7"),
    )
    .await;
    wait_for_event(
        &client,
        ns.name(),
        "taken",
        "AllocationFailed",
        "does not allow sharing",
    )
    .await;
    assert!(ingress(&client, ns.name(), "taken").await.is_empty());
}

#[tokio::test]
async fn a_sharing_key_shares_one_address_unless_ports_collide() {
    let (client, ns) = setup("share").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.4.0/29", "subnet": "198.18.4.0/24"}}}),
    )
    .await;
    let shared = |port| {
        let mut spec = ServiceSpec::group(&group).with("purelb.io/allow-shared-ip", "team");
        spec.ports = vec![("TCP", port)];
        spec
    };
    create_service(&client, ns.name(), "http", shared(80)).await;
    let first = wait_for_addresses(&client, ns.name(), "http", 1).await;
    create_service(&client, ns.name(), "https", shared(443)).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "https", 1).await,
        first
    );

    create_service(&client, ns.name(), "clash", shared(80)).await;
    let message = wait_for_event(
        &client,
        ns.name(),
        "clash",
        "AllocationFailed",
        "already in use",
    )
    .await;
    assert!(message.contains("port TCP/80"), "{message}");
    assert!(ingress(&client, ns.name(), "clash").await.is_empty());

    create_service(&client, ns.name(), "private", ServiceSpec::group(&group)).await;
    let private = wait_for_addresses(&client, ns.name(), "private", 1).await;
    assert_ne!(
        private, first,
        "a Service without the key gets its own address"
    );
}

#[tokio::test]
async fn only_its_own_class_is_handled() {
    let (client, ns) = setup("class").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.5.0/29", "subnet": "198.18.5.0/24"}}}),
    )
    .await;
    let mut other = ServiceSpec::group(&group);
    other.class = Some("example.com/other-lb");
    create_service(&client, ns.name(), "other", other).await;
    let mut ours = ServiceSpec::group(&group);
    ours.class = Some("purelb.io/purelbv2");
    create_service(&client, ns.name(), "ours", ours).await;
    create_service(&client, ns.name(), "classless", ServiceSpec::group(&group)).await;
    wait_for_addresses(&client, ns.name(), "ours", 1).await;
    wait_for_addresses(&client, ns.name(), "classless", 1).await;
    // Both later Services were processed after "other": it was skipped, not late.
    assert!(ingress(&client, ns.name(), "other").await.is_empty());
    assert!(events(&client, ns.name(), "other").await.is_empty());
}

#[tokio::test]
async fn namespace_enforcement_denies_and_explains() {
    let (client, ns) = setup("scope").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({
        "local": {"v4pool": {"pool": "198.18.6.0/29", "subnet": "198.18.6.0/24"}},
        "namespaces": ["somewhere-else"], "enforceNamespaces": true}),
    )
    .await;
    create_service(&client, ns.name(), "denied", ServiceSpec::group(&group)).await;
    let message = wait_for_event(
        &client,
        ns.name(),
        "denied",
        "AllocationFailed",
        "namespace denied",
    )
    .await;
    assert!(message.contains(&group), "{message}");

    create_service(
        &client,
        ns.name(),
        "unknown",
        ServiceSpec::group("no-such-group"),
    )
    .await;
    wait_for_event(
        &client,
        ns.name(),
        "unknown",
        "AllocationFailed",
        "unknown pool \"no-such-group\"",
    )
    .await;
}

#[tokio::test]
async fn exhaustion_is_reported_and_freed_space_is_reused() {
    let (client, ns) = setup("full").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.7.1/32", "subnet": "198.18.7.0/24"}}}),
    )
    .await;
    create_service(&client, ns.name(), "first", ServiceSpec::group(&group)).await;
    let address = wait_for_addresses(&client, ns.name(), "first", 1).await;
    create_service(&client, ns.name(), "second", ServiceSpec::group(&group)).await;
    wait_for_event(
        &client,
        ns.name(),
        "second",
        "AllocationFailed",
        "exhausted",
    )
    .await;

    let metrics = allocator().metrics().await;
    let rejected = format!(
        "purelb_address_pool_allocation_rejected_total{{pool=\"{group}\",reason=\"exhausted\"}}"
    );
    assert!(metrics.contains(&rejected), "{metrics}");

    Api::<Service>::namespaced(client.clone(), ns.name())
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "second", 1).await,
        address
    );
}

#[tokio::test]
async fn leaving_load_balancer_releases_the_address() {
    let (client, ns) = setup("type").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.8.1/32", "subnet": "198.18.8.0/24"}}}),
    )
    .await;
    create_service(&client, ns.name(), "svc", ServiceSpec::group(&group)).await;
    wait_for_addresses(&client, ns.name(), "svc", 1).await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    services
        .patch(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
        )
        .await
        .expect("type change");
    wait_for_addresses(&client, ns.name(), "svc", 0).await;
    wait_for_event(
        &client,
        ns.name(),
        "svc",
        "AddressReleased",
        "not LoadBalancer",
    )
    .await;
    let svc = service(&client, ns.name(), "svc").await;
    assert_eq!(annotation(&svc, "purelb.io/allocated-from"), None);
    create_service(&client, ns.name(), "next", ServiceSpec::group(&group)).await;
    wait_for_addresses(&client, ns.name(), "next", 1).await;
}

#[tokio::test]
async fn a_bad_pool_edit_keeps_the_last_good_pool_and_says_why() {
    let (client, ns) = setup("edit").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.9.0/29", "subnet": "198.18.9.0/24"}}}),
    )
    .await;
    create_service(&client, ns.name(), "before", ServiceSpec::group(&group)).await;
    wait_for_addresses(&client, ns.name(), "before", 1).await;

    // The range is outside its subnet: refused, the old pool keeps serving.
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {"v4pool": {"pool": "198.18.10.0/29", "subnet": "198.18.9.0/24"}}}),
    )
    .await;
    wait_for_event(
        &client,
        INSTALL_NAMESPACE,
        &group,
        "ParseFailed",
        "not contained",
    )
    .await;
    let condition = eventually("Ready=False on the group", || async {
        let status = group_status(&client, &group).await;
        let ready = status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["status"] == "False").then_some(ready)
    })
    .await;
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("last accepted spec stays in force")),
        "{condition}"
    );
    create_service(&client, ns.name(), "after", ServiceSpec::group(&group)).await;
    let after = wait_for_addresses(&client, ns.name(), "after", 1).await;
    assert!(after[0].to_string().starts_with("198.18.9."), "{after:?}");
}

#[tokio::test]
async fn deleting_a_pool_does_not_revoke_addresses() {
    let (client, ns) = setup("delete").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"remote": {"v4pool": {"pool": "198.18.11.0/29", "subnet": "198.18.11.0/24"}}}),
    )
    .await;
    create_service(&client, ns.name(), "kept", ServiceSpec::group(&group)).await;
    let address = wait_for_addresses(&client, ns.name(), "kept", 1).await;
    Api::<ServiceGroup>::namespaced(client.clone(), INSTALL_NAMESPACE)
        .delete(&group, &DeleteParams::default())
        .await
        .expect("group deleted");
    let gauge = format!("purelb_address_pool_size{{pool=\"{group}\"}}");
    eventually("the allocator to drop the pool", || async {
        (!allocator().metrics().await.contains(&gauge)).then_some(())
    })
    .await;
    create_service(&client, ns.name(), "probe", ServiceSpec::group(&group)).await;
    wait_for_event(
        &client,
        ns.name(),
        "probe",
        "AllocationFailed",
        "unknown pool",
    )
    .await;
    assert_eq!(ingress(&client, ns.name(), "kept").await, address);
}

#[tokio::test]
async fn groups_outside_the_install_namespace_are_ignored_with_an_event() {
    let (client, ns) = setup("outside").await;
    apply_group(
        &client,
        ns.name(),
        "stray",
        json!({"local": {"v4pool": {"pool": "198.18.12.0/29", "subnet": "198.18.12.0/24"}}}),
    )
    .await;
    let message = wait_for_event(&client, ns.name(), "stray", "ServiceGroupOutOfScope", "").await;
    assert!(!message.is_empty());
    let metrics = allocator().metrics().await;
    assert!(
        metrics.contains(&format!(
            "purelb_servicegroups_out_of_scope{{namespace=\"{}\",name=\"stray\",type=\"local\"}} 1",
            ns.name()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn external_groups_take_addresses_from_the_sidecar_and_give_them_back() {
    let (client, ns) = setup("external").await;
    let group = format!("{}-pool", ns.name());
    let socket = testbed::controlplane::shared()
        .dir()
        .join(format!("{group}.sock"));
    let _sidecar = start_sidecar(&socket, &[&format!("{group}=198.18.13.0/30")]);
    apply_group(&client, INSTALL_NAMESPACE, &group, json!({"external": {
        "provider": "reference-sidecar", "socket": socket.to_str().expect("utf-8 path"), "announce": "remote"}})).await;

    create_service(&client, ns.name(), "ext", ServiceSpec::group(&group)).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "ext", 1).await,
        [ip("198.18.13.0")],
        "{}",
        allocator().log_tail()
    );
    let ext = service(&client, ns.name(), "ext").await;
    assert_eq!(
        annotation(&ext, "purelb.io/pool-type").as_deref(),
        Some("remote")
    );
    let status = eventually("the sidecar's usage in the group status", || async {
        let status = group_status(&client, &group).await;
        (status["allocatedIPv4"] == 1).then_some(status)
    })
    .await;
    assert_eq!(status["ipam"], "reference-sidecar");
    assert_eq!(status["announce"], "Remote");
    assert_eq!(status["availableIPv4"], 3);

    Api::<Service>::namespaced(client.clone(), ns.name())
        .delete("ext", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the sidecar to get the address back", || async {
        (group_status(&client, &group).await["allocatedIPv4"] == 0).then_some(())
    })
    .await;
    let metrics = allocator().metrics().await;
    assert!(
        metrics.contains("purelb_allocator_sidecar_rpc_total{socket="),
        "{metrics}"
    );
    assert!(
        metrics.contains("method=\"/purelb.ipam.v1.IPAM/Release\",code=\"OK\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn netbox_groups_activate_reserved_addresses_and_return_them() {
    let (client, ns) = setup("netbox").await;
    let netbox = netbox_double::NetboxDouble::start().await;
    let reserved = netbox.add("198.18.14.5/24", Some("kube"), "reserved", "");
    netbox.add("198.18.14.9/24", Some("kube"), "reserved", "");
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"netbox": {"url": netbox.url, "tenant": "kube"}}),
    )
    .await;

    create_service(&client, ns.name(), "nb", ServiceSpec::group(&group)).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "nb", 1).await,
        [ip("198.18.14.5")],
        "{}",
        allocator().log_tail()
    );
    let held = netbox.get(reserved);
    assert_eq!(
        (held.status.as_str(), held.description.clone()),
        ("active", format!("purelb:{}/nb", ns.name()))
    );

    Api::<Service>::namespaced(client.clone(), ns.name())
        .delete("nb", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("Netbox to get the address back", || async {
        (netbox.get(reserved).status == "reserved").then_some(())
    })
    .await;
}

#[tokio::test]
async fn serves_health_readiness_and_metrics() {
    setup("health").await;
    let ready = eventually("/readyz to answer 200", || async {
        let response = allocator().get("/readyz").await;
        response.starts_with("HTTP/1.0 200").then_some(response)
    })
    .await;
    assert!(ready.ends_with("ok"), "{ready}");
    assert!(
        allocator()
            .get("/healthz")
            .await
            .starts_with("HTTP/1.0 200")
    );
    let metrics = allocator().metrics().await;
    for name in [
        "purelb_k8s_client_updates_total",
        "purelb_k8s_client_config_loaded_bool 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn skip_ipv6_dad_is_passed_to_the_agents() {
    let (client, ns) = setup("dad").await;
    let group = format!("{}-pool", ns.name());
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        &group,
        json!({"local": {
        "v6pool": {"pool": "fd00:18:15::/126", "subnet": "fd00:18:15::/64"}, "skipIPv6DAD": true}}),
    )
    .await;
    let mut spec = ServiceSpec::group(&group);
    spec.families = vec!["IPv6"];
    create_service(&client, ns.name(), "v6", spec).await;
    assert_eq!(
        wait_for_addresses(&client, ns.name(), "v6", 1).await,
        [ip("fd00:18:15::")]
    );
    let v6 = service(&client, ns.name(), "v6").await;
    assert_eq!(
        annotation(&v6, "purelb.io/skip-ipv6-dad").as_deref(),
        Some("true")
    );
    assert_eq!(
        annotation(&v6, "purelb.io/pool-type").as_deref(),
        Some("local")
    );
}
