//! ServiceGroup intake: scope to the install namespace, parse in
//! (namespace, name) order, refuse duplicates and overlaps, build the
//! namespace binding index.

use purelb_api::crd::service_group::{
    AddressPool, DEFAULT_IPAM_SOCKET, ExternalAnnounce, ServiceGroupNetboxSpec, ServiceGroupSpec,
};
use purelb_api::pool::{IpFamily, PoolRange};

use super::error::NoValidPools;
use super::namespaces::Bindings;
use super::outcome::{Event, EventReason, PoolType};
use super::pool::{LocalPool, RangeState, ip_bits};
use super::{ExternalPool, Group, GroupKind, Ipam, Kind, NetboxPool, family_slot};

/// One ServiceGroup as listed from the API.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInput {
    pub namespace: String,
    pub name: String,
    pub spec: ServiceGroupSpec,
}

/// How groups were scoped to the install namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only groups in this namespace were used.
    Scoped(String),
    /// The install namespace is unknown: every group was used.
    Unscoped,
    /// No group lives in the install namespace, which is suspect: every
    /// group was used rather than none.
    FailOpen(String),
}

/// What became of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResult {
    Parsed,
    ParseFailed(String),
    /// An earlier group (in (namespace, name) order) has this name.
    Duplicate,
    /// Overlaps the named, earlier accepted group.
    Overlaps(String),
    /// Outside the install namespace: ignored.
    OutOfScope,
}

/// One group's line in the intake report, with the event to record on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub namespace: String,
    pub name: String,
    pub kind: GroupKind,
    pub result: GroupResult,
    pub event: Event,
}

/// Everything intake has to say, in (namespace, name) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeReport {
    pub scope: Scope,
    pub groups: Vec<GroupReport>,
}

impl IntakeReport {
    /// Groups ignored for living outside the install namespace: set
    /// `purelb_servicegroups_out_of_scope{namespace, name, type}` to 1 for
    /// each (after resetting the gauge).
    pub fn out_of_scope(&self) -> impl Iterator<Item = &GroupReport> {
        self.groups
            .iter()
            .filter(|g| g.result == GroupResult::OutOfScope)
    }
}

fn spec_kind(spec: &ServiceGroupSpec) -> GroupKind {
    if spec.local.is_some() {
        GroupKind::Local
    } else if spec.remote.is_some() {
        GroupKind::Remote
    } else if spec.netbox.is_some() {
        GroupKind::Netbox
    } else if spec.external.is_some() {
        GroupKind::External
    } else {
        GroupKind::Local
    }
}

fn out_of_scope_event(input: &GroupInput, kind: GroupKind, install: &str) -> Event {
    let impact = if kind == GroupKind::Remote {
        "addresses allocated from it are withdrawn from every node"
    } else {
        "its pool is not allocatable"
    };
    let (ns, name) = (&input.namespace, &input.name);
    Event::warning(
        EventReason::ServiceGroupOutOfScope,
        format!(
            "Ignored: ServiceGroups are read only from the PureLB install namespace, and {ns} is not it. \
             This group is {}, so {impact}. Move it: kubectl get servicegroup {name} -n {ns} -o yaml | \
             sed 's/namespace: {ns}/namespace: {install}/' | kubectl apply -f -",
            kind.as_str()
        ),
    )
}

fn upper_family(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "IPV4",
        IpFamily::V6 => "IPV6",
    }
}

/// Parses a local or remote group's ranges. Upstream parses IPv6 ranges
/// first, so their errors win; ranges are then ordered per family as
/// declared (`v4pools`, `v4pool`, `v6pools`, `v6pool`), each range filed
/// under its real family whatever list it was written in.
#[allow(clippy::too_many_arguments)]
fn parse_local(
    pool_type: PoolType,
    v4pool: Option<&AddressPool>,
    v6pool: Option<&AddressPool>,
    v4pools: Option<&Vec<AddressPool>>,
    v6pools: Option<&Vec<AddressPool>>,
    skip_ipv6_dad: bool,
    multi_pool: bool,
    balance_pools: bool,
) -> Result<LocalPool, String> {
    let parse = |specs: Vec<&AddressPool>| -> Result<Vec<PoolRange>, String> {
        specs
            .into_iter()
            .map(|p| {
                PoolRange::parse(&p.pool, &p.subnet, p.aggregation.as_deref())
                    .map_err(|e| e.to_string())
            })
            .collect()
    };
    let v6 = parse(v6pools.into_iter().flatten().chain(v6pool).collect())?;
    let v4 = parse(v4pools.into_iter().flatten().chain(v4pool).collect())?;
    if v4.is_empty() && v6.is_empty() {
        return Err("no valid address range found".to_owned());
    }
    let ranges: Vec<RangeState> = v4.into_iter().chain(v6).map(RangeState::new).collect();
    let of_family = |family: IpFamily| -> Vec<usize> {
        (0..ranges.len())
            .filter(|&i| ranges[i].family() == family)
            .collect()
    };
    let (v4, v6) = (of_family(IpFamily::V4), of_family(IpFamily::V6));
    for family in [&v4, &v6] {
        check_disjoint(&ranges, family)?;
    }
    Ok(LocalPool {
        pool_type,
        skip_ipv6_dad,
        multi_pool,
        balance_pools,
        ranges,
        v4,
        v6,
        book: Default::default(),
    })
}

/// Ranges of one group must not share addresses either (upstream never
/// compares them, and would count such addresses twice).
fn check_disjoint(ranges: &[RangeState], family: &[usize]) -> Result<(), String> {
    let mut sorted = family.to_vec();
    sorted.sort_by_key(|&i| ip_bits(ranges[i].spec.addresses().first()));
    for pair in sorted.windows(2) {
        let (a, b) = (&ranges[pair[0]], &ranges[pair[1]]);
        if ip_bits(b.spec.addresses().first()) <= ip_bits(a.spec.addresses().last()) {
            let (first, second) = if pair[0] < pair[1] { (a, b) } else { (b, a) };
            return Err(format!(
                "{fam} range {} overlaps {fam} range {} in the same ServiceGroup",
                first.spec.addresses(),
                second.spec.addresses(),
                fam = upper_family(a.family())
            ));
        }
    }
    Ok(())
}

fn parse_netbox(spec: &ServiceGroupNetboxSpec) -> Result<NetboxPool, String> {
    let has_host = |rest: Option<&str>| rest.is_some_and(|r| !r.is_empty());
    if !(has_host(spec.url.strip_prefix("http://")) || has_host(spec.url.strip_prefix("https://")))
    {
        return Err(format!(
            "Netbox URL {:?} invalid: want http://host or https://host",
            spec.url
        ));
    }
    if spec.tenant.is_empty() {
        return Err("Netbox tenant must not be empty".to_owned());
    }
    Ok(NetboxPool {
        url: spec.url.clone(),
        tenant: spec.tenant.clone(),
        book: Default::default(),
    })
}

fn parse_group(spec: &ServiceGroupSpec) -> Result<Kind, String> {
    let present = [
        spec.local.is_some(),
        spec.remote.is_some(),
        spec.netbox.is_some(),
        spec.external.is_some(),
    ]
    .into_iter()
    .filter(|p| *p)
    .count();
    match present {
        0 => return Err("Pool must specify local, remote, netbox, or external".to_owned()),
        1 => {}
        _ => {
            return Err(
                "Pool must specify only one of local, remote, netbox, or external".to_owned(),
            );
        }
    }
    if let Some(l) = &spec.local {
        return parse_local(
            PoolType::Local,
            l.v4pool.as_ref(),
            l.v6pool.as_ref(),
            l.v4pools.as_ref(),
            l.v6pools.as_ref(),
            l.skip_ipv6_dad,
            l.multi_pool,
            l.balance_pools,
        )
        .map(Kind::Pool);
    }
    if let Some(r) = &spec.remote {
        return parse_local(
            PoolType::Remote,
            r.v4pool.as_ref(),
            r.v6pool.as_ref(),
            r.v4pools.as_ref(),
            r.v6pools.as_ref(),
            false,
            r.multi_pool,
            r.balance_pools,
        )
        .map(Kind::Pool);
    }
    if let Some(n) = &spec.netbox {
        return parse_netbox(n).map(Kind::Netbox);
    }
    let Some(e) = &spec.external else {
        return Err("Pool must specify local, remote, netbox, or external".to_owned());
    };
    let socket = if e.socket.is_empty() {
        DEFAULT_IPAM_SOCKET.to_owned()
    } else {
        e.socket.clone()
    };
    Ok(Kind::External(ExternalPool {
        provider: e.provider.clone(),
        socket,
        announce: match e.announce {
            ExternalAnnounce::Local => PoolType::Local,
            ExternalAnnounce::Remote => PoolType::Remote,
        },
    }))
}

impl Ipam {
    /// A new generation from the ServiceGroups. Groups are taken
    /// in (namespace, name) order; only those in `install_namespace` are
    /// used, except when it is unknown or when that would drop every group.
    /// A kept group that fails to parse, repeats a name, or shares an address
    /// with an earlier accepted group is refused with a `ParseFailed` event.
    /// If groups were kept but none was accepted, the result is
    /// [`NoValidPools`] and the caller keeps its previous generation.
    /// The new generation holds no allocations: replay them with
    /// [`Ipam::notify`].
    pub fn from_groups(
        install_namespace: Option<&str>,
        groups: &[GroupInput],
    ) -> (Result<Ipam, NoValidPools>, IntakeReport) {
        let mut sorted: Vec<&GroupInput> = groups.iter().collect();
        sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        let scope = match install_namespace.filter(|ns| !ns.is_empty()) {
            None => Scope::Unscoped,
            Some(ns) if sorted.is_empty() || sorted.iter().any(|g| g.namespace == ns) => {
                Scope::Scoped(ns.to_owned())
            }
            Some(ns) => Scope::FailOpen(ns.to_owned()),
        };

        let mut ipam = Ipam::empty();
        let mut reports = Vec::with_capacity(sorted.len());
        let mut kept = 0usize;
        for input in sorted {
            let kind = spec_kind(&input.spec);
            let report = |result: GroupResult, event: Event| GroupReport {
                namespace: input.namespace.clone(),
                name: input.name.clone(),
                kind,
                result,
                event,
            };
            if let Scope::Scoped(ns) = &scope
                && input.namespace != *ns
            {
                reports.push(report(
                    GroupResult::OutOfScope,
                    out_of_scope_event(input, kind, ns),
                ));
                continue;
            }
            kept += 1;
            let parsed = match parse_group(&input.spec) {
                Ok(parsed) => parsed,
                Err(err) => {
                    ipam.rejected.insert(input.name.clone());
                    let event =
                        Event::warning(EventReason::ParseFailed, format!("Failed to parse: {err}"));
                    reports.push(report(GroupResult::ParseFailed(err), event));
                    continue;
                }
            };
            if ipam.by_name.contains_key(&input.name) {
                let event = Event::warning(
                    EventReason::ParseFailed,
                    format!("Duplicate definition of pool {}", input.name),
                );
                reports.push(report(GroupResult::Duplicate, event));
                continue;
            }
            if let Some(other) = ipam.first_overlap(&parsed) {
                ipam.rejected.insert(input.name.clone());
                let event = Event::warning(
                    EventReason::ParseFailed,
                    format!("Pool overlaps with already defined pool {other:?}"),
                );
                reports.push(report(GroupResult::Overlaps(other), event));
                continue;
            }
            ipam.accept(input, parsed);
            reports.push(report(
                GroupResult::Parsed,
                Event::normal(
                    EventReason::Parsed,
                    "ServiceGroup parsed successfully".to_owned(),
                ),
            ));
        }
        ipam.bindings = Bindings::build(&ipam.groups);
        let report = IntakeReport {
            scope,
            groups: reports,
        };
        if kept > 0 && ipam.groups.is_empty() {
            return (Err(NoValidPools), report);
        }
        (Ok(ipam), report)
    }

    /// The name-wise first accepted group sharing an address with `kind`.
    /// Every pair of ranges of one family is compared, including a range
    /// strictly inside another (which upstream misses).
    fn first_overlap(&self, kind: &Kind) -> Option<String> {
        let Kind::Pool(pool) = kind else {
            return None;
        };
        let mut found: Option<&str> = None;
        for range in &pool.ranges {
            let first = ip_bits(range.spec.addresses().first());
            let last = ip_bits(range.spec.addresses().last());
            let map = &self.ranges[family_slot(range.family())];
            // Accepted ranges are disjoint, so walking down from the last one
            // starting at or below `last` meets every intersecting range
            // before the first one that ends below `first`.
            for (_, &(g, r)) in map.range(..=last).rev() {
                let Kind::Pool(other) = &self.groups[g].kind else {
                    continue;
                };
                if ip_bits(other.ranges[r].spec.addresses().last()) < first {
                    break;
                }
                let name = self.groups[g].name.as_str();
                if found.is_none_or(|f| name < f) {
                    found = Some(name);
                }
            }
        }
        found.map(str::to_owned)
    }

    fn accept(&mut self, input: &GroupInput, kind: Kind) {
        let index = self.groups.len();
        if let Kind::Pool(pool) = &kind {
            for (r, range) in pool.ranges.iter().enumerate() {
                self.ranges[family_slot(range.family())]
                    .insert(ip_bits(range.spec.addresses().first()), (index, r));
            }
        }
        let mut served: Vec<String> = input.spec.namespaces.clone().unwrap_or_default();
        served.sort();
        served.dedup();
        self.groups.push(Group {
            namespace: input.namespace.clone(),
            name: input.name.clone(),
            namespaces: input.spec.namespaces.clone(),
            served,
            enforce: input.spec.enforce_namespaces,
            namespace_default: input.spec.namespace_default,
            kind,
        });
        self.by_name.insert(input.name.clone(), index);
    }
}
