//! The `bgp-speak` configuration file (YAML or JSON), its serde structs and the conversion to a
//! [`SpeakerConfig`] plus the local routes the file lists.
//!
//! Every struct denies unknown fields; names are camelCase, as in the BGPConfiguration CRD.
//! Values serde cannot check by type (addresses, prefixes, communities, families) are read as
//! strings and converted here, and a bad one is reported with its path in the file, e.g.
//! `routes[1].communities[0]: invalid community "65536:1" ...`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use purelb_bgp::fsm::GracefulRestartConfig;
use purelb_bgp::policy::{
    Actions, CommunityAction, CommunityOp, Conditions, ExportPolicy, MatchKind, MedAction,
    PolicyConfig, RouteAction, SetCondition, Statement, parse_community, parse_large_community,
    parse_prefix,
};
use purelb_bgp::rib::LocalRoute;
use purelb_bgp::speaker::{BGP_PORT, DynamicNeighbors, NeighborConfig, SpeakerConfig};
use purelb_bgp::wire::{AfiSafi, Prefix};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    pub asn: u32,
    pub router_id: String,
    /// Default 179; 0 = no listener (active sessions only).
    #[serde(default)]
    pub listen_port: Option<u16>,
    /// Empty = every address of both families.
    #[serde(default)]
    pub listen_addresses: Vec<String>,
    #[serde(default)]
    pub neighbors: Vec<NeighborFile>,
    #[serde(default)]
    pub dynamic_neighbors: Vec<DynamicNeighborFile>,
    #[serde(default)]
    pub defined_sets: Vec<DefinedSetFile>,
    #[serde(default)]
    pub policy_definitions: Vec<PolicyDefinitionFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// A neighbour, or (without `address`) a dynamic-neighbour template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NeighborFile {
    /// Required for a neighbour, not allowed in a template.
    #[serde(default)]
    pub address: Option<String>,
    /// The peer's port; default 179.
    #[serde(default)]
    pub port: Option<u16>,
    pub peer_asn: u32,
    /// Our ASN toward this peer; default the global `asn`.
    #[serde(default)]
    pub local_asn: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub passive: bool,
    #[serde(default)]
    pub admin_down: bool,
    /// Seconds; default 90 (0, or at least 3).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Seconds; default 120.
    #[serde(default)]
    pub connect_retry: Option<u64>,
    /// `ipv4-unicast`, `ipv6-unicast`; default both.
    #[serde(default)]
    pub families: Option<Vec<String>>,
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestartFile>,
    /// TCP MD5 password.
    #[serde(default)]
    pub password: Option<String>,
    /// eBGP multihop: TTL of outgoing packets.
    #[serde(default)]
    pub multihop_ttl: Option<u8>,
    #[serde(default)]
    pub local_address: Option<String>,
    #[serde(default)]
    pub bind_interface: Option<String>,
    #[serde(default)]
    pub export_policy: Option<ExportPolicyFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GracefulRestartFile {
    /// Seconds; default 120.
    #[serde(default)]
    pub restart_time: Option<u16>,
    #[serde(default)]
    pub restarting: bool,
    #[serde(default)]
    pub forwarding_preserved: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionFile {
    Accept,
    Reject,
}

impl From<ActionFile> for RouteAction {
    fn from(a: ActionFile) -> Self {
        match a {
            ActionFile::Accept => RouteAction::Accept,
            ActionFile::Reject => RouteAction::Reject,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExportPolicyFile {
    /// Policy names, evaluated in order.
    #[serde(default)]
    pub policies: Vec<String>,
    /// When no statement decides; default `accept`.
    #[serde(default)]
    pub default_action: Option<ActionFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DynamicNeighborFile {
    pub prefix: String,
    pub template: NeighborFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetType {
    Prefix,
    Neighbor,
    Community,
    AsPath,
}

/// A defined set, as in the CRD: `prefixes` for a prefix set, `list` for the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefinedSetFile {
    #[serde(rename = "type")]
    pub set_type: SetType,
    pub name: String,
    /// Neighbour addresses/prefixes, communities (`a:b`, `a:b:c` or regular expressions) or
    /// AS-path regular expressions.
    #[serde(default)]
    pub list: Option<Vec<String>>,
    #[serde(default)]
    pub prefixes: Option<Vec<PrefixMatchFile>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrefixMatchFile {
    pub ip_prefix: String,
    /// 0 or absent = the prefix's own length.
    #[serde(default)]
    pub mask_length_min: Option<u8>,
    #[serde(default)]
    pub mask_length_max: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDefinitionFile {
    pub name: String,
    pub statements: Vec<StatementFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatementFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub conditions: ConditionsFile,
    #[serde(default)]
    pub actions: ActionsFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionsFile {
    #[serde(default)]
    pub prefix_set: Option<MatchSetFile>,
    #[serde(default)]
    pub neighbor_set: Option<MatchSetFile>,
    #[serde(default)]
    pub community_set: Option<MatchSetFile>,
    #[serde(default)]
    pub as_path_set: Option<MatchSetFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchFile {
    Any,
    All,
    Invert,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSetFile {
    pub name: String,
    /// Default `any`.
    #[serde(default, rename = "match")]
    pub match_option: Option<MatchFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActionsFile {
    /// Default `accept`. A matching statement always ends the evaluation.
    #[serde(default)]
    pub route_action: Option<ActionFile>,
    #[serde(default)]
    pub community: Option<CommunityActionFile>,
    #[serde(default)]
    pub med: Option<MedActionFile>,
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub as_prepend: Option<AsPrependFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommunityOpFile {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommunityActionFile {
    #[serde(rename = "type")]
    pub op: CommunityOpFile,
    /// `a:b` (RFC 1997) or `a:b:c` (large, RFC 8092).
    pub communities: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MedOpFile {
    /// Add `value` (may be negative) to the current MED.
    Mod,
    Replace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MedActionFile {
    #[serde(rename = "type")]
    pub op: MedOpFile,
    pub value: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AsPrependFile {
    pub asn: u32,
    /// Default 1.
    #[serde(default)]
    pub repeat: Option<u8>,
}

/// A local route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteFile {
    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a host route).
    pub prefix: String,
    /// Absent = next-hop-self (the session's local address).
    #[serde(default)]
    pub next_hop: Option<String>,
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub large_communities: Vec<String>,
    #[serde(default)]
    pub med: Option<u32>,
    #[serde(default)]
    pub local_pref: Option<u32>,
}

/// What a file yields: the speaker's configuration and the routes it lists.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: SpeakerConfig,
    pub routes: Vec<LocalRoute>,
}

/// Reads `path` (YAML for `.yaml`/`.yml`, JSON otherwise) and converts it.
pub fn load(path: &Path) -> Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let file = parse(&text, yaml).with_context(|| format!("{}", path.display()))?;
    file.convert()
        .with_context(|| format!("{}", path.display()))
}

/// Parses the text of a file.
pub fn parse(text: &str, yaml: bool) -> Result<FileConfig> {
    if yaml {
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn ip(path: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{path}: invalid IP address {s:?}"))
}

fn family(path: &str, s: &str) -> Result<AfiSafi> {
    match s {
        "ipv4-unicast" => Ok(AfiSafi::IPV4_UNICAST),
        "ipv6-unicast" => Ok(AfiSafi::IPV6_UNICAST),
        _ => bail!("{path}: unknown family {s:?} (expected ipv4-unicast or ipv6-unicast)"),
    }
}

/// A prefix of either family from `a.b.c.d/n`, `x::y/n` or a bare address.
pub fn prefix(path: &str, s: &str) -> Result<Prefix> {
    let net = parse_prefix(s).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    Ok(Prefix::of(net))
}

impl FileConfig {
    /// Checks and converts every field; the first problem, with its path, is the error.
    pub fn convert(&self) -> Result<Loaded> {
        let router_id: Ipv4Addr =
            self.router_id.trim().parse().map_err(|_| {
                anyhow::anyhow!("routerId: invalid IPv4 address {:?}", self.router_id)
            })?;
        let listen_addresses = self
            .listen_addresses
            .iter()
            .enumerate()
            .map(|(i, a)| ip(&format!("listenAddresses[{i}]"), a))
            .collect::<Result<_>>()?;
        let neighbors = self
            .neighbors
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let path = format!("neighbors[{i}]");
                let Some(address) = &n.address else {
                    bail!("{path}.address: missing");
                };
                let address = ip(&format!("{path}.address"), address)?;
                n.convert(&path, address)
            })
            .collect::<Result<_>>()?;
        let dynamic_neighbors = self
            .dynamic_neighbors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let path = format!("dynamicNeighbors[{i}]");
                let prefix =
                    parse_prefix(&d.prefix).map_err(|e| anyhow::anyhow!("{path}.prefix: {e}"))?;
                if d.template.address.is_some() {
                    bail!("{path}.template.address: not allowed in a template");
                }
                let template = d
                    .template
                    .convert(&format!("{path}.template"), prefix.addr())?;
                Ok(DynamicNeighbors { prefix, template })
            })
            .collect::<Result<_>>()?;
        let policy = self.policy()?;
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| r.convert(&format!("routes[{i}]")))
            .collect::<Result<_>>()?;
        let config = SpeakerConfig {
            asn: self.asn,
            router_id,
            listen_port: match self.listen_port {
                None => Some(BGP_PORT),
                Some(0) => None,
                Some(p) => Some(p),
            },
            listen_addresses,
            neighbors,
            dynamic_neighbors,
            policy,
        };
        Ok(Loaded { config, routes })
    }

    fn policy(&self) -> Result<PolicyConfig> {
        let mut policy = PolicyConfig::default();
        for (i, set) in self.defined_sets.iter().enumerate() {
            let path = format!("definedSets[{i}]");
            let duplicate = || anyhow::anyhow!("{path}.name: set {:?} defined twice", set.name);
            match set.set_type {
                SetType::Prefix => {
                    if set.list.is_some() {
                        bail!("{path}.list: a prefix set takes `prefixes`");
                    }
                    let entries = set
                        .prefixes
                        .iter()
                        .flatten()
                        .map(|p| {
                            (
                                p.ip_prefix.clone(),
                                p.mask_length_min.unwrap_or(0),
                                p.mask_length_max.unwrap_or(0),
                            )
                        })
                        .collect();
                    if policy
                        .prefix_sets
                        .insert(set.name.clone(), entries)
                        .is_some()
                    {
                        return Err(duplicate());
                    }
                }
                other => {
                    if set.prefixes.is_some() {
                        bail!("{path}.prefixes: only a prefix set takes `prefixes`; use `list`");
                    }
                    let list = set.list.clone().unwrap_or_default();
                    let map = match other {
                        SetType::Neighbor => &mut policy.neighbor_sets,
                        SetType::Community => &mut policy.community_sets,
                        SetType::AsPath | SetType::Prefix => &mut policy.as_path_sets,
                    };
                    if map.insert(set.name.clone(), list).is_some() {
                        return Err(duplicate());
                    }
                }
            }
        }
        for (i, def) in self.policy_definitions.iter().enumerate() {
            let path = format!("policyDefinitions[{i}]");
            let statements = def
                .statements
                .iter()
                .enumerate()
                .map(|(j, s)| s.convert(&format!("{path}.statements[{j}]")))
                .collect::<Result<Vec<_>>>()?;
            if policy
                .policies
                .insert(def.name.clone(), statements)
                .is_some()
            {
                bail!("{path}.name: policy {:?} defined twice", def.name);
            }
        }
        Ok(policy)
    }
}

impl NeighborFile {
    fn convert(&self, path: &str, address: IpAddr) -> Result<NeighborConfig> {
        let defaults = NeighborConfig::new(address, self.peer_asn);
        let families = match &self.families {
            None => defaults.families.clone(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, f)| family(&format!("{path}.families[{i}]"), f))
                .collect::<Result<_>>()?,
        };
        let local_address = self
            .local_address
            .as_deref()
            .map(|a| ip(&format!("{path}.localAddress"), a))
            .transpose()?;
        let graceful_restart = self
            .graceful_restart
            .as_ref()
            .map(|g| GracefulRestartConfig {
                restart_time: g
                    .restart_time
                    .unwrap_or(GracefulRestartConfig::default().restart_time),
                restarting: g.restarting,
                forwarding_preserved: g.forwarding_preserved,
            });
        let export = match &self.export_policy {
            None => ExportPolicy::default(),
            Some(e) => ExportPolicy {
                policies: e.policies.clone(),
                default_action: e.default_action.map_or(RouteAction::Accept, Into::into),
            },
        };
        Ok(NeighborConfig {
            port: self.port.unwrap_or(BGP_PORT),
            local_asn: self.local_asn,
            description: self.description.clone().unwrap_or_default(),
            admin_down: self.admin_down,
            passive: self.passive,
            hold_time: self.hold_time.unwrap_or(defaults.hold_time),
            connect_retry: self
                .connect_retry
                .map_or(defaults.connect_retry, Duration::from_secs),
            families,
            graceful_restart,
            md5_password: self.password.clone(),
            ttl: self.multihop_ttl,
            local_address,
            bind_interface: self.bind_interface.clone(),
            export,
            ..defaults
        })
    }
}

fn set_condition(m: &Option<MatchSetFile>) -> Option<SetCondition> {
    m.as_ref().map(|m| SetCondition {
        set: m.name.clone(),
        kind: match m.match_option {
            None | Some(MatchFile::Any) => MatchKind::Any,
            Some(MatchFile::All) => MatchKind::All,
            Some(MatchFile::Invert) => MatchKind::Invert,
        },
    })
}

impl StatementFile {
    fn convert(&self, path: &str) -> Result<Statement> {
        let c = &self.conditions;
        let conditions = Conditions {
            prefix_set: set_condition(&c.prefix_set),
            neighbor_set: set_condition(&c.neighbor_set),
            community_set: set_condition(&c.community_set),
            as_path_set: set_condition(&c.as_path_set),
        };
        let a = &self.actions;
        let community = match &a.community {
            None => None,
            Some(ca) => {
                let mut action = CommunityAction {
                    op: match ca.op {
                        CommunityOpFile::Add => CommunityOp::Add,
                        CommunityOpFile::Remove => CommunityOp::Remove,
                        CommunityOpFile::Replace => CommunityOp::Replace,
                    },
                    communities: Vec::new(),
                    large_communities: Vec::new(),
                };
                for (i, s) in ca.communities.iter().enumerate() {
                    let here = format!("{path}.actions.community.communities[{i}]");
                    if s.matches(':').count() == 2 {
                        action.large_communities.push(
                            parse_large_community(s).map_err(|e| anyhow::anyhow!("{here}: {e}"))?,
                        );
                    } else {
                        action
                            .communities
                            .push(parse_community(s).map_err(|e| anyhow::anyhow!("{here}: {e}"))?);
                    }
                }
                Some(action)
            }
        };
        let med = match &a.med {
            None => None,
            Some(m) => Some(match m.op {
                MedOpFile::Mod => MedAction::Add(m.value),
                MedOpFile::Replace => MedAction::Replace(u32::try_from(m.value).map_err(|_| {
                    anyhow::anyhow!(
                        "{path}.actions.med.value: {} is not a MED (0 to 4294967295)",
                        m.value
                    )
                })?),
            }),
        };
        Ok(Statement {
            name: self.name.clone().unwrap_or_default(),
            conditions,
            actions: Actions {
                route: a.route_action.map_or(RouteAction::Accept, Into::into),
                community,
                med,
                local_pref: a.local_pref,
                as_prepend: a
                    .as_prepend
                    .as_ref()
                    .map(|p| (p.asn, p.repeat.unwrap_or(1))),
            },
        })
    }
}

impl RouteFile {
    fn convert(&self, path: &str) -> Result<LocalRoute> {
        let prefix = prefix(&format!("{path}.prefix"), &self.prefix)?;
        let next_hop = self
            .next_hop
            .as_deref()
            .map(|a| ip(&format!("{path}.nextHop"), a))
            .transpose()?;
        if let Some(nh) = next_hop
            && nh.is_ipv4() != matches!(prefix, Prefix::V4(_))
        {
            bail!(
                "{path}.nextHop: {nh} is not of the family of {}",
                self.prefix
            );
        }
        let communities = self
            .communities
            .iter()
            .enumerate()
            .map(|(i, c)| {
                parse_community(c).map_err(|e| anyhow::anyhow!("{path}.communities[{i}]: {e}"))
            })
            .collect::<Result<_>>()?;
        let large_communities = self
            .large_communities
            .iter()
            .enumerate()
            .map(|(i, c)| {
                parse_large_community(c)
                    .map_err(|e| anyhow::anyhow!("{path}.largeCommunities[{i}]: {e}"))
            })
            .collect::<Result<_>>()?;
        Ok(LocalRoute {
            next_hop,
            communities,
            large_communities,
            med: self.med,
            local_pref: self.local_pref,
            ..LocalRoute::originated(prefix)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
asn: 65001
routerId: 192.0.2.1
listenPort: 1179
listenAddresses: [127.0.0.1]
neighbors:
  - address: 192.0.2.2
    port: 1790
    peerAsn: 65000
    description: upstream
    holdTime: 30
    connectRetry: 5
    families: [ipv4-unicast]
    gracefulRestart: {restartTime: 60}
    password: s3cret
    multihopTtl: 2
    localAddress: 192.0.2.1
    exportPolicy:
      policies: [out]
      defaultAction: reject
dynamicNeighbors:
  - prefix: 198.51.100.0/24
    template:
      peerAsn: 65010
      passive: true
definedSets:
  - type: prefix
    name: vips
    prefixes:
      - ipPrefix: 203.0.113.0/24
        maskLengthMin: 24
        maskLengthMax: 32
  - type: neighbor
    name: upstream
    list: [192.0.2.2]
  - type: community
    name: tagged
    list: ["65001:100"]
  - type: as-path
    name: mine
    list: ["^65001$"]
policyDefinitions:
  - name: out
    statements:
      - name: vips
        conditions:
          prefixSet: {name: vips}
          neighborSet: {name: upstream, match: any}
        actions:
          routeAction: accept
          community: {type: add, communities: ["65001:200", "65001:1:2"]}
          med: {type: replace, value: 50}
          localPref: 200
          asPrepend: {asn: 65001, repeat: 2}
      - name: drop-tagged
        conditions:
          communitySet: {name: tagged}
        actions: {routeAction: reject}
routes:
  - prefix: 203.0.113.10/32
    communities: ["65001:100"]
    largeCommunities: ["65001:1:2"]
    med: 10
  - prefix: 2001:db8:ff::10
    nextHop: 2001:db8::1
"#;

    #[test]
    fn the_example_converts() {
        let file = parse(EXAMPLE, true).unwrap();
        let Loaded { config, routes } = file.convert().unwrap();
        assert_eq!(config.asn, 65001);
        assert_eq!(config.listen_port, Some(1179));
        let n = &config.neighbors[0];
        assert_eq!(n.port, 1790);
        assert_eq!(n.hold_time, 30);
        assert_eq!(n.connect_retry, Duration::from_secs(5));
        assert_eq!(n.families, vec![AfiSafi::IPV4_UNICAST]);
        assert_eq!(n.graceful_restart.as_ref().unwrap().restart_time, 60);
        assert_eq!(n.md5_password.as_deref(), Some("s3cret"));
        assert_eq!(n.ttl, Some(2));
        assert_eq!(n.export.default_action, RouteAction::Reject);
        assert!(config.dynamic_neighbors[0].template.passive);
        let out = &config.policy.policies["out"];
        assert_eq!(out[0].actions.as_prepend, Some((65001, 2)));
        let c = out[0].actions.community.as_ref().unwrap();
        assert_eq!(c.communities, vec![(65001 << 16) | 200]);
        assert_eq!(c.large_communities, vec![(65001, 1, 2)]);
        assert_eq!(out[1].actions.route, RouteAction::Reject);
        assert_eq!(
            config.policy.prefix_sets["vips"],
            vec![("203.0.113.0/24".to_string(), 24, 32)]
        );
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].communities, vec![(65001 << 16) | 100]);
        assert_eq!(routes[0].med, Some(10));
        assert!(matches!(routes[1].prefix, Prefix::V6(p) if p.len() == 128));
        purelb_bgp::policy::PolicySet::compile(&config.policy).unwrap();
    }

    #[test]
    fn json_works_and_defaults_apply() {
        let file = parse(
            r#"{"asn": 65001, "routerId": "10.0.0.1", "listenPort": 0,
                "neighbors": [{"address": "10.0.0.2", "peerAsn": 65000}]}"#,
            false,
        )
        .unwrap();
        let config = file.convert().unwrap().config;
        assert_eq!(config.listen_port, None);
        let n = &config.neighbors[0];
        assert_eq!(n.port, 179);
        assert_eq!(n.hold_time, 90);
        assert_eq!(n.families.len(), 2);
    }

    fn error(text: &str, yaml: bool) -> String {
        match parse(text, yaml).and_then(|f| f.convert()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let e = error("asn: 1\nrouterId: 10.0.0.1\nbogus: 1\n", true);
        assert!(e.contains("bogus"), "{e}");
        let e = error(
            r#"{"asn": 1, "routerId": "10.0.0.1", "neighbors": [{"address": "10.0.0.2", "peerAsn": 2, "holdtime": 3}]}"#,
            false,
        );
        assert!(e.contains("holdtime"), "{e}");
        let e = error(
            "asn: 1\nrouterId: 10.0.0.1\nroutes: [{prefix: 10.1.0.0/16, communities: ['65536:1']}]\n",
            true,
        );
        assert!(
            e.contains("routes[0].communities[0]") && e.contains("65536:1"),
            "{e}"
        );
        let e = error(
            "asn: 1\nrouterId: 10.0.0.1\nneighbors: [{address: 10.0.0.2, peerAsn: 2, families: [l2vpn]}]\n",
            true,
        );
        assert!(e.contains("neighbors[0].families[0]"), "{e}");
        let e = error("asn: 1\nrouterId: nope\n", true);
        assert!(e.contains("routerId"), "{e}");
        let e = error(
            "asn: 1\nrouterId: 10.0.0.1\nneighbors: [{peerAsn: 2}]\n",
            true,
        );
        assert!(e.contains("neighbors[0].address"), "{e}");
        let e = error(
            "asn: 1\nrouterId: 10.0.0.1\nroutes: [{prefix: 10.0.0.1/32, nextHop: '2001:db8::1'}]\n",
            true,
        );
        assert!(e.contains("routes[0].nextHop"), "{e}");
    }
}
