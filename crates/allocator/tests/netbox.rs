//! Tests of the Netbox pool client (`purelb_allocator::netbox`) against a
//! TEST DOUBLE of the Netbox REST API.
//!
//! A real Netbox cannot run here (it needs Python 3.12, PostgreSQL and
//! Redis), so [`double::NetboxDouble`] is a small HTTP/1 server written for
//! these tests. It is not Netbox. It implements only the part of the API the
//! client uses, following Netbox 4.6's source and documentation:
//!
//! * `GET /api/ipam/ip-addresses/` with the filters `tenant` (slug; an unknown
//!   slug is a 400 naming `tenant`), `status` (repeatable, ORed; an invalid
//!   choice is a 400), `family` (4 or 6), `address` (repeatable, matches the
//!   host part whatever the mask), `limit` (capped at `MAX_PAGE_SIZE`, 0 means
//!   `MAX_PAGE_SIZE`, default 50) and `offset`; results ordered like Postgres
//!   `inet` then id (Netbox's `ordering = ('address', 'pk')`); the envelope
//!   `{count, next, previous, results}` with absolute `next`/`previous` links
//!   built as DRF does (sorted query, `limit`/`offset` replaced).
//! * `GET /api/ipam/ip-addresses/<id>/` with a weak `ETag` (`W/"<last_updated>"`)
//!   when the double plays Netbox >= 4.6, none when it plays an older one.
//! * `PATCH /api/ipam/ip-addresses/<id>/` of `status` and `description`, with
//!   `If-Match` checked atomically (412 and the current `ETag` on mismatch)
//!   when the double plays Netbox >= 4.6, ignored otherwise.
//! * Token authentication: `Token <v1>` or `Bearer nbt_<key>.<token>`. Like
//!   Netbox (DRF's session authenticator is listed first, so no
//!   `WWW-Authenticate` challenge), a missing or bad token gets 403, not 401.
//!
//! Knobs let a test slow it down, force an answer (503, a redirect to a login
//! page), hold detail reads at a barrier to force two allocators to race, or
//! point `next` links at another origin.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use purelb_allocator::netbox::{
    NetboxClient, NetboxConfig, NetboxError, NetboxStats, TransportKind,
};
use purelb_api::pool::IpFamily;

use double::{NetboxDouble, V1_TOKEN, V2_TOKEN};

/// TEST DOUBLE of the Netbox REST API; see its file's documentation.
#[path = "common/netbox_double.rs"]
mod double;

fn client(d: &NetboxDouble) -> NetboxClient {
    NetboxClient::new(&d.url, V1_TOKEN).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn allocate_v4_marks_active_with_service() {
    let d = NetboxDouble::start().await;
    let id = d.add("192.0.2.10/32", Some("kube"), "reserved", "");
    let got = client(&d)
        .allocate("kube", IpFamily::V4, "default/web")
        .await
        .unwrap();
    assert_eq!((got.id, got.ip, got.prefix_len), (id, ip("192.0.2.10"), 32));
    let o = d.get(id);
    assert_eq!(o.status, "active");
    assert_eq!(o.description, "purelb:default/web");
}

#[tokio::test]
async fn allocate_v6_returns_prefix_length() {
    let d = NetboxDouble::start().await;
    d.add("192.0.2.1/32", Some("kube"), "reserved", "");
    d.add("2001:db8::10/128", Some("kube"), "reserved", "");
    let id = d.add("2001:db8::2/64", Some("kube"), "reserved", "");
    let got = client(&d)
        .allocate("kube", IpFamily::V6, "ns/v6svc")
        .await
        .unwrap();
    assert_eq!(
        (got.id, got.ip, got.prefix_len),
        (id, ip("2001:db8::2"), 64)
    );
    assert_eq!(d.get(id).status, "active");
    assert_eq!(d.get(id).description, "purelb:ns/v6svc");
    assert_eq!(d.find("192.0.2.1")[0].status, "reserved");
}

#[tokio::test]
async fn lowest_reserved_first_across_pages_and_masks() {
    let d = NetboxDouble::start().await;
    // Netbox orders by inet: 10.0.0.9/24 comes before 10.0.0.3/32. One object
    // per page, so the lowest address is only seen by following `next`.
    d.with(|s| s.max_page_size = 1);
    d.add("10.0.0.9/24", Some("kube"), "reserved", "");
    d.add("10.0.0.1/32", Some("other"), "reserved", "");
    d.add("10.0.0.2/32", Some("kube"), "active", "purelb:a/b");
    d.add("10.0.0.5/32", Some("kube"), "reserved", "");
    d.add("10.0.0.3/32", Some("kube"), "reserved", "");
    d.add("10.0.0.4/32", Some("kube"), "deprecated", "");
    let c = client(&d);
    let mut got = Vec::new();
    for n in 0..3 {
        let a = c
            .allocate("kube", IpFamily::V4, &format!("ns/s{n}"))
            .await
            .unwrap();
        got.push((a.ip, a.prefix_len));
    }
    assert_eq!(
        got,
        [
            (ip("10.0.0.3"), 32),
            (ip("10.0.0.5"), 32),
            (ip("10.0.0.9"), 24)
        ]
    );
    assert_eq!(
        d.find("10.0.0.1")[0].status,
        "reserved",
        "other tenant untouched"
    );
    assert_eq!(d.find("10.0.0.4")[0].status, "deprecated");
}

#[tokio::test]
async fn exhaustion_is_a_distinct_error() {
    let d = NetboxDouble::start().await;
    d.add("192.0.2.1/32", Some("kube"), "reserved", "");
    d.add("192.0.2.2/32", Some("kube"), "active", "someone");
    d.add("192.0.2.3/32", Some("other"), "reserved", "");
    let c = client(&d);
    let e = c.allocate("kube", IpFamily::V6, "ns/a").await.unwrap_err();
    assert!(
        matches!(&e, NetboxError::Exhausted { tenant, family: IpFamily::V6 } if tenant == "kube"),
        "{e:?}"
    );
    c.allocate("kube", IpFamily::V4, "ns/a").await.unwrap();
    let e = c.allocate("kube", IpFamily::V4, "ns/b").await.unwrap_err();
    assert!(
        matches!(
            &e,
            NetboxError::Exhausted {
                family: IpFamily::V4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("\"kube\""), "{e}");
    assert!(e.to_string().contains("IPv4"), "{e}");
}

#[tokio::test]
async fn release_returns_to_reserved_and_is_idempotent() {
    let d = NetboxDouble::start().await;
    let id = d.add("192.0.2.10/32", Some("kube"), "reserved", "");
    let c = client(&d);
    let a = c.allocate("kube", IpFamily::V4, "ns/web").await.unwrap();
    assert_eq!(d.get(id).status, "active");

    c.release("kube", a.ip).await.unwrap();
    let o = d.get(id);
    assert_eq!(
        (o.status.as_str(), o.description.as_str()),
        ("reserved", "")
    );

    // Again, and for an address Netbox does not have: nothing to do.
    let patches = d.with(|s| s.patches);
    c.release("kube", a.ip).await.unwrap();
    c.release("kube", ip("198.51.100.1")).await.unwrap();
    assert_eq!(d.with(|s| s.patches), patches, "no writes for no-ops");

    // And it can be allocated again.
    let again = c.allocate("kube", IpFamily::V4, "ns/other").await.unwrap();
    assert_eq!(again.ip, a.ip);
}

#[tokio::test]
async fn release_leaves_other_holders_alone() {
    let d = NetboxDouble::start().await;
    let foreign = d.add(
        "192.0.2.1/32",
        Some("kube"),
        "active",
        "core router loopback",
    );
    let legacy = d.add("192.0.2.2/32", Some("kube"), "active", "");
    let other_tenant = d.add("192.0.2.3/32", Some("other"), "active", "purelb:x/y");
    let v6 = d.add("2001:db8::1/128", Some("kube"), "active", "purelb:ns/v6");
    let c = client(&d);

    let e = c.release("kube", ip("192.0.2.1")).await.unwrap_err();
    assert!(
        matches!(&e, NetboxError::NotOwned { description, .. } if description == "core router loopback"),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(d.get(foreign).status, "active");

    // PureLB <= v0.16 wrote no description: an empty one counts as ours.
    c.release("kube", ip("192.0.2.2")).await.unwrap();
    assert_eq!(d.get(legacy).status, "reserved");

    // Same address string, other tenant: not ours to touch.
    c.release("kube", ip("192.0.2.3")).await.unwrap();
    assert_eq!(d.get(other_tenant).status, "active");

    c.release("kube", ip("2001:db8::1")).await.unwrap();
    assert_eq!(d.get(v6).status, "reserved");
    assert_eq!(d.get(v6).description, "");
}

#[tokio::test]
async fn wrong_token_is_a_clear_auth_error() {
    let d = NetboxDouble::start().await;
    d.add("192.0.2.1/32", Some("kube"), "reserved", "");

    let bad = NetboxClient::new(&d.url, "ffffffffffffffffffffffffffffffffffffffff").unwrap();
    let e = bad
        .allocate("kube", IpFamily::V4, "ns/a")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NetboxError::Auth { status: 403, detail } if detail == "Invalid v1 token"),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("refused the API token"), "{e}");

    let bad_v2 = NetboxClient::new(&d.url, "nbt_k3y1d.wrong").unwrap();
    let e = bad_v2.stats("kube").await.unwrap_err();
    assert!(
        matches!(&e, NetboxError::Auth { status: 403, detail } if detail == "Invalid v2 token"),
        "{e:?}"
    );

    // A v2 token (sent as Bearer) and a v1 token with a Secret's trailing newline both work.
    let v2 = NetboxClient::new(&d.url, V2_TOKEN).unwrap();
    assert_eq!(v2.stats("kube").await.unwrap().reserved_v4, 1);
    let v1 = NetboxClient::new(&d.url, &format!("{V1_TOKEN}\n")).unwrap();
    assert_eq!(v1.stats("kube").await.unwrap().reserved_v4, 1);
}

#[tokio::test]
async fn double_refuses_requests_without_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = NetboxDouble::start().await;
    let addr = d.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/ipam/ip-addresses/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(
        out.contains("Authentication credentials were not provided."),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_tenant_is_reported() {
    let d = NetboxDouble::start().await;
    d.add("192.0.2.1/32", Some("kube"), "reserved", "");
    let e = client(&d)
        .allocate("no-such-tenant", IpFamily::V4, "ns/a")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NetboxError::UnknownTenant { tenant, detail }
            if tenant == "no-such-tenant" && detail.contains("not one of the available choices")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn two_allocators_racing_for_one_address_get_different_ones() {
    let d = NetboxDouble::start().await;
    for n in 1..=3 {
        d.add(&format!("192.0.2.{n}/32"), Some("kube"), "reserved", "");
    }
    // Both allocators read 192.0.2.1 (same ETag) before either writes it.
    d.barrier_on_detail_gets(2);
    let a = client(&d);
    let b = client(&d);
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(
            a.allocate("kube", IpFamily::V4, "ns/a"),
            b.allocate("kube", IpFamily::V4, "ns/b")
        )
    })
    .await
    .expect("allocations finished");
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_ne!(ra.ip, rb.ip);
    let mut ips = [ra.ip, rb.ip];
    ips.sort();
    assert_eq!(ips, [ip("192.0.2.1"), ip("192.0.2.2")]);
    assert_eq!(d.with(|s| s.precondition_failed), 1, "the loser got a 412");
    assert_eq!(d.find(&ra.ip.to_string())[0].description, "purelb:ns/a");
    assert_eq!(d.find(&rb.ip.to_string())[0].description, "purelb:ns/b");
}

#[tokio::test]
async fn many_concurrent_allocations_never_share_an_address() {
    let d = NetboxDouble::start().await;
    for n in 1..=10 {
        d.add(&format!("192.0.2.{n}/32"), Some("kube"), "reserved", "");
    }
    let clients = [client(&d), client(&d)];
    let mut tasks = Vec::new();
    for n in 0..10 {
        let c = clients[n % 2].clone();
        tasks.push(tokio::spawn(async move {
            c.allocate("kube", IpFamily::V4, &format!("ns/s{n}")).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap().ip);
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10, "distinct addresses");
    let e = clients[0]
        .allocate("kube", IpFamily::V4, "ns/late")
        .await
        .unwrap_err();
    assert!(matches!(e, NetboxError::Exhausted { .. }), "{e:?}");
    // Every address carries exactly the service that got it.
    let held = clients[1].in_use("kube").await.unwrap();
    assert_eq!(held.len(), 10);
    let mut services: Vec<_> = held.iter().map(|(_, s)| s.clone()).collect();
    services.sort();
    services.dedup();
    assert_eq!(services.len(), 10);
}

#[tokio::test]
async fn old_netbox_without_etag_one_client_serialises() {
    let d = NetboxDouble::start().await;
    d.with(|s| s.etag = false);
    for n in 1..=8 {
        d.add(&format!("192.0.2.{n}/32"), Some("kube"), "reserved", "");
    }
    let c = client(&d);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.allocate("kube", IpFamily::V4, &format!("ns/s{n}")).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap().ip);
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 8);
    assert_eq!(d.with(|s| s.precondition_failed), 0);
}

#[tokio::test]
async fn stats_and_in_use_follow_pagination() {
    let d = NetboxDouble::start().await;
    // Two objects per page, and `next` links naming an origin where nothing
    // listens: the client must take only their query.
    d.with(|s| {
        s.max_page_size = 2;
        s.next_origin = Some("http://127.0.0.1:1".into());
    });
    for n in 1..=5 {
        d.add(&format!("192.0.2.{n}/32"), Some("kube"), "reserved", "");
    }
    d.add("192.0.2.20/32", Some("kube"), "active", "purelb:ns/b");
    d.add("192.0.2.10/32", Some("kube"), "active", "purelb:ns/a");
    d.add("192.0.2.30/32", Some("kube"), "active", "router");
    d.add("192.0.2.40/32", Some("kube"), "deprecated", "");
    d.add("2001:db8::1/128", Some("kube"), "reserved", "");
    d.add("2001:db8::2/128", Some("kube"), "reserved", "");
    d.add("2001:db8::3/64", Some("kube"), "active", "purelb:ns/c");
    for n in 100..103 {
        d.add(&format!("192.0.2.{n}/32"), Some("other"), "reserved", "");
    }
    let c = client(&d);

    let before = d.with(|s| s.list_requests);
    let stats = c.stats("kube").await.unwrap();
    assert_eq!(
        stats,
        NetboxStats {
            reserved_v4: 5,
            active_v4: 3,
            reserved_v6: 2,
            active_v6: 1
        }
    );
    // 11 matching objects, 2 per page.
    assert_eq!(d.with(|s| s.list_requests) - before, 6);

    let held = c.in_use("kube").await.unwrap();
    assert_eq!(
        held,
        [
            (ip("192.0.2.10"), "ns/a".to_owned()),
            (ip("192.0.2.20"), "ns/b".to_owned()),
            (ip("2001:db8::3"), "ns/c".to_owned()),
        ]
    );
}

#[tokio::test]
async fn netbox_down_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = NetboxClient::new(&format!("http://{addr}"), V1_TOKEN).unwrap();
    let e = c.allocate("kube", IpFamily::V4, "ns/a").await.unwrap_err();
    assert!(
        matches!(
            &e,
            NetboxError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn slow_netbox_times_out() {
    let d = NetboxDouble::start().await;
    d.add("192.0.2.1/32", Some("kube"), "reserved", "");
    d.with(|s| s.delay = Duration::from_secs(5));
    let c = NetboxClient::with_config(
        &d.url,
        V1_TOKEN,
        NetboxConfig {
            timeout: Duration::from_millis(300),
            ..NetboxConfig::default()
        },
    )
    .unwrap();
    let start = Instant::now();
    let e = c.allocate("kube", IpFamily::V4, "ns/a").await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            &e,
            NetboxError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert_eq!(d.find("192.0.2.1")[0].status, "reserved");
}

#[tokio::test]
async fn http_errors_carry_status_and_body() {
    let d = NetboxDouble::start().await;
    d.with(|s| {
        s.force = Some((
            503,
            vec![("content-type", "application/json".into())],
            r#"{"detail": "Netbox is in maintenance mode"}"#.into(),
        ))
    });
    let c = client(&d);
    let e = c.stats("kube").await.unwrap_err();
    assert!(
        matches!(&e, NetboxError::Http { status: 503, body, .. } if body == "Netbox is in maintenance mode"),
        "{e:?}"
    );
    assert!(e.is_retryable());

    // A login page in front of the API (what PureLB's old client choked on).
    d.with(|s| {
        s.force = Some((
            302,
            vec![("location", "/login/?next=/api/ipam/ip-addresses/".into())],
            String::new(),
        ))
    });
    let e = c.stats("kube").await.unwrap_err();
    assert!(
        matches!(&e, NetboxError::Http { status: 302, body, .. } if body.contains("/login/")),
        "{e:?}"
    );
    assert!(!e.is_retryable());

    // Not JSON at all.
    d.with(|s| s.force = Some((200, vec![], "<html>hello</html>".into())));
    let e = c.stats("kube").await.unwrap_err();
    assert!(matches!(e, NetboxError::BadResponse { .. }), "{e:?}");
}

#[tokio::test]
async fn base_url_forms_and_validation() {
    let d = NetboxDouble::start().await;
    d.add("192.0.2.1/32", Some("kube"), "reserved", "");
    // PureLB's old docs used `<netbox>/api`; both forms reach the same API.
    for url in [
        d.url.clone(),
        format!("{}/api", d.url),
        format!("{}/api/", d.url),
    ] {
        let c = NetboxClient::new(&url, V1_TOKEN).unwrap();
        assert_eq!(c.base_url(), format!("{}/", d.url));
        assert_eq!(c.stats("kube").await.unwrap().reserved_v4, 1);
    }
    for bad in ["ftp://netbox", "netbox.example.com", "https://u:p@netbox"] {
        assert!(
            matches!(
                NetboxClient::new(bad, V1_TOKEN),
                Err(NetboxError::InvalidUrl { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        NetboxClient::new(&d.url, "  "),
        Err(NetboxError::MissingToken)
    ));
}
