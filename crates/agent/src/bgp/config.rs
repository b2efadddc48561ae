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

use crate::parse::label_selector::Selector;

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
            "NoMatchingNeighbors",
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
                "PeerGroupMissing",
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

/// Neighbour settings taken from the global section when a neighbour sets none.
struct NeighborDefaults {
    graceful_restart: Option<GracefulRestartConfig>,
    export: Option<ExportPolicy>,
    bind_interface: Option<String>,
}

impl NeighborDefaults {
    fn fill(&self, n: &mut NeighborConfig) {
        if n.graceful_restart.is_none() {
            n.graceful_restart.clone_from(&self.graceful_restart);
        }
        if n.export == ExportPolicy::default()
            && let Some(e) = &self.export
        {
            n.export = e.clone();
        }
        if n.bind_interface.is_none() {
            n.bind_interface.clone_from(&self.bind_interface);
        }
    }
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

    fn password(
        &self,
        path: &str,
        inline: Option<&String>,
        secret: Option<&crd::SecretKeySelector>,
    ) -> Result<Option<String>, MapError> {
        if let Some(r) = secret {
            return match self.secrets.get(&(r.name.clone(), r.key.clone())) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(MapError::MissingSecret {
                    path: format!("{path}.authPasswordSecretRef"),
                    secret: r.name.clone(),
                    key: r.key.clone(),
                }),
            };
        }
        Ok(inline.filter(|p| !p.is_empty()).cloned())
    }

    fn selected(&self, path: &str, selector: Option<&LabelSelector>) -> Result<bool, MapError> {
        match selector {
            None => Ok(true),
            Some(s) => Ok(Selector::parse(s)
                .map_err(|e| invalid(format!("{path}.nodeSelector"), e.0))?
                .matches(&self.node.labels)),
        }
    }

    /// Peer groups that apply to this node, as neighbour templates (address unset).
    fn peer_groups(
        &mut self,
        spec: &BGPConfigurationSpec,
    ) -> Result<BTreeMap<String, NeighborConfig>, MapError> {
        let mut out = BTreeMap::new();
        for (i, g) in spec.peer_groups.iter().flatten().enumerate() {
            let path = format!("spec.peerGroups[{i}]");
            if !self.selected(&path, g.node_selector.as_ref())? {
                continue;
            }
            let c = &g.config;
            let mut n =
                NeighborConfig::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), c.peer_asn.unwrap_or(0));
            n.local_asn = c.local_asn.filter(|a| *a != 0);
            n.description = c.description.clone().unwrap_or_default();
            n.md5_password = self.password(
                &format!("{path}.config"),
                c.auth_password.as_ref(),
                c.auth_password_secret_ref.as_ref(),
            )?;
            self.families(&path, g.afi_safis.as_deref(), &mut n)?;
            if let Some(e) = export_policy(g.apply_policy.as_ref(), &format!("{path}.applyPolicy"))?
            {
                n.export = e;
            }
            self.import_policy(&path, g.apply_policy.as_ref());
            self.timers(&path, g.timers.as_ref(), &mut n);
            self.transport(&path, g.transport.as_ref(), &mut n)?;
            out.insert(c.peer_group_name.clone(), n);
        }
        Ok(out)
    }

    fn neighbor(
        &mut self,
        i: usize,
        nb: &crd::Neighbor,
        groups: &BTreeMap<String, NeighborConfig>,
        defaults: &NeighborDefaults,
    ) -> Result<Option<NeighborConfig>, MapError> {
        let path = format!("spec.neighbors[{i}]");
        if !self.selected(&path, nb.node_selector.as_ref())? {
            return Ok(None);
        }
        let c = &nb.config;
        if c.neighbor_interface.as_ref().is_some_and(|s| !s.is_empty())
            && c.neighbor_address.as_ref().is_none_or(|s| s.is_empty())
        {
            self.unsupported
                .push(format!("{path}.config.neighborInterface"));
            return Ok(None);
        }
        let address: IpAddr = c
            .neighbor_address
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| {
                invalid(
                    format!("{path}.config.neighborAddress"),
                    "not an IP address",
                )
            })?;
        let mut n = match c.peer_group.as_ref().filter(|g| !g.is_empty()) {
            Some(g) => match groups.get(g) {
                Some(template) => template.clone(),
                None => {
                    self.warnings.push((
                        "PeerGroupMissing",
                        format!(
                            "neighbor {address} refers to peer group {g:?}, which is not configured on node {}",
                            self.node.name
                        ),
                    ));
                    return Ok(None);
                }
            },
            None => NeighborConfig::new(address, c.peer_asn),
        };
        n.address = address;
        if c.peer_asn != 0 {
            n.peer_asn = c.peer_asn;
        }
        if n.peer_asn == 0 {
            return Err(invalid(
                format!("{path}.config.peerAsn"),
                "0 is not an AS number",
            ));
        }
        if let Some(a) = c.local_asn.filter(|a| *a != 0) {
            n.local_asn = Some(a);
        }
        if let Some(d) = &c.description {
            n.description.clone_from(d);
        }
        n.admin_down = c.admin_down.unwrap_or(false);
        if c.vrf.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported.push(format!("{path}.config.vrf"));
        }
        if let Some(p) = self.password(
            &format!("{path}.config"),
            c.auth_password.as_ref(),
            c.auth_password_secret_ref.as_ref(),
        )? {
            n.md5_password = Some(p);
        }
        if nb.afi_safis.is_some() {
            self.families(&path, nb.afi_safis.as_deref(), &mut n)?;
        }
        if let Some(e) = export_policy(nb.apply_policy.as_ref(), &format!("{path}.applyPolicy"))? {
            n.export = e;
        }
        self.import_policy(&path, nb.apply_policy.as_ref());
        self.timers(&path, nb.timers.as_ref(), &mut n);
        self.transport(&path, nb.transport.as_ref(), &mut n)?;
        if let Some(gr) = &nb.graceful_restart {
            n.graceful_restart = graceful_restart(gr);
        }
        if nb.route_reflector.is_some() {
            self.unsupported.push(format!("{path}.routeReflector"));
        }
        if let Some(mh) = nb.ebgp_multihop.as_ref().filter(|m| m.enabled) {
            let ttl = mh.multihop_ttl.unwrap_or(255).clamp(1, 255);
            n.ttl = Some(u8::try_from(ttl).unwrap_or(u8::MAX));
        }
        defaults.fill(&mut n);
        Ok(Some(n))
    }

    fn families(
        &mut self,
        path: &str,
        afi_safis: Option<&[crd::AfiSafi]>,
        n: &mut NeighborConfig,
    ) -> Result<(), MapError> {
        let Some(list) = afi_safis else {
            return Ok(());
        };
        let mut families = Vec::new();
        for (j, a) in list.iter().enumerate() {
            let p = format!("{path}.afiSafis[{j}]");
            if a.prefix_limit.is_some() {
                self.unsupported.push(format!("{p}.prefixLimit"));
            }
            if a.add_paths.is_some() {
                self.unsupported.push(format!("{p}.addPaths"));
            }
            if !a.enabled {
                continue;
            }
            match a.family.as_str() {
                "ipv4-unicast" => families.push(AfiSafi::IPV4_UNICAST),
                "ipv6-unicast" => families.push(AfiSafi::IPV6_UNICAST),
                _ => self.unsupported.push(format!("{p}.family={}", a.family)),
            }
        }
        if families.is_empty() {
            return Err(invalid(
                format!("{path}.afiSafis"),
                "no supported family is enabled",
            ));
        }
        n.families = families;
        Ok(())
    }

    fn import_policy(&mut self, path: &str, apply: Option<&ApplyPolicy>) {
        if apply.is_some_and(|a| a.import_policy.is_some()) {
            self.unsupported
                .push(format!("{path}.applyPolicy.importPolicy"));
        }
    }

    fn timers(&mut self, path: &str, timers: Option<&crd::Timers>, n: &mut NeighborConfig) {
        let Some(t) = timers.map(|t| &t.config) else {
            return;
        };
        if let Some(s) = t.connect_retry.filter(|s| *s > 0) {
            n.connect_retry = Duration::from_secs(s);
        }
        if let Some(h) = t.hold_time {
            n.hold_time = u16::try_from(h).unwrap_or(u16::MAX);
        }
        if t.keepalive_interval
            .is_some_and(|k| k != u64::from(n.hold_time / 3))
        {
            self.unsupported.push(format!(
                "{path}.timers.config.keepaliveInterval (always holdTime/3)"
            ));
        }
        if t.minimum_advertisement_interval.is_some_and(|m| m > 0) {
            self.unsupported
                .push(format!("{path}.timers.config.minimumAdvertisementInterval"));
        }
    }

    fn transport(
        &mut self,
        path: &str,
        transport: Option<&crd::Transport>,
        n: &mut NeighborConfig,
    ) -> Result<(), MapError> {
        let Some(t) = transport else {
            return Ok(());
        };
        if let Some(a) = t.local_address.as_ref().filter(|a| !a.is_empty()) {
            n.local_address = Some(a.parse().map_err(|_| {
                invalid(
                    format!("{path}.transport.localAddress"),
                    "not an IP address",
                )
            })?);
        }
        if let Some(p) = t.passive_mode {
            n.passive = p;
        }
        if let Some(i) = t.bind_interface.as_ref().filter(|i| !i.is_empty()) {
            n.bind_interface = Some(i.clone());
        }
        Ok(())
    }

    fn policy(&mut self, spec: &BGPConfigurationSpec) -> Result<PolicyConfig, MapError> {
        let mut out = PolicyConfig::default();
        for (i, set) in spec.defined_sets.iter().flatten().enumerate() {
            let path = format!("spec.definedSets[{i}]");
            let list = set.list.clone().unwrap_or_default();
            match set.set_type.as_str() {
                "neighbor" => {
                    out.neighbor_sets.insert(set.name.clone(), list);
                }
                "community" => {
                    for (j, c) in list.iter().enumerate() {
                        if c.chars().all(|ch| ch.is_ascii_digit() || ch == ':') {
                            check_community(&format!("{path}.list[{j}]"), c)?;
                        }
                    }
                    out.community_sets.insert(set.name.clone(), list);
                }
                "as-path" => {
                    out.as_path_sets.insert(set.name.clone(), list);
                }
                _ => {
                    let prefixes = set
                        .prefixes
                        .iter()
                        .flatten()
                        .map(|p| {
                            (
                                p.ip_prefix.clone(),
                                u8::try_from(p.mask_length_min.unwrap_or(0)).unwrap_or(u8::MAX),
                                u8::try_from(p.mask_length_max.unwrap_or(0)).unwrap_or(u8::MAX),
                            )
                        })
                        .collect();
                    out.prefix_sets.insert(set.name.clone(), prefixes);
                }
            }
        }
        for (i, def) in spec.policy_definitions.iter().flatten().enumerate() {
            let mut statements = Vec::new();
            for (j, s) in def.statements.iter().enumerate() {
                let path = format!("spec.policyDefinitions[{i}].statements[{j}]");
                statements.push(self.statement(&path, s)?);
            }
            out.policies.insert(def.name.clone(), statements);
        }
        policy::PolicySet::compile(&out).map_err(|e| invalid("spec.policyDefinitions", e))?;
        Ok(out)
    }

    fn statement(&mut self, path: &str, s: &crd::Statement) -> Result<Statement, MapError> {
        let set =
            |m: &Option<crd::MatchSet>, field: &str| -> Result<Option<SetCondition>, MapError> {
                m.as_ref()
                    .map(|m| {
                        let kind = match m.match_option.as_deref().unwrap_or("any") {
                            "any" | "" => MatchKind::Any,
                            "all" => MatchKind::All,
                            "invert" => MatchKind::Invert,
                            other => {
                                return Err(invalid(
                                    format!("{path}.conditions.{field}.matchOption"),
                                    format!("{other:?} is not any, all or invert"),
                                ));
                            }
                        };
                        Ok(SetCondition {
                            set: m.name.clone(),
                            kind,
                        })
                    })
                    .transpose()
            };
        let c = &s.conditions;
        if c.rpki_result.is_some() {
            self.unsupported
                .push(format!("{path}.conditions.rpkiResult"));
        }
        let conditions = Conditions {
            prefix_set: set(&c.prefix_set, "prefixSet")?,
            neighbor_set: set(&c.neighbor_set, "neighborSet")?,
            community_set: set(&c.community_set, "communitySet")?,
            as_path_set: set(&c.as_path_set, "asPathSet")?,
        };
        let a = &s.actions;
        let route = match a.route_action.as_str() {
            "accept" => RouteAction::Accept,
            "reject" => RouteAction::Reject,
            other => {
                return Err(invalid(
                    format!("{path}.actions.routeAction"),
                    format!("{other:?} is not accept or reject"),
                ));
            }
        };
        let community = a
            .community
            .as_ref()
            .map(|c| -> Result<CommunityAction, MapError> {
                let op = match c.action_type.to_ascii_lowercase().as_str() {
                    "add" | "" => CommunityOp::Add,
                    "remove" => CommunityOp::Remove,
                    "replace" => CommunityOp::Replace,
                    other => {
                        return Err(invalid(
                            format!("{path}.actions.community.type"),
                            format!("{other:?} is not add, remove or replace"),
                        ));
                    }
                };
                let (communities, large_communities) = parse_communities(
                    &format!("{path}.actions.community.communities"),
                    &c.communities,
                )?;
                Ok(CommunityAction {
                    op,
                    communities,
                    large_communities,
                })
            })
            .transpose()?;
        let med = a
            .med
            .as_ref()
            .map(|m| match m.action_type.to_ascii_lowercase().as_str() {
                "mod" => Ok(MedAction::Add(m.value)),
                "replace" | "" => u32::try_from(m.value).map(MedAction::Replace).map_err(|_| {
                    invalid(
                        format!("{path}.actions.med.value"),
                        "out of range 0..4294967295",
                    )
                }),
                other => Err(invalid(
                    format!("{path}.actions.med.type"),
                    format!("{other:?} is not mod or replace"),
                )),
            })
            .transpose()?;
        let as_prepend = a.as_prepend.as_ref().map(|p| {
            (
                p.asn,
                u8::try_from(p.repeat.unwrap_or(1).clamp(1, 255)).unwrap_or(u8::MAX),
            )
        });
        Ok(Statement {
            name: s.name.clone(),
            conditions,
            actions: Actions {
                route,
                community,
                med,
                local_pref: a.local_pref,
                as_prepend,
            },
        })
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

fn check_community(path: &str, s: &str) -> Result<(), MapError> {
    let parts = s.split(':').count();
    let result = if parts == 3 {
        policy::parse_large_community(s).map(|_| ())
    } else {
        policy::parse_community(s).map(|_| ())
    };
    result.map_err(|e| invalid(path, e))
}

/// Standard and large communities.
type Communities = (Vec<u32>, Vec<(u32, u32, u32)>);

/// Splits `AS:VALUE` and `A:B:C` strings into standard and large communities.
fn parse_communities(path: &str, list: &[String]) -> Result<Communities, MapError> {
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if s.split(':').count() == 3 {
            large.push(policy::parse_large_community(s).map_err(|e| invalid(&p, e))?);
        } else {
            standard.push(policy::parse_community(s).map_err(|e| invalid(&p, e))?);
        }
    }
    Ok((standard, large))
}

fn graceful_restart(gr: &crd::GracefulRestart) -> Option<GracefulRestartConfig> {
    (gr.enabled == Some(true)).then(|| GracefulRestartConfig {
        restart_time: u16::try_from(gr.restart_time.unwrap_or(120).min(4095)).unwrap_or(4095),
        restarting: false,
        forwarding_preserved: false,
    })
}

fn export_policy(
    apply: Option<&ApplyPolicy>,
    path: &str,
) -> Result<Option<ExportPolicy>, MapError> {
    let Some(e) = apply.and_then(|a| a.export_policy.as_ref()) else {
        return Ok(None);
    };
    let default_action = match e.default_action.as_deref().unwrap_or("accept") {
        "accept" | "" => RouteAction::Accept,
        "reject" => RouteAction::Reject,
        other => {
            return Err(invalid(
                format!("{path}.exportPolicy.defaultAction"),
                format!("{other:?} is not accept or reject"),
            ));
        }
    };
    Ok(Some(ExportPolicy {
        policies: e.policies.clone().unwrap_or_default(),
        default_action,
    }))
}

/// Router ID: explicit, template, the node's first InternalIP IPv4, or a hash of the node name
/// inside `routerIDPool`.
pub fn resolve_router_id(
    spec: &BGPConfigurationSpec,
    node: &NodeFacts,
) -> Result<(Ipv4Addr, RouterIdSource), MapError> {
    let err = |m: String| MapError::RouterId(m);
    let wanted = spec.global.router_id.as_deref().unwrap_or_default().trim();
    if !wanted.is_empty() && !wanted.starts_with("${") {
        let ip = valid_router_id(wanted)
            .ok_or_else(|| err(format!("{wanted:?} is not a usable IPv4 address")))?;
        return Ok((ip, RouterIdSource::Explicit));
    }
    if let Some(template) = wanted.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        let first_v4 = |ips: &[IpAddr]| {
            ips.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) => valid_router_id(&v4.to_string()),
                IpAddr::V6(_) => None,
            })
        };
        let found = match template {
            "NODE_IP" | "NODE_IPV4" => first_v4(&node.internal_ips)
                .ok_or_else(|| err(format!("node {} has no InternalIP IPv4 address", node.name)))?,
            "NODE_EXTERNAL_IP" => first_v4(&node.external_ips)
                .ok_or_else(|| err(format!("node {} has no ExternalIP IPv4 address", node.name)))?,
            t => {
                let key = t
                    .strip_prefix("node.annotations['")
                    .and_then(|k| k.strip_suffix("']"))
                    .filter(|k| valid_annotation_key(k))
                    .ok_or_else(|| err(format!("unknown template {wanted:?}")))?;
                let value = node
                    .annotations
                    .get(key)
                    .ok_or_else(|| err(format!("node {} has no annotation {key:?}", node.name)))?;
                valid_router_id(value).ok_or_else(|| {
                    err(format!(
                        "annotation {key:?} value {value:?} is not a usable IPv4 address"
                    ))
                })?
            }
        };
        return Ok((found, RouterIdSource::Template));
    }
    if wanted.starts_with("${") {
        return Err(err(format!("unknown template {wanted:?}")));
    }
    if let Some(ip) = node.internal_ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => valid_router_id(&v4.to_string()),
        IpAddr::V6(_) => None,
    }) {
        return Ok((ip, RouterIdSource::NodeIpv4));
    }
    let pool = spec
        .global
        .router_id_pool
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_ROUTER_ID_POOL);
    let net =
        parse_prefix(pool).map_err(|_| err(format!("routerIDPool {pool:?} is not a CIDR")))?;
    let IpAddr::V4(base) = net.addr() else {
        return Err(err(format!("routerIDPool {pool:?} is not IPv4")));
    };
    let len = net.prefix_len();
    if len > 24 {
        return Err(err(format!("routerIDPool {pool:?} is longer than /24")));
    }
    let size = 1u64 << (32 - u32::from(len));
    let base = u32::from(base) & (u32::MAX << (32 - u32::from(len)));
    let offset = u64::from(fnv1a32(node.name.as_bytes())) % (size - 2) + 1;
    let id = Ipv4Addr::from(base.wrapping_add(u32::try_from(offset).unwrap_or(1)));
    Ok((id, RouterIdSource::HashFromNodeName))
}

fn valid_router_id(s: &str) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = s.trim().parse().ok()?;
    let bad = ip.is_unspecified() || ip.is_loopback() || ip.is_link_local();
    (!bad).then_some(ip)
}

fn valid_annotation_key(k: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    let mid = |c: char| c.is_ascii_alphanumeric() || "._/-".contains(c);
    let (Some(first), Some(last)) = (k.chars().next(), k.chars().last()) else {
        return false;
    };
    ok(first) && ok(last) && k.chars().all(mid)
}

/// FNV-1a, 32 bits.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeFacts {
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

    fn parse(yaml: &str) -> BGPConfiguration {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const SAMPLE: &str = r#"
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

    #[test]
    fn router_id_rules() {
        let mut spec = parse(SAMPLE).spec;
        let n = node();
        let resolve = |spec: &BGPConfigurationSpec, n: &NodeFacts| resolve_router_id(spec, n);
        spec.global.router_id = Some("198.51.100.9".into());
        assert_eq!(
            resolve(&spec, &n).unwrap(),
            (Ipv4Addr::new(198, 51, 100, 9), RouterIdSource::Explicit)
        );
        for bad in ["127.0.0.1", "169.254.1.1", "0.0.0.0", "nope"] {
            spec.global.router_id = Some(bad.into());
            assert!(resolve(&spec, &n).is_err(), "{bad}");
        }
        spec.global.router_id = Some("${NODE_EXTERNAL_IP}".into());
        assert_eq!(resolve(&spec, &n).unwrap().0, Ipv4Addr::new(203, 0, 113, 5));
        spec.global.router_id = Some("${node.annotations['example.com/bgp-id']}".into());
        assert_eq!(
            resolve(&spec, &n).unwrap(),
            (Ipv4Addr::new(198, 51, 100, 77), RouterIdSource::Template)
        );
        spec.global.router_id = Some("${node.annotations['missing']}".into());
        assert!(
            resolve(&spec, &n)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        spec.global.router_id = Some("${WHAT}".into());
        assert!(resolve(&spec, &n).is_err());

        // No IPv4: a stable hash of the name inside the pool, never the network or broadcast.
        spec.global.router_id = None;
        let v6_only = NodeFacts {
            internal_ips: vec!["2001:db8::5".parse().unwrap()],
            ..n.clone()
        };
        let (id, source) = resolve(&spec, &v6_only).unwrap();
        assert_eq!(source, RouterIdSource::HashFromNodeName);
        assert!(
            parse_prefix("10.255.0.0/16")
                .unwrap()
                .contains(&IpAddr::V4(id))
        );
        assert_eq!(resolve(&spec, &v6_only).unwrap().0, id);
        spec.global.router_id_pool = Some("198.51.100.0/24".into());
        let (id, _) = resolve(&spec, &v6_only).unwrap();
        assert!(id.octets()[3] != 0 && id.octets()[3] != 255);
        spec.global.router_id_pool = Some("198.51.100.0/25".into());
        assert!(resolve(&spec, &v6_only).is_err());
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
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
