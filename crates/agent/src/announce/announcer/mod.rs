//! Carries out the per-Service [`Decision`]s on the kernel:
//! adds local VIPs (with lifetimes, flags and the protocol marker) on the winner's
//! NIC and remote VIPs on the dummy link, renews finite lifetimes, sends GARP /
//! unsolicited NA, withdraws, and adopts what an earlier run of the agent left.
//!
//! The announcer is owned by the controller's single task, so kernel changes never
//! interleave. What it put on the kernel is in `held` (one placement per address);
//! a decision that matches the placement already held costs no netlink call: the
//! renewal timer keeps the lifetime fresh, and GARP goes out only when an address
//! moves here.
//!
//! Only addresses carrying the agent's protocol marker are ever removed: those it
//! added itself, in this run or (adopted at start) an earlier one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use purelb_api::pool::IpFamily;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::announced::{AddressRemoval, AnnouncedAddresses};
pub use super::garp::GarpJob;
pub use super::outcome::Applied;
use super::plan::{Decision, WithdrawReason};
use crate::kernel::{Address, AddressOptions, Kernel};
use crate::metrics::Metrics;
use crate::node::election::View;
use crate::node::netstate::NetSnapshot;
use crate::node::settings::AddressSettings;

mod adopt;
mod renew;
mod vanished;

/// Where an address goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Remote,
}

/// One address the agent holds on the kernel.
#[derive(Debug)]
pub struct Held {
    pub kind: Kind,
    pub ifindex: u32,
    pub ifname: String,
    pub prefix_len: u8,
    pub options: AddressOptions,
    /// When the lifetime is refreshed next (`None`: permanent).
    renew_at: Option<Instant>,
    renew_every: Option<Duration>,
    garp: Option<JoinHandle<()>>,
}

impl Held {
    fn same_placement(&self, ifindex: u32, prefix_len: u8, options: &AddressOptions) -> bool {
        self.ifindex == ifindex && self.prefix_len == prefix_len && self.options == *options
    }
}

pub struct Announcer {
    kernel: Kernel,
    node: String,
    metrics: Arc<Metrics>,
    held: BTreeMap<IpAddr, Held>,
    announced: AnnouncedAddresses,
    /// Addresses an earlier run left, by IP, until a decision claims them.
    adopted: BTreeMap<IpAddr, Vec<Address>>,
    view: watch::Receiver<View>,
}

impl Announcer {
    pub fn new(
        kernel: Kernel,
        node: &str,
        metrics: Arc<Metrics>,
        view: watch::Receiver<View>,
    ) -> Self {
        Self {
            kernel,
            node: node.to_owned(),
            metrics,
            held: BTreeMap::new(),
            announced: AnnouncedAddresses::default(),
            adopted: BTreeMap::new(),
            view,
        }
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Whether the node holds (or adopted) `ip`: claims of such addresses are not
    /// held back by the join hold-down.
    pub fn holds(&self, ip: IpAddr) -> bool {
        self.held.contains_key(&ip) || self.adopted.contains_key(&ip)
    }

    pub fn held_local(&self) -> impl Iterator<Item = (&IpAddr, &Held)> {
        self.held.iter().filter(|(_, h)| h.kind == Kind::Local)
    }

    pub fn is_announced(&self, service: &str, ip: IpAddr) -> bool {
        self.announced.is_announced(service, ip)
    }

    /// Carries out one decision for `service`.
    pub async fn apply(
        &mut self,
        service: &str,
        decision: &Decision,
        net: &NetSnapshot,
        garp: Option<GarpJob>,
    ) -> Applied {
        match decision {
            Decision::Local {
                ip,
                interface,
                prefix_len,
                options,
                nodad,
                ..
            } => {
                if !self.view.borrow().healthy {
                    return Applied::NotHealthy;
                }
                let opts = kernel_options(options, *nodad, IpFamily::of(*ip) == IpFamily::V6);
                self.add(
                    service,
                    *ip,
                    Kind::Local,
                    interface,
                    *prefix_len,
                    opts,
                    options,
                    net,
                    garp,
                )
                .await
            }
            Decision::Remote {
                ip,
                interface,
                prefix_len,
                options,
            } => {
                let opts = kernel_options(options, false, false);
                self.add(
                    service,
                    *ip,
                    Kind::Remote,
                    interface,
                    *prefix_len,
                    opts,
                    options,
                    net,
                    None,
                )
                .await
            }
            Decision::Withdraw { ip, reason } => self.withdraw(service, *ip, *reason).await,
            Decision::Skip { .. } | Decision::Retry { .. } => Applied::Nothing,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn add(
        &mut self,
        service: &str,
        ip: IpAddr,
        kind: Kind,
        interface: &str,
        prefix_len: u8,
        opts: AddressOptions,
        settings: &AddressSettings,
        net: &NetSnapshot,
        garp: Option<GarpJob>,
    ) -> Applied {
        let Some(link) = net.link_named(interface) else {
            return Applied::Failed(format!("no link named {interface:?}"));
        };
        let ifindex = link.index;
        if let Some(held) = self.held.get(&ip)
            && held.same_placement(ifindex, prefix_len, &opts)
        {
            self.record(service, ip);
            return Applied::Unchanged;
        }
        if let Err(error) = self
            .kernel
            .add_address(ifindex, ip, prefix_len, &opts)
            .await
        {
            return Applied::Failed(error.to_string());
        }
        self.metrics.address_additions.inc();
        // Wherever else we had it (another link, another mask) goes now.
        if let Some(old) = self.held.remove(&ip) {
            if let Some(task) = old.garp {
                task.abort();
            }
            if !(old.ifindex == ifindex && old.prefix_len == prefix_len) {
                self.delete_placement(ip, old.ifindex, old.prefix_len).await;
            }
        }
        for a in self.adopted.remove(&ip).unwrap_or_default() {
            if !(a.ifindex == ifindex && a.prefix_len == prefix_len) {
                self.delete_placement(ip, a.ifindex, a.prefix_len).await;
            }
        }
        let renew_every = settings.renewal_interval();
        let garp = match (kind, garp) {
            (Kind::Local, Some(job)) => link.mac.map(|mac| {
                tokio::spawn(job.run(
                    ifindex,
                    mac,
                    ip,
                    self.view.clone(),
                    self.node.clone(),
                    self.metrics.clone(),
                ))
            }),
            _ => None,
        };
        self.held.insert(
            ip,
            Held {
                kind,
                ifindex,
                ifname: interface.to_owned(),
                prefix_len,
                options: opts,
                renew_at: renew_every.map(|d| Instant::now() + d),
                renew_every,
                garp,
            },
        );
        self.record(service, ip);
        Applied::Added
    }

    fn record(&mut self, service: &str, ip: IpAddr) {
        if !self.announced.is_announced(service, ip) {
            self.announced.record(service, ip);
            self.metrics.set_announced(service, &self.node, ip, true);
        }
    }

    async fn delete_placement(&mut self, ip: IpAddr, ifindex: u32, prefix_len: u8) -> bool {
        self.metrics.address_withdrawals.inc();
        match self
            .kernel
            .remove_exact_address(ifindex, ip, prefix_len)
            .await
        {
            Ok(removed) => removed,
            Err(error) => {
                tracing::warn!(op = "withdrawAddress", ip = %ip, %error, "removing an address failed");
                false
            }
        }
    }

    /// Withdraws `ip` for `service`: drop the record; remove the address
    /// unless another Service on this node still announces it.
    pub async fn withdraw(&mut self, service: &str, ip: IpAddr, reason: WithdrawReason) -> Applied {
        let was_announced = self.announced.is_announced(service, ip);
        if was_announced {
            self.metrics.set_announced(service, &self.node, ip, false);
        }
        match self.announced.withdraw(service, ip) {
            AddressRemoval::KeepShared { other } => {
                if was_announced {
                    tracing::info!(op = "withdrawAddress", service, ip = %ip, reason = reason.as_str(),
                        shared_with = %other, removed = 0, "withdrawAddress");
                }
                Applied::Withdrawn {
                    removed: 0,
                    shared: true,
                }
            }
            AddressRemoval::Remove => {
                let removed = self.remove_ip(ip).await;
                if removed > 0 || was_announced {
                    tracing::info!(op = "withdrawAddress", service, ip = %ip, reason = reason.as_str(), removed, "withdrawAddress");
                } else {
                    tracing::debug!(op = "withdrawAddress", service, ip = %ip, reason = reason.as_str(), "withdrawAddressNotPresent");
                }
                Applied::Withdrawn {
                    removed,
                    shared: false,
                }
            }
        }
    }

    /// Removes every placement of `ip` the agent holds (and adopted).
    async fn remove_ip(&mut self, ip: IpAddr) -> usize {
        let mut removed = 0;
        if let Some(held) = self.held.remove(&ip) {
            if let Some(task) = held.garp {
                task.abort();
            }
            removed += usize::from(
                self.delete_placement(ip, held.ifindex, held.prefix_len)
                    .await,
            );
        }
        for a in self.adopted.remove(&ip).unwrap_or_default() {
            removed += usize::from(self.delete_placement(ip, a.ifindex, a.prefix_len).await);
        }
        removed
    }

    /// Drops every Service's record of `ip` (and its announced metric); returns them.
    fn forget_owners(&mut self, ip: IpAddr) -> Vec<String> {
        let owners: Vec<String> = self
            .announced
            .iter()
            .filter(|(_, i)| *i == ip)
            .map(|(s, _)| s.to_owned())
            .collect();
        for s in &owners {
            self.announced.withdraw(s, ip);
            self.metrics.set_announced(s, &self.node, ip, false);
        }
        owners
    }

    /// Fencing and shutdown: removes every local address at once; the Services that
    /// announced them are returned (their records are dropped, so the next pass
    /// adds them again once this node may).
    pub async fn withdraw_all_local(&mut self, reason: &str) -> BTreeSet<String> {
        let ips: Vec<IpAddr> = self.held_local().map(|(ip, _)| *ip).collect();
        let mut services = BTreeSet::new();
        for ip in ips {
            let owners = self.forget_owners(ip);
            let removed = self.remove_ip(ip).await;
            tracing::info!(op = "withdrawAddress", ip = %ip, reason, removed, services = owners.len(), "withdrawAddress");
            services.extend(owners);
        }
        // Local addresses adopted from an earlier run but not claimed yet go too.
        let adopted_local: Vec<IpAddr> = self.adopted.keys().copied().collect();
        for ip in adopted_local {
            let removed = self.remove_ip(ip).await;
            tracing::info!(op = "withdrawAddress", ip = %ip, reason, removed, "withdrawAddress");
        }
        services
    }

    /// Shutdown: removes every address still held (the remote ones, after
    /// [`Self::withdraw_all_local`]).
    pub async fn withdraw_everything(&mut self, reason: &str) {
        let all: Vec<(String, IpAddr)> = self
            .announced
            .iter()
            .map(|(s, ip)| (s.to_owned(), ip))
            .collect();
        for (s, ip) in all {
            self.announced.withdraw(&s, ip);
            self.metrics.set_announced(&s, &self.node, ip, false);
        }
        let ips: Vec<IpAddr> = self
            .held
            .keys()
            .chain(self.adopted.keys())
            .copied()
            .collect();
        for ip in ips {
            let removed = self.remove_ip(ip).await;
            tracing::info!(op = "withdrawAddress", ip = %ip, reason, removed, "withdrawAddress");
        }
    }
}

/// The kernel options for a decision's settings.
fn kernel_options(settings: &AddressSettings, nodad: bool, deprecated: bool) -> AddressOptions {
    AddressOptions {
        valid_lifetime: settings.valid_lifetime,
        preferred_lifetime: settings.preferred_lifetime,
        no_prefix_route: settings.no_prefix_route,
        no_dad: nodad,
        // IPv6 local VIPs are deprecated also when configured permanent.
        deprecated: deprecated && settings.preferred_lifetime == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_options_follow_the_settings() {
        let local = AddressSettings::LOCAL_DEFAULT;
        let o = kernel_options(&local, false, false);
        assert_eq!(
            (
                o.valid_lifetime,
                o.preferred_lifetime,
                o.no_prefix_route,
                o.no_dad,
                o.deprecated
            ),
            (300, 300, true, false, false)
        );
        // IPv6 local: the planner already set preferred 0; nodad on request.
        let v6 = AddressSettings {
            preferred_lifetime: 0,
            ..local
        };
        let o = kernel_options(&v6, true, true);
        assert_eq!(
            (
                o.valid_lifetime,
                o.preferred_lifetime,
                o.no_dad,
                o.deprecated
            ),
            (300, 0, true, true)
        );
        // A permanent IPv6 local VIP stays deprecated.
        let permanent = AddressSettings {
            valid_lifetime: 0,
            preferred_lifetime: 0,
            no_prefix_route: true,
        };
        assert!(kernel_options(&permanent, false, true).deprecated);
        // Dummy: permanent with a prefix route.
        let o = kernel_options(&AddressSettings::DUMMY_DEFAULT, false, false);
        assert_eq!(
            (o.valid_lifetime, o.no_prefix_route, o.deprecated),
            (0, false, false)
        );
    }
}
