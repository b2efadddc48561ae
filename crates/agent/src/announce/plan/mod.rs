//! The per-Service announcement decision as a pure function.
//!
//! [`plan_service`] takes the Service, this node's settings, links, pools, an election
//! oracle and the nodes with healthy endpoints, and returns a [`ServicePlan`]: one
//! [`Decision`] per address plus the side effects as values (the
//! `externalTrafficPolicy` rewrite, events, the announcing-annotation changes). The
//! controller carries them out; when a kernel change fails it recomputes the
//! annotations with [`announcing_annotations`] and posts
//! [`Decision::failure_event`] instead of [`Decision::success_event`].

mod announcing;
mod decision;
mod pools;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use purelb_api::annotations;
use purelb_api::pool::IpFamily;
use purelb_api::service::{annotation, is_branded, is_load_balancer, unique_ingress_ips};

pub use announcing::{AnnotationChanges, SlotSteal, announcing_annotations};
pub use decision::{Decision, SlotAction, WithdrawReason};
pub use pools::{GroupPool, PoolKind, PoolTable};

use crate::event::{self, Event};
use crate::node::election::Election;
use crate::node::links::{self, LocalLookup, NodeInterfaces};
use crate::node::settings::AgentSettings;

/// `spec.externalTrafficPolicy` values.
pub const ETP_LOCAL: &str = "Local";
pub const ETP_CLUSTER: &str = "Cluster";

const LOCAL_OVERRIDE_ALLOWED: &str = "ExternalTrafficPolicy override annotation found, will allow Local policy. Incoming traffic will NOT be forwarded inter-node. This is not a recommended configuration; please see the PureLB docs for more info.";
const LOCAL_OVERRIDE_TO_CLUSTER: &str = "ExternalTrafficPolicy Local not supported on local Interfaces, setting to Cluster. Please see the PureLB docs for info on why we do this, and how to override this policy.";

/// Everything the agent does for one Service on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePlan {
    /// The ingress addresses to remember for the next run (`previous_ingress`).
    pub ingress: Vec<IpAddr>,
    pub decisions: Vec<Decision>,
    /// Rewrite `spec.externalTrafficPolicy` to `Cluster`.
    pub set_etp_cluster: bool,
    /// Events known before any kernel change (`LocalOverride`, failures decided here).
    /// Success/failure events of adds come from the decisions.
    pub events: Vec<Event>,
    /// Annotation changes assuming every add succeeds.
    pub annotations: AnnotationChanges,
}

impl ServicePlan {
    /// The slot actions of the decisions, for [`announcing_annotations`].
    pub fn slot_actions(&self) -> Vec<(IpAddr, SlotAction)> {
        self.decisions
            .iter()
            .map(|d| (d.ip(), d.slot_action()))
            .collect()
    }
}

/// What the planner needs to know about this node.
pub struct PlanContext<'a> {
    pub node: &'a str,
    /// The effective settings; `None` when the agent is unconfigured.
    pub settings: Option<&'a AgentSettings>,
    pub interfaces: &'a NodeInterfaces,
    pub pools: &'a PoolTable,
    pub election: &'a dyn Election,
    /// Nodes with a healthy endpoint of this Service ([`crate::announce::endpoints::healthy_nodes`]).
    pub healthy_nodes: &'a BTreeSet<String>,
}

/// The addresses in `previous` that are not in `current`: what to withdraw when a
/// Service's ingress shrinks.
///
/// Choice: fixes a gap in PureLB — upstream overwrites its record and never withdraws an
/// address that left a live Service's ingress (and keeps renewing it).
pub fn removed_ingress(previous: &[IpAddr], current: &[IpAddr]) -> Vec<IpAddr> {
    let current: BTreeSet<IpAddr> = current.iter().map(|ip| ip.to_canonical()).collect();
    let mut removed: Vec<IpAddr> = Vec::new();
    for ip in previous.iter().map(|ip| ip.to_canonical()) {
        if !current.contains(&ip) && !removed.contains(&ip) {
            removed.push(ip);
        }
    }
    removed
}

/// Withdraw decisions for every address in `ips` (Service deleted, shutdown).
pub fn withdraw_all(ips: &[IpAddr], reason: WithdrawReason) -> Vec<Decision> {
    ips.iter()
        .map(|ip| Decision::Withdraw {
            ip: ip.to_canonical(),
            reason,
        })
        .collect()
}

/// Plans one Service on this node. `previous_ingress` is what the last plan for it
/// returned in [`ServicePlan::ingress`] (empty the first time).
pub fn plan_service(
    service: &Service,
    previous_ingress: &[IpAddr],
    ctx: &PlanContext<'_>,
) -> ServicePlan {
    let ingress = unique_ingress_ips(service);
    if !is_load_balancer(service) {
        return plan_not_load_balancer(service, previous_ingress, &ingress);
    }
    if !is_branded(service) {
        return ServicePlan {
            decisions: withdraw_all(previous_ingress, WithdrawReason::NotBranded),
            ..Default::default()
        };
    }
    let mut plan = ServicePlan {
        ingress: ingress.clone(),
        decisions: withdraw_all(
            &removed_ingress(previous_ingress, &ingress),
            WithdrawReason::RemovedFromIngress,
        ),
        ..Default::default()
    };
    for &ip in &ingress {
        let decision = match ctx.settings {
            None => Decision::Withdraw {
                ip,
                reason: WithdrawReason::NoConfig,
            },
            Some(settings) => decide(service, ip, settings, ctx, &mut plan),
        };
        plan.decisions.push(decision);
    }
    plan.annotations = announcing_annotations(service, ctx.node, &plan.slot_actions());
    plan
}

/// A Service that is not a LoadBalancer: withdraw everything and, if branded, delete
/// the agent-owned annotations.
fn plan_not_load_balancer(
    service: &Service,
    previous_ingress: &[IpAddr],
    ingress: &[IpAddr],
) -> ServicePlan {
    let mut ips: Vec<IpAddr> = ingress.to_vec();
    for ip in previous_ingress.iter().map(|ip| ip.to_canonical()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut changes = BTreeMap::new();
    if is_branded(service) {
        for key in annotations::NON_LOAD_BALANCER_CLEANUP {
            if annotation(service, key).is_some() {
                changes.insert(key.to_owned(), None);
            }
        }
    }
    ServicePlan {
        decisions: withdraw_all(&ips, WithdrawReason::NotLoadBalancer),
        annotations: AnnotationChanges {
            changes,
            steals: Vec::new(),
        },
        ..Default::default()
    }
}

/// How to announce one address: local link first, then remote pools, then uncertainty,
/// then withdraw.
fn decide(
    service: &Service,
    ip: IpAddr,
    settings: &AgentSettings,
    ctx: &PlanContext<'_>,
    plan: &mut ServicePlan,
) -> Decision {
    let lookup = links::find_local(settings, ctx.interfaces, ip);
    if let LocalLookup::Found(found) = lookup {
        return decide_local(service, ip, found, settings, ctx, plan);
    }
    if let Some(prefix_len) = remote_prefix_len(service, ip, ctx.pools) {
        return decide_remote(service, ip, prefix_len, settings, ctx, plan);
    }
    if ctx.interfaces.incomplete {
        return Decision::Skip { ip };
    }
    match lookup {
        LocalLookup::NoDefaultRoute(family) => Decision::Retry {
            ip,
            message: format!("no {family} default route and no extra interfaces configured"),
        },
        _ => Decision::Withdraw {
            ip,
            reason: WithdrawReason::NoLocalInterface,
        },
    }
}

/// The dummy-link mask when `ip` is announced remotely, or `None` when it is not a
/// remote address.
///
/// Choice: the mask comes from the remote pool that makes the address remote
/// (upstream looks in local groups first, which only differs when a local and a
/// remote pool overlap). An address of an external group with `announce: remote`
/// (named in `purelb.io/allocated-from`) is announced as a host route (/32, /128):
/// such groups have no subnet or aggregation to take a mask from.
fn remote_prefix_len(
    service: &Service,
    ip: IpAddr,
    pools: &PoolTable,
) -> Option<Result<u8, String>> {
    if let Some(pool) = pools.remote_pool_for(ip) {
        return Some(pool.range.announce_prefix_len().map_err(|e| e.to_string()));
    }
    let external = annotation(service, annotations::ALLOCATED_FROM)
        .map(annotations::parse_allocated_from)
        .unwrap_or_default()
        .into_iter()
        .any(|group| pools.is_external_remote(group));
    external.then(|| Ok(IpFamily::of(ip).bits()))
}

/// Announces `ip` on its local link if this node wins its election, else withdraws it.
///
/// Choice: only the election winner rewrites `externalTrafficPolicy` and posts
/// `LocalOverride` (once per Service, not per address and not from every node), and
/// the address is not withdrawn first (upstream withdraws and re-adds it in the same
/// pass, a needless flap).
fn decide_local(
    service: &Service,
    ip: IpAddr,
    found: links::LocalMatch,
    settings: &AgentSettings,
    ctx: &PlanContext<'_>,
    plan: &mut ServicePlan,
) -> Decision {
    let preferred = annotations::node_affinity_requested(
        annotation(service, annotations::NODE_AFFINITY),
        annotation(service, annotations::ALLOW_SHARED_IP),
    )
    .then_some(ctx.healthy_nodes);
    match ctx.election.winner(ip, preferred) {
        None => {
            return Decision::Withdraw {
                ip,
                reason: WithdrawReason::NoEligibleNodes,
            };
        }
        Some(winner) if winner != ctx.node => {
            return Decision::Withdraw {
                ip,
                reason: WithdrawReason::LostElection,
            };
        }
        Some(_) => {}
    }
    if etp_is_local(service)
        && !plan
            .events
            .iter()
            .any(|e| e.reason == event::LOCAL_OVERRIDE)
    {
        if annotation(service, annotations::ALLOW_LOCAL).is_some() {
            plan.events
                .push(Event::normal(event::LOCAL_OVERRIDE, LOCAL_OVERRIDE_ALLOWED));
        } else {
            plan.set_etp_cluster = true;
            plan.events.push(Event::normal(
                event::LOCAL_OVERRIDE,
                LOCAL_OVERRIDE_TO_CLUSTER,
            ));
        }
    }
    let ipv6 = IpFamily::of(ip) == IpFamily::V6;
    let mut options = settings.local_address;
    if ipv6 {
        // Deprecated, so Flannel and our own subnet scan never take the VIP for a node
        // address; it still receives traffic.
        options.preferred_lifetime = 0;
    }
    Decision::Local {
        ip,
        interface: found.interface,
        prefix_len: found.prefix_len,
        options,
        nodad: ipv6 && annotation(service, annotations::SKIP_IPV6_DAD) == Some(annotations::TRUE),
        garp: settings.garp.is_some(),
    }
}

/// Announces `ip` on the dummy link, unless `externalTrafficPolicy` is `Local` and this
/// node has no healthy endpoint.
fn decide_remote(
    service: &Service,
    ip: IpAddr,
    prefix_len: Result<u8, String>,
    settings: &AgentSettings,
    ctx: &PlanContext<'_>,
    plan: &mut ServicePlan,
) -> Decision {
    if etp_is_local(service) && !ctx.healthy_nodes.contains(ctx.node) {
        return Decision::Withdraw {
            ip,
            reason: WithdrawReason::NoEndpoints,
        };
    }
    match prefix_len {
        Ok(prefix_len) => Decision::Remote {
            ip,
            interface: settings.dummy_interface.clone(),
            prefix_len,
            options: settings.dummy_address,
        },
        Err(message) => {
            plan.events.push(decision::announcement_failed(
                ctx.node,
                ip,
                &settings.dummy_interface,
                &message,
            ));
            Decision::Retry { ip, message }
        }
    }
}

fn etp_is_local(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some(ETP_LOCAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use crate::node::links::{InterfaceInfo, LinkAddress};
    use crate::node::settings::{AddressSettings, GarpSettings, InterfaceChoice};
    use proptest::prelude::*;
    use purelb_api::crd::ServiceGroup;
    use serde_json::json;
    use std::cell::RefCell;

    const NODE: &str = "node-a";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> LinkAddress {
        let (ip, len) = s.split_once('/').unwrap();
        LinkAddress::new(ip.parse().unwrap(), len.parse().unwrap())
    }

    fn link(name: &str, index: u32, addresses: &[&str]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            index,
            up: true,
            loopback: false,
            addresses: addresses.iter().map(|a| addr(a)).collect(),
        }
    }

    fn interfaces() -> NodeInterfaces {
        NodeInterfaces {
            links: vec![
                link("eth0", 2, &["192.168.1.10/24", "fd00:1::10/64"]),
                link("eth1", 3, &["10.1.0.10/16"]),
                link("kube-lb0", 4, &[]),
            ],
            default_v4: Some(2),
            default_v6: Some(2),
            incomplete: false,
        }
    }

    fn groups() -> Vec<ServiceGroup> {
        let sg = |name: &str, spec: serde_json::Value| -> ServiceGroup {
            serde_json::from_value(json!({
                "apiVersion": "purelb.io/v2",
                "kind": "ServiceGroup",
                "metadata": {"name": name, "namespace": "purelb-system"},
                "spec": spec,
            }))
            .unwrap()
        };
        vec![
            sg(
                "remote-b",
                json!({"remote": {
                    "v4pools": [{"pool": "10.200.0.0/24", "subnet": "10.200.0.0/16", "aggregation": "/24"}],
                    "v4pool": {"pool": "10.201.0.0/24", "subnet": "10.201.0.0/16"},
                    "v6pool": {"pool": "fd00:200::/120", "subnet": "fd00:200::/64", "aggregation": "default"},
                }}),
            ),
            sg(
                "local-a",
                json!({"local": {
                    "v4pool": {"pool": "192.168.1.240/29", "subnet": "192.168.1.0/24"},
                    "v6pool": {"pool": "fd00:1::240/124", "subnet": "fd00:1::/64"},
                }}),
            ),
            sg(
                "remote-a",
                json!({"remote": {
                    "v4pool": {"pool": "192.168.1.248/29", "subnet": "192.168.1.0/24", "aggregation": "/32"},
                    "v4pools": [{"pool": "10.202.0.0/24", "subnet": "10.202.0.0/16", "aggregation": "/33"}],
                }}),
            ),
            sg(
                "ext-remote",
                json!({"external": {"provider": "netbox", "announce": "remote"}}),
            ),
            sg(
                "ext-local",
                json!({"external": {"provider": "netbox", "announce": "local"}}),
            ),
        ]
    }

    fn service(extra: serde_json::Value) -> Service {
        let mut base = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "annotations": {"purelb.io/allocated-by": "PureLB"},
            },
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}},
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn ingress(ips: &[&str]) -> serde_json::Value {
        let list: Vec<serde_json::Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!({"status": {"loadBalancer": {"ingress": list}}})
    }

    struct World {
        settings: Option<AgentSettings>,
        interfaces: NodeInterfaces,
        pools: PoolTable,
        winner: Option<&'static str>,
        healthy: BTreeSet<String>,
        asked: RefCell<Vec<(IpAddr, Option<BTreeSet<String>>)>>,
    }

    impl World {
        fn new() -> Self {
            Self {
                settings: Some(AgentSettings::default()),
                interfaces: interfaces(),
                pools: PoolTable::from_groups(&groups()),
                winner: Some(NODE),
                healthy: BTreeSet::new(),
                asked: RefCell::new(Vec::new()),
            }
        }

        fn plan_with(&self, service: &Service, previous: &[IpAddr]) -> ServicePlan {
            let election = |ip: IpAddr, preferred: Option<&BTreeSet<String>>| {
                self.asked.borrow_mut().push((ip, preferred.cloned()));
                self.winner.map(str::to_owned)
            };
            let ctx = PlanContext {
                node: NODE,
                settings: self.settings.as_ref(),
                interfaces: &self.interfaces,
                pools: &self.pools,
                election: &election,
                healthy_nodes: &self.healthy,
            };
            plan_service(service, previous, &ctx)
        }

        fn plan(&self, service: &Service) -> ServicePlan {
            self.plan_with(service, &[])
        }
    }

    fn local(ip_s: &str, interface: &str, prefix_len: u8, options: AddressSettings) -> Decision {
        Decision::Local {
            ip: ip(ip_s),
            interface: interface.into(),
            prefix_len,
            options,
            nodad: false,
            garp: false,
        }
    }

    fn withdraw(ip_s: &str, reason: WithdrawReason) -> Decision {
        Decision::Withdraw {
            ip: ip(ip_s),
            reason,
        }
    }

    fn remote(ip_s: &str, prefix_len: u8) -> Decision {
        Decision::Remote {
            ip: ip(ip_s),
            interface: "kube-lb0".into(),
            prefix_len,
            options: AddressSettings::DUMMY_DEFAULT,
        }
    }

    fn change(key: &str, value: Option<&str>) -> BTreeMap<String, Option<String>> {
        [(key.to_owned(), value.map(str::to_owned))]
            .into_iter()
            .collect()
    }

    #[test]
    fn pool_table_order() {
        let t = PoolTable::from_groups(&groups());
        let listed: Vec<(&str, PoolKind, &str)> = t
            .pools()
            .iter()
            .map(|p| (p.group.as_str(), p.kind, p.range.pool_spec()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("local-a", PoolKind::Local, "192.168.1.240/29"),
                ("local-a", PoolKind::Local, "fd00:1::240/124"),
                ("remote-a", PoolKind::Remote, "10.202.0.0/24"),
                ("remote-a", PoolKind::Remote, "192.168.1.248/29"),
                ("remote-b", PoolKind::Remote, "10.200.0.0/24"),
                ("remote-b", PoolKind::Remote, "10.201.0.0/24"),
                ("remote-b", PoolKind::Remote, "fd00:200::/120"),
            ]
        );
        assert!(t.is_external_remote("ext-remote"));
        assert!(!t.is_external_remote("ext-local"));
        assert!(!t.is_external_remote("remote-a"));
        assert_eq!(t.pool_for(ip("192.168.1.241")).unwrap().group, "local-a");
        assert!(t.remote_pool_for(ip("192.168.1.241")).is_none());
        assert_eq!(
            t.remote_pool_for(ip("10.201.0.7")).unwrap().group,
            "remote-b"
        );
        assert!(t.invalid.is_empty());
    }

    #[test]
    fn unconfigured_withdraws_and_releases_own_slot() {
        let mut w = World::new();
        w.settings = None;
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/announcing-IPv4": "node-a,eth0,192.168.1.240",
        }}}));
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![withdraw("192.168.1.240", WithdrawReason::NoConfig)]
        );
        assert_eq!(
            plan.annotations.changes,
            change("purelb.io/announcing-IPv4", None)
        );
        assert!(w.asked.borrow().is_empty());
        // Another node's slot is not ours to clear.
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/announcing-IPv4": "node-b,eth0,192.168.1.240",
        }}}));
        assert!(w.plan(&svc).annotations.is_empty());
    }

    #[test]
    fn local_win_claims_the_slot() {
        let w = World::new();
        let svc = service(json!({}));
        let plan = w.plan(&svc);
        let decision = local("192.168.1.240", "eth0", 24, AddressSettings::LOCAL_DEFAULT);
        assert_eq!(plan.decisions, vec![decision.clone()]);
        assert_eq!(plan.ingress, vec![ip("192.168.1.240")]);
        assert!(!plan.set_etp_cluster);
        assert!(plan.events.is_empty());
        assert_eq!(
            plan.annotations.changes,
            change(
                "purelb.io/announcing-IPv4",
                Some("node-a,eth0,192.168.1.240")
            )
        );
        assert!(plan.annotations.steals.is_empty());
        assert_eq!(*w.asked.borrow(), vec![(ip("192.168.1.240"), None)]);
        let ok = decision.success_event(NODE).unwrap();
        assert_eq!(
            (ok.reason, ok.type_, ok.message.as_str()),
            (
                "AnnouncingLocal",
                EventType::Normal,
                "Node node-a announcing 192.168.1.240 on interface eth0"
            )
        );
        let failed = decision.failure_event(NODE, "permission denied").unwrap();
        assert_eq!(
            (failed.reason, failed.type_, failed.message.as_str()),
            (
                "AnnouncementFailed",
                EventType::Warning,
                "Node node-a could not announce 192.168.1.240 on interface eth0: permission denied"
            )
        );
        // After a failed add the caller releases instead of claiming.
        let after_failure =
            announcing_annotations(&svc, NODE, &[(ip("192.168.1.240"), SlotAction::Release)]);
        assert!(after_failure.is_empty());
    }

    #[test]
    fn garp_flag_follows_settings() {
        let mut w = World::new();
        w.settings = Some(AgentSettings {
            garp: Some(GarpSettings::default()),
            ..Default::default()
        });
        let plan = w.plan(&service(json!({})));
        assert!(matches!(
            plan.decisions[0],
            Decision::Local { garp: true, .. }
        ));
    }

    #[test]
    fn lost_election_keeps_the_slot() {
        let mut w = World::new();
        w.winner = Some("node-b");
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/announcing-IPv4": "node-a,eth0,192.168.1.240"}},
            "spec": {"externalTrafficPolicy": "Local"},
        }));
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![withdraw("192.168.1.240", WithdrawReason::LostElection)]
        );
        assert!(plan.annotations.is_empty());
        // A loser neither rewrites the policy nor posts LocalOverride.
        assert!(!plan.set_etp_cluster);
        assert!(plan.events.is_empty());
        assert_eq!(plan.decisions[0].success_event(NODE), None);
    }

    #[test]
    fn no_eligible_nodes() {
        let mut w = World::new();
        w.winner = None;
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/announcing-IPv4": "node-a,eth0,192.168.1.240",
        }}}));
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![withdraw("192.168.1.240", WithdrawReason::NoEligibleNodes)]
        );
        assert!(plan.annotations.is_empty());
    }

    #[test]
    fn ipv6_local_is_deprecated_and_nodad_on_request() {
        let w = World::new();
        let svc = service(ingress(&["192.168.1.241", "fd00:1::241"]));
        let plan = w.plan(&svc);
        let v6_options = AddressSettings {
            preferred_lifetime: 0,
            ..AddressSettings::LOCAL_DEFAULT
        };
        assert_eq!(
            plan.decisions,
            vec![
                local("192.168.1.241", "eth0", 24, AddressSettings::LOCAL_DEFAULT),
                local("fd00:1::241", "eth0", 64, v6_options),
            ]
        );
        assert_eq!(plan.annotations.changes.len(), 2);
        assert_eq!(
            plan.annotations.changes["purelb.io/announcing-IPv6"].as_deref(),
            Some("node-a,eth0,fd00:1::241")
        );

        let mut svc = service(ingress(&["192.168.1.241", "fd00:1::241"]));
        svc.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("purelb.io/skip-ipv6-dad".into(), "true".into());
        let plan = w.plan(&svc);
        assert!(matches!(
            plan.decisions[0],
            Decision::Local { nodad: false, .. }
        ));
        assert!(matches!(
            plan.decisions[1],
            Decision::Local { nodad: true, .. }
        ));
        // Anything but "true" leaves DAD on.
        svc.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("purelb.io/skip-ipv6-dad".into(), "yes".into());
        assert!(matches!(
            w.plan(&svc).decisions[1],
            Decision::Local { nodad: false, .. }
        ));
    }

    #[test]
    fn etp_local_on_a_local_address_is_rewritten_to_cluster() {
        let w = World::new();
        let svc = service(json!({"spec": {"externalTrafficPolicy": "Local"}}));
        let plan = w.plan(&svc);
        assert!(plan.set_etp_cluster);
        assert_eq!(
            plan.events,
            vec![Event::normal("LocalOverride", LOCAL_OVERRIDE_TO_CLUSTER)]
        );
        assert!(plan.events[0].message.starts_with(
            "ExternalTrafficPolicy Local not supported on local Interfaces, setting to Cluster."
        ));
        // Announced all the same, without a withdraw first.
        assert_eq!(
            plan.decisions,
            vec![local(
                "192.168.1.240",
                "eth0",
                24,
                AddressSettings::LOCAL_DEFAULT
            )]
        );
        // Dual-stack: one rewrite, one event.
        let mut svc = service(ingress(&["192.168.1.241", "fd00:1::241"]));
        svc.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let plan = w.plan(&svc);
        assert_eq!(plan.events.len(), 1);
        assert!(plan.set_etp_cluster);
    }

    #[test]
    fn etp_local_with_allow_local_is_kept() {
        let w = World::new();
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/allow-local": ""}},
            "spec": {"externalTrafficPolicy": "Local"},
        }));
        let plan = w.plan(&svc);
        assert!(!plan.set_etp_cluster);
        assert_eq!(
            plan.events,
            vec![Event::normal("LocalOverride", LOCAL_OVERRIDE_ALLOWED)]
        );
        assert!(plan.events[0].message.starts_with(
            "ExternalTrafficPolicy override annotation found, will allow Local policy."
        ));
        // No endpoint requirement for local addresses.
        assert_eq!(plan.decisions.len(), 1);
        assert!(matches!(plan.decisions[0], Decision::Local { .. }));
    }

    #[test]
    fn remote_addresses_use_the_aggregation_mask() {
        let w = World::new();
        let svc = service(ingress(&["10.200.0.5", "10.201.0.5", "fd00:200::5"]));
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![
                remote("10.200.0.5", 24),
                remote("10.201.0.5", 16),
                remote("fd00:200::5", 64),
            ]
        );
        // No election, no annotation for remote addresses.
        assert!(w.asked.borrow().is_empty());
        assert!(plan.annotations.is_empty());
        let ok = plan.decisions[0].success_event(NODE).unwrap();
        assert_eq!(ok.reason, "AnnouncingNonLocal");
        assert_eq!(
            ok.message,
            "Announcing 10.200.0.5 from node node-a interface kube-lb0"
        );
    }

    #[test]
    fn remote_address_releases_a_stale_local_slot() {
        let w = World::new();
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/announcing-IPv4": "node-a,eth0,10.200.0.5"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.200.0.5"}]}},
        }));
        let plan = w.plan(&svc);
        assert_eq!(plan.decisions, vec![remote("10.200.0.5", 24)]);
        assert_eq!(
            plan.annotations.changes,
            change("purelb.io/announcing-IPv4", None)
        );
    }

    #[test]
    fn unusable_aggregation_is_retried_with_a_warning() {
        let w = World::new();
        let plan = w.plan(&service(ingress(&["10.202.0.9"])));
        assert!(matches!(
            &plan.decisions[..],
            [Decision::Retry { ip: i, message }] if *i == ip("10.202.0.9") && message.contains("/33")
        ));
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].reason, "AnnouncementFailed");
        assert_eq!(plan.events[0].type_, EventType::Warning);
        assert!(
            plan.events[0]
                .message
                .starts_with("Node node-a could not announce 10.202.0.9 on interface kube-lb0: ")
        );
        assert_eq!(plan.decisions[0].slot_action(), SlotAction::Keep);
    }

    #[test]
    fn etp_local_remote_needs_a_healthy_endpoint_here() {
        let mut w = World::new();
        let svc = service(json!({
            "spec": {"externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.200.0.5"}]}},
        }));
        w.healthy = ["node-b".to_owned()].into();
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![withdraw("10.200.0.5", WithdrawReason::NoEndpoints)]
        );
        // Remote addresses never rewrite the policy.
        assert!(!plan.set_etp_cluster);
        assert!(plan.events.is_empty());
        w.healthy.insert(NODE.to_owned());
        assert_eq!(w.plan(&svc).decisions, vec![remote("10.200.0.5", 24)]);
    }

    #[test]
    fn local_link_takes_precedence_over_a_remote_pool() {
        // 192.168.1.250 is in remote-a's pool but on eth0's subnet.
        let w = World::new();
        let plan = w.plan(&service(ingress(&["192.168.1.250"])));
        assert_eq!(
            plan.decisions,
            vec![local(
                "192.168.1.250",
                "eth0",
                24,
                AddressSettings::LOCAL_DEFAULT
            )]
        );
        // With the default route elsewhere it goes remote with that pool's /32.
        let mut w = World::new();
        w.interfaces.default_v4 = Some(3);
        let plan = w.plan(&service(ingress(&["192.168.1.250"])));
        assert_eq!(plan.decisions, vec![remote("192.168.1.250", 32)]);
    }

    #[test]
    fn no_local_interface_and_uncertain_evidence() {
        let w = World::new();
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/announcing-IPv4": "node-a,eth0,172.20.0.1"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.20.0.1"}]}},
        }));
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![withdraw("172.20.0.1", WithdrawReason::NoLocalInterface)]
        );
        assert_eq!(
            plan.annotations.changes,
            change("purelb.io/announcing-IPv4", None)
        );
        // An interrupted dump: change nothing.
        let mut w = World::new();
        w.interfaces.incomplete = true;
        let plan = w.plan(&svc);
        assert_eq!(
            plan.decisions,
            vec![Decision::Skip {
                ip: ip("172.20.0.1")
            }]
        );
        assert!(plan.annotations.is_empty());
        // A local address found despite the interrupted dump is still announced.
        let plan = w.plan(&service(json!({})));
        assert!(matches!(plan.decisions[0], Decision::Local { .. }));
    }

    #[test]
    fn no_default_route() {
        let mut w = World::new();
        w.interfaces.default_v4 = None;
        let plan = w.plan(&service(ingress(&["192.168.1.240", "10.200.0.5"])));
        assert!(matches!(
            &plan.decisions[..],
            [Decision::Retry { message, .. }, Decision::Remote { .. }]
                if message == "no IPv4 default route and no extra interfaces configured"
        ));
        // An extra interface makes the search definite.
        w.settings = Some(AgentSettings {
            extra_interfaces: vec!["eth1".into()],
            ..Default::default()
        });
        let plan = w.plan(&service(ingress(&["192.168.1.240", "10.1.2.3"])));
        assert_eq!(
            plan.decisions,
            vec![
                withdraw("192.168.1.240", WithdrawReason::NoLocalInterface),
                local("10.1.2.3", "eth1", 16, AddressSettings::LOCAL_DEFAULT),
            ]
        );
    }

    #[test]
    fn regex_mode_chooses_by_name() {
        let mut w = World::new();
        w.settings = Some(AgentSettings {
            local_interface: InterfaceChoice::Regex(regex::Regex::new("eth").unwrap()),
            ..Default::default()
        });
        let plan = w.plan(&service(ingress(&["10.1.9.9", "192.168.1.240"])));
        assert_eq!(
            plan.decisions,
            vec![
                local("10.1.9.9", "eth1", 16, AddressSettings::LOCAL_DEFAULT),
                local("192.168.1.240", "eth0", 24, AddressSettings::LOCAL_DEFAULT),
            ]
        );
    }

    #[test]
    fn external_groups() {
        let w = World::new();
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/allocated-from": "ext-remote"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"ip": "2001:db8::7"}]}},
        }));
        assert_eq!(
            w.plan(&svc).decisions,
            vec![remote("198.51.100.7", 32), remote("2001:db8::7", 128)]
        );
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/allocated-from": "ext-local"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}},
        }));
        assert_eq!(
            w.plan(&svc).decisions,
            vec![withdraw("198.51.100.7", WithdrawReason::NoLocalInterface)]
        );
        // An external-local address on the node's subnet is local as usual.
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/allocated-from": "ext-local"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.100"}]}},
        }));
        assert!(matches!(w.plan(&svc).decisions[0], Decision::Local { .. }));
    }

    #[test]
    fn node_affinity_restricts_the_election_to_endpoint_nodes() {
        let mut w = World::new();
        w.healthy = ["node-a".to_owned(), "node-c".to_owned()].into();
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/node-affinity": "service-endpoints",
        }}}));
        w.plan(&svc);
        assert_eq!(
            *w.asked.borrow(),
            vec![(ip("192.168.1.240"), Some(w.healthy.clone()))]
        );
        // A sharing key disables affinity.
        w.asked.borrow_mut().clear();
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/node-affinity": "service-endpoints",
            "purelb.io/allow-shared-ip": "k",
        }}}));
        w.plan(&svc);
        assert_eq!(*w.asked.borrow(), vec![(ip("192.168.1.240"), None)]);
    }

    #[test]
    fn addresses_that_leave_the_ingress_are_withdrawn() {
        let w = World::new();
        // Dual- to single-stack: the IPv6 address is gone.
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/announcing-IPv6": "node-a,eth0,fd00:1::241",
        }}}));
        let previous = [ip("192.168.1.240"), ip("fd00:1::241")];
        let plan = w.plan_with(&svc, &previous);
        assert_eq!(
            plan.decisions,
            vec![
                withdraw("fd00:1::241", WithdrawReason::RemovedFromIngress),
                local("192.168.1.240", "eth0", 24, AddressSettings::LOCAL_DEFAULT),
            ]
        );
        assert_eq!(plan.ingress, vec![ip("192.168.1.240")]);
        assert_eq!(plan.annotations.changes["purelb.io/announcing-IPv6"], None);
        // No ingress at all: everything remembered goes.
        let svc = service(json!({"status": {"loadBalancer": {"ingress": []}}}));
        let plan = w.plan_with(&svc, &previous);
        assert_eq!(
            plan.decisions,
            vec![
                withdraw("192.168.1.240", WithdrawReason::RemovedFromIngress),
                withdraw("fd00:1::241", WithdrawReason::RemovedFromIngress),
            ]
        );
        assert!(plan.ingress.is_empty());
    }

    #[test]
    fn removed_ingress_diff() {
        let prev = [
            ip("10.0.0.1"),
            ip("::ffff:10.0.0.2"),
            ip("fd00::1"),
            ip("10.0.0.2"),
        ];
        assert_eq!(
            removed_ingress(&prev, &[ip("fd00::1")]),
            vec![ip("10.0.0.1"), ip("10.0.0.2")]
        );
        assert!(removed_ingress(&prev, &prev).is_empty());
        assert!(removed_ingress(&[], &prev).is_empty());
    }

    #[test]
    fn not_a_load_balancer_any_more() {
        let w = World::new();
        let svc = service(json!({
            "metadata": {"annotations": {
                "purelb.io/announcing-IPv4": "node-b,eth0,192.168.1.240",
                "purelb.io/announcing": "x",
                "purelb.io/pool-type": "local",
            }},
            "spec": {"type": "ClusterIP"},
        }));
        let plan = w.plan_with(&svc, &[ip("fd00:1::241")]);
        assert_eq!(
            plan.decisions,
            vec![
                withdraw("192.168.1.240", WithdrawReason::NotLoadBalancer),
                withdraw("fd00:1::241", WithdrawReason::NotLoadBalancer),
            ]
        );
        let deleted: Vec<&str> = plan
            .annotations
            .changes
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            deleted,
            [
                "purelb.io/allocated-by",
                "purelb.io/announcing",
                "purelb.io/announcing-IPv4"
            ]
        );
        assert!(plan.annotations.changes.values().all(Option::is_none));
        assert!(plan.ingress.is_empty());
        // Unbranded: withdraw, but leave the annotations alone.
        let svc = service(json!({
            "metadata": {"annotations": {"purelb.io/allocated-by": "someone-else"}},
            "spec": {"type": "NodePort"},
        }));
        let plan = w.plan(&svc);
        assert_eq!(plan.decisions.len(), 1);
        assert!(plan.annotations.is_empty());
    }

    #[test]
    fn unbranded_services_are_not_announced() {
        let w = World::new();
        let mut svc = service(json!({}));
        svc.metadata.annotations = None;
        let plan = w.plan_with(&svc, &[ip("192.168.1.240")]);
        assert_eq!(
            plan.decisions,
            vec![withdraw("192.168.1.240", WithdrawReason::NotBranded)]
        );
        assert!(plan.ingress.is_empty());
        assert!(w.plan(&svc).decisions.is_empty());
        assert!(!is_branded(&svc));
    }

    #[test]
    fn slot_steal_is_reported() {
        let w = World::new();
        let svc = service(json!({
            "metadata": {"annotations": {
                "purelb.io/announcing-IPv4": "node-b,eth0,192.168.1.240 node-c,eth0,192.168.1.99",
            }},
        }));
        let plan = w.plan(&svc);
        assert_eq!(
            plan.annotations.changes,
            change(
                "purelb.io/announcing-IPv4",
                Some("node-a,eth0,192.168.1.240")
            )
        );
        assert_eq!(
            plan.annotations.steals,
            vec![SlotSteal {
                ip: ip("192.168.1.240"),
                from: "node-b".into(),
                to: NODE.into()
            }]
        );
        let e = plan.annotations.steals[0].event();
        assert_eq!(e.reason, "AnnounceSlotSteal");
        assert_eq!(
            e.message,
            "Node node-a took announcement of 192.168.1.240 from node node-b"
        );
        // Already ours: nothing to write.
        let svc = service(json!({"metadata": {"annotations": {
            "purelb.io/announcing-IPv4": "node-a,eth0,192.168.1.240",
        }}}));
        assert!(w.plan(&svc).annotations.is_empty());
    }

    #[test]
    fn withdraw_reason_tokens_and_slots() {
        assert_eq!(WithdrawReason::NoConfig.as_str(), "noConfig");
        assert_eq!(WithdrawReason::LostElection.as_str(), "lostElection");
        assert_eq!(WithdrawReason::NoEligibleNodes.as_str(), "noEligibleNodes");
        assert_eq!(WithdrawReason::NoEndpoints.as_str(), "noEndpoints");
        assert_eq!(
            WithdrawReason::NoLocalInterface.as_str(),
            "noLocalInterface"
        );
        assert!(!WithdrawReason::LostElection.releases_slot());
        assert!(!WithdrawReason::NoEligibleNodes.releases_slot());
        assert!(WithdrawReason::NoLocalInterface.releases_slot());
        assert!(WithdrawReason::NoConfig.releases_slot());
    }

    proptest! {
        #[test]
        fn pool_table_ignores_group_order(seed in any::<u64>()) {
            let mut shuffled = groups();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = usize::try_from(state >> 33).unwrap_or(0) % (i + 1);
                shuffled.swap(i, j);
            }
            prop_assert_eq!(PoolTable::from_groups(&groups()), PoolTable::from_groups(&shuffled));
        }

        #[test]
        fn removed_ingress_is_previous_minus_current(
            previous in proptest::collection::vec(0u8..8, 0..8),
            current in proptest::collection::vec(0u8..8, 0..8),
        ) {
            let to_ips = |v: &[u8]| -> Vec<IpAddr> {
                v.iter().map(|n| IpAddr::from([10, 0, 0, *n])).collect()
            };
            let (p, c) = (to_ips(&previous), to_ips(&current));
            let removed = removed_ingress(&p, &c);
            for ip in &removed {
                prop_assert!(p.contains(ip) && !c.contains(ip));
            }
            for ip in &p {
                prop_assert_eq!(removed.contains(ip), !c.contains(ip));
            }
            let unique: BTreeSet<&IpAddr> = removed.iter().collect();
            prop_assert_eq!(unique.len(), removed.len());
        }
    }
}
