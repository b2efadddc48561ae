//! Restart safety: an allocator killed in the middle of a burst of Service
//! creations is replaced, and no address is ever handed out twice.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use serde_json::json;

const INSTALL_NAMESPACE: &str = "purelb-restart";

#[tokio::test]
async fn a_restart_during_a_burst_never_duplicates_an_address() {
    prepare(INSTALL_NAMESPACE);
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.test_namespace("burst").await.expect("namespace");
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        "burst",
        json!({"local": {"v4pool": {"pool": "198.18.20.0/24", "subnet": "198.18.20.0/24"}}}),
    )
    .await;

    let mut first = Allocator::start(
        INSTALL_NAMESPACE,
        "first",
        &[("PURELB_LEADER_ELECT", "false")],
    );
    let names: Vec<String> = (0..60).map(|i| format!("svc-{i}")).collect();
    let (early, late) = names.split_at(30);
    join_all(
        early
            .iter()
            .map(|name| create_service(&client, ns.name(), name, ServiceSpec::group("burst"))),
    )
    .await;
    // Kill it while it is still working through the burst.
    eventually("the first allocator to assign some addresses", || async {
        let mut assigned = 0;
        for name in early {
            assigned += ingress(&client, ns.name(), name).await.len();
        }
        (assigned > 0).then_some(())
    })
    .await;
    first.child.kill();
    join_all(
        late.iter()
            .map(|name| create_service(&client, ns.name(), name, ServiceSpec::group("burst"))),
    )
    .await;

    let second = Allocator::start(
        INSTALL_NAMESPACE,
        "second",
        &[("PURELB_LEADER_ELECT", "false")],
    );
    let mut all: Vec<IpAddr> = Vec::new();
    for name in &names {
        let ips = wait_for_addresses(&client, ns.name(), name, 1).await;
        all.extend(ips);
    }
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        names.len(),
        "an address was handed out twice: {all:?}\n{}",
        second.log_tail()
    );
    assert!(
        all.iter()
            .all(|ip| ip.to_string().starts_with("198.18.20.")),
        "{all:?}"
    );
    // Still stable a moment later: nothing is rewritten after the fact.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, ip) in names.iter().zip(&all) {
        assert_eq!(ingress(&client, ns.name(), name).await, [*ip]);
    }
}
