//! The node agent's Prometheus metrics: PureLB's names and labels, so
//! dashboards, alerts and the e2e suite keep working. prometheus-client appends
//! `_total` to counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::node::selection::SelectorState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnouncedLabels {
    pub service: String,
    pub node: String,
    pub ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StealLabels {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// `service` carries the IP, as upstream's label does.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

/// Every metric the agent exports, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    // Shared with the allocator.
    pub updates: Counter,
    pub update_errors: Counter,
    pub config_loaded: Gauge,
    // lbnodeagent.
    pub announced: Family<AnnouncedLabels, Gauge>,
    pub garp_sent: Counter,
    pub garp_errors: Counter,
    pub na_sent: Counter,
    pub na_errors: Counter,
    pub address_additions: Counter,
    pub address_withdrawals: Counter,
    pub address_renewals: Counter,
    pub address_renewal_errors: Counter,
    pub election_wins: Counter,
    pub election_losses: Counter,
    pub slot_steals: Family<StealLabels, Counter>,
    pub selector_state: Family<StateLabels, Gauge>,
    // election.
    pub lease_healthy: Gauge,
    pub lease_renewals: Counter,
    pub lease_renewal_failures: Counter,
    pub member_count: Gauge,
    pub subnet_count: Gauge,
    pub local_subnet_count: Gauge,
    pub affinity_fallback: Family<ServiceLabels, Counter>,
    pub winner_changes: Family<ServiceLabels, Counter>,
    /// Not in upstream: how often this node withdrew its local addresses because it
    /// could not renew its lease in time.
    pub fenced: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            updates: Counter::default(),
            update_errors: Counter::default(),
            config_loaded: Gauge::default(),
            announced: Family::default(),
            garp_sent: Counter::default(),
            garp_errors: Counter::default(),
            na_sent: Counter::default(),
            na_errors: Counter::default(),
            address_additions: Counter::default(),
            address_withdrawals: Counter::default(),
            address_renewals: Counter::default(),
            address_renewal_errors: Counter::default(),
            election_wins: Counter::default(),
            election_losses: Counter::default(),
            slot_steals: Family::default(),
            selector_state: Family::default(),
            lease_healthy: Gauge::default(),
            lease_renewals: Counter::default(),
            lease_renewal_failures: Counter::default(),
            member_count: Gauge::default(),
            subnet_count: Gauge::default(),
            local_subnet_count: Gauge::default(),
            affinity_fallback: Family::default(),
            winner_changes: Family::default(),
            fenced: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "purelb_k8s_client_updates",
            "Work items processed",
            m.updates.clone(),
        );
        r.register(
            "purelb_k8s_client_update_errors",
            "Work items that failed, and rejected configurations",
            m.update_errors.clone(),
        );
        r.register(
            "purelb_k8s_client_config_loaded_bool",
            "1 once a configuration was accepted",
            m.config_loaded.clone(),
        );
        r.register(
            "purelb_lbnodeagent_announced",
            "1 while this node announces ip for service",
            m.announced.clone(),
        );
        r.register(
            "purelb_lbnodeagent_garp_sent",
            "Gratuitous ARP sends (each a request and a reply frame)",
            m.garp_sent.clone(),
        );
        r.register(
            "purelb_lbnodeagent_garp_errors",
            "Gratuitous ARP send errors",
            m.garp_errors.clone(),
        );
        r.register(
            "purelb_lbnodeagent_na_sent",
            "Unsolicited neighbor advertisements sent",
            m.na_sent.clone(),
        );
        r.register(
            "purelb_lbnodeagent_na_errors",
            "Unsolicited neighbor advertisement send errors",
            m.na_errors.clone(),
        );
        r.register(
            "purelb_lbnodeagent_address_additions",
            "Addresses added to an interface",
            m.address_additions.clone(),
        );
        r.register(
            "purelb_lbnodeagent_address_withdrawals",
            "Address withdrawals",
            m.address_withdrawals.clone(),
        );
        r.register(
            "purelb_lbnodeagent_address_renewals",
            "Address lifetime renewals",
            m.address_renewals.clone(),
        );
        r.register(
            "purelb_lbnodeagent_address_renewal_errors",
            "Address lifetime renewal errors",
            m.address_renewal_errors.clone(),
        );
        r.register(
            "purelb_lbnodeagent_election_wins",
            "Elections this node won, per evaluation",
            m.election_wins.clone(),
        );
        r.register(
            "purelb_lbnodeagent_election_losses",
            "Elections this node lost, per evaluation",
            m.election_losses.clone(),
        );
        r.register(
            "purelb_lbnodeagent_announce_slot_steal",
            "Announcing-annotation slots taken from another node",
            m.slot_steals.clone(),
        );
        r.register(
            "purelb_lbnodeagent_selector_state",
            "The election interface selector state (one series is 1)",
            m.selector_state.clone(),
        );
        r.register(
            "purelb_election_lease_healthy",
            "1 while this node's lease is renewed in time",
            m.lease_healthy.clone(),
        );
        r.register(
            "purelb_election_lease_renewals",
            "Lease renewals",
            m.lease_renewals.clone(),
        );
        r.register(
            "purelb_election_lease_renewal_failures",
            "Lease renewal failures",
            m.lease_renewal_failures.clone(),
        );
        r.register(
            "purelb_election_member_count",
            "Live node leases",
            m.member_count.clone(),
        );
        r.register(
            "purelb_election_subnet_count",
            "Distinct subnets over all live leases",
            m.subnet_count.clone(),
        );
        r.register(
            "purelb_election_local_subnet_count",
            "Subnets in this node's lease",
            m.local_subnet_count.clone(),
        );
        r.register(
            "purelb_election_affinity_fallback",
            "Node-affinity elections that fell back to all candidates",
            m.affinity_fallback.clone(),
        );
        r.register(
            "purelb_election_winner_changes",
            "Changes of the winning node for an address",
            m.winner_changes.clone(),
        );
        r.register(
            "purelb_election_fenced",
            "Times this node withdrew its local addresses because its lease could not be renewed in time",
            m.fenced.clone(),
        );
        m.set_selector_state(SelectorState::Default);
        m
    }

    /// Exactly one `selector_state` series is 1.
    pub fn set_selector_state(&self, state: SelectorState) {
        for s in SelectorState::ALL {
            self.selector_state
                .get_or_create(&StateLabels {
                    state: s.as_str().to_owned(),
                })
                .set(i64::from(s == state));
        }
    }

    pub fn set_announced(&self, service: &str, node: &str, ip: std::net::IpAddr, on: bool) {
        let labels = AnnouncedLabels {
            service: service.to_owned(),
            node: node.to_owned(),
            ip: ip.to_string(),
        };
        if on {
            self.announced.get_or_create(&labels).set(1);
        } else {
            self.announced.remove(&labels);
        }
    }

    /// The text exposition format served on `/metrics`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        purelb_kube_edge::http::encode(&self.registry)
    }
}

impl AsRef<Registry> for Metrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}
