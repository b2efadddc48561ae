//! A TEST DOUBLE of the Netbox REST API, for the Netbox pool tests.
//!
//! A real Netbox cannot run here (it needs Python 3.12, PostgreSQL and
//! Redis), so [`NetboxDouble`] is a small HTTP/1 server written for
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

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the double"
)]
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

fn list(st: &Mutex<State>, parts: &http::request::Parts, origin: &str) -> Response<Full<Bytes>> {
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
