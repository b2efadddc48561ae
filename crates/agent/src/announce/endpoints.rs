//! Which nodes host a healthy endpoint of a Service, from its EndpointSlices (for
//! `externalTrafficPolicy: Local` on remote addresses, and for election node affinity).
//!
//! An endpoint is healthy when it is Ready or Serving (Serving keeps terminating pods
//! in, so a VIP does not vanish mid-drain). Slices may split one endpoint by port, so
//! each (node, address) is tracked across all slices: it is healthy only if every
//! appearance is healthy. A node qualifies with at least one healthy address.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service (`namespace/name`) `slice` belongs to.
pub fn service_of(slice: &EndpointSlice) -> Option<String> {
    let namespace = slice.metadata.namespace.as_deref()?;
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!("{namespace}/{service}"))
}

/// Ready or Serving.
///
/// Choice: absent conditions count as the API documents them ("a nil value should be
/// interpreted as true" for both `ready` and `serving`); upstream treats nil as false,
/// which drops endpoints of hand-written slices that leave conditions out.
pub fn is_healthy(conditions: Option<&EndpointConditions>) -> bool {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    ready || serving
}

/// Every node with at least one healthy endpoint address, over all `slices` (which
/// should all belong to one Service). Endpoints without `nodeName` are ignored.
pub fn healthy_nodes<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> BTreeSet<String> {
    let mut health: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for slice in slices {
        for endpoint in &slice.endpoints {
            let Some(node) = endpoint.node_name.as_deref() else {
                continue;
            };
            let healthy = is_healthy(endpoint.conditions.as_ref());
            for address in &endpoint.addresses {
                health
                    .entry((node, address.as_str()))
                    .and_modify(|h| *h &= healthy)
                    .or_insert(healthy);
            }
        }
    }
    health
        .into_iter()
        .filter(|(_, healthy)| *healthy)
        .map(|((node, _), _)| node.to_owned())
        .collect()
}

/// Whether `node` hosts a healthy endpoint (the `externalTrafficPolicy: Local` test
/// for remote announcements).
pub fn node_has_healthy_endpoint<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> bool {
    healthy_nodes(slices).contains(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::Endpoint;
    use proptest::prelude::*;

    fn endpoint(
        node: Option<&str>,
        addresses: &[&str],
        ready: Option<bool>,
        serving: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating: None,
            }),
            node_name: node.map(str::to_owned),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ..Default::default()
        }
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn ready_or_serving_counts() {
        let slices = [slice(vec![
            endpoint(Some("a"), &["10.0.0.1"], Some(true), Some(true)),
            endpoint(Some("b"), &["10.0.0.2"], Some(false), Some(true)),
            endpoint(Some("c"), &["10.0.0.3"], Some(false), Some(false)),
            endpoint(Some("d"), &["10.0.0.4"], Some(true), Some(false)),
            endpoint(None, &["10.0.0.5"], Some(true), Some(true)),
        ])];
        assert_eq!(healthy_nodes(&slices), set(&["a", "b", "d"]));
        assert!(node_has_healthy_endpoint(&slices, "b"));
        assert!(!node_has_healthy_endpoint(&slices, "c"));
        assert!(!node_has_healthy_endpoint(&slices, "z"));
    }

    #[test]
    fn absent_conditions_are_healthy() {
        assert!(is_healthy(None));
        assert!(is_healthy(Some(&EndpointConditions::default())));
        assert!(is_healthy(Some(&EndpointConditions {
            ready: Some(false),
            serving: None,
            terminating: None
        })));
        assert!(!is_healthy(Some(&EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(true)
        })));
    }

    #[test]
    fn an_address_must_be_healthy_in_every_slice() {
        // 10.0.0.1 is Ready in the port-80 slice and not in the port-443 slice.
        let slices = [
            slice(vec![endpoint(
                Some("a"),
                &["10.0.0.1"],
                Some(true),
                Some(true),
            )]),
            slice(vec![endpoint(
                Some("a"),
                &["10.0.0.1"],
                Some(false),
                Some(false),
            )]),
        ];
        assert!(healthy_nodes(&slices).is_empty());
        // The order of slices does not matter.
        let reversed = [slices[1].clone(), slices[0].clone()];
        assert!(healthy_nodes(&reversed).is_empty());
        // Another healthy address on the same node still qualifies it.
        let mut more = slices.to_vec();
        more.push(slice(vec![endpoint(
            Some("a"),
            &["10.0.0.9"],
            Some(false),
            Some(true),
        )]));
        assert_eq!(healthy_nodes(&more), set(&["a"]));
    }

    #[test]
    fn addresses_are_tracked_per_node() {
        // The same address reported on two nodes (a pod IP reused after a move): the
        // unhealthy appearance on b does not disqualify a.
        let slices = [
            slice(vec![endpoint(Some("a"), &["10.0.0.1"], Some(true), None)]),
            slice(vec![endpoint(
                Some("b"),
                &["10.0.0.1"],
                Some(false),
                Some(false),
            )]),
        ];
        assert_eq!(healthy_nodes(&slices), set(&["a"]));
    }

    #[test]
    fn slice_ownership() {
        let mut s = slice(vec![]);
        s.metadata.namespace = Some("ns".into());
        s.metadata.labels = Some(
            [(SERVICE_NAME_LABEL.to_owned(), "web".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_eq!(service_of(&s).as_deref(), Some("ns/web"));
        s.metadata.namespace = Some("other".into());
        assert_eq!(service_of(&s).as_deref(), Some("other/web"));
        s.metadata.labels = None;
        assert_eq!(service_of(&s), None);
    }

    proptest! {
        #[test]
        fn slice_order_does_not_matter(
            endpoints in proptest::collection::vec(
                (0u8..3, 0u8..4, proptest::option::of(any::<bool>()), proptest::option::of(any::<bool>())),
                0..12,
            ),
            split in 0usize..12,
        ) {
            let eps: Vec<Endpoint> = endpoints
                .iter()
                .map(|(node, addr, ready, serving)| {
                    endpoint(
                        Some(&format!("n{node}")),
                        &[&format!("10.0.0.{addr}")],
                        *ready,
                        *serving,
                    )
                })
                .collect();
            let split = split.min(eps.len());
            let a = [slice(eps[..split].to_vec()), slice(eps[split..].to_vec())];
            let b = [a[1].clone(), a[0].clone()];
            let one = [slice(eps.clone())];
            prop_assert_eq!(healthy_nodes(&a), healthy_nodes(&b));
            prop_assert_eq!(healthy_nodes(&a), healthy_nodes(&one));
        }
    }
}
