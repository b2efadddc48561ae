//! The announcing annotations (`purelb.io/announcing-IPv4` / `-IPv6`): each node's
//! slot per address, claimed by the node that announces it locally.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use purelb_api::annotations::{self, Announcements, SlotOwner};
use purelb_api::pool::IpFamily;
use purelb_api::service::{annotation, unique_ingress_ips};

use super::decision::SlotAction;
use crate::event::{self, Event};

/// This node took an address's annotation slot from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSteal {
    pub ip: IpAddr,
    pub from: String,
    pub to: String,
}

impl SlotSteal {
    /// Normal `AnnounceSlotSteal`; also count
    /// `purelb_lbnodeagent_announce_slot_steal_total{from,to}`.
    pub fn event(&self) -> Event {
        Event::normal(
            event::ANNOUNCE_SLOT_STEAL,
            format!(
                "Node {} took announcement of {} from node {}",
                self.to, self.ip, self.from
            ),
        )
    }
}

/// Annotation changes for the Service: `Some(value)` sets a key, `None` deletes it.
/// Only keys whose value changes are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationChanges {
    pub changes: BTreeMap<String, Option<String>>,
    pub steals: Vec<SlotSteal>,
}

impl AnnotationChanges {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The announcing-annotation changes for `actions`: a claim replaces the
/// address's slot with `node,interface,ip` and drops slots of addresses no longer in
/// the ingress list of the same family; a release removes only this node's own slot.
/// Keys whose canonical value does not change are left alone.
pub fn announcing_annotations(
    service: &Service,
    node: &str,
    actions: &[(IpAddr, SlotAction)],
) -> AnnotationChanges {
    let ingress = unique_ingress_ips(service);
    let mut result = AnnotationChanges::default();
    for family in [IpFamily::V4, IpFamily::V6] {
        let key = match family {
            IpFamily::V4 => annotations::ANNOUNCING_IPV4,
            IpFamily::V6 => annotations::ANNOUNCING_IPV6,
        };
        let before = Announcements::parse(annotation(service, key).unwrap_or_default());
        let mut after = before.clone();
        for (ip, action) in actions.iter().filter(|(ip, _)| IpFamily::of(*ip) == family) {
            match action {
                SlotAction::Claim { interface } => {
                    // A name the codec refuses cannot be written; the slot stays as is.
                    let Ok(owner) = SlotOwner::new(node, interface.as_str()) else {
                        continue;
                    };
                    if let Some(from) = after.claim(*ip, owner, &ingress) {
                        result.steals.push(SlotSteal {
                            ip: ip.to_canonical(),
                            from,
                            to: node.to_owned(),
                        });
                    }
                }
                SlotAction::Release => {
                    after.release(node, *ip);
                }
                SlotAction::Keep => {}
            }
        }
        if after != before {
            result.changes.insert(key.to_owned(), after.encode());
        }
    }
    result
}
