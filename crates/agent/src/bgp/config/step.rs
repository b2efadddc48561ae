//! What the BGP runtime does with the BGPConfigurations it sees, decided as a value: which
//! configuration is in force and which it supersedes, and whether to stop the speaker, wait for
//! this node's Node, refuse the configuration (the last good one keeps running), leave the
//! speaker as it is, or start or reconfigure it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Secret};
use purelb_api::crd::bgp_configuration::BGPConfiguration;

use super::{MapError, MappedConfig, NodeFacts, config_key, in_force, map_config, secrets_of};
use crate::event::{self, Event};

/// The configuration the speaker runs: the object it came from (`namespace/name`) and its
/// mapping.
pub type Applied = (String, MappedConfig);

/// The runtime's next step for the configuration in force.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No BGPConfiguration: stop the speaker.
    Stop,
    /// This node's Node is not known yet.
    WaitForNode,
    /// The configuration cannot be applied: say why; the last good one keeps running.
    Refuse { error: MapError },
    /// The speaker already runs exactly this: only refresh the status.
    Unchanged,
    /// Start the speaker (none runs) or apply the new configuration to it.
    Apply {
        mapped: Box<MappedConfig>,
        /// The router ID differs from the one running (or none ran): say how it was found.
        router_id_changed: bool,
    },
}

/// The decision for one set of BGPConfigurations.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The configuration in force, if any.
    pub active: Option<Arc<BGPConfiguration>>,
    /// The others, superseded by it.
    pub superseded: Vec<Arc<BGPConfiguration>>,
    pub step: Step,
}

/// Decides what to do with `configs` for `node`, given what the speaker runs (`applied`, and
/// whether a speaker is running at all).
pub fn decide(
    configs: Vec<Arc<BGPConfiguration>>,
    node: Option<&Node>,
    secrets: &[Arc<Secret>],
    applied: Option<&Applied>,
    running: bool,
) -> Decision {
    let Some((active, superseded)) = in_force(configs) else {
        return Decision {
            active: None,
            superseded: Vec::new(),
            step: Step::Stop,
        };
    };
    let step = match node {
        None => Step::WaitForNode,
        Some(node) => match map_config(&active, &NodeFacts::of(node), &secrets_of(secrets)) {
            Err(error) => Step::Refuse { error },
            Ok(mapped) => {
                let key = config_key(&active);
                let unchanged = applied.is_some_and(|(k, m)| *k == key && *m == mapped);
                if unchanged && running {
                    Step::Unchanged
                } else {
                    let router_id_changed = applied
                        .is_none_or(|(_, m)| m.speaker.router_id != mapped.speaker.router_id);
                    Step::Apply {
                        mapped: Box::new(mapped),
                        router_id_changed,
                    }
                }
            }
        },
    };
    Decision {
        active: Some(active),
        superseded,
        step,
    }
}

/// The Warning event of a refused configuration on `node`.
pub fn refused_event(node: &str, error: &MapError) -> Event {
    Event::warning(
        event::CONFIGURATION_INVALID,
        format!("node {node}: {error}; the last good configuration keeps running"),
    )
}

/// The events of an applied configuration on `node`: its warnings, and how the router ID was
/// found when it changed.
pub fn applied_events(node: &str, mapped: &MappedConfig, router_id_changed: bool) -> Vec<Event> {
    let mut events: Vec<Event> = mapped
        .warnings
        .iter()
        .map(|(reason, message)| Event::warning(reason, message.clone()))
        .collect();
    if router_id_changed {
        events.push(Event::normal(
            event::ROUTER_ID_RESOLVED,
            format!(
                "Router ID resolved to {} via {} from node {node}",
                mapped.speaker.router_id,
                mapped.router_id_source.as_str(),
            ),
        ));
    }
    events
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::SAMPLE;
    use super::*;

    fn config(yaml: &str, name: &str, created: &str) -> Arc<BGPConfiguration> {
        let mut c: BGPConfiguration = serde_saphyr::from_str(yaml).unwrap();
        c.metadata.name = Some(name.into());
        c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created.parse().unwrap(),
        ));
        Arc::new(c)
    }

    fn node(ip: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "node-a"},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    /// The runtime's view between inputs: what the speaker runs.
    struct Replay {
        applied: Option<Applied>,
        running: bool,
    }

    impl Replay {
        /// One input: the BGPConfigurations and the Node as the watches show them. The
        /// speaker is taken to do what it is asked, as the runtime records it.
        fn step(&mut self, configs: &[Arc<BGPConfiguration>], node: Option<&Node>) -> Decision {
            let d = decide(
                configs.to_vec(),
                node,
                &[],
                self.applied.as_ref(),
                self.running,
            );
            match (&d.step, &d.active) {
                (Step::Apply { mapped, .. }, Some(active)) => {
                    self.applied = Some((config_key(active), (**mapped).clone()));
                    self.running = true;
                }
                (Step::Stop, _) => {
                    self.applied = None;
                    self.running = false;
                }
                _ => {}
            }
            d
        }
    }

    fn names(configs: &[Arc<BGPConfiguration>]) -> Vec<String> {
        configs.iter().map(|c| config_key(c)).collect()
    }

    #[test]
    fn a_recorded_configuration_history_gives_each_step_once() {
        let mut r = Replay {
            applied: None,
            running: false,
        };
        let first = config(SAMPLE, "default", "2026-01-01T00:00:00Z");
        let only_first = vec![first.clone()];
        let n = node("198.51.100.5");

        // The configuration arrives before the Node: wait, then start with it.
        assert_eq!(r.step(&only_first, None).step, Step::WaitForNode);
        let d = r.step(&only_first, Some(&n));
        let Step::Apply {
            mapped,
            router_id_changed: true,
        } = &d.step
        else {
            panic!("{:?}", d.step);
        };
        assert_eq!(mapped.speaker.router_id.to_string(), "198.51.100.5");
        let events = applied_events("node-a", mapped, true);
        assert_eq!(
            events.last().map(|e| e.reason),
            Some(event::ROUTER_ID_RESOLVED)
        );

        // Our own status write comes back through the watch: nothing to apply.
        assert_eq!(r.step(&only_first, Some(&n)).step, Step::Unchanged);

        // The Node's address changes the router ID: applied again, and said so.
        let moved = node("198.51.100.6");
        let d = r.step(&only_first, Some(&moved));
        assert!(
            matches!(
                d.step,
                Step::Apply {
                    router_id_changed: true,
                    ..
                }
            ),
            "{:?}",
            d.step
        );

        // An edit that keeps the router ID: applied, nothing said about the router ID.
        let edited = config(
            &SAMPLE.replace("peerAsn: 65001", "peerAsn: 65002"),
            "default",
            "2026-01-01T00:00:00Z",
        );
        let d = r.step(std::slice::from_ref(&edited), Some(&moved));
        let Step::Apply {
            mapped,
            router_id_changed: false,
        } = &d.step
        else {
            panic!("{:?}", d.step);
        };
        assert!(applied_events("node-a", mapped, false).is_empty());
        assert!(matches!(
            r.step(&only_first, Some(&moved)).step,
            Step::Apply {
                router_id_changed: false,
                ..
            }
        ));

        // A newer configuration is superseded by the oldest; the running one stays.
        let second = config(SAMPLE, "second", "2026-02-01T00:00:00Z");
        let d = r.step(&[second.clone(), first.clone()], Some(&moved));
        assert_eq!(names(&d.superseded), ["purelb-system/second"]);
        assert_eq!(d.step, Step::Unchanged);

        // A broken edit is refused: the last good configuration keeps running.
        let broken = config(
            &SAMPLE.replace("routerID: \"\"", "routerID: \"not-an-ip\""),
            "default",
            "2026-01-01T00:00:00Z",
        );
        let d = r.step(&[broken], Some(&moved));
        let Step::Refuse { error } = &d.step else {
            panic!("{:?}", d.step);
        };
        assert!(
            refused_event("node-a", error)
                .message
                .contains("keeps running")
        );
        assert_eq!(r.step(&only_first, Some(&moved)).step, Step::Unchanged);

        // Every configuration deleted: stop; a new one starts the speaker again.
        assert_eq!(r.step(&[], Some(&moved)).step, Step::Stop);
        let d = r.step(&[second], Some(&moved));
        assert!(matches!(d.step, Step::Apply { .. }), "{:?}", d.step);
    }
}
