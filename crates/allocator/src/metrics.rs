//! The allocator's Prometheus metrics, names and labels as PureLB's so
//! dashboards and alerts keep working. prometheus-client adds `_total` to counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ipam::{GroupStatus, Metric};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub pool: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub namespace: String,
    pub name: String,
    #[prometheus(flatten)]
    pub kind: KindLabel,
}

/// `type` is a Rust keyword, so the label lives in its own set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub socket: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLatencyLabels {
    pub socket: String,
    pub method: String,
}

fn rpc_latency_histogram() -> Histogram {
    // Prometheus' default buckets, 5 ms to 10 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Every metric the allocator exports, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub updates: Counter,
    pub update_errors: Counter,
    pub config_loaded: Gauge,
    pub pool_size: Family<PoolLabels, Gauge>,
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    pub allocation_rejected: Family<RejectLabels, Counter>,
    pub multipool_allocations: Family<PoolLabels, Counter>,
    pub multipool_partial: Family<PoolLabels, Counter>,
    pub balance_pools_allocations: Family<PoolLabels, Counter>,
    pub out_of_scope: Family<GroupLabels, Gauge>,
    pub status_writes: Family<OutcomeLabels, Counter>,
    pub sidecar_rpcs: Family<RpcLabels, Counter>,
    pub sidecar_rpc_duration: Family<RpcLatencyLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            updates: Counter::default(),
            update_errors: Counter::default(),
            config_loaded: Gauge::default(),
            pool_size: Family::default(),
            addresses_in_use: Family::default(),
            allocation_rejected: Family::default(),
            multipool_allocations: Family::default(),
            multipool_partial: Family::default(),
            balance_pools_allocations: Family::default(),
            out_of_scope: Family::default(),
            status_writes: Family::default(),
            sidecar_rpcs: Family::default(),
            sidecar_rpc_duration: Family::new_with_constructor(rpc_latency_histogram),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "purelb_k8s_client_updates",
            "Work items processed",
            metrics.updates.clone(),
        );
        registry.register(
            "purelb_k8s_client_update_errors",
            "Work items that failed, and rejected configurations",
            metrics.update_errors.clone(),
        );
        registry.register(
            "purelb_k8s_client_config_loaded_bool",
            "1 once a configuration was accepted",
            metrics.config_loaded.clone(),
        );
        registry.register(
            "purelb_address_pool_size",
            "Addresses in the pool",
            metrics.pool_size.clone(),
        );
        registry.register(
            "purelb_address_pool_addresses_in_use",
            "Distinct addresses in use",
            metrics.addresses_in_use.clone(),
        );
        registry.register(
            "purelb_address_pool_allocation_rejected",
            "Allocations refused, by reason",
            metrics.allocation_rejected.clone(),
        );
        registry.register(
            "purelb_address_pool_multipool_allocations",
            "Multi-pool allocations",
            metrics.multipool_allocations.clone(),
        );
        registry.register(
            "purelb_address_pool_multipool_partial",
            "Multi-pool allocations where some active ranges gave no address",
            metrics.multipool_partial.clone(),
        );
        registry.register(
            "purelb_address_pool_balance_pools_allocations",
            "Balanced allocations",
            metrics.balance_pools_allocations.clone(),
        );
        registry.register(
            "purelb_servicegroups_out_of_scope",
            "ServiceGroups ignored because they are outside the install namespace",
            metrics.out_of_scope.clone(),
        );
        registry.register(
            "purelb_allocator_sg_status_writes",
            "ServiceGroup status applies, by outcome",
            metrics.status_writes.clone(),
        );
        registry.register(
            "purelb_allocator_sidecar_rpc",
            "External IPAM sidecar calls",
            metrics.sidecar_rpcs.clone(),
        );
        registry.register(
            "purelb_allocator_sidecar_rpc_duration_seconds",
            "External IPAM sidecar call latency",
            metrics.sidecar_rpc_duration.clone(),
        );
        metrics
    }

    /// Counts one increment the IPAM asked for.
    pub fn count(&self, metric: &Metric) {
        let pool = |pool: &str| PoolLabels {
            pool: pool.to_owned(),
        };
        match metric {
            Metric::AllocationRejected { pool, reason } => {
                self.allocation_rejected
                    .get_or_create(&RejectLabels {
                        pool: pool.clone(),
                        reason: reason.as_str().to_owned(),
                    })
                    .inc();
            }
            Metric::MultipoolAllocation { pool: p } => {
                self.multipool_allocations.get_or_create(&pool(p)).inc();
            }
            Metric::MultipoolPartial { pool: p } => {
                self.multipool_partial.get_or_create(&pool(p)).inc();
            }
            Metric::BalancePoolsAllocation { pool: p } => {
                self.balance_pools_allocations.get_or_create(&pool(p)).inc();
            }
        };
    }

    /// `purelb_address_pool_size` and `_addresses_in_use` for one group.
    pub fn set_pool_gauges(&self, pool: &str, status: &GroupStatus) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        self.pool_size
            .get_or_create(&labels)
            .set(clamp(status.size()));
        self.addresses_in_use
            .get_or_create(&labels)
            .set(clamp(status.in_use()));
    }

    /// Forgets the gauges of a group that no longer exists.
    pub fn remove_pool_gauges(&self, pool: &str) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        self.pool_size.remove(&labels);
        self.addresses_in_use.remove(&labels);
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
