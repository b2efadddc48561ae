//! The kernel as an input of the controller: link, address and route notifications,
//! coalesced, that make it re-read the node's network state and re-plan what it affects.

use super::*;

impl Controller {
    pub(super) async fn kernel_changed(&mut self) {
        let net = match netstate::read(self.announcer.kernel()).await {
            Ok(net) => net,
            Err(error) => {
                tracing::warn!(op = "netlink", %error, "reading links and addresses failed");
                return;
            }
        };
        let vanished = self.announcer.forget_vanished(&net);
        let changed = net.interfaces != self.net.interfaces;
        self.net = net;
        if changed {
            tracing::info!(op = "netlink", "links or addresses changed; re-evaluating");
            self.update_lease_subnets();
            self.enqueue_all();
        } else {
            for key in vanished {
                self.enqueue(Work::Service(key));
            }
        }
    }
}

/// Kernel notifications that can change a decision: links, foreign addresses, the
/// removal of one of ours, default routes. Coalesced before the controller re-reads.
pub(super) async fn spawn_kernel_events(tx: mpsc::UnboundedSender<Input>) -> Result<(), Error> {
    let mut stream = EventStream::open(EventGroups::all()).await?;
    tokio::spawn(async move {
        loop {
            let Some(first) = stream.next().await else {
                tracing::warn!(op = "netlink", "kernel event stream ended");
                return;
            };
            if !relevant(&first) {
                continue;
            }
            let until = Instant::now() + KERNEL_DEBOUNCE;
            while let Ok(Some(_)) = tokio::time::timeout_at(until, stream.next()).await {}
            if tx.send(Input::Kernel).is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn relevant(event: &KernelEvent) -> bool {
    match event {
        KernelEvent::AddressAdded(a) => !a.is_owned(),
        KernelEvent::AddressRemoved(_) => true,
        KernelEvent::LinkChanged { .. }
        | KernelEvent::LinkRemoved { .. }
        | KernelEvent::Overrun => true,
        KernelEvent::RouteAdded(r) | KernelEvent::RouteRemoved(r) => {
            r.destination.prefix_len() == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Address, RouteChange};
    use purelb_api::pool::{IpFamily, parse_cidr};

    fn address(protocol: u8) -> Address {
        Address {
            ifindex: 2,
            ifname: Some("eth0".into()),
            ip: "198.51.100.4".parse().unwrap(),
            prefix_len: 28,
            flags: 0,
            protocol,
            valid_lifetime: None,
            preferred_lifetime: None,
            scope: 0,
        }
    }

    #[test]
    fn kernel_events_that_matter() {
        let ours = crate::kernel::PURELB_ADDR_PROTO;
        assert!(!relevant(&KernelEvent::AddressAdded(address(ours))));
        assert!(relevant(&KernelEvent::AddressAdded(address(0))));
        assert!(relevant(&KernelEvent::AddressRemoved(address(ours))));
        assert!(relevant(&KernelEvent::Overrun));
        let route = |dst: &str| RouteChange {
            family: IpFamily::V4,
            table: 254,
            destination: parse_cidr(dst).unwrap(),
            ifindex: Some(2),
            metric: 0,
            unicast: true,
        };
        assert!(relevant(&KernelEvent::RouteAdded(route("0.0.0.0/0"))));
        assert!(!relevant(&KernelEvent::RouteAdded(route(
            "198.51.100.4/32"
        ))));
    }
}
