//! What the mapping reads besides the BGPConfiguration: the node's facts, the Secrets of the
//! install namespace, and which of several BGPConfigurations is in force.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use purelb_api::crd::bgp_configuration::BGPConfiguration;

use super::{NodeFacts, Secrets};

impl NodeFacts {
    /// The name, labels, annotations and InternalIP / ExternalIP addresses of `node`.
    pub fn of(node: &Node) -> Self {
        let addresses = |kind: &str| -> Vec<IpAddr> {
            node.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == kind)
                .filter_map(|a| a.address.parse().ok())
                .collect()
        };
        Self {
            name: node.name_any(),
            labels: node.labels().clone(),
            annotations: node.annotations().clone(),
            internal_ips: addresses("InternalIP"),
            external_ips: addresses("ExternalIP"),
        }
    }
}

/// Every UTF-8 value of every Secret, by (Secret name, key).
pub fn secrets_of(secrets: &[Arc<Secret>]) -> Secrets {
    secrets
        .iter()
        .flat_map(|s| {
            let name = s.name_any();
            s.data.iter().flatten().filter_map(move |(k, v)| {
                let value = String::from_utf8(v.0.clone()).ok()?;
                Some(((name.clone(), k.clone()), value))
            })
        })
        .collect()
}

/// `namespace/name` of a BGPConfiguration.
pub fn config_key(c: &BGPConfiguration) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

/// Of several BGPConfigurations, the one in force (the oldest, then by namespace/name) and the
/// others, which it supersedes; `None` when there is none.
pub fn in_force(
    mut configs: Vec<Arc<BGPConfiguration>>,
) -> Option<(Arc<BGPConfiguration>, Vec<Arc<BGPConfiguration>>)> {
    configs.sort_by(|a, b| {
        (a.creation_timestamp().map(|t| t.0), config_key(a))
            .cmp(&(b.creation_timestamp().map(|t| t.0), config_key(b)))
    });
    let mut configs = configs.into_iter();
    let active = configs.next()?;
    Some((active, configs.collect()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(name: &str, created: &str) -> Arc<BGPConfiguration> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "bgp.purelb.io/v1", "kind": "BGPConfiguration",
                "metadata": {"name": name, "namespace": "purelb-system", "creationTimestamp": created},
                "spec": {"global": {"asn": 65000}},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_oldest_configuration_is_in_force_and_ties_go_by_name() {
        assert!(in_force(Vec::new()).is_none());
        let (active, superseded) = in_force(vec![
            config("b", "2026-01-02T00:00:00Z"),
            config("z", "2026-01-01T00:00:00Z"),
            config("a", "2026-01-02T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(config_key(&active), "purelb-system/z");
        let others: Vec<String> = superseded.iter().map(|c| config_key(c)).collect();
        assert_eq!(others, ["purelb-system/a", "purelb-system/b"]);
    }

    #[test]
    fn node_facts_and_secrets() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}, "annotations": {"rid": "10.0.0.1"}},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "192.0.2.10"},
                {"type": "InternalIP", "address": "2001:db8::10"},
                {"type": "ExternalIP", "address": "198.51.100.10"},
            ]},
        }))
        .unwrap();
        let facts = NodeFacts::of(&node);
        assert_eq!(facts.name, "n1");
        assert_eq!(facts.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(
            facts.annotations.get("rid").map(String::as_str),
            Some("10.0.0.1")
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(facts.internal_ips, [ip("192.0.2.10"), ip("2001:db8::10")]);
        assert_eq!(facts.external_ips, [ip("198.51.100.10")]);

        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "peer"},
            // "hunter2" and a value that is not UTF-8.
            "data": {"password": "aHVudGVyMg==", "binary": "/w=="},
        }))
        .unwrap();
        let secrets = secrets_of(&[Arc::new(secret)]);
        assert_eq!(
            secrets
                .get(&("peer".to_owned(), "password".to_owned()))
                .map(String::as_str),
            Some("hunter2")
        );
        assert_eq!(secrets.len(), 1, "a value that is not UTF-8 is left out");
    }
}
