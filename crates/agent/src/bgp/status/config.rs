//! The status this node writes into a BGPConfiguration: applied, refused (the last good one
//! keeps running) or superseded by another.

use std::time::SystemTime;

use purelb_api::crd::bgp_configuration::BGPConfigurationStatus;

use super::{condition, count, time};
use crate::bgp::config::{MapError, MappedConfig};

/// How this node's view of one BGPConfiguration ended.
pub enum ConfigOutcome<'a> {
    /// Applied; `established` neighbours are up on this node.
    Applied {
        mapped: &'a MappedConfig,
        established: usize,
    },
    /// Refused; the last good configuration (if any) keeps running.
    Invalid(&'a MapError),
    /// Another BGPConfiguration is the one in effect.
    Superseded { by: &'a str },
}

/// The BGPConfiguration `status` this node writes.
pub fn config_status(
    generation: Option<i64>,
    previous: Option<&BGPConfigurationStatus>,
    outcome: &ConfigOutcome<'_>,
    now: SystemTime,
) -> BGPConfigurationStatus {
    let prev_conditions = previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default();
    let c = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(
            &prev_conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            now,
        )
    };
    let mut status = BGPConfigurationStatus {
        observed_generation: generation,
        last_reconcile_time: Some(time(now)),
        ..BGPConfigurationStatus::default()
    };
    match outcome {
        ConfigOutcome::Applied {
            mapped,
            established,
        } => {
            status.conditions = Some(vec![
                c(
                    "Ready",
                    true,
                    "ReconcileSuccess",
                    "BGP configuration applied successfully".to_owned(),
                ),
                c(
                    "RouterIDResolved",
                    true,
                    "Resolved",
                    format!(
                        "router ID {} ({})",
                        mapped.speaker.router_id,
                        mapped.router_id_source.as_str()
                    ),
                ),
            ]);
            status.neighbor_count = Some(count(mapped.neighbor_count));
            status.established_neighbors = Some(count(*established));
            status.message = Some(if mapped.unsupported.is_empty() {
                "applied".to_owned()
            } else {
                format!(
                    "applied; not supported and ignored: {}",
                    mapped.unsupported.join(", ")
                )
            });
            status.router_id_source = Some(mapped.router_id_source.as_str().to_owned());
            status.router_id_resolution_time = previous
                .filter(|p| p.router_id_source == status.router_id_source)
                .and_then(|p| p.router_id_resolution_time.clone())
                .or_else(|| Some(time(now)));
        }
        ConfigOutcome::Invalid(e) => {
            let router_id = matches!(e, MapError::RouterId(_));
            let mut conditions = vec![c(
                "Ready",
                false,
                "ConfigurationInvalid",
                format!("Configuration validation failed: {e}"),
            )];
            if router_id {
                conditions.push(c(
                    "RouterIDResolved",
                    false,
                    "ResolutionFailed",
                    e.to_string(),
                ));
            }
            status.conditions = Some(conditions);
            status.message = Some(format!(
                "Configuration validation failed: {e}; the last good configuration keeps running"
            ));
            status.neighbor_count = previous.and_then(|p| p.neighbor_count);
            status.established_neighbors = previous.and_then(|p| p.established_neighbors);
        }
        ConfigOutcome::Superseded { by } => {
            status.conditions = Some(vec![c(
                "Ready",
                false,
                "Superseded",
                format!("BGPConfiguration {by} is the one in effect; only one is applied"),
            )]);
            status.message = Some(format!(
                "not applied: BGPConfiguration {by} is in effect (the oldest one wins)"
            ));
        }
    }
    status
}
