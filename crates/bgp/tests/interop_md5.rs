//! TCP MD5 (RFC 2385) with FRR: FRR requires password `s3cret` from 198.51.100.2. With a wrong
//! password our SYNs are dropped and nothing reaches Established; with the right one the session
//! comes up and our route arrives. Needs root (skipped without it, failing under CI=true).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use purelb_bgp::driver::{SessionOptions, spawn_session_with};
use purelb_bgp::fsm::{SessionConfig, State};
use purelb_bgp::rib::LocalRoute;
use purelb_bgp::wire::{Ipv4Prefix, Prefix};
use testbed::netlab::{Lab, LinkSpec, require_root};

const T: Duration = Duration::from_secs(60);

const FRR_CONF: &str = "frr defaults traditional\n\
hostname as65000\n\
router bgp 65000\n\
 bgp router-id 198.51.100.1\n\
 no bgp ebgp-requires-policy\n\
 neighbor 198.51.100.2 remote-as 65001\n\
 neighbor 198.51.100.2 password s3cret\n\
 neighbor 198.51.100.2 timers connect 5\n\
 neighbor 198.51.100.2 advertisement-interval 0\n\
 address-family ipv4 unicast\n\
  neighbor 198.51.100.2 activate\n\
 exit-address-family\n";

#[test]
fn md5_password_must_match_frr() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let router = lab.router("r1")?;
    let node = lab.node("n1")?;
    lab.link(
        &router,
        &node,
        LinkSpec::new().v4("198.51.100.1/24", "198.51.100.2/24"),
    )?;
    let frr = lab.frr(&router, FRR_CONF)?;
    let route = LocalRoute::new(
        Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 10), 32).expect("prefix")),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
    );

    node.run(|| -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let peer: SocketAddr = "198.51.100.1:179".parse()?;
            let config = || {
                let mut c = SessionConfig::new(65001, 65000, Ipv4Addr::new(198, 51, 100, 2));
                c.connect_retry = Duration::from_secs(2);
                c
            };
            let (_tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(vec![route.clone()]));

            // Wrong password: never Established on either side.
            let wrong = spawn_session_with(
                config(),
                peer,
                SessionOptions {
                    md5_password: Some("wrong".into()),
                    ..SessionOptions::default()
                },
                rx.clone(),
            );
            let mut status = wrong.subscribe();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(8) {
                let _ = tokio::time::timeout(Duration::from_millis(500), status.changed()).await;
                assert_ne!(status.borrow().state, State::Established, "wrong password");
                assert_ne!(
                    frr.bgp_state("198.51.100.2")?.as_deref(),
                    Some("Established"),
                    "FRR established with a wrong password"
                );
            }
            assert!(frr.bgp_route("203.0.113.10/32")?.is_none());
            wrong.stop().await;

            // Too long a key: an error, not a panic, and no session.
            let long = spawn_session_with(
                config(),
                peer,
                SessionOptions {
                    md5_password: Some("k".repeat(81)),
                    ..SessionOptions::default()
                },
                rx.clone(),
            );
            let mut status = long.subscribe();
            tokio::time::timeout(
                Duration::from_secs(10),
                status.wait_for(|s| s.last_error.is_some()),
            )
            .await??;
            assert_ne!(long.state().state, State::Established);
            long.stop().await;

            // Right password.
            let right = spawn_session_with(
                config(),
                peer,
                SessionOptions {
                    md5_password: Some("s3cret".into()),
                    ..SessionOptions::default()
                },
                rx,
            );
            frr.wait_established("198.51.100.2", T)?;
            let mut status = right.subscribe();
            tokio::time::timeout(T, status.wait_for(|s| s.state == State::Established)).await??;
            let paths = frr.wait_route("203.0.113.10/32", T)?;
            assert!(paths.to_string().contains("65001"), "{paths}");
            right.stop().await;
            anyhow::Ok(())
        })
    })??;
    Ok(())
}
