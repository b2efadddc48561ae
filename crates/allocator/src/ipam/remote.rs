//! Groups whose addresses come from outside: an external IPAM sidecar
//! or Netbox. The IPAM decides that such a call is needed and
//! what to ask; the controller makes the call and hands the answer back.

use std::net::IpAddr;

use purelb_api::pool::IpFamily;

use super::error::IpamError;
use super::outcome::{Assignment, Event, EventReason, Outcome, lb_status};
use super::request::ServiceRequest;
use super::{Ipam, Kind};

/// A failed sidecar or Netbox call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub message: String,
    /// Transport trouble worth retrying: a deadline or cancellation, or gRPC
    /// `Unavailable`, `DeadlineExceeded`, `ResourceExhausted`, `Aborted`.
    pub retryable: bool,
}

/// The sidecar `Allocate` request to make (`families` selector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAllocate {
    /// ServiceGroup name, the request's `pool`.
    pub group: String,
    pub socket: String,
    pub provider: String,
    /// `namespace/name`.
    pub service: String,
    /// Empty when the Service does not share.
    pub sharing_key: String,
    pub want_ipv4: bool,
    pub want_ipv6: bool,
}

/// An allocation waiting for the sidecar.
#[derive(Debug)]
pub struct ExternalPending {
    pub allocate: ExternalAllocate,
    pub(crate) req: ServiceRequest,
    pub(crate) outcome: Outcome,
}

impl ExternalPending {
    /// Sidecar `Release` calls to make before the `Allocate` call.
    pub fn releases_first(&self) -> &[super::ExternalRelease] {
        &self.outcome.external_releases
    }
}

/// An allocation waiting for Netbox: one address per listed family.
#[derive(Debug)]
pub struct NetboxPending {
    pub group: String,
    pub url: String,
    pub tenant: String,
    pub service: String,
    pub families: Vec<IpFamily>,
    pub(crate) req: ServiceRequest,
    pub(crate) outcome: Outcome,
    /// Addresses already given in this call (bound sharing keys).
    pub(crate) committed: Vec<IpAddr>,
}

impl Ipam {
    /// Finishes an external allocation with the sidecar's answer: the
    /// addresses of `AllocateResponse.ips` (the sidecar client has checked
    /// the answer: 1 to 16 parseable addresses), or the call's error. The
    /// addresses are appended to the ingress list as-is (those already there
    /// are not repeated) and recorded as the Service's, so releases and
    /// multi-pool checks find their group; the sidecar owns the space.
    pub fn complete_external(
        &mut self,
        pending: ExternalPending,
        answer: Result<Vec<IpAddr>, RemoteError>,
    ) -> Outcome {
        let ExternalPending {
            allocate,
            req,
            mut outcome,
        } = pending;
        let g = match self.by_name.get(&allocate.group) {
            Some(&g) if matches!(self.groups[g].kind, Kind::External(_)) => g,
            _ => return self.fail(&req, outcome, IpamError::UnknownPool(allocate.group)),
        };
        let ips: Vec<IpAddr> = match answer {
            Ok(ips) => ips.into_iter().map(|ip| ip.to_canonical()).collect(),
            Err(e) => {
                let err = IpamError::Remote {
                    message: e.message,
                    retryable: e.retryable,
                };
                return self.fail(&req, outcome, err);
            }
        };
        if ips.is_empty() {
            let provider = allocate.provider;
            return self.fail(&req, outcome, IpamError::SidecarNoIps { provider });
        }
        let key = req.key_for_sharing();
        let group = self.groups[g].name.clone();
        let pool_type = self.groups[g].pool_type();
        for ip in ips {
            if !outcome.ingress.contains(&ip) {
                outcome.ingress.push(ip);
            }
            self.hold(&req.key, ip, g, None, key, &req.ports);
            outcome.assigned.push(Assignment {
                ip,
                group: group.clone(),
                pool_type,
            });
        }
        outcome.touched.insert(group.clone());
        outcome.events.push(Event::normal(
            EventReason::AddressAssigned,
            format!("Assigned {} from pool {group}", lb_status(&outcome.ingress)),
        ));
        self.annotate(&req, &mut outcome, g);
        outcome
    }

    /// Finishes a Netbox allocation with the addresses Netbox handed out, one
    /// per requested family. An address inside a local or remote group, or
    /// one another Service holds without a compatible sharing key or with a
    /// clashing port, is refused; on any refusal this
    /// call's addresses are released again.
    pub fn complete_netbox(
        &mut self,
        pending: NetboxPending,
        answer: Result<Vec<IpAddr>, RemoteError>,
    ) -> Outcome {
        let NetboxPending {
            group,
            families,
            req,
            mut outcome,
            mut committed,
            ..
        } = pending;
        let rollback = |ipam: &mut Ipam, outcome: &mut Outcome, committed: &[IpAddr]| {
            for ip in committed {
                ipam.unhold(&req.key, *ip);
            }
            outcome.ingress.retain(|ip| !committed.contains(ip));
            outcome.assigned.retain(|a| !committed.contains(&a.ip));
        };
        let g = match self.by_name.get(&group) {
            Some(&g) if matches!(self.groups[g].kind, Kind::Netbox(_)) => g,
            _ => {
                rollback(self, &mut outcome, &committed);
                return self.fail(&req, outcome, IpamError::UnknownPool(group));
            }
        };
        let ips = match answer {
            Ok(ips) => ips,
            Err(e) => {
                rollback(self, &mut outcome, &committed);
                let err = IpamError::Remote {
                    message: e.message,
                    retryable: e.retryable,
                };
                return self.fail(&req, outcome, err);
            }
        };
        let key = req.key_for_sharing();
        let mut wanted = families;
        // Addresses Netbox handed out that end up unused go back to Netbox.
        let give_back = |ipam: &Ipam, outcome: &mut Outcome, answered: &[IpAddr]| {
            for ip in answered {
                let Kind::Netbox(n) = &ipam.groups[g].kind else {
                    return;
                };
                if !n.book.ips.contains_key(ip) {
                    outcome.released.push(super::Released {
                        ip: *ip,
                        group: group.clone(),
                        freed: true,
                    });
                }
            }
        };
        let answered: Vec<IpAddr> = ips.iter().map(|ip| ip.to_canonical()).collect();
        for ip in ips {
            let ip = ip.to_canonical();
            let refusal = if let Some(pos) = wanted.iter().position(|f| *f == IpFamily::of(ip)) {
                wanted.remove(pos);
                if let Some((other, _)) = self.locate(ip) {
                    Some(IpamError::NetboxInPool {
                        ip,
                        group: self.groups[other].name.clone(),
                    })
                } else if let Some(other) = self.netbox_holder(ip).filter(|o| *o != g) {
                    Some(IpamError::NetboxInPool {
                        ip,
                        group: self.groups[other].name.clone(),
                    })
                } else {
                    let Kind::Netbox(n) = &self.groups[g].kind else {
                        return self.fail(&req, outcome, IpamError::UnknownPool(group));
                    };
                    n.book
                        .available(ip, &req.key, key, &req.ports)
                        .err()
                        .map(IpamError::from)
                }
            } else {
                Some(IpamError::NetboxUnrequested(ip))
            };
            if let Some(err) = refusal {
                rollback(self, &mut outcome, &committed);
                give_back(self, &mut outcome, &answered);
                return self.fail(&req, outcome, err);
            }
            self.hold(&req.key, ip, g, None, key, &req.ports);
            committed.push(ip);
            outcome.ingress.push(ip);
            outcome.assigned.push(Assignment {
                ip,
                group: group.clone(),
                pool_type: self.groups[g].pool_type(),
            });
        }
        if let Some(family) = wanted.first() {
            let err = IpamError::NetboxMissing(*family);
            rollback(self, &mut outcome, &committed);
            give_back(self, &mut outcome, &answered);
            return self.fail(&req, outcome, err);
        }
        outcome.touched.insert(group.clone());
        outcome.events.push(Event::normal(
            EventReason::AddressAssigned,
            format!("Assigned {} from pool {group}", lb_status(&outcome.ingress)),
        ));
        self.annotate(&req, &mut outcome, g);
        outcome
    }
}

impl Ipam {
    /// The Netbox group `name`'s (url, tenant).
    pub fn netbox_location(&self, name: &str) -> Option<(&str, &str)> {
        match &self.group(name)?.kind {
            Kind::Netbox(n) => Some((n.url.as_str(), n.tenant.as_str())),
            _ => None,
        }
    }

    /// The external group `name`'s sidecar socket.
    pub fn external_socket(&self, name: &str) -> Option<&str> {
        match &self.group(name)?.kind {
            Kind::External(e) => Some(e.socket.as_str()),
            _ => None,
        }
    }

    /// The external group `name`'s provider (`status.ipam`).
    pub fn external_provider(&self, name: &str) -> Option<&str> {
        match &self.group(name)?.kind {
            Kind::External(e) => Some(e.provider.as_str()),
            _ => None,
        }
    }
}
