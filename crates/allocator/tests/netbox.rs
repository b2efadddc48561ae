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

/// TEST DOUBLE of the Netbox REST API; see the file's documentation.
mod double {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HOST, IF_MATCH};
    use http::{Method, Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;
    use tokio::sync::Barrier;
    use tokio::task::JoinHandle;

    /// The v1 token the double accepts (`Authorization: Token ...`).
    pub const V1_TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";
    /// The v2 token the double accepts (`Authorization: Bearer ...`).
    pub const V2_TOKEN: &str = "nbt_k3y1d.s3cr3tpl41nt3xt";

    const LIST: &str = "/api/ipam/ip-addresses/";
    const STATUSES: [(&str, &str); 5] = [
        ("active", "Active"),
        ("reserved", "Reserved"),
        ("deprecated", "Deprecated"),
        ("dhcp", "DHCP"),
        ("slaac", "SLAAC"),
    ];
    /// Netbox's default `PAGINATE_COUNT`.
    const PAGINATE_COUNT: usize = 50;

    #[derive(Debug, Clone)]
    pub struct Tenant {
        pub id: u64,
        pub slug: String,
        pub name: String,
    }

    #[derive(Debug, Clone)]
    pub struct IpObj {
        pub id: u64,
        pub ip: IpAddr,
        pub len: u8,
        pub tenant: Option<u64>,
        pub status: String,
        pub description: String,
        /// Microseconds since the double's epoch.
        pub last_updated: u64,
    }

    /// A canned answer: status, headers, body.
    pub type Forced = (u16, Vec<(&'static str, String)>, String);

    pub struct State {
        pub tenants: Vec<Tenant>,
        pub ips: Vec<IpObj>,
        clock: u64,
        /// Netbox's `MAX_PAGE_SIZE` (1000 by default).
        pub max_page_size: usize,
        /// Play Netbox >= 4.6 (ETag and If-Match) or an older one.
        pub etag: bool,
        /// Wait this long before answering anything.
        pub delay: Duration,
        /// Origin used in `next`/`previous` instead of `http://<Host>`.
        pub next_origin: Option<String>,
        /// Answer every request with this status, headers and body.
        pub force: Option<Forced>,
        /// Hold this many detail GETs at the barrier.
        barrier: Option<(Arc<Barrier>, usize)>,
        pub list_requests: usize,
        pub patches: usize,
        pub precondition_failed: usize,
    }

    impl State {
        fn tick(&mut self) -> u64 {
            self.clock += 1;
            self.clock
        }
    }

    /// A running double; stops accepting when dropped.
    pub struct NetboxDouble {
        pub url: String,
        pub state: Arc<Mutex<State>>,
        task: JoinHandle<()>,
    }

    impl Drop for NetboxDouble {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl NetboxDouble {
        pub async fn start() -> Self {
            let state = Arc::new(Mutex::new(State {
                tenants: Vec::new(),
                ips: Vec::new(),
                clock: 0,
                max_page_size: 1000,
                etag: true,
                delay: Duration::ZERO,
                next_origin: None,
                force: None,
                barrier: None,
                list_requests: 0,
                patches: 0,
                precondition_failed: 0,
            }));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let st = state.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let st = st.clone();
                            async move { Ok::<_, Infallible>(handle(st, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            Self { url, state, task }
        }

        pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
            f(&mut self.state.lock().unwrap())
        }

        /// Adds a tenant (if new) and returns its id.
        pub fn tenant(&self, slug: &str) -> u64 {
            self.with(|s| {
                if let Some(t) = s.tenants.iter().find(|t| t.slug == slug) {
                    return t.id;
                }
                let id = s.tenants.len() as u64 + 1;
                s.tenants.push(Tenant {
                    id,
                    slug: slug.to_owned(),
                    name: slug.to_uppercase(),
                });
                id
            })
        }

        /// Adds an IP address object `a.b.c.d/len` and returns its id.
        pub fn add(&self, address: &str, tenant: Option<&str>, status: &str, desc: &str) -> u64 {
            let tenant = tenant.map(|t| self.tenant(t));
            let (ip, len) = address.split_once('/').unwrap();
            self.with(|s| {
                let id = s.ips.len() as u64 + 1;
                let now = s.tick();
                s.ips.push(IpObj {
                    id,
                    ip: ip.parse().unwrap(),
                    len: len.parse().unwrap(),
                    tenant,
                    status: status.to_owned(),
                    description: desc.to_owned(),
                    last_updated: now,
                });
                id
            })
        }

        pub fn get(&self, id: u64) -> IpObj {
            self.with(|s| s.ips.iter().find(|o| o.id == id).unwrap().clone())
        }

        /// The objects whose host address is `ip`.
        pub fn find(&self, ip: &str) -> Vec<IpObj> {
            let ip: IpAddr = ip.parse().unwrap();
            self.with(|s| s.ips.iter().filter(|o| o.ip == ip).cloned().collect())
        }

        /// Holds the next `n` detail GETs until all `n` have arrived.
        pub fn barrier_on_detail_gets(&self, n: usize) {
            self.with(|s| s.barrier = Some((Arc::new(Barrier::new(n)), n)));
        }
    }

    fn respond(status: u16, headers: &[(&str, String)], body: Value) -> Response<Full<Bytes>> {
        let mut r = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    }

    fn timestamp(micros: u64) -> String {
        let secs = micros / 1_000_000;
        format!(
            "2026-01-01T{:02}:{:02}:{:02}.{:06}+00:00",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            micros % 1_000_000
        )
    }

    fn etag_of(o: &IpObj) -> String {
        format!("W/\"{}\"", timestamp(o.last_updated))
    }

    fn serialize(s: &State, o: &IpObj, origin: &str) -> Value {
        let (family, label) = match o.ip {
            IpAddr::V4(_) => (4, "IPv4"),
            IpAddr::V6(_) => (6, "IPv6"),
        };
        let tenant = o
            .tenant
            .and_then(|id| s.tenants.iter().find(|t| t.id == id))
            .map(|t| {
                json!({
                    "id": t.id,
                    "url": format!("{origin}/api/tenancy/tenants/{}/", t.id),
                    "display": t.name,
                    "name": t.name,
                    "slug": t.slug,
                    "description": "",
                })
            });
        let status_label = STATUSES
            .iter()
            .find(|(v, _)| *v == o.status)
            .map(|(_, l)| *l)
            .unwrap_or("?");
        let address = format!("{}/{}", o.ip, o.len);
        json!({
            "id": o.id,
            "url": format!("{origin}{LIST}{}/", o.id),
            "display_url": format!("{origin}/ipam/ip-addresses/{}/", o.id),
            "display": address,
            "family": { "value": family, "label": label },
            "address": address,
            "vrf": null,
            "tenant": tenant,
            "status": { "value": o.status, "label": status_label },
            "role": null,
            "assigned_object_type": null,
            "assigned_object_id": null,
            "assigned_object": null,
            "nat_inside": null,
            "nat_outside": [],
            "dns_name": "",
            "description": o.description,
            "comments": "",
            "tags": [],
            "custom_fields": {},
            "created": timestamp(0),
            "last_updated": timestamp(o.last_updated),
        })
    }

    fn addr_bits(ip: IpAddr) -> (u128, u32) {
        match ip {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Postgres `inet` order: family, network bits up to the shorter mask,
    /// mask length, then the whole address.
    fn inet_cmp(a: &IpObj, b: &IpObj) -> std::cmp::Ordering {
        let ((av, aw), (bv, bw)) = (addr_bits(a.ip), addr_bits(b.ip));
        let common = u32::from(a.len.min(b.len));
        let net = |v: u128, w: u32| if common == 0 { 0 } else { v >> (w - common) };
        aw.cmp(&bw)
            .then(net(av, aw).cmp(&net(bv, bw)))
            .then(a.len.cmp(&b.len))
            .then(av.cmp(&bv))
    }

    /// DRF's `replace_query_param`: sorted keys, other values kept.
    fn replace(pairs: &[(String, String)], set: &[(&str, Option<usize>)]) -> String {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            map.entry(k.clone()).or_default().push(v.clone());
        }
        for (k, v) in set {
            match v {
                Some(v) => {
                    map.insert((*k).to_owned(), vec![v.to_string()]);
                }
                None => {
                    map.remove(*k);
                }
            }
        }
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, vs) in &map {
            for v in vs {
                ser.append_pair(k, v);
            }
        }
        ser.finish()
    }

    fn authenticate(req: &http::request::Parts) -> Result<(), &'static str> {
        let Some(h) = req.headers.get(AUTHORIZATION).and_then(|h| h.to_str().ok()) else {
            return Err("Authentication credentials were not provided.");
        };
        if let Some(t) = h.strip_prefix("Token ") {
            return if t == V1_TOKEN {
                Ok(())
            } else {
                Err("Invalid v1 token")
            };
        }
        if let Some(t) = h.strip_prefix("Bearer ") {
            return if t == V2_TOKEN {
                Ok(())
            } else {
                Err("Invalid v2 token")
            };
        }
        Err("Authentication credentials were not provided.")
    }

    async fn handle(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let (delay, forced) = {
            let s = st.lock().unwrap();
            (s.delay, s.force.clone())
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some((status, headers, body)) = forced {
            let mut r = Response::builder().status(status);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            return r.body(Full::new(Bytes::from(body))).unwrap();
        }
        if let Err(detail) = authenticate(&parts) {
            return respond(403, &[], json!({ "detail": detail }));
        }
        let origin = {
            let s = st.lock().unwrap();
            s.next_origin.clone().unwrap_or_else(|| {
                let host = parts
                    .headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                format!("http://{host}")
            })
        };
        let path = parts.uri.path().to_owned();
        if path == LIST {
            return match parts.method {
                Method::GET => list(&st, &parts, &origin),
                _ => respond(
                    405,
                    &[],
                    json!({ "detail": format!("Method \"{}\" not allowed.", parts.method) }),
                ),
            };
        }
        let id = path
            .strip_prefix(LIST)
            .and_then(|r| r.strip_suffix('/'))
            .and_then(|r| r.parse::<u64>().ok());
        match (id, parts.method.clone()) {
            (Some(id), Method::GET) => detail(&st, id, &origin).await,
            (Some(id), Method::PATCH) => patch(&st, id, &parts, &body, &origin),
            (Some(_), m) => respond(
                405,
                &[],
                json!({ "detail": format!("Method \"{m}\" not allowed.") }),
            ),
            (None, _) => respond(404, &[], json!({ "detail": "Not found." })),
        }
    }

    fn list(
        st: &Mutex<State>,
        parts: &http::request::Parts,
        origin: &str,
    ) -> Response<Full<Bytes>> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let all = |k: &str| -> Vec<String> {
            pairs
                .iter()
                .filter(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let one = |k: &str| all(k).pop();
        let mut s = st.lock().unwrap();
        s.list_requests += 1;

        let mut tenants = Vec::new();
        for slug in all("tenant") {
            match s.tenants.iter().find(|t| t.slug == slug) {
                Some(t) => tenants.push(t.id),
                None => {
                    return respond(
                        400,
                        &[],
                        json!({ "tenant": [
                            format!("Select a valid choice. {slug} is not one of the available choices.")
                        ]}),
                    );
                }
            }
        }
        let statuses = all("status");
        for v in &statuses {
            if !STATUSES.iter().any(|(s, _)| s == v) {
                return respond(
                    400,
                    &[],
                    json!({ "status": [
                        format!("Select a valid choice. {v} is not one of the available choices.")
                    ]}),
                );
            }
        }
        let family = match one("family").map(|f| f.parse::<u8>()) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => return respond(400, &[], json!({ "family": ["Enter a number."] })),
        };
        let addresses = all("address");
        // Invalid address values are skipped; none valid means no match.
        let wanted: Vec<IpAddr> = addresses
            .iter()
            .filter_map(|a| a.split('/').next().unwrap_or_default().parse().ok())
            .collect();

        let mut rows: Vec<&IpObj> = s
            .ips
            .iter()
            .filter(|o| tenants.is_empty() || o.tenant.is_some_and(|t| tenants.contains(&t)))
            .filter(|o| statuses.is_empty() || statuses.contains(&o.status))
            .filter(|o| match family {
                None => true,
                Some(4) => o.ip.is_ipv4(),
                Some(6) => o.ip.is_ipv6(),
                Some(_) => false,
            })
            .filter(|o| addresses.is_empty() || wanted.contains(&o.ip))
            .collect();
        rows.sort_by(|a, b| inet_cmp(a, b).then(a.id.cmp(&b.id)));

        let count = rows.len();
        let limit = match one("limit").map(|l| l.parse::<usize>()) {
            Some(Ok(0)) => s.max_page_size,
            Some(Ok(l)) => l.min(s.max_page_size),
            _ => PAGINATE_COUNT.min(s.max_page_size),
        };
        let offset = one("offset")
            .and_then(|o| o.parse::<usize>().ok())
            .unwrap_or(0);
        let next = (offset + limit < count).then(|| {
            format!(
                "{origin}{LIST}?{}",
                replace(
                    &pairs,
                    &[("limit", Some(limit)), ("offset", Some(offset + limit))]
                )
            )
        });
        let previous = (offset > 0).then(|| {
            let prev = offset.saturating_sub(limit);
            let off = (prev > 0).then_some(prev);
            format!(
                "{origin}{LIST}?{}",
                replace(&pairs, &[("limit", Some(limit)), ("offset", off)])
            )
        });
        let results: Vec<Value> = rows
            .iter()
            .skip(offset)
            .take(limit)
            .map(|o| serialize(&s, o, origin))
            .collect();
        respond(
            200,
            &[],
            json!({
                "count": count,
                "next": next,
                "previous": previous,
                "results": results,
            }),
        )
    }

    async fn detail(st: &Mutex<State>, id: u64, origin: &str) -> Response<Full<Bytes>> {
        let barrier = {
            let mut s = st.lock().unwrap();
            match s.barrier.as_mut() {
                Some((b, n)) if *n > 0 => {
                    *n -= 1;
                    Some(b.clone())
                }
                _ => None,
            }
        };
        if let Some(b) = barrier {
            b.wait().await;
        }
        let s = st.lock().unwrap();
        let Some(o) = s.ips.iter().find(|o| o.id == id) else {
            return respond(
                404,
                &[],
                json!({ "detail": "No IPAddress matches the given query." }),
            );
        };
        let headers = if s.etag {
            vec![("etag", etag_of(o))]
        } else {
            vec![]
        };
        respond(200, &headers, serialize(&s, o, origin))
    }

    fn patch(
        st: &Mutex<State>,
        id: u64,
        parts: &http::request::Parts,
        body: &[u8],
        origin: &str,
    ) -> Response<Full<Bytes>> {
        let data: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return respond(
                    400,
                    &[],
                    json!({ "detail": format!("JSON parse error - {e}") }),
                );
            }
        };
        let Some(data) = data.as_object() else {
            return respond(
                400,
                &[],
                json!({ "non_field_errors": ["Invalid data. Expected a dictionary."] }),
            );
        };
        // Check and write under one lock: Netbox re-checks If-Match under a row lock.
        let mut s = st.lock().unwrap();
        let etag_support = s.etag;
        let Some(idx) = s.ips.iter().position(|o| o.id == id) else {
            return respond(
                404,
                &[],
                json!({ "detail": "No IPAddress matches the given query." }),
            );
        };
        if etag_support
            && let Some(if_match) = parts.headers.get(IF_MATCH).and_then(|h| h.to_str().ok())
            && if_match != "*"
        {
            let current = etag_of(&s.ips[idx]);
            if !if_match.split(',').map(str::trim).any(|e| e == current) {
                s.precondition_failed += 1;
                return respond(
                    412,
                    &[("etag", current)],
                    json!({ "detail": "Precondition failed: the object has changed." }),
                );
            }
        }
        let is_v4 = s.ips[idx].ip.is_ipv4();
        let mut new_status = None;
        if let Some(v) = data.get("status") {
            let v = v.as_str().unwrap_or_default();
            if !STATUSES.iter().any(|(s, _)| *s == v) {
                return respond(
                    400,
                    &[],
                    json!({ "status": [format!("\"{v}\" is not a valid choice.")] }),
                );
            }
            if v == "slaac" && is_v4 {
                return respond(
                    400,
                    &[],
                    json!({ "status": ["Only IPv6 addresses can be assigned SLAAC status"] }),
                );
            }
            new_status = Some(v.to_owned());
        }
        let mut new_desc = None;
        if let Some(v) = data.get("description") {
            let Some(v) = v.as_str() else {
                return respond(400, &[], json!({ "description": ["Not a valid string."] }));
            };
            if v.chars().count() > 200 {
                return respond(
                    400,
                    &[],
                    json!({ "description": ["Ensure this field has no more than 200 characters."] }),
                );
            }
            new_desc = Some(v.to_owned());
        }
        let now = s.tick();
        s.patches += 1;
        let o = &mut s.ips[idx];
        if let Some(v) = new_status {
            o.status = v;
        }
        if let Some(v) = new_desc {
            o.description = v;
        }
        o.last_updated = now;
        let o = o.clone();
        let headers = if etag_support {
            vec![(ETAG.as_str(), etag_of(&o))]
        } else {
            vec![]
        };
        respond(200, &headers, serialize(&s, &o, origin))
    }
}

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
