//! The calls the IPAM asks for: external IPAM sidecars over gRPC and Netbox
//! over HTTP. The IPAM decides; this module only talks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::external::{self, Families, RpcObservation, SidecarConnections, SidecarError};
use crate::ipam::{ExternalStats, GroupKind, Ipam, Outcome, RemoteError, Step};
use crate::metrics::{Metrics, RpcLabels, RpcLatencyLabels};
use crate::netbox::{self, NetboxClient, NetboxError};

pub struct RemoteIpams {
    sidecars: SidecarConnections,
    /// One client per Netbox URL; the token comes from `NETBOX_USER_TOKEN`
    /// (filled from Secret `netbox-client`, key `user-token`, as PureLB did).
    netbox: Mutex<HashMap<String, NetboxClient>>,
}

impl RemoteIpams {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let observer: external::RpcObserver = Arc::new(move |call: &RpcObservation<'_>| {
            let labels = RpcLabels {
                socket: call.socket.to_owned(),
                method: call.method.to_owned(),
                code: external::code_name(call.code).to_owned(),
            };
            metrics.sidecar_rpcs.get_or_create(&labels).inc();
            let latency = RpcLatencyLabels {
                socket: call.socket.to_owned(),
                method: call.method.to_owned(),
            };
            metrics
                .sidecar_rpc_duration
                .get_or_create(&latency)
                .observe(call.duration.as_secs_f64());
        });
        Self {
            sidecars: SidecarConnections::with_options(Some(observer), external::DEFAULT_TIMEOUT),
            netbox: Mutex::default(),
        }
    }

    /// Runs the remote part of a decision, if any, and returns the final outcome.
    pub async fn complete(&self, ipam: &mut Ipam, step: Step) -> Outcome {
        match step {
            Step::Done(outcome) => outcome,
            Step::External(pending) => {
                let call = pending.allocate.clone();
                let client = self.sidecars.client(&call.socket);
                for release in pending.releases_first() {
                    if let Err(error) = client
                        .release(&release.group, &release.service, release.target.clone())
                        .await
                    {
                        tracing::warn!(op = "release", service = %release.service, %error, "sidecar release failed");
                    }
                }
                let families = Families {
                    want_ipv4: call.want_ipv4,
                    want_ipv6: call.want_ipv6,
                };
                let answer = client
                    .allocate(&call.group, &call.service, &call.sharing_key, families)
                    .await
                    .map_err(sidecar_error);
                ipam.complete_external(pending, answer)
            }
            Step::Netbox(pending) => {
                let answer = match self.netbox_client(&pending.url) {
                    Ok(client) => {
                        let mut taken = Vec::new();
                        let mut failure = None;
                        for family in &pending.families {
                            match client
                                .allocate(&pending.tenant, *family, &pending.service)
                                .await
                            {
                                Ok(address) => taken.push(address.ip),
                                Err(error) => {
                                    failure = Some(netbox_error(&error));
                                    break;
                                }
                            }
                        }
                        match failure {
                            None => Ok(taken),
                            Some(error) => {
                                give_back(&client, &pending.tenant, &taken).await;
                                Err(error)
                            }
                        }
                    }
                    Err(error) => Err(netbox_error(&error)),
                };
                let outcome = ipam.complete_netbox(pending, answer);
                self.release(ipam, &outcome).await;
                outcome
            }
        }
    }

    /// Hands back what an outcome released: sidecar `Release` calls and
    /// Netbox addresses returned to `reserved`.
    pub async fn release(&self, ipam: &Ipam, outcome: &Outcome) {
        for release in &outcome.external_releases {
            let client = self.sidecars.client(&release.socket);
            if let Err(error) = client
                .release(&release.group, &release.service, release.target.clone())
                .await
            {
                tracing::warn!(op = "release", service = %release.service, %error, "sidecar release failed");
            }
        }
        for released in outcome.released.iter().filter(|r| r.freed) {
            if ipam.group_kind(&released.group) != Some(GroupKind::Netbox) {
                continue;
            }
            let Some((url, tenant)) = ipam.netbox_location(&released.group) else {
                continue;
            };
            match self.netbox_client(url) {
                Ok(client) => give_back(&client, tenant, &[released.ip]).await,
                Err(error) => {
                    tracing::warn!(op = "release", ip = %released.ip, %error, "cannot return the address to Netbox")
                }
            }
        }
    }

    /// The sidecar's stats for an external group (cached).
    pub async fn external_stats(&self, ipam: &Ipam, group: &str) -> Option<ExternalStats> {
        let socket = ipam.external_socket(group)?;
        match self
            .sidecars
            .client(socket)
            .stats_cached_or_fetch(group)
            .await
        {
            Ok(stats) => Some(stats),
            Err(error) => {
                tracing::warn!(op = "stats", group, %error, "sidecar stats failed");
                None
            }
        }
    }

    fn netbox_client(&self, url: &str) -> Result<NetboxClient, NetboxError> {
        let mut clients = self
            .netbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let client = NetboxClient::new(url, &netbox::token_from_env()?)?;
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }
}

async fn give_back(client: &NetboxClient, tenant: &str, ips: &[IpAddr]) {
    for ip in ips {
        if let Err(error) = client.release(tenant, *ip).await {
            tracing::warn!(op = "release", %ip, %error, "cannot return the address to Netbox");
        }
    }
}

fn sidecar_error(error: SidecarError) -> RemoteError {
    RemoteError {
        retryable: error.is_retryable(),
        message: error.to_string(),
    }
}

fn netbox_error(error: &NetboxError) -> RemoteError {
    RemoteError {
        retryable: error.is_retryable(),
        message: error.to_string(),
    }
}
