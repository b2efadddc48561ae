//! What a plan came to once the announcer carried it out: the events to post, the
//! announcing annotations to write and whether to try the Service again.
//!
//! The plan assumes every add succeeds. Where the announcer reports otherwise, this
//! node's annotation slot for that address is kept (not healthy) or released (the
//! kernel refused), the success event becomes a failure event, and the Service is
//! requeued.

use k8s_openapi::api::core::v1::Service;

use super::plan::{AnnotationChanges, Decision, ServicePlan, SlotAction, announcing_annotations};
use crate::event::Event;

/// What applying one decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The address was added (or moved) here: post the success event, GARP ran.
    Added,
    /// Already held as decided; nothing changed.
    Unchanged,
    /// Not added: this node is not (or no longer) healthy.
    NotHealthy,
    /// The kernel refused; the message is for `AnnouncementFailed`.
    Failed(String),
    /// A withdrawal: how many kernel addresses were removed (0: none held, or
    /// another Service still announces it).
    Withdrawn { removed: usize, shared: bool },
    /// Skip / Retry: nothing done.
    Nothing,
}

/// The effects of one Service's plan after the announcer applied it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// In order: the plan's own events, one per address added or refused, then one per
    /// annotation slot taken from another node.
    pub events: Vec<Event>,
    pub annotations: AnnotationChanges,
    /// Something could not be decided or carried out: run the Service again later.
    pub retry: bool,
}

/// Settles `plan` for `service` on `node`, given what applying each of its decisions
/// did (`applied[i]` for `plan.decisions[i]`).
pub fn settle(service: &Service, node: &str, plan: &ServicePlan, applied: &[Applied]) -> Outcome {
    let mut slot_actions = plan.slot_actions();
    let mut slots_changed = false;
    let mut events = plan.events.clone();
    let mut retry = false;
    for (i, (decision, applied)) in plan.decisions.iter().zip(applied).enumerate() {
        match (applied, decision) {
            (Applied::Added, Decision::Local { .. } | Decision::Remote { .. }) => {
                events.extend(decision.success_event(node));
            }
            (Applied::NotHealthy, _) => {
                slot_actions[i].1 = SlotAction::Keep;
                slots_changed = true;
            }
            (Applied::Failed(message), _) => {
                slot_actions[i].1 = SlotAction::Release;
                slots_changed = true;
                events.extend(decision.failure_event(node, message));
                retry = true;
            }
            (_, Decision::Retry { .. }) => retry = true,
            _ => {}
        }
    }
    let annotations = if slots_changed {
        announcing_annotations(service, node, &slot_actions)
    } else {
        plan.annotations.clone()
    };
    events.extend(annotations.steals.iter().map(|steal| steal.event()));
    Outcome {
        events,
        annotations,
        retry,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use super::*;
    use crate::event::{self, EventType};
    use crate::node::settings::AddressSettings;

    const NODE: &str = "node-a";

    fn ip() -> IpAddr {
        "192.168.1.240".parse().unwrap()
    }

    fn service(announcing: Option<&str>) -> Service {
        let mut annotations = json!({"purelb.io/allocated-by": "PureLB"});
        if let Some(a) = announcing {
            annotations["purelb.io/announcing-IPv4"] = json!(a);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "annotations": annotations},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}},
        }))
        .unwrap()
    }

    /// The plan for one local address on eth0, as the planner makes it.
    fn local_plan(svc: &Service) -> ServicePlan {
        let decision = Decision::Local {
            ip: ip(),
            interface: "eth0".into(),
            prefix_len: 24,
            options: AddressSettings::LOCAL_DEFAULT,
            nodad: false,
            garp: false,
        };
        let mut plan = ServicePlan {
            ingress: vec![ip()],
            decisions: vec![decision],
            ..Default::default()
        };
        plan.annotations = announcing_annotations(svc, NODE, &plan.slot_actions());
        plan
    }

    fn reasons(outcome: &Outcome) -> Vec<&str> {
        outcome.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn an_add_as_planned_posts_its_event_and_writes_the_planned_slot() {
        let svc = service(None);
        let plan = local_plan(&svc);
        let outcome = settle(&svc, NODE, &plan, &[Applied::Added]);
        assert_eq!(reasons(&outcome), [event::ANNOUNCING_LOCAL]);
        assert_eq!(outcome.annotations, plan.annotations);
        assert!(!outcome.annotations.is_empty());
        assert!(!outcome.retry);
        // Already held: no event, the same annotations.
        let outcome = settle(&svc, NODE, &plan, &[Applied::Unchanged]);
        assert!(outcome.events.is_empty());
        assert_eq!(outcome.annotations, plan.annotations);
    }

    #[test]
    fn a_refused_add_releases_the_slot_warns_and_retries() {
        let svc = service(Some("node-a,eth0,192.168.1.240"));
        let plan = local_plan(&svc);
        let outcome = settle(&svc, NODE, &plan, &[Applied::Failed("EPERM".into())]);
        assert_eq!(reasons(&outcome), [event::ANNOUNCEMENT_FAILED]);
        assert_eq!(outcome.events[0].type_, EventType::Warning);
        assert!(outcome.events[0].message.contains("EPERM"));
        assert_eq!(
            outcome.annotations.changes.get("purelb.io/announcing-IPv4"),
            Some(&None),
            "this node's slot is released"
        );
        assert!(outcome.retry);
    }

    #[test]
    fn an_unhealthy_node_keeps_its_slot_as_it_was() {
        let svc = service(Some("node-a,eth1,192.168.1.240"));
        let plan = local_plan(&svc);
        assert!(
            !plan.annotations.is_empty(),
            "the plan moves the slot to eth0"
        );
        let outcome = settle(&svc, NODE, &plan, &[Applied::NotHealthy]);
        assert!(outcome.annotations.is_empty());
        assert!(outcome.events.is_empty());
        assert!(!outcome.retry);
    }

    #[test]
    fn an_undecided_address_is_retried() {
        let svc = service(None);
        let plan = ServicePlan {
            ingress: vec![ip()],
            decisions: vec![Decision::Retry {
                ip: ip(),
                message: "no IPv4 default route".into(),
            }],
            ..Default::default()
        };
        let outcome = settle(&svc, NODE, &plan, &[Applied::Nothing]);
        assert!(outcome.retry);
        assert!(outcome.events.is_empty());
        assert!(outcome.annotations.is_empty());
    }

    #[test]
    fn a_slot_taken_from_another_node_is_reported_last() {
        let svc = service(Some("node-b,eth0,192.168.1.240"));
        let mut plan = local_plan(&svc);
        plan.events
            .push(Event::normal(event::LOCAL_OVERRIDE, "rewritten to Cluster"));
        let outcome = settle(&svc, NODE, &plan, &[Applied::Added]);
        assert_eq!(
            reasons(&outcome),
            [
                event::LOCAL_OVERRIDE,
                event::ANNOUNCING_LOCAL,
                event::ANNOUNCE_SLOT_STEAL
            ]
        );
        assert_eq!(outcome.annotations.steals.len(), 1);
        assert_eq!(outcome.annotations.steals[0].from, "node-b");
    }
}
