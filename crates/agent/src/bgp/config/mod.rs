//! BGPConfiguration → the embedded speaker's configuration, for one node.
//!
//! Pure: [`map_config`] takes the BGPConfiguration, the node's facts and the Secrets it may
//! reference, and returns the [`SpeakerConfig`] plus everything the status needs (router-ID
//! source, neighbour count, netlink import/export settings, fields we accept but do not act on,
//! warnings). A configuration that cannot be applied is an [`Err`] naming what is wrong, so the
//! caller can keep the last good one running and say why in the status.
//!
//! Choices (the CRD came from a controller that ignored many fields):
//! - Global `gracefulRestart`, `applyPolicy.exportPolicy` and `bindToDevice` are defaults for
//!   every neighbour that sets none (k8gobgp ignored them).
//! - A neighbour without `afiSafis` offers IPv4 and IPv6 unicast (our speaker carries both
//!   over either transport; PureLB sessions usually want both).
//! - The router ID is resolved on every apply, so editing `routerID` takes effect (k8gobgp
//!   resolved it once per pod lifetime).
//! - Fields with no effect here are listed in [`MappedConfig::unsupported`] by path.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use purelb_api::crd::bgp_configuration::{
    self as crd, ApplyPolicy, BGPConfiguration, BGPConfigurationSpec,
};
use purelb_bgp::fsm::GracefulRestartConfig;
use purelb_bgp::policy::{
    self, Actions, CommunityAction, CommunityOp, Conditions, ExportPolicy, MatchKind, MedAction,
    PolicyConfig, RouteAction, SetCondition, Statement, parse_prefix,
};
use purelb_bgp::speaker::{BGP_PORT, DynamicNeighbors, NeighborConfig, SpeakerConfig};
use purelb_bgp::wire::AfiSafi;

use crate::event;
use crate::parse::label_selector::Selector;

mod neighbor;
mod policies;
mod router_id;
mod sources;
pub mod step;

use neighbor::{NeighborDefaults, graceful_restart};
use policies::{export_policy, parse_communities};
pub use router_id::resolve_router_id;
pub use sources::{config_key, in_force, secrets_of};

/// `RTPROT_BGP`, the default `netlinkExport.routeProtocol`.
pub const RTPROT_BGP: u8 = 186;

/// The default `routerIDPool`.
pub const DEFAULT_ROUTER_ID_POOL: &str = "10.255.0.0/16";
/// The default `netlinkImport.interfaceList`.
pub const DEFAULT_IMPORT_INTERFACE: &str = "kube-lb0";
/// The default `nodeStatus.heartbeatSeconds`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
/// The default export-rule metric.
pub const DEFAULT_EXPORT_METRIC: u32 = 20;

/// What the node looks like, for selectors and router-ID templates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub internal_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
}

/// Secrets in the configuration's namespace: (secret name, key) → value.
pub type Secrets = BTreeMap<(String, String), String>;

/// How the router ID was found (`status.routerIDSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterIdSource {
    Explicit,
    Template,
    NodeIpv4,
    HashFromNodeName,
}

impl RouterIdSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Template => "template",
            Self::NodeIpv4 => "node-ipv4",
            Self::HashFromNodeName => "hash-from-node-name",
        }
    }
}

/// `netlinkImport`: which interfaces' addresses become routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSettings {
    pub enabled: bool,
    /// Globs (`*`, `?`).
    pub interfaces: Vec<String>,
}

/// One `netlinkExport.rules[]` entry: received routes carrying any of these communities go into
/// `table` with `metric`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRule {
    pub name: String,
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// 0 = main.
    pub table: u32,
    pub metric: u32,
    pub validate_next_hop: bool,
}

/// `netlinkExport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    pub enabled: bool,
    pub protocol: u8,
    pub rules: Vec<ExportRule>,
}

/// The result of mapping one BGPConfiguration for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedConfig {
    pub speaker: SpeakerConfig,
    pub router_id_source: RouterIdSource,
    pub import: ImportSettings,
    pub export: ExportSettings,
    pub node_status_enabled: bool,
    pub heartbeat: Duration,
    /// Neighbours configured on this node (after node selectors).
    pub neighbor_count: usize,
    /// Field paths set in the configuration that this speaker does not act on.
    pub unsupported: Vec<String>,
    /// (event reason, message) for Warning events: `PeerGroupMissing`, `NoMatchingNeighbors`.
    pub warnings: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("router ID: {0}")]
    RouterId(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: Secret {secret:?} has no key {key:?} (or does not exist)")]
    MissingSecret {
        path: String,
        secret: String,
        key: String,
    },
}

fn invalid(path: impl Into<String>, message: impl std::fmt::Display) -> MapError {
    MapError::Invalid {
        path: path.into(),
        message: message.to_string(),
    }
}

/// Maps `config` for the node described by `node`.
pub fn map_config(
    config: &BGPConfiguration,
    node: &NodeFacts,
    secrets: &Secrets,
) -> Result<MappedConfig, MapError> {
    let spec = &config.spec;
    let mut m = Mapper {
        node,
        secrets,
        unsupported: Vec::new(),
        warnings: Vec::new(),
    };
    let (router_id, router_id_source) = resolve_router_id(spec, node)?;
    let global = &spec.global;
    m.global_unsupported(global);
    let listen_port = match global.listen_port {
        None | Some(0) => Some(BGP_PORT),
        Some(p) if p < 0 => None,
        Some(p) => {
            Some(u16::try_from(p).map_err(|_| invalid("spec.global.listenPort", "not a port"))?)
        }
    };
    let listen_addresses = global
        .listen_addresses
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<IpAddr>().map_err(|_| {
                invalid(
                    format!("spec.global.listenAddresses[{i}]"),
                    "not an IP address",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = m.policy(spec)?;
    let defaults = NeighborDefaults {
        graceful_restart: global.graceful_restart.as_ref().and_then(graceful_restart),
        export: export_policy(global.apply_policy.as_ref(), "spec.global.applyPolicy")?,
        bind_interface: global.bind_to_device.clone().filter(|s| !s.is_empty()),
    };
    let groups = m.peer_groups(spec)?;
    let mut neighbors = Vec::new();
    let mut configured_anywhere = 0;
    for (i, n) in spec.neighbors.iter().flatten().enumerate() {
        configured_anywhere += 1;
        if let Some(mapped) = m.neighbor(i, n, &groups, &defaults)? {
            neighbors.push(mapped);
        }
    }
    if configured_anywhere > 0 && neighbors.is_empty() {
        m.warnings.push((
            event::NO_MATCHING_NEIGHBORS,
            format!(
                "none of the {configured_anywhere} neighbor(s) applies to node {}",
                node.name
            ),
        ));
    }
    let mut dynamic_neighbors = Vec::new();
    for (i, d) in spec.dynamic_neighbors.iter().flatten().enumerate() {
        let path = format!("spec.dynamicNeighbors[{i}]");
        let prefix = parse_prefix(&d.prefix).map_err(|e| invalid(format!("{path}.prefix"), e))?;
        let Some(group) = groups.get(&d.peer_group) else {
            m.warnings.push((
                event::PEER_GROUP_MISSING,
                format!(
                    "dynamic neighbors {} refer to peer group {:?}, which is not configured on node {}",
                    d.prefix, d.peer_group, node.name
                ),
            ));
            continue;
        };
        let mut template = group.clone();
        template.passive = true;
        defaults.fill(&mut template);
        dynamic_neighbors.push(DynamicNeighbors { prefix, template });
    }
    let neighbor_count = neighbors.len();
    let speaker = SpeakerConfig {
        asn: global.asn,
        router_id,
        listen_port,
        listen_addresses,
        neighbors,
        dynamic_neighbors,
        policy,
    };
    let import = ImportSettings {
        enabled: spec
            .netlink_import
            .as_ref()
            .and_then(|n| n.enabled)
            .unwrap_or(false),
        interfaces: spec
            .netlink_import
            .as_ref()
            .and_then(|n| n.interface_list.clone())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_IMPORT_INTERFACE.to_string()]),
    };
    if spec
        .netlink_import
        .as_ref()
        .and_then(|n| n.vrf.as_ref())
        .is_some_and(|v| !v.is_empty())
    {
        m.unsupported.push("spec.netlinkImport.vrf".into());
    }
    let export = m.netlink_export(spec)?;
    if spec.vrfs.as_ref().is_some_and(|v| !v.is_empty()) {
        m.unsupported.push("spec.vrfs".into());
    }
    let status = global.node_status.as_ref();
    let heartbeat = status
        .and_then(|s| s.heartbeat_seconds)
        .map(|s| Duration::from_secs(u64::try_from(s.max(10)).unwrap_or(60)))
        .unwrap_or(DEFAULT_HEARTBEAT);
    Ok(MappedConfig {
        speaker,
        router_id_source,
        import,
        export,
        node_status_enabled: status.and_then(|s| s.enabled).unwrap_or(true),
        heartbeat,
        neighbor_count,
        unsupported: m.unsupported,
        warnings: m.warnings,
    })
}

struct Mapper<'a> {
    node: &'a NodeFacts,
    secrets: &'a Secrets,
    unsupported: Vec<String>,
    warnings: Vec<(&'static str, String)>,
}

impl Mapper<'_> {
    fn global_unsupported(&mut self, g: &crd::GlobalSpec) {
        let set = [
            (
                "families",
                g.families.as_ref().is_some_and(|f| !f.is_empty()),
            ),
            ("useMultiplePaths", g.use_multiple_paths.is_some()),
            ("routeSelectionOptions", g.route_selection_options.is_some()),
            ("defaultRouteDistance", g.default_route_distance.is_some()),
            (
                "confederation",
                g.confederation
                    .as_ref()
                    .is_some_and(|c| c.enabled == Some(true)),
            ),
            (
                "applyPolicy.importPolicy",
                g.apply_policy
                    .as_ref()
                    .is_some_and(|a| a.import_policy.is_some()),
            ),
        ];
        for (field, present) in set {
            if present {
                self.unsupported.push(format!("spec.global.{field}"));
            }
        }
    }

    fn netlink_export(&mut self, spec: &BGPConfigurationSpec) -> Result<ExportSettings, MapError> {
        let e = spec.netlink_export.as_ref();
        let mut rules = Vec::new();
        for (i, r) in e
            .and_then(|e| e.rules.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("spec.netlinkExport.rules[{i}]");
            let mut all = r.community_list.clone().unwrap_or_default();
            all.extend(r.large_community_list.clone().unwrap_or_default());
            let (communities, large_communities) = parse_communities(&path, &all)?;
            if r.vrf.as_ref().is_some_and(|v| !v.is_empty()) {
                self.unsupported.push(format!("{path}.vrf"));
            }
            rules.push(ExportRule {
                name: r.name.clone(),
                communities,
                large_communities,
                table: u32::try_from(r.table_id.unwrap_or(0))
                    .map_err(|_| invalid(format!("{path}.tableId"), "negative"))?,
                metric: r.metric.unwrap_or(DEFAULT_EXPORT_METRIC),
                validate_next_hop: r.validate_nexthop.unwrap_or(true),
            });
        }
        if e.and_then(|e| e.dampening_interval).is_some() {
            self.unsupported
                .push("spec.netlinkExport.dampeningInterval (changes apply at once)".into());
        }
        let protocol = match e.and_then(|e| e.route_protocol) {
            None | Some(0) => RTPROT_BGP,
            Some(p) => u8::try_from(p).ok().filter(|p| *p > 4).ok_or_else(|| {
                invalid(
                    "spec.netlinkExport.routeProtocol",
                    "must be 5..255 (0-4 are the kernel's own: unspec, redirect, kernel, boot, static)",
                )
            })?,
        };
        Ok(ExportSettings {
            enabled: e.and_then(|e| e.enabled).unwrap_or(false),
            protocol,
            rules,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn node() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            labels: BTreeMap::from([("rack".into(), "a".into())]),
            annotations: BTreeMap::from([("example.com/bgp-id".into(), "198.51.100.77".into())]),
            internal_ips: vec![
                "2001:db8::5".parse().unwrap(),
                "198.51.100.5".parse().unwrap(),
            ],
            external_ips: vec!["203.0.113.5".parse().unwrap()],
        }
    }

    pub(super) fn parse(yaml: &str) -> BGPConfiguration {
        serde_saphyr::from_str(yaml).unwrap()
    }

    pub(super) const SAMPLE: &str = r#"
apiVersion: bgp.purelb.io/v1
kind: BGPConfiguration
metadata: {name: default, namespace: purelb-system}
spec:
  global: {asn: 65000, routerID: "", listenPort: 179}
  netlinkImport: {enabled: true, interfaceList: [kube-lb0]}
  neighbors:
    - config: {neighborAddress: 198.51.100.1, peerAsn: 65001}
      afiSafis:
        - {family: ipv4-unicast, enabled: true}
        - {family: ipv6-unicast, enabled: true}
"#;

    #[test]
    fn purelbs_sample_maps_to_one_neighbour() {
        let m = map_config(&parse(SAMPLE), &node(), &Secrets::new()).unwrap();
        assert_eq!(m.speaker.asn, 65000);
        assert_eq!(m.speaker.router_id, Ipv4Addr::new(198, 51, 100, 5));
        assert_eq!(m.router_id_source, RouterIdSource::NodeIpv4);
        assert_eq!(m.speaker.listen_port, Some(179));
        assert_eq!(m.neighbor_count, 1);
        let n = &m.speaker.neighbors[0];
        assert_eq!(n.address, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(n.peer_asn, 65001);
        assert_eq!(
            n.families,
            vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
        );
        assert!(m.import.enabled);
        assert_eq!(m.import.interfaces, vec!["kube-lb0"]);
        assert!(m.unsupported.is_empty(), "{:?}", m.unsupported);
        assert!(m.node_status_enabled);
        assert_eq!(m.heartbeat, DEFAULT_HEARTBEAT);
    }

    const FULL: &str = r#"
apiVersion: bgp.purelb.io/v1
kind: BGPConfiguration
metadata: {name: full, namespace: purelb-system}
spec:
  global:
    asn: 65000
    routerID: 198.51.100.2
    gracefulRestart: {enabled: true, restartTime: 90}
    families: [ipv4-unicast]
  peerGroups:
    - config: {peerGroupName: tors, peerAsn: 65010, authPasswordSecretRef: {name: bgp-auth, key: tor}}
      timers: {config: {holdTime: 9, connectRetry: 5}}
  dynamicNeighbors:
    - {prefix: 198.51.100.128/25, peerGroup: tors}
    - {prefix: 203.0.113.0/24, peerGroup: nowhere}
  neighbors:
    - config: {neighborAddress: 198.51.100.1, peerAsn: 65001, localAsn: 64512}
      nodeSelector: {matchLabels: {rack: a}}
      ebgpMultihop: {enabled: true, multihopTtl: 3}
      transport: {passiveMode: true, localAddress: 198.51.100.2}
      applyPolicy:
        exportPolicy: {policies: [tag], defaultAction: reject}
        importPolicy: {policies: [tag]}
    - config: {neighborAddress: 198.51.100.3, peerAsn: 65001}
      nodeSelector: {matchLabels: {rack: b}}
    - config: {neighborAddress: 198.51.100.4, peerAsn: 0, peerGroup: tors}
  definedSets:
    - {type: prefix, name: vips, prefixes: [{ipPrefix: 203.0.113.0/24, maskLengthMin: 24, maskLengthMax: 32}]}
    - {type: community, name: tagged, list: ["65000:1"]}
  policyDefinitions:
    - name: tag
      statements:
        - name: s1
          conditions: {prefixSet: {name: vips, matchOption: any}}
          actions:
            routeAction: accept
            community: {type: add, communities: ["65000:100", "65000:1:2"]}
            med: {type: replace, value: 10}
            asPrepend: {asn: 65000, repeat: 2}
            localPref: 200
  netlinkExport:
    enabled: true
    rules:
      - {name: default, communityList: ["65000:999"], tableId: 0, metric: 30}
"#;

    #[test]
    fn every_supported_field_maps() {
        let secrets = Secrets::from([(("bgp-auth".into(), "tor".into()), "s3cret".into())]);
        let m = map_config(&parse(FULL), &node(), &secrets).unwrap();
        assert_eq!(m.router_id_source, RouterIdSource::Explicit);
        assert_eq!(m.neighbor_count, 2, "rack b's neighbour is filtered out");
        let a = &m.speaker.neighbors[0];
        assert_eq!(a.local_asn, Some(64512));
        assert_eq!(a.ttl, Some(3));
        assert!(a.passive);
        assert_eq!(a.local_address, Some("198.51.100.2".parse().unwrap()));
        assert_eq!(a.export.default_action, RouteAction::Reject);
        assert_eq!(a.export.policies, vec!["tag"]);
        assert_eq!(
            a.graceful_restart.as_ref().unwrap().restart_time,
            90,
            "global default"
        );
        let g = &m.speaker.neighbors[1];
        assert_eq!(g.peer_asn, 65010, "from the peer group");
        assert_eq!(g.md5_password.as_deref(), Some("s3cret"));
        assert_eq!(g.hold_time, 9);
        assert_eq!(g.connect_retry, Duration::from_secs(5));
        assert_eq!(m.speaker.dynamic_neighbors.len(), 1);
        assert!(m.speaker.dynamic_neighbors[0].template.passive);
        assert_eq!(m.warnings.len(), 1);
        assert_eq!(m.warnings[0].0, "PeerGroupMissing");
        let s = &m.speaker.policy.policies["tag"][0];
        assert_eq!(s.actions.as_prepend, Some((65000, 2)));
        let c = s.actions.community.as_ref().unwrap();
        assert_eq!(c.communities, vec![(65000 << 16) | 100]);
        assert_eq!(c.large_communities, vec![(65000, 1, 2)]);
        assert_eq!(s.actions.med, Some(MedAction::Replace(10)));
        assert!(m.export.enabled);
        assert_eq!(m.export.rules[0].communities, vec![(65000 << 16) | 999]);
        assert_eq!(m.export.rules[0].metric, 30);
        assert_eq!(m.export.protocol, RTPROT_BGP);
        assert!(
            m.unsupported.contains(&"spec.global.families".to_string()),
            "{:?}",
            m.unsupported
        );
        assert!(
            m.unsupported
                .contains(&"spec.neighbors[0].applyPolicy.importPolicy".to_string())
        );
    }

    #[test]
    fn bad_configurations_name_the_problem() {
        let no_secret = map_config(&parse(FULL), &node(), &Secrets::new()).unwrap_err();
        assert!(
            matches!(no_secret, MapError::MissingSecret { .. }),
            "{no_secret}"
        );
        assert!(no_secret.to_string().contains("bgp-auth"));

        let mut c = parse(SAMPLE);
        c.spec.neighbors.as_mut().unwrap()[0]
            .config
            .neighbor_address = Some("not-an-ip".into());
        let e = map_config(&c, &node(), &Secrets::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.neighbors[0].config.neighborAddress: not an IP address"
        );

        let mut c = parse(FULL);
        c.spec.policy_definitions.as_mut().unwrap()[0].statements[0]
            .actions
            .community
            .as_mut()
            .unwrap()
            .communities = vec!["70000:1".into()];
        let secrets = Secrets::from([(("bgp-auth".into(), "tor".into()), "s3cret".into())]);
        let e = map_config(&c, &node(), &secrets).unwrap_err();
        assert!(e.to_string().contains("70000:1"), "{e}");

        let mut c = parse(SAMPLE);
        c.spec.global.router_id = Some("${NODE_EXTERNAL_IP}".into());
        let n = NodeFacts {
            external_ips: Vec::new(),
            ..node()
        };
        assert!(matches!(
            map_config(&c, &n, &Secrets::new()),
            Err(MapError::RouterId(_))
        ));
    }

    #[test]
    fn no_matching_neighbours_is_a_warning() {
        let mut c = parse(SAMPLE);
        c.spec.neighbors.as_mut().unwrap()[0].node_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("rack".into(), "z".into())])),
            ..Default::default()
        });
        let m = map_config(&c, &node(), &Secrets::new()).unwrap();
        assert_eq!(m.neighbor_count, 0);
        assert_eq!(m.warnings[0].0, "NoMatchingNeighbors");
    }
}
