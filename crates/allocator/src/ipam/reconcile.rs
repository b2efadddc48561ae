//! Per-Service decisions: rebuild, steady
//! state, family transitions, specific addresses, allocation from a group,
//! multi-pool, release.

use std::collections::BTreeSet;
use std::net::IpAddr;

use purelb_api::annotations::{
    ALLOCATED_BY, ALLOCATED_FROM, BRAND, POOL_TYPE, SKIP_IPV6_DAD, TRUE, encode_allocated_from,
    multi_pool_enabled, parse_allocated_from,
};
use purelb_api::pool::IpFamily;

use super::book::Slot;
use super::error::IpamError;
use super::outcome::{
    Assignment, Event, EventReason, ExternalRelease, Metric, Outcome, RejectReason, ReleaseTarget,
    Released, lb_status,
};
use super::remote::{ExternalAllocate, ExternalPending, NetboxPending};
use super::request::{AddressSource, ServiceRequest, SpecificAddresses};
use super::{Holding, Ipam, Kind, Resolution, Step};

/// Label of `allocation_rejected_total` when no group was named.
const NO_POOL_LABEL: &str = "<none>";
/// Label of `allocation_rejected_total` for a multi-pool pool mismatch.
const UNKNOWN_POOL_LABEL: &str = "<unknown>";

fn dedup(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        let ip = ip.to_canonical();
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

impl Ipam {
    /// Rebuild: records a branded Service's ingress addresses as
    /// its holdings, without conflict checks. The Service's holdings become
    /// exactly these addresses. Returns the addresses that lie in no group
    /// (left on the Service, logged as unknown). Netbox and external
    /// addresses are recognised through `allocated_from`.
    pub fn notify(&mut self, req: &ServiceRequest) -> Vec<IpAddr> {
        let mut out = Outcome::default();
        self.sync(req, &mut out);
        out.unknown
    }

    /// Makes the Service's holdings equal its ingress addresses.
    fn sync(&mut self, req: &ServiceRequest, out: &mut Outcome) {
        let key = req.key_for_sharing();
        let hinted: Vec<usize> = req
            .allocated_from
            .as_deref()
            .map(parse_allocated_from)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| self.by_name.get(name).copied())
            .filter(|&g| !matches!(self.groups[g].kind, Kind::Pool(_)))
            .collect();
        let mut targets: Vec<(IpAddr, usize, Option<Slot>)> = Vec::new();
        for ip in dedup(&req.ingress) {
            if let Some((g, slot)) = self.locate(ip) {
                targets.push((ip, g, Some(slot)));
            } else if let Some(g) = self.netbox_holder(ip) {
                targets.push((ip, g, None));
            } else if let Some(&g) = hinted.first() {
                targets.push((ip, g, None));
            } else {
                out.unknown.push(ip);
            }
        }
        let current: Vec<Holding> = self.services.get(&req.key).cloned().unwrap_or_default();
        for h in &current {
            if !targets
                .iter()
                .any(|(ip, g, _)| *ip == h.ip && *g == h.group)
                && let Some((g, freed)) = self.unhold(&req.key, h.ip)
            {
                self.note_released(out, h.ip, g, freed);
            }
        }
        for (ip, g, slot) in targets {
            if !current.iter().any(|h| h.ip == ip && h.group == g) {
                out.touched.insert(self.groups[g].name.clone());
            }
            self.hold(&req.key, ip, g, slot, key, &req.ports);
        }
    }

    fn note_released(&self, out: &mut Outcome, ip: IpAddr, group: usize, freed: bool) {
        let name = self.groups[group].name.clone();
        out.touched.insert(name.clone());
        out.released.push(Released {
            ip,
            group: name,
            freed,
        });
    }

    /// Whether the Service's holdings are exactly its (non-empty) ingress.
    fn holds_exactly(&self, req: &ServiceRequest) -> bool {
        let Some(holdings) = self.services.get(&req.key) else {
            return false;
        };
        let ingress = dedup(&req.ingress);
        !ingress.is_empty()
            && holdings.len() == ingress.len()
            && ingress
                .iter()
                .all(|ip| holdings.iter().any(|h| h.ip == *ip))
    }

    /// Multi-pool for this Service: the annotation, else the resolved
    /// group's setting (resolution errors mean no).
    fn multi_pool_for(
        &self,
        req: &ServiceRequest,
        resolution: &Result<Resolution, IpamError>,
    ) -> bool {
        match req.multi_pool.as_deref() {
            Some(value) => multi_pool_enabled(Some(value), false),
            None => resolution
                .as_ref()
                .ok()
                .and_then(|r| self.group(&r.group))
                .is_some_and(|g| g.multi_pool()),
        }
    }

    /// The decision for one handled LoadBalancer Service (from the multi-pool
    /// decision on; the controller has already checked class, type and clusterIP,
    /// and deletes `purelb.io/re-evaluate` itself). `active_subnets` are the
    /// `purelb.io/subnets` of the live node Leases, `None` when the install
    /// namespace is unknown (multi-pool then refuses).
    pub fn reconcile(
        &mut self,
        req: &ServiceRequest,
        active_subnets: Option<&BTreeSet<String>>,
    ) -> Step {
        let mut out = Outcome::new(req.ingress.clone());
        // A Service whose status write landed but whose brand did not is
        // recognised by its holdings and branded now.
        let adopted = !req.branded && self.holds_exactly(req);
        let branded = req.branded || adopted;

        // Resolved once: it decides multi-pool and, if needed, the group.
        let resolution = self.resolve(&req.namespace, req.service_group.as_deref());
        if self.multi_pool_for(req, &resolution) {
            if !req.ingress.is_empty() && branded {
                self.sync(req, &mut out);
                match self.incremental(req, active_subnets, &mut out) {
                    Err(err) => {
                        out.events.push(Event::warning(
                            EventReason::AllocationFailed,
                            format!(
                                "Incremental multi-pool allocation refused for {:?}: {err}",
                                req.key
                            ),
                        ));
                        out.error = Some(err);
                    }
                    Ok(()) if adopted => out.set(ALLOCATED_BY, BRAND),
                    Ok(()) => {}
                }
                return Step::Done(out);
            }
        } else if !req.ingress.is_empty() {
            let families = req.requested_families();
            let (keep, excess): (Vec<IpAddr>, Vec<IpAddr>) = req
                .ingress
                .iter()
                .partition(|ip| families.contains(&IpFamily::of(**ip)));
            let missing = families
                .iter()
                .any(|f| !keep.iter().any(|ip| IpFamily::of(*ip) == *f));
            if branded {
                self.sync(req, &mut out);
            }
            if !excess.is_empty() {
                self.release_excess(req, &excess, &mut out);
                out.ingress = keep;
                let list: Vec<String> = excess.iter().map(IpAddr::to_string).collect();
                out.events.push(Event::normal(
                    EventReason::AddressReleased,
                    format!(
                        "Released addresses no longer needed after IP family transition: {}",
                        super::error::go_list(&list)
                    ),
                ));
            }
            if !missing {
                if adopted && let Some(first) = self.first_group_of(req, &out.ingress) {
                    self.annotate(req, &mut out, first);
                }
                return Step::Done(out);
            }
        }
        self.allocate(req, active_subnets, resolution, out)
    }

    /// Releases addresses of families no longer requested.
    fn release_excess(&mut self, req: &ServiceRequest, excess: &[IpAddr], out: &mut Outcome) {
        for ip in dedup(excess) {
            if let Some((g, freed)) = self.unhold(&req.key, ip) {
                self.note_released(out, ip, g, freed);
                if let Kind::External(e) = &self.groups[g].kind {
                    out.external_releases.push(ExternalRelease {
                        group: self.groups[g].name.clone(),
                        socket: e.socket.clone(),
                        service: req.key.clone(),
                        target: ReleaseTarget::Ip(ip),
                    });
                }
                continue;
            }
            if self.locate(ip).is_some() || self.netbox_holder(ip).is_some() {
                continue;
            }
            // Not ours by address: an external group named by the Service.
            if let Some((name, socket)) = self.named_external(req).into_iter().next() {
                out.touched.insert(name.clone());
                out.external_releases.push(ExternalRelease {
                    group: name,
                    socket,
                    service: req.key.clone(),
                    target: ReleaseTarget::Ip(ip),
                });
            }
        }
    }

    /// External groups named in `allocated-from`: (name, socket).
    fn named_external(&self, req: &ServiceRequest) -> Vec<(String, String)> {
        req.allocated_from
            .as_deref()
            .map(parse_allocated_from)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| self.group(name))
            .filter_map(|g| match &g.kind {
                Kind::External(e) => Some((g.name.clone(), e.socket.clone())),
                _ => None,
            })
            .collect()
    }

    /// Releases everything the Service holds. Sidecars are asked to release
    /// for the external groups it holds addresses of, plus those named in
    /// `allocated_from`; with `all_external_if_unnamed`, every external group
    /// when `allocated_from` names none (the delete path, as upstream).
    fn release_everything(
        &mut self,
        service: &str,
        allocated_from: Option<&str>,
        all_external_if_unnamed: bool,
        out: &mut Outcome,
    ) {
        let holdings = self.services.get(service).cloned().unwrap_or_default();
        let mut externals: Vec<usize> = Vec::new();
        for h in holdings {
            if let Some((g, freed)) = self.unhold(service, h.ip) {
                self.note_released(out, h.ip, g, freed);
            }
            if matches!(self.groups[h.group].kind, Kind::External(_))
                && !externals.contains(&h.group)
            {
                externals.push(h.group);
            }
        }
        let named: Vec<&str> = allocated_from.map(parse_allocated_from).unwrap_or_default();
        for (g, group) in self.groups.iter().enumerate() {
            let Kind::External(e) = &group.kind else {
                continue;
            };
            let wanted = externals.contains(&g)
                || named.contains(&group.name.as_str())
                || (all_external_if_unnamed && named.is_empty());
            if wanted {
                out.touched.insert(group.name.clone());
                out.external_releases.push(ExternalRelease {
                    group: group.name.clone(),
                    socket: e.socket.clone(),
                    service: service.to_owned(),
                    target: ReleaseTarget::All,
                });
            }
        }
    }

    /// The Service was deleted: release every address it held.
    /// `allocated_from` is the deleted object's annotation; it picks the
    /// external groups to ask (all of them when unknown).
    pub fn release_service(&mut self, service: &str, allocated_from: Option<&str>) -> Outcome {
        let mut out = Outcome::default();
        self.release_everything(service, allocated_from, true, &mut out);
        out
    }

    /// The Service is no longer `type: LoadBalancer`: release its addresses.
    pub fn release_not_load_balancer(
        &mut self,
        req: &ServiceRequest,
        service_type: &str,
    ) -> Outcome {
        let mut out = Outcome::new(req.ingress.clone());
        // The apiserver clears the ingress list itself when the type changes,
        // so `allocated-from` is the record that the Service held addresses
        // (upstream also required ingress, and leaked them).
        if req.allocated_from.is_some() {
            out.events.push(Event::normal(
                EventReason::AddressReleased,
                format!("Service is Type {service_type}, not LoadBalancer"),
            ));
            self.release_everything(&req.key, req.allocated_from.as_deref(), true, &mut out);
            out.ingress.clear();
        }
        out.remove(ALLOCATED_FROM);
        out
    }

    /// A failed allocation: event, metric, requeue decision.
    pub(crate) fn fail(&self, req: &ServiceRequest, mut out: Outcome, err: IpamError) -> Outcome {
        out.events.push(Event::warning(
            EventReason::AllocationFailed,
            format!("Failed to allocate IP for {:?}: {err}", req.key),
        ));
        let pool = req
            .service_group
            .as_deref()
            .filter(|g| !g.is_empty())
            .unwrap_or(NO_POOL_LABEL);
        out.metrics.push(Metric::AllocationRejected {
            pool: pool.to_owned(),
            reason: err.reason(),
        });
        out.requeue = err.is_retryable();
        out.error = Some(err);
        out
    }

    /// The group of the first address in `ingress` this IPAM knows.
    fn first_group_of(&self, req: &ServiceRequest, ingress: &[IpAddr]) -> Option<usize> {
        ingress.iter().find_map(|ip| self.group_index_of(req, *ip))
    }

    fn group_index_of(&self, req: &ServiceRequest, ip: IpAddr) -> Option<usize> {
        self.services
            .get(&req.key)
            .and_then(|hs| hs.iter().find(|h| h.ip == ip).map(|h| h.group))
            .or_else(|| self.locate(ip).map(|(g, _)| g))
    }

    /// Success annotations: `allocated-from` lists the groups of every
    /// ingress address, `pool-type` and `skip-ipv6-dad` follow `primary`,
    /// and the Service is branded.
    pub(crate) fn annotate(&self, req: &ServiceRequest, out: &mut Outcome, primary: usize) {
        let mut names: Vec<&str> = out
            .ingress
            .iter()
            .filter_map(|ip| self.group_index_of(req, *ip))
            .map(|g| self.groups[g].name.as_str())
            .collect();
        if names.is_empty() {
            names.push(&self.groups[primary].name);
        }
        out.set(ALLOCATED_FROM, encode_allocated_from(names));
        let group = &self.groups[primary];
        out.set(POOL_TYPE, group.pool_type().as_str());
        if group.skip_ipv6_dad() {
            out.set(SKIP_IPV6_DAD, TRUE);
        } else {
            out.remove(SKIP_IPV6_DAD);
        }
        out.set(ALLOCATED_BY, BRAND);
    }

    fn allocate(
        &mut self,
        req: &ServiceRequest,
        active_subnets: Option<&BTreeSet<String>>,
        resolution: Result<Resolution, IpamError>,
        mut out: Outcome,
    ) -> Step {
        if let Some(spec) = &req.addresses
            && spec.addresses.as_ref().map_or(true, |ips| !ips.is_empty())
        {
            return Step::Done(self.allocate_specific(req, spec, out));
        }
        let resolution = match resolution {
            Ok(r) => r,
            Err(err) => return Step::Done(self.fail(req, out, err)),
        };
        if let Some(warning) = resolution.warning {
            out.events
                .push(Event::warning(EventReason::ConfigurationWarning, warning));
        }
        let Some(&g) = self.by_name.get(&resolution.group) else {
            return Step::Done(self.fail(req, out, IpamError::UnknownPool(resolution.group)));
        };
        let group = &self.groups[g];
        let multi = multi_pool_enabled(req.multi_pool.as_deref(), group.multi_pool());
        if multi && group.balance_pools() {
            let err = IpamError::MultiPoolAndBalance(group.name.clone());
            return Step::Done(self.fail(req, out, err));
        }
        if multi {
            return Step::Done(match &group.kind {
                Kind::Pool(_) => self.allocate_multi(req, g, active_subnets, out),
                Kind::Netbox(_) => self.fail(req, out, IpamError::MultiPoolNetbox),
                Kind::External(_) => {
                    let name = group.name.clone();
                    out.metrics.push(Metric::AllocationRejected {
                        pool: name.clone(),
                        reason: RejectReason::MultipoolRefused,
                    });
                    self.fail(req, out, IpamError::MultiPoolExternal(name))
                }
            });
        }
        self.allocate_from_group(req, g, out)
    }

    /// Specific addresses: every address must lie in a local or
    /// remote group the Service may use; then the Service's previous
    /// holdings are released and each address assigned. On a refusal
    /// everything is put back as it was.
    fn allocate_specific(
        &mut self,
        req: &ServiceRequest,
        spec: &SpecificAddresses,
        mut out: Outcome,
    ) -> Outcome {
        if spec.source == AddressSource::LoadBalancerIp {
            out.events.push(Event::normal(
                EventReason::DeprecationWarning,
                format!(
                    "Service.Spec.LoadBalancerIP is deprecated, please use the {:?} annotation instead",
                    purelb_api::annotations::ADDRESSES
                ),
            ));
        }
        let ips = match &spec.addresses {
            Ok(ips) => dedup(ips),
            Err(err) => return self.fail(req, out, IpamError::InvalidAddress(err.clone())),
        };
        if req.service_group.is_some() {
            out.events.push(Event::normal(
                EventReason::ConfigurationWarning,
                "Both the addresses annotation and the service-group annotation were provided. service-group will be ignored.".to_owned(),
            ));
        }
        let mut targets: Vec<(IpAddr, usize, Slot)> = Vec::with_capacity(ips.len());
        for ip in ips {
            let Some((g, slot)) = self.locate(ip) else {
                return self.fail(req, out, IpamError::NotInAnyGroup(ip));
            };
            if let Err(err) = self.check(&req.namespace, &self.groups[g].name) {
                let err = IpamError::AddressDenied {
                    ip,
                    source: Box::new(err),
                };
                return self.fail(req, out, err);
            }
            targets.push((ip, g, slot));
        }

        let key = req.key_for_sharing();
        let previous = self.services.get(&req.key).cloned().unwrap_or_default();
        let mut scratch = Outcome::default();
        self.release_everything(&req.key, req.allocated_from.as_deref(), false, &mut scratch);
        let mut ingress: Vec<IpAddr> = Vec::with_capacity(targets.len());
        let mut events: Vec<Event> = Vec::with_capacity(targets.len());
        for &(ip, g, slot) in &targets {
            let refusal = self.groups[g]
                .book()
                .and_then(|b| b.available(ip, &req.key, key, &req.ports).err());
            if let Some(refusal) = refusal {
                for done in &ingress {
                    self.unhold(&req.key, *done);
                }
                for h in &previous {
                    let slot = self.locate(h.ip).map(|(_, s)| s);
                    self.hold(&req.key, h.ip, h.group, slot, key, &req.ports);
                }
                return self.fail(req, out, IpamError::Unavailable(refusal));
            }
            self.hold(&req.key, ip, g, Some(slot), key, &req.ports);
            ingress.push(ip);
            let group = &self.groups[g];
            out.assigned.push(Assignment {
                ip,
                group: group.name.clone(),
                pool_type: group.pool_type(),
            });
            events.push(Event::normal(
                EventReason::AddressAssigned,
                format!("Assigned {} from pool {}", lb_status(&ingress), group.name),
            ));
        }
        // Keep releases of addresses that did not come back.
        for r in scratch.released {
            if !ingress.contains(&r.ip) {
                out.touched.insert(r.group.clone());
                out.released.push(r);
            }
        }
        out.external_releases.extend(scratch.external_releases);
        for &(_, g, _) in &targets {
            out.touched.insert(self.groups[g].name.clone());
        }
        out.events.extend(events);
        out.ingress = ingress;
        if let Some(&(_, first, _)) = targets.first() {
            self.annotate(req, &mut out, first);
        }
        out
    }

    /// Allocation from the resolved group (not multi-pool).
    fn allocate_from_group(&mut self, req: &ServiceRequest, g: usize, mut out: Outcome) -> Step {
        if out.ingress.is_empty() {
            self.release_everything(&req.key, req.allocated_from.as_deref(), false, &mut out);
        }
        let missing: Vec<IpFamily> = req
            .requested_families()
            .into_iter()
            .filter(|f| !out.ingress.iter().any(|ip| IpFamily::of(*ip) == *f))
            .collect();
        let name = self.groups[g].name.clone();
        match &self.groups[g].kind {
            Kind::Pool(_) => {}
            Kind::External(e) => {
                let allocate = ExternalAllocate {
                    group: name,
                    socket: e.socket.clone(),
                    provider: e.provider.clone(),
                    service: req.key.clone(),
                    sharing_key: req.key_for_sharing().unwrap_or_default().to_owned(),
                    want_ipv4: missing.contains(&IpFamily::V4),
                    want_ipv6: missing.contains(&IpFamily::V6),
                };
                return Step::External(ExternalPending {
                    allocate,
                    req: req.clone(),
                    outcome: out,
                });
            }
            Kind::Netbox(_) => return self.start_netbox(req, g, missing, out),
        }
        let mut added: Vec<IpAddr> = Vec::with_capacity(missing.len());
        for family in missing {
            match self.assign_next(req, g, family, &mut out) {
                Ok(ip) => {
                    added.push(ip);
                    out.ingress.push(ip);
                }
                Err(err) => {
                    for ip in &added {
                        self.unhold(&req.key, *ip);
                    }
                    out.ingress.retain(|ip| !added.contains(ip));
                    out.assigned.retain(|a| !added.contains(&a.ip));
                    return Step::Done(self.fail(req, out, err));
                }
            }
        }
        out.events.push(Event::normal(
            EventReason::AddressAssigned,
            format!("Assigned {} from pool {name}", lb_status(&out.ingress)),
        ));
        self.annotate(req, &mut out, g);
        Step::Done(out)
    }

    /// One address of `family` from local/remote group `g` (LocalPool
    /// `AssignNext`): balanced if the group says so and the Service does not
    /// share, else first free in range order; a Service whose sharing key is
    /// bound in this family can only get that address.
    fn assign_next(
        &mut self,
        req: &ServiceRequest,
        g: usize,
        family: IpFamily,
        out: &mut Outcome,
    ) -> Result<IpAddr, IpamError> {
        let group = &self.groups[g];
        let Kind::Pool(pool) = &group.kind else {
            return Err(IpamError::UnknownPool(group.name.clone()));
        };
        let name = group.name.clone();
        let key = req.key_for_sharing();
        let picked: Result<(Slot, IpAddr), IpamError> = if pool.balance_pools && key.is_none() {
            let ranges = pool.family(family);
            if ranges.is_empty() {
                return Err(IpamError::NoRangesForFamily(family));
            }
            let mut order = ranges.to_vec();
            order.sort_by_key(|&r| pool.ranges[r].used);
            match pool.first_free_in(&order) {
                Some(found) => {
                    out.metrics
                        .push(Metric::BalancePoolsAllocation { pool: name.clone() });
                    Ok(found)
                }
                None => {
                    out.metrics.push(Metric::AllocationRejected {
                        pool: name.clone(),
                        reason: RejectReason::Exhausted,
                    });
                    return Err(IpamError::BalanceExhausted {
                        service: req.key.clone(),
                        family,
                    });
                }
            }
        } else {
            let bound = key.and_then(|k| pool.book.bound(k, family));
            let try_ip = |ip: IpAddr| -> Result<(Slot, IpAddr), IpamError> {
                pool.book
                    .available(ip, &req.key, key, &req.ports)
                    .map_err(IpamError::from)?;
                let slot = pool
                    .book
                    .ips
                    .get(&ip)
                    .and_then(|s| s.slot)
                    .or_else(|| self.locate(ip).map(|(_, s)| s))
                    .ok_or_else(|| IpamError::Exhausted {
                        pool: name.clone(),
                        service: req.key.clone(),
                    })?;
                Ok((slot, ip))
            };
            let found = match bound {
                Some(bound) => try_ip(bound),
                None => match pool.first_free_in(pool.family(family)) {
                    Some(found) => Ok(found),
                    // Upstream scanned every address; with a sharing key its
                    // error is the one for the last address it tried.
                    None => match (key, pool.last_address(family)) {
                        (Some(_), Some(last)) => try_ip(last),
                        _ => Err(IpamError::Exhausted {
                            pool: name.clone(),
                            service: req.key.clone(),
                        }),
                    },
                },
            };
            if let Err(err) = &found {
                let reason = match err {
                    IpamError::Unavailable(u) => u.reason(),
                    _ => RejectReason::Exhausted,
                };
                out.metrics.push(Metric::AllocationRejected {
                    pool: name.clone(),
                    reason,
                });
            }
            found
        };
        let (slot, ip) = picked?;
        let pool_type = self.groups[g].pool_type();
        self.hold(&req.key, ip, g, Some(slot), key, &req.ports);
        out.touched.insert(name.clone());
        out.assigned.push(Assignment {
            ip,
            group: name,
            pool_type,
        });
        Ok(ip)
    }

    /// A fresh multi-pool allocation.
    fn allocate_multi(
        &mut self,
        req: &ServiceRequest,
        g: usize,
        active_subnets: Option<&BTreeSet<String>>,
        mut out: Outcome,
    ) -> Outcome {
        if req.key_for_sharing().is_some() {
            return self.fail(req, out, IpamError::MultiPoolSharing);
        }
        let Some(active) = active_subnets else {
            return self.fail(req, out, IpamError::MultiPoolNoSubnets);
        };
        self.release_everything(&req.key, req.allocated_from.as_deref(), false, &mut out);
        out.ingress.clear();
        if let Err(err) = self.assign_per_range(req, g, active, &mut out) {
            return self.fail(req, out, err);
        }
        let name = self.groups[g].name.clone();
        out.events.push(Event::normal(
            EventReason::AddressAssigned,
            format!(
                "Multi-pool: assigned {} IPs from pool {name}",
                out.ingress.len()
            ),
        ));
        out.metrics.push(Metric::MultipoolAllocation { pool: name });
        self.annotate(req, &mut out, g);
        out
    }

    /// One address per range per family; local groups use only ranges whose
    /// `subnet` string is an active subnet, remote groups every range;
    /// ranges where the Service already has an address are kept. Fails only
    /// if the Service ends up with no address from the group. Returns how
    /// many were added.
    fn assign_per_range(
        &mut self,
        req: &ServiceRequest,
        g: usize,
        active: &BTreeSet<String>,
        out: &mut Outcome,
    ) -> Result<usize, IpamError> {
        let key = req.key_for_sharing();
        let name = self.groups[g].name.clone();
        let (mut allocated, mut active_ranges, mut skipped, mut added) = (0, 0, 0, 0);
        for family in req.requested_families() {
            let Kind::Pool(pool) = &self.groups[g].kind else {
                return Err(IpamError::UnknownPool(name));
            };
            let ranges = pool.family(family).to_vec();
            for r in ranges {
                let Kind::Pool(pool) = &self.groups[g].kind else {
                    return Err(IpamError::UnknownPool(name));
                };
                let range = &pool.ranges[r];
                if pool.pool_type == super::PoolType::Local
                    && !active.contains(range.spec.subnet_spec())
                {
                    skipped += 1;
                    continue;
                }
                active_ranges += 1;
                if out.ingress.iter().any(|ip| range.spec.contains(*ip)) {
                    allocated += 1;
                    continue;
                }
                let pick = match key.and_then(|k| pool.book.bound(k, family)) {
                    Some(bound) => pool
                        .book
                        .available(bound, &req.key, key, &req.ports)
                        .ok()
                        .and_then(|()| range.spec.addresses().offset_of(bound))
                        .map(|offset| (Slot { range: r, offset }, bound)),
                    None => range
                        .first_free()
                        .map(|(offset, ip)| (Slot { range: r, offset }, ip)),
                };
                let Some((slot, ip)) = pick else {
                    out.metrics.push(Metric::AllocationRejected {
                        pool: name.clone(),
                        reason: RejectReason::Exhausted,
                    });
                    continue;
                };
                let pool_type = pool.pool_type;
                self.hold(&req.key, ip, g, Some(slot), key, &req.ports);
                out.ingress.push(ip);
                out.touched.insert(name.clone());
                out.assigned.push(Assignment {
                    ip,
                    group: name.clone(),
                    pool_type,
                });
                allocated += 1;
                added += 1;
            }
        }
        if allocated == 0 {
            return Err(IpamError::MultiPoolNothing {
                service: req.key.clone(),
                skipped,
            });
        }
        if allocated < active_ranges {
            out.metrics.push(Metric::MultipoolPartial { pool: name });
        }
        Ok(added)
    }

    /// A branded multi-pool Service with addresses: add addresses from
    /// ranges that became active; never remove any.
    fn incremental(
        &mut self,
        req: &ServiceRequest,
        active_subnets: Option<&BTreeSet<String>>,
        out: &mut Outcome,
    ) -> Result<(), IpamError> {
        let mismatch = |out: &mut Outcome| {
            out.metrics.push(Metric::AllocationRejected {
                pool: UNKNOWN_POOL_LABEL.to_owned(),
                reason: RejectReason::MultipoolPoolMismatch,
            })
        };
        // The group is the one holding every address, never the annotation
        // (which the Service's owner can edit).
        let mut held: Option<usize> = None;
        for ip in dedup(&req.ingress) {
            let Some(g) = self
                .group_index_of(req, ip)
                .or_else(|| self.netbox_holder(ip))
            else {
                mismatch(out);
                return Err(IpamError::NotInAnyPool(ip));
            };
            match held {
                None => held = Some(g),
                Some(h) if h != g => {
                    mismatch(out);
                    return Err(IpamError::SpansPools(
                        self.groups[h].name.clone(),
                        self.groups[g].name.clone(),
                    ));
                }
                Some(_) => {}
            }
        }
        let Some(g) = held else {
            mismatch(out);
            return Err(IpamError::NoIngress);
        };
        let name = self.groups[g].name.clone();
        if req.allocated_from.as_deref() != Some(name.as_str()) {
            out.set(ALLOCATED_FROM, name.clone());
        }
        match &self.groups[g].kind {
            Kind::External(_) => {
                out.metrics.push(Metric::AllocationRejected {
                    pool: name.clone(),
                    reason: RejectReason::MultipoolRefused,
                });
                return Err(IpamError::MultiPoolExternal(name));
            }
            Kind::Netbox(_) => return Err(IpamError::MultiPoolNetbox),
            Kind::Pool(_) => {}
        }
        let Some(active) = active_subnets else {
            return Err(IpamError::IncrementalNoSubnets);
        };
        let added = self.assign_per_range(req, g, active, out)?;
        if added > 0 {
            out.events.push(Event::normal(
                EventReason::AddressAssigned,
                format!(
                    "Incremental multi-pool: added {added} IPs (total {}) from pool {name}",
                    out.ingress.len()
                ),
            ));
            out.metrics.push(Metric::MultipoolAllocation { pool: name });
            self.annotate(req, out, g);
        }
        Ok(())
    }

    /// A Netbox group: a Service whose sharing key is bound there gets that
    /// address without asking Netbox; the other families are asked for.
    fn start_netbox(
        &mut self,
        req: &ServiceRequest,
        g: usize,
        missing: Vec<IpFamily>,
        mut out: Outcome,
    ) -> Step {
        let key = req.key_for_sharing();
        let mut committed: Vec<IpAddr> = Vec::new();
        let mut ask: Vec<IpFamily> = Vec::new();
        for family in missing {
            let Kind::Netbox(n) = &self.groups[g].kind else {
                break;
            };
            let Some(bound) = key.and_then(|k| n.book.bound(k, family)) else {
                ask.push(family);
                continue;
            };
            if let Err(refusal) = n.book.available(bound, &req.key, key, &req.ports) {
                for ip in &committed {
                    self.unhold(&req.key, *ip);
                }
                out.ingress.retain(|ip| !committed.contains(ip));
                out.assigned.retain(|a| !committed.contains(&a.ip));
                return Step::Done(self.fail(req, out, IpamError::Unavailable(refusal)));
            }
            self.hold(&req.key, bound, g, None, key, &req.ports);
            committed.push(bound);
            out.ingress.push(bound);
            out.touched.insert(self.groups[g].name.clone());
            out.assigned.push(Assignment {
                ip: bound,
                group: self.groups[g].name.clone(),
                pool_type: self.groups[g].pool_type(),
            });
        }
        let group = &self.groups[g];
        if ask.is_empty() {
            out.events.push(Event::normal(
                EventReason::AddressAssigned,
                format!(
                    "Assigned {} from pool {}",
                    lb_status(&out.ingress),
                    group.name
                ),
            ));
            self.annotate(req, &mut out, g);
            return Step::Done(out);
        }
        let Kind::Netbox(n) = &group.kind else {
            return Step::Done(self.fail(req, out, IpamError::UnknownPool(group.name.clone())));
        };
        Step::Netbox(NetboxPending {
            group: group.name.clone(),
            url: n.url.clone(),
            tenant: n.tenant.clone(),
            service: req.key.clone(),
            families: ask,
            req: req.clone(),
            outcome: out,
            committed,
        })
    }
}
