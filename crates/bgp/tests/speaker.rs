//! Two speakers on loopback addresses (127.0.0.0/8 is all local, no root needed): sessions,
//! passive and dynamic peers, collisions, export policy, diffed configuration changes, status and
//! received routes.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use purelb_bgp::fsm::State;
use purelb_bgp::policy::{
    Actions, CommunityAction, CommunityOp, Conditions, ExportPolicy, RouteAction, SetCondition,
    Statement, parse_prefix,
};
use purelb_bgp::rib::LocalRoute;
use purelb_bgp::speaker::{
    DynamicNeighbors, NeighborConfig, PeerStatus, Speaker, SpeakerConfig, SpeakerError,
};
use purelb_bgp::wire::{Ipv4Prefix, Ipv6Prefix, Prefix};

const T: Duration = Duration::from_secs(15);

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A port free on `ip` now.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn v4(last: u8) -> Prefix {
    Prefix::V4(Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, last), 32).unwrap())
}

fn v6(last: u16) -> Prefix {
    Prefix::V6(Ipv6Prefix::new(format!("2001:db8:ff::{last:x}").parse().unwrap(), 128).unwrap())
}

/// A speaker listening on `ip:port`.
fn config(asn: u32, ip: IpAddr, port: u16) -> SpeakerConfig {
    let IpAddr::V4(id) = ip else { unreachable!() };
    SpeakerConfig {
        listen_port: Some(port),
        listen_addresses: vec![ip],
        ..SpeakerConfig::new(asn, id)
    }
}

/// A neighbour at `ip:port`, connecting from `local`, retrying quickly.
fn neighbor(ip: IpAddr, port: u16, asn: u32, local: IpAddr) -> NeighborConfig {
    NeighborConfig {
        port,
        local_address: Some(local),
        connect_retry: Duration::from_secs(1),
        ..NeighborConfig::new(ip, asn)
    }
}

async fn wait_peer(
    s: &Speaker,
    ip: IpAddr,
    what: &str,
    f: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let mut changes = s.subscribe();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(p) = s.status().peers.into_iter().find(|p| p.address == ip)
            && f(&p)
        {
            return p;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "{what}: {:#?}", s.status().peers);
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changes.changed()).await;
    }
}

async fn wait_received(s: &Speaker, what: &str, f: impl Fn(&[Prefix]) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let got: Vec<Prefix> = s.received_routes().iter().map(|(_, r)| r.prefix).collect();
        if f(&got) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn established(p: &PeerStatus) -> bool {
    p.state == State::Established
}

/// A pair of speakers: A (AS 65001, 127.0.0.11) and B (AS 65000, 127.0.0.12).
struct Pair {
    a: Speaker,
    b: Speaker,
    a_config: SpeakerConfig,
    b_config: SpeakerConfig,
}

async fn pair(a_passive: bool, b_passive: bool) -> Pair {
    let (a_ip, b_ip) = (lo(11), lo(12));
    let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
    let mut a_config = config(65001, a_ip, a_port);
    let mut na = neighbor(b_ip, b_port, 65000, a_ip);
    na.passive = a_passive;
    a_config.neighbors.push(na);
    let mut b_config = config(65000, b_ip, b_port);
    let mut nb = neighbor(a_ip, a_port, 65001, b_ip);
    nb.passive = b_passive;
    b_config.neighbors.push(nb);
    let a = Speaker::start(a_config.clone()).await.unwrap();
    let b = Speaker::start(b_config.clone()).await.unwrap();
    Pair {
        a,
        b,
        a_config,
        b_config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_flow_both_families_and_status_says_where_they_went() {
    let p = pair(false, true).await;
    p.a.set_routes([
        LocalRoute::originated(v4(10)),
        LocalRoute::originated(v6(0x10)),
    ]);
    let peer = wait_peer(&p.a, lo(12), "A established", established).await;
    assert!(peer.uptime().is_some());
    assert_eq!(peer.peer_id, Some(Ipv4Addr::new(127, 0, 0, 12)));
    wait_received(&p.b, "B got both routes", |got| {
        got.contains(&v4(10)) && got.contains(&v6(0x10))
    })
    .await;
    let received = p.b.received_routes();
    let (from, r) = received.iter().find(|(_, r)| r.prefix == v4(10)).unwrap();
    assert_eq!(*from, lo(11));
    assert_eq!(
        r.next_hop,
        Some(lo(11)),
        "next-hop-self is the session's address"
    );
    assert_eq!(r.as_path.segments[0].asns, vec![65001]);
    let status = p.a.status();
    let sent = status
        .routes
        .iter()
        .find(|r| r.route.prefix == v4(10))
        .unwrap();
    assert_eq!(sent.sent_to, vec![lo(12)]);
    wait_peer(&p.a, lo(12), "A counts 2 sent", |p| p.prefixes_sent == 2).await;
    wait_peer(&p.b, lo(11), "B counts 2 received", |p| {
        p.prefixes_received == 2
    })
    .await;

    p.a.withdraw(v4(10));
    wait_received(&p.b, "withdrawn", |got| {
        !got.contains(&v4(10)) && got.contains(&v6(0x10))
    })
    .await;
    p.a.announce(LocalRoute::originated(v4(11)));
    wait_received(&p.b, "announced", |got| got.contains(&v4(11))).await;

    p.a.stop().await;
    wait_peer(&p.b, lo(11), "B sees the Cease", |p| {
        p.state != State::Established
    })
    .await;
    wait_received(&p.b, "B drops A's routes", |got| got.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_active_resolve_the_collision_to_one_session() {
    let p = pair(false, false).await;
    p.a.announce(LocalRoute::originated(v4(20)));
    wait_peer(&p.a, lo(12), "A established", established).await;
    wait_peer(&p.b, lo(11), "B established", established).await;
    wait_received(&p.b, "route over the surviving session", |got| {
        got.contains(&v4(20))
    })
    .await;
    // Stable: still established a little later, on both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(established(&p.a.status().peers[0]));
    assert!(established(&p.b.status().peers[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_neighbours_are_accepted_from_their_range_only() {
    let (a_ip, b_ip, c_ip) = (lo(21), lo(22), lo(40));
    let a_port = free_port(a_ip);
    let mut a_config = config(65001, a_ip, a_port);
    a_config.dynamic_neighbors.push(DynamicNeighbors {
        prefix: parse_prefix("127.0.0.16/29").unwrap(),
        template: NeighborConfig::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 65000),
    });
    let a = Speaker::start(a_config).await.unwrap();
    a.announce(LocalRoute::originated(v4(30)));

    let mut b_config = config(65000, b_ip, free_port(b_ip));
    b_config.neighbors.push(neighbor(a_ip, a_port, 65001, b_ip));
    let b = Speaker::start(b_config).await.unwrap();
    let dynamic = wait_peer(&a, b_ip, "dynamic peer established", established).await;
    assert!(dynamic.dynamic);
    wait_received(&b, "route to the dynamic peer", |got| got.contains(&v4(30))).await;

    // 127.0.0.40 is outside 127.0.0.16/29: refused, never a peer.
    let mut c_config = config(65000, c_ip, free_port(c_ip));
    c_config.neighbors.push(neighbor(a_ip, a_port, 65001, c_ip));
    let c = Speaker::start(c_config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.status().peers.iter().all(|p| p.address != c_ip));
    assert_ne!(c.status().peers[0].state, State::Established);
}

/// Changing one neighbour's export policy re-sends UPDATEs without a reset; changing another's
/// hold time resets only that one; the untouched neighbour keeps its uptime throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_reset_only_the_sessions_whose_identity_changed() {
    let (a_ip, b_ip, c_ip) = (lo(51), lo(52), lo(53));
    let (a_port, b_port, c_port) = (free_port(a_ip), free_port(b_ip), free_port(c_ip));
    let mut a_config = config(65001, a_ip, a_port);
    a_config.neighbors.push(neighbor(b_ip, b_port, 65000, a_ip));
    a_config.neighbors.push(neighbor(c_ip, c_port, 65002, a_ip));
    let mut a = Speaker::start(a_config.clone()).await.unwrap();
    a.announce(LocalRoute::originated(v4(40)));
    let mut b_config = config(65000, b_ip, b_port);
    b_config.neighbors.push(neighbor(a_ip, a_port, 65001, b_ip));
    let b = Speaker::start(b_config).await.unwrap();
    let mut c_config = config(65002, c_ip, c_port);
    c_config.neighbors.push(neighbor(a_ip, a_port, 65001, c_ip));
    let c = Speaker::start(c_config).await.unwrap();
    let b_up = wait_peer(&a, b_ip, "B up", established)
        .await
        .established_at;
    let c_up = wait_peer(&a, c_ip, "C up", established)
        .await
        .established_at;
    wait_received(&b, "B has the route", |got| got.contains(&v4(40))).await;

    // Export policy on B: add community 65001:777.
    let mut changed = a_config.clone();
    changed.policy.policies.insert(
        "tag".into(),
        vec![Statement {
            name: "all".into(),
            conditions: Conditions::default(),
            actions: Actions {
                route: RouteAction::Accept,
                community: Some(CommunityAction {
                    op: CommunityOp::Add,
                    communities: vec![(65001 << 16) | 777],
                    large_communities: vec![(65001, 7, 7)],
                }),
                ..Actions::default()
            },
        }],
    );
    changed.neighbors[0].export = ExportPolicy {
        policies: vec!["tag".into()],
        default_action: RouteAction::Accept,
    };
    let report = a.apply(changed.clone()).await.unwrap();
    assert_eq!(report.updated, vec![b_ip]);
    assert!(report.reset.is_empty(), "{report:?}");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = b.received_routes();
        if r.iter()
            .any(|(_, r)| r.communities == vec![(65001 << 16) | 777])
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "community never arrived: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = a.status();
    let uptime = |ip| {
        now.peers
            .iter()
            .find(|p| p.address == ip)
            .unwrap()
            .established_at
    };
    assert_eq!(
        uptime(b_ip),
        b_up,
        "B's session was reset by a policy change"
    );
    assert_eq!(uptime(c_ip), c_up);

    // A reject-all policy on C withdraws there only.
    let mut reject = changed.clone();
    reject.neighbors[1].export = ExportPolicy {
        policies: Vec::new(),
        default_action: RouteAction::Reject,
    };
    a.apply(reject.clone()).await.unwrap();
    wait_received(&c, "C's route withdrawn by policy", |got| got.is_empty()).await;

    // Identity change on B: its session restarts, C's does not.
    let mut hold = reject.clone();
    hold.neighbors[0].hold_time = 30;
    let report = a.apply(hold).await.unwrap();
    assert_eq!(report.reset, vec![b_ip]);
    let b_again = wait_peer(&a, b_ip, "B back", established).await;
    assert_ne!(b_again.established_at, b_up);
    let c_now = a
        .status()
        .peers
        .into_iter()
        .find(|p| p.address == c_ip)
        .unwrap();
    assert_eq!(c_now.established_at, c_up, "C was reset by B's change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_and_the_running_one_stays() {
    let mut p = pair(false, true).await;
    wait_peer(&p.a, lo(12), "up", established).await;
    let before = p.a.status();
    let mut bad = p.a_config.clone();
    bad.neighbors[0].export = ExportPolicy {
        policies: vec!["missing".into()],
        default_action: RouteAction::Accept,
    };
    let err = p.a.apply(bad).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    let mut dup = p.a_config.clone();
    dup.neighbors.push(dup.neighbors[0].clone());
    assert!(matches!(
        p.a.apply(dup).await,
        Err(SpeakerError::DuplicateNeighbor(_))
    ));
    let mut hold = p.a_config.clone();
    hold.neighbors[0].hold_time = 2;
    assert!(p.a.apply(hold).await.is_err());
    let mut set = p.a_config.clone();
    set.policy
        .prefix_sets
        .insert("x".into(), vec![("203.0.113.0/33".into(), 0, 0)]);
    set.policy.policies.insert(
        "p".into(),
        vec![Statement {
            name: "s".into(),
            conditions: Conditions {
                prefix_set: Some(SetCondition {
                    set: "x".into(),
                    kind: Default::default(),
                }),
                ..Conditions::default()
            },
            actions: Actions::default(),
        }],
    );
    assert!(p.a.apply(set).await.is_err());
    let after = p.a.status();
    assert_eq!(
        after.peers[0].established_at,
        before.peers[0].established_at
    );
    // The good config still applies cleanly.
    let report = p.a.apply(p.a_config.clone()).await.unwrap();
    assert_eq!(report, Default::default());
    let _ = &p.b_config;
    p.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_down_and_removed_neighbours_stop() {
    let mut p = pair(false, true).await;
    wait_peer(&p.b, lo(11), "up", established).await;
    let mut down = p.a_config.clone();
    down.neighbors[0].admin_down = true;
    let report = p.a.apply(down).await.unwrap();
    assert_eq!(report.reset, vec![lo(12)]);
    assert!(p.a.status().peers[0].admin_down);
    wait_peer(&p.b, lo(11), "B sees A go", |p| {
        p.state != State::Established
    })
    .await;
    let mut none = p.a_config.clone();
    none.neighbors.clear();
    let report = p.a.apply(none).await.unwrap();
    assert_eq!(report.removed, vec![lo(12)]);
    assert!(p.a.status().peers.is_empty());
}
