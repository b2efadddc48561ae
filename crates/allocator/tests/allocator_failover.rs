//! High availability: two replicas elect one leader through a Lease; when the
//! leader is killed during a burst, the other takes over within the lease time,
//! and no address is duplicated or lost.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

const INSTALL_NAMESPACE: &str = "purelb-failover";
const LEASE_SECONDS: u64 = 3;

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies_mid_burst() {
    prepare(INSTALL_NAMESPACE);
    let cp = testbed::controlplane::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.test_namespace("failover").await.expect("namespace");
    apply_group(
        &client,
        INSTALL_NAMESPACE,
        "ha",
        json!({"local": {"v4pool": {"pool": "198.18.21.0/24", "subnet": "198.18.21.0/24"}}}),
    )
    .await;

    let lease_env = [("PURELB_LEASE_DURATION", "3")];
    let mut replicas = [
        Allocator::start(INSTALL_NAMESPACE, "replica-a", &lease_env),
        Allocator::start(INSTALL_NAMESPACE, "replica-b", &lease_env),
    ];
    let leases: Api<Lease> = Api::namespaced(client.clone(), INSTALL_NAMESPACE);
    let leader = eventually("a leader", || async {
        let lease = leases.get_opt("purelb-allocator").await.ok()??;
        lease.spec?.holder_identity
    })
    .await;

    let names: Vec<String> = (0..40).map(|i| format!("svc-{i}")).collect();
    let (early, late) = names.split_at(20);
    join_all(
        early
            .iter()
            .map(|name| create_service(&client, ns.name(), name, ServiceSpec::group("ha"))),
    )
    .await;
    eventually("the leader to assign some addresses", || async {
        let mut assigned = 0;
        for name in early {
            assigned += ingress(&client, ns.name(), name).await.len();
        }
        (assigned > 0).then_some(())
    })
    .await;
    let leader_index = usize::from(leader == "replica-b");
    replicas[leader_index].child.kill();
    let killed = Instant::now();
    join_all(
        late.iter()
            .map(|name| create_service(&client, ns.name(), name, ServiceSpec::group("ha"))),
    )
    .await;

    let mut all: Vec<IpAddr> = Vec::new();
    for name in &names {
        all.extend(wait_for_addresses(&client, ns.name(), name, 1).await);
    }
    let takeover = killed.elapsed();
    let survivor = &replicas[1 - leader_index];
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        names.len(),
        "an address was handed out twice: {all:?}\n{}",
        survivor.log_tail()
    );
    let holder = leases
        .get("purelb-allocator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(
        holder.as_deref(),
        Some(leader.as_str()),
        "the survivor holds the Lease"
    );
    // Within the lease time plus the survivor's retry period and the work itself.
    assert!(
        takeover < Duration::from_secs(LEASE_SECONDS * 4),
        "takeover took {takeover:?}"
    );
    eprintln!(
        "failover: all {} Services allocated {takeover:?} after the leader was killed",
        names.len()
    );
}
