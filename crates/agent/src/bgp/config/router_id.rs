//! This node's BGP router ID: explicit, a template over node labels and annotations, the
//! node's first InternalIP IPv4, or a hash of the node name inside `routerIDPool`.

use super::*;

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
    use super::super::tests::{SAMPLE, node, parse};
    use super::*;

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
}
