//! Client for the Netbox pool (`ServiceGroup.spec.netbox`).
//!
//! A Netbox pool is the set of IP address objects of one Netbox tenant whose
//! status is `reserved`. Allocating one marks it `active` and writes
//! `purelb:<service>` into its `description`; releasing it sets it back to
//! `reserved` and clears the description. Netbox is the only store: a restarted
//! allocator, or a person looking at the Netbox UI, sees who holds what.
//!
//! # Netbox REST API used
//!
//! * `GET  <base>/api/ipam/ip-addresses/?tenant=<slug>&status=<s>&family=<4|6>&address=<ip>&limit=<n>`
//!   returns `{count, next, previous, results: [...]}`, each result having
//!   `id`, `address` (`"a.b.c.d/len"`), `status: {value, label}`,
//!   `tenant: {id, slug, name, ...} | null` and `description`. Repeated
//!   `status` values are ORed. `next` is followed until it is `null`; only its
//!   query string is used, re-based on the configured base URL, so a `next`
//!   that names another origin (a reverse proxy that rewrites hosts badly)
//!   never receives the token.
//! * `GET  <base>/api/ipam/ip-addresses/<id>/` returns one object and, from
//!   Netbox 4.6 on, a weak `ETag` derived from `last_updated`.
//! * `PATCH <base>/api/ipam/ip-addresses/<id>/` with `{"status", "description"}`
//!   and, when an `ETag` was seen, `If-Match: <etag>`: Netbox 4.6+ answers
//!   `412 Precondition Failed` if the object changed since (checked again under
//!   a row lock in recent releases).
//! * Authentication: `Authorization: Token <40 hex>` (v1 tokens) or
//!   `Authorization: Bearer nbt_<key>.<token>` (v2 tokens, Netbox 4.5+); the
//!   scheme is chosen from the token's shape. Netbox answers a missing or bad
//!   token with 403 (DRF's session authenticator comes first, so no 401); a
//!   proxy in front may answer 401. Both map to [`NetboxError::Auth`].
//!
//! # Concurrent allocators
//!
//! Several allocators (or a person) may race for the same reserved address.
//! Each candidate is claimed by: read the object (status must still be
//! `reserved`, tenant still ours; keep its `ETag`), then `PATCH` it with
//! `If-Match`. A 412 means someone else changed it first: that candidate is
//! lost, the next one is tried. Netbox before 4.6 sends no `ETag` and ignores
//! `If-Match`, so the REST API offers no compare-and-set there; the client
//! then re-reads the object after its `PATCH` and gives the address up if the
//! description is no longer its own (the later writer keeps it). That narrows
//! but cannot close the window, so on old Netbox only one allocator should
//! write to a tenant (PureLB's allocator is a single replica). Within one
//! process, allocations through one [`NetboxClient`] (and its clones) are
//! serialised, so they never race each other whatever the Netbox version.
//!
//! # Token
//!
//! The client takes the token as an argument; the controller supplies it. The
//! recommended source, compatible with PureLB up to v0.16, is the environment
//! variable [`TOKEN_ENV`] (`NETBOX_USER_TOKEN`) of the allocator container,
//! filled from key [`TOKEN_SECRET_KEY`] (`user-token`) of Secret
//! [`TOKEN_SECRET_NAME`] (`netbox-client`) by a `secretKeyRef` with
//! `optional: true`; see [`token_from_env`].

use std::cmp::Ordering;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use purelb_api::pool::IpFamily;
use serde::Deserialize;

/// Environment variable of the allocator container that holds the Netbox API
/// token (the name PureLB used up to v0.16).
pub const TOKEN_ENV: &str = "NETBOX_USER_TOKEN";
/// Secret (in the allocator's namespace) that [`TOKEN_ENV`] is filled from.
pub const TOKEN_SECRET_NAME: &str = "netbox-client";
/// Key of [`TOKEN_SECRET_NAME`] that holds the token.
pub const TOKEN_SECRET_KEY: &str = "user-token";
/// Timeout of each HTTP request, from connecting to the end of the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Objects asked for per page; Netbox caps it at its `MAX_PAGE_SIZE` (1000 by default).
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Prefix of the `description` PureLB writes on the addresses it holds.
pub const DESCRIPTION_PREFIX: &str = "purelb:";

/// Netbox's limit on `description`.
const DESCRIPTION_MAX: usize = 200;
/// The list endpoint, relative to the base URL's path.
const IP_ADDRESSES: &str = "api/ipam/ip-addresses/";
/// Largest response body accepted.
const MAX_BODY: usize = 16 << 20;
/// Guard against a `next` chain that never ends.
const MAX_PAGES: usize = 100_000;
/// Rounds of list-then-claim before giving up on a contended tenant.
const MAX_ROUNDS: usize = 3;
/// How much of an error body goes into an error message.
const MAX_ERROR_BODY: usize = 512;

/// The token from [`TOKEN_ENV`], trimmed.
pub fn token_from_env() -> Result<String> {
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        _ => Err(NetboxError::MissingToken),
    }
}

/// Tunables of a [`NetboxClient`].
#[derive(Debug, Clone)]
pub struct NetboxConfig {
    /// Timeout of each HTTP request (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// `limit` asked for per page (default [`DEFAULT_PAGE_SIZE`]).
    pub page_size: u32,
}

impl Default for NetboxConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// An address allocated from Netbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetboxAddress {
    /// Netbox's object id.
    pub id: u64,
    pub ip: IpAddr,
    /// The mask length recorded in Netbox (`aggregation: default` uses it).
    pub prefix_len: u8,
}

/// Counts of a tenant's addresses, for ServiceGroup status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetboxStats {
    pub reserved_v4: u64,
    /// Every `active` address of the tenant, PureLB's or not.
    pub active_v4: u64,
    pub reserved_v6: u64,
    pub active_v6: u64,
}

/// What went wrong below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Connecting failed: refused, unreachable, reset, name resolution.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// TLS failed (certificate not trusted, handshake refused).
    Tls,
    /// The connection broke, or spoke something other than HTTP.
    Io,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Io => "io",
        })
    }
}

/// Errors of the Netbox client. [`NetboxError::is_retryable`] tells whether
/// trying the same call later may succeed.
#[derive(Debug, thiserror::Error)]
pub enum NetboxError {
    #[error("invalid Netbox URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "no Netbox API token: set {TOKEN_ENV} (from key {TOKEN_SECRET_KEY:?} of Secret {TOKEN_SECRET_NAME:?})"
    )]
    MissingToken,
    #[error("the Netbox API token is not a valid HTTP header value")]
    InvalidToken,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// 401 or 403: the token is wrong, expired, read-only or lacks
    /// `ipam.view_ipaddress`/`ipam.change_ipaddress`.
    #[error("Netbox refused the API token (HTTP {status}): {detail}")]
    Auth { status: u16, detail: String },
    /// The `tenant` filter named no tenant slug (Netbox answers 400).
    #[error("Netbox has no tenant with slug {tenant:?}: {detail}")]
    UnknownTenant { tenant: String, detail: String },
    /// Any other non-2xx answer, with (the start of) Netbox's body.
    #[error("Netbox answered HTTP {status} to {method} {path}: {body}")]
    Http {
        status: u16,
        method: Method,
        path: String,
        body: String,
    },
    /// The tenant has no `reserved` address of that family.
    #[error("Netbox tenant {tenant:?} has no reserved {family} address left")]
    Exhausted { tenant: String, family: IpFamily },
    /// Every reserved address was taken by another writer while we tried.
    #[error(
        "lost every race for a reserved {family} address of Netbox tenant {tenant:?}; try again"
    )]
    Contended { tenant: String, family: IpFamily },
    /// `release` found the address active with a description not PureLB's.
    #[error("Netbox address {ip} is active with description {description:?}, not held by PureLB")]
    NotOwned { ip: IpAddr, description: String },
    #[error("unexpected answer from Netbox to {context}: {detail}")]
    BadResponse { context: String, detail: String },
    #[error("cannot talk to Netbox ({kind}): {message}")]
    Transport {
        kind: TransportKind,
        message: String,
    },
}

impl NetboxError {
    /// Whether the same call may succeed later without a configuration change:
    /// connection failures, timeouts, broken connections, HTTP 408/429/5xx and
    /// contention. Not: bad URL or token, auth, unknown tenant, TLS, other
    /// 4xx, bad responses, exhaustion (retrying needs a release first) or
    /// [`NetboxError::NotOwned`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { kind, .. } => *kind != TransportKind::Tls,
            Self::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::Contended { .. } => true,
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, NetboxError>;

/// A client of one Netbox. Cheap to clone; clones share connections and the
/// allocation lock.
#[derive(Clone)]
pub struct NetboxClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority/prefix/`, always ending in `/`.
    base: String,
    auth: HeaderValue,
    config: NetboxConfig,
    alloc_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for NetboxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetboxClient")
            .field("base", &self.inner.base)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// One IP address object as Netbox serialises it (the fields we use).
#[derive(Debug, Deserialize)]
struct IpRecord {
    id: u64,
    address: String,
    status: Choice,
    #[serde(default)]
    tenant: Option<TenantRef>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    value: String,
}

#[derive(Debug, Deserialize)]
struct TenantRef {
    slug: String,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    next: Option<String>,
    results: Vec<IpRecord>,
}

/// A parsed [`IpRecord`].
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    ip: IpAddr,
    prefix_len: u8,
    status: String,
    tenant: Option<String>,
    description: String,
}

impl Entry {
    fn from_record(r: IpRecord) -> Result<Self> {
        let (ip, prefix_len) =
            parse_address(&r.address).ok_or_else(|| NetboxError::BadResponse {
                context: format!("ip-address {}", r.id),
                detail: format!("address {:?} is not an IP address with a mask", r.address),
            })?;
        Ok(Self {
            id: r.id,
            ip,
            prefix_len,
            status: r.status.value,
            tenant: r.tenant.map(|t| t.slug),
            description: r.description.unwrap_or_default(),
        })
    }

    fn address(&self) -> NetboxAddress {
        NetboxAddress {
            id: self.id,
            ip: self.ip,
            prefix_len: self.prefix_len,
        }
    }
}

struct Response {
    status: StatusCode,
    etag: Option<String>,
    location: Option<String>,
    body: Bytes,
}

enum Claim {
    Won(NetboxAddress),
    Lost,
}

/// `a.b.c.d/len` or `x::y/len` into address and mask length.
fn parse_address(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= IpFamily::of(ip).bits()).then_some((ip, len))
}

fn family_value(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "4",
        IpFamily::V6 => "6",
    }
}

/// The description PureLB writes for `service`.
fn marker(service: &str) -> Result<String> {
    if service.is_empty() {
        return Err(NetboxError::InvalidArgument("empty service name".into()));
    }
    if service.chars().any(char::is_control) {
        return Err(NetboxError::InvalidArgument(format!(
            "service name {service:?} has control characters"
        )));
    }
    let m = format!("{DESCRIPTION_PREFIX}{service}");
    if m.chars().count() > DESCRIPTION_MAX {
        return Err(NetboxError::InvalidArgument(format!(
            "service name {service:?} is too long for Netbox's {DESCRIPTION_MAX}-character description"
        )));
    }
    Ok(m)
}

fn check_tenant(tenant: &str) -> Result<()> {
    if tenant.is_empty() {
        return Err(NetboxError::InvalidArgument("empty tenant".into()));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(MAX_ERROR_BODY) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The `detail` of a DRF error body, or the body itself.
fn detail_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => match m.get("detail") {
            Some(serde_json::Value::String(d)) => truncate(d),
            _ => truncate(&text),
        },
        _ => truncate(&text),
    }
}

/// Orders candidates lowest address first, then shortest mask, then id.
/// (Netbox orders by Postgres `inet`, which puts a shorter mask first even
/// when its host part is higher: 10.0.0.9/24 before 10.0.0.3/32.)
fn lowest_first(a: &Entry, b: &Entry) -> Ordering {
    a.ip.cmp(&b.ip)
        .then(a.prefix_len.cmp(&b.prefix_len))
        .then(a.id.cmp(&b.id))
}

/// Splits and validates the configured base URL into `scheme://authority/prefix/`.
fn parse_base(url: &str) -> Result<String> {
    let bad = |reason: &str| NetboxError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim();
    if trimmed.contains('#') {
        return Err(bad("a fragment is not allowed"));
    }
    let uri: Uri = trimmed
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| bad("no scheme; use http:// or https://"))?
        .to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials in the URL are not allowed; the token is configured separately",
        ));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed"));
    }
    // Accept both `https://netbox` and `https://netbox/api` (PureLB's old docs).
    let mut path = uri.path().trim_end_matches('/');
    if let Some(p) = path.strip_suffix("/api") {
        path = p;
    }
    Ok(format!("{scheme}://{authority}{path}/"))
}

fn auth_header(token: &str) -> Result<HeaderValue> {
    let token = token.trim();
    if token.is_empty() {
        return Err(NetboxError::MissingToken);
    }
    let value = if token.starts_with("Token ") || token.starts_with("Bearer ") {
        token.to_owned()
    } else if token.starts_with("nbt_") {
        format!("Bearer {token}")
    } else {
        format!("Token {token}")
    };
    let mut v = HeaderValue::from_str(&value).map_err(|_| NetboxError::InvalidToken)?;
    v.set_sensitive(true);
    Ok(v)
}

fn https_connector() -> HttpsConnector<HttpConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b,
        // No CA certificates on this host: plain http still works, and https
        // fails with an "unknown issuer" TLS error that says why.
        Err(_) => {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    builder.https_or_http().enable_http1().build()
}

/// Whether a TLS error is somewhere in `e`'s chain.
fn is_tls(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && inner.is::<rustls::Error>()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let m = err.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = err.source();
    }
    s
}

fn transport_error(e: hyper_util::client::legacy::Error) -> NetboxError {
    let kind = if is_tls(&e) {
        TransportKind::Tls
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Io
    };
    NetboxError::Transport {
        kind,
        message: chain(&e),
    }
}

impl NetboxClient {
    /// A client of the Netbox at `base_url` (`http://` or `https://`, with or
    /// without a trailing `/api`; a path prefix is kept), authenticating with
    /// `token` (surrounding whitespace, e.g. a Secret's trailing newline, is
    /// ignored). Uses [`NetboxConfig::default`].
    pub fn new(base_url: &str, token: &str) -> Result<Self> {
        Self::with_config(base_url, token, NetboxConfig::default())
    }

    /// As [`NetboxClient::new`], with explicit tunables.
    pub fn with_config(base_url: &str, token: &str, config: NetboxConfig) -> Result<Self> {
        let base = parse_base(base_url)?;
        let auth = auth_header(token)?;
        if config.timeout.is_zero() {
            return Err(NetboxError::InvalidArgument("zero timeout".into()));
        }
        if config.page_size == 0 {
            return Err(NetboxError::InvalidArgument("zero page size".into()));
        }
        let http = Client::builder(TokioExecutor::new()).build(https_connector());
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                config,
                alloc_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The normalised base URL, `scheme://host[:port][/prefix]/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Takes the lowest `reserved` address of `tenant` (a tenant slug) in
    /// `family`, marks it `active` with description `purelb:<service>`, and
    /// returns it with its mask length. [`NetboxError::Exhausted`] if the
    /// tenant has none left.
    pub async fn allocate(
        &self,
        tenant: &str,
        family: IpFamily,
        service: &str,
    ) -> Result<NetboxAddress> {
        check_tenant(tenant)?;
        let marker = marker(service)?;
        let _serial = self.inner.alloc_lock.lock().await;
        for _ in 0..MAX_ROUNDS {
            let mut candidates: Vec<Entry> = self
                .list(
                    tenant,
                    &[
                        ("tenant", tenant.to_owned()),
                        ("status", "reserved".to_owned()),
                        ("family", family_value(family).to_owned()),
                    ],
                )
                .await?
                .into_iter()
                .filter(|e| e.status == "reserved" && IpFamily::of(e.ip) == family)
                .collect();
            if candidates.is_empty() {
                return Err(NetboxError::Exhausted {
                    tenant: tenant.to_owned(),
                    family,
                });
            }
            candidates.sort_by(lowest_first);
            for c in &candidates {
                if let Claim::Won(addr) = self.claim(c, tenant, &marker).await? {
                    return Ok(addr);
                }
            }
        }
        Err(NetboxError::Contended {
            tenant: tenant.to_owned(),
            family,
        })
    }

    /// Tries to take one candidate; `Lost` if another writer got it first.
    async fn claim(&self, c: &Entry, tenant: &str, marker: &str) -> Result<Claim> {
        let Some((current, etag)) = self.get(c.id).await? else {
            return Ok(Claim::Lost);
        };
        if current.status != "reserved" || current.tenant.as_deref() != Some(tenant) {
            return Ok(Claim::Lost);
        }
        let body = serde_json::json!({ "status": "active", "description": marker });
        let Some(after) = self.patch(c.id, etag.as_deref(), &body).await? else {
            return Ok(Claim::Lost);
        };
        if after.status != "active" || after.description != marker {
            return Err(NetboxError::BadResponse {
                context: format!("PATCH of ip-address {}", c.id),
                detail: format!(
                    "status {:?} and description {:?} after setting active",
                    after.status, after.description
                ),
            });
        }
        if etag.is_none() {
            // Netbox < 4.6: no If-Match. If someone wrote after us, they keep it.
            match self.get(c.id).await? {
                Some((again, _)) if again.status == "active" && again.description == marker => {}
                _ => return Ok(Claim::Lost),
            }
        }
        Ok(Claim::Won(after.address()))
    }

    /// Returns `ip` of `tenant` to `reserved` and clears its description.
    /// Already reserved, in another status, or absent: nothing to do.
    /// [`NetboxError::NotOwned`] if it is active with a description that is
    /// not PureLB's (an empty description counts as PureLB's: versions up to
    /// v0.16 wrote none).
    pub async fn release(&self, tenant: &str, ip: IpAddr) -> Result<()> {
        check_tenant(tenant)?;
        let ip = ip.to_canonical();
        let matches = self
            .list(
                tenant,
                &[("tenant", tenant.to_owned()), ("address", ip.to_string())],
            )
            .await?;
        for e in matches
            .into_iter()
            .filter(|e| e.ip.to_canonical() == ip && e.tenant.as_deref() == Some(tenant))
        {
            self.release_one(e).await?;
        }
        Ok(())
    }

    async fn release_one(&self, mut e: Entry) -> Result<()> {
        for _ in 0..MAX_ROUNDS {
            if e.status != "active" {
                return Ok(());
            }
            if !e.description.is_empty() && !e.description.starts_with(DESCRIPTION_PREFIX) {
                return Err(NetboxError::NotOwned {
                    ip: e.ip,
                    description: e.description,
                });
            }
            let Some((current, etag)) = self.get(e.id).await? else {
                return Ok(());
            };
            if current.status != "active"
                || (!current.description.is_empty()
                    && !current.description.starts_with(DESCRIPTION_PREFIX))
            {
                e = current;
                continue;
            }
            let body = serde_json::json!({ "status": "reserved", "description": "" });
            match self.patch(e.id, etag.as_deref(), &body).await? {
                Some(_) => return Ok(()),
                // Changed under us: look again.
                None => match self.get(e.id).await? {
                    Some((again, _)) => e = again,
                    None => return Ok(()),
                },
            }
        }
        Err(NetboxError::Contended {
            tenant: e.tenant.unwrap_or_default(),
            family: IpFamily::of(e.ip),
        })
    }

    /// Addresses of `tenant` that PureLB holds (`active`, description
    /// `purelb:<service>`), lowest first, with the service.
    pub async fn in_use(&self, tenant: &str) -> Result<Vec<(IpAddr, String)>> {
        check_tenant(tenant)?;
        let mut out: Vec<(IpAddr, String)> = self
            .list(
                tenant,
                &[
                    ("tenant", tenant.to_owned()),
                    ("status", "active".to_owned()),
                ],
            )
            .await?
            .into_iter()
            .filter(|e| e.status == "active")
            .filter_map(|e| {
                let svc = e.description.strip_prefix(DESCRIPTION_PREFIX)?.to_owned();
                Some((e.ip, svc))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reserved and active counts of `tenant`, per family.
    pub async fn stats(&self, tenant: &str) -> Result<NetboxStats> {
        check_tenant(tenant)?;
        let entries = self
            .list(
                tenant,
                &[
                    ("tenant", tenant.to_owned()),
                    ("status", "reserved".to_owned()),
                    ("status", "active".to_owned()),
                ],
            )
            .await?;
        let mut s = NetboxStats::default();
        for e in entries {
            match (IpFamily::of(e.ip), e.status.as_str()) {
                (IpFamily::V4, "reserved") => s.reserved_v4 += 1,
                (IpFamily::V4, "active") => s.active_v4 += 1,
                (IpFamily::V6, "reserved") => s.reserved_v6 += 1,
                (IpFamily::V6, "active") => s.active_v6 += 1,
                _ => {}
            }
        }
        Ok(s)
    }

    /// Every page of the list endpoint for `filters`, deduplicated by id.
    async fn list(&self, tenant: &str, filters: &[(&str, String)]) -> Result<Vec<Entry>> {
        // (The serializer is not Send: keep it out of the future's state.)
        let mut query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in filters {
                q.append_pair(k, v);
            }
            q.append_pair("limit", &self.inner.config.page_size.to_string());
            q.finish()
        };
        let mut out: Vec<Entry> = Vec::new();
        for _ in 0..MAX_PAGES {
            let path = format!("{IP_ADDRESSES}?{query}");
            let resp = self.send(Method::GET, &path, None, None).await?;
            if !resp.status.is_success() {
                return Err(self.list_error(tenant, &path, resp));
            }
            let page: Page = serde_json::from_slice(&resp.body).map_err(|e| bad_json(&path, e))?;
            for r in page.results {
                let e = Entry::from_record(r)?;
                if !out.iter().any(|o| o.id == e.id) {
                    out.push(e);
                }
            }
            let Some(next) = page.next else {
                return Ok(out);
            };
            // Only the query of `next` is used, on our own base URL.
            let next_query = next
                .split_once('?')
                .map(|(_, q)| q.split('#').next().unwrap_or_default().to_owned())
                .ok_or_else(|| NetboxError::BadResponse {
                    context: format!("GET {path}"),
                    detail: format!("next link {next:?} has no query"),
                })?;
            if next_query == query {
                return Err(NetboxError::BadResponse {
                    context: format!("GET {path}"),
                    detail: "next link points at the same page".into(),
                });
            }
            query = next_query;
        }
        Err(NetboxError::BadResponse {
            context: format!("GET {IP_ADDRESSES}"),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    fn list_error(&self, tenant: &str, path: &str, resp: Response) -> NetboxError {
        if resp.status == StatusCode::BAD_REQUEST
            && let Ok(serde_json::Value::Object(m)) =
                serde_json::from_slice::<serde_json::Value>(&resp.body)
            && let Some(t) = m.get("tenant")
        {
            let detail = match t {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            return NetboxError::UnknownTenant {
                tenant: tenant.to_owned(),
                detail: truncate(&detail),
            };
        }
        status_error(Method::GET, path, resp)
    }

    /// One object and its ETag; `None` if it is gone.
    async fn get(&self, id: u64) -> Result<Option<(Entry, Option<String>)>> {
        let path = format!("{IP_ADDRESSES}{id}/");
        let resp = self.send(Method::GET, &path, None, None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(status_error(Method::GET, &path, resp));
        }
        let r: IpRecord = serde_json::from_slice(&resp.body).map_err(|e| bad_json(&path, e))?;
        Ok(Some((Entry::from_record(r)?, resp.etag)))
    }

    /// PATCHes one object; `None` on 412 (changed since `etag`) or 404 (gone).
    async fn patch(
        &self,
        id: u64,
        etag: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<Option<Entry>> {
        let path = format!("{IP_ADDRESSES}{id}/");
        let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON value serialises"));
        let resp = self.send(Method::PATCH, &path, etag, Some(bytes)).await?;
        if resp.status == StatusCode::PRECONDITION_FAILED || resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(status_error(Method::PATCH, &path, resp));
        }
        let r: IpRecord = serde_json::from_slice(&resp.body).map_err(|e| bad_json(&path, e))?;
        Ok(Some(Entry::from_record(r)?))
    }

    /// One HTTP exchange, body included, within the timeout.
    async fn send(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Response> {
        let url = format!("{}{path}", self.inner.base);
        let uri: Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| NetboxError::BadResponse {
                    context: format!("{method} {path}"),
                    detail: format!("cannot build URL {url:?}: {e}"),
                })?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.inner.auth.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(etag) = if_match
            && let Ok(v) = HeaderValue::from_str(etag)
        {
            req = req.header(IF_MATCH, v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| NetboxError::InvalidArgument(e.to_string()))?;
        let timeout = self.inner.config.timeout;
        let exchange = async {
            let resp = self
                .inner
                .http
                .request(req)
                .await
                .map_err(transport_error)?;
            let (parts, body) = resp.into_parts();
            let header = |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            let etag = header(ETAG);
            let location = header(LOCATION);
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        NetboxError::BadResponse {
                            context: format!("{method} {path}"),
                            detail: format!("body larger than {MAX_BODY} bytes"),
                        }
                    } else {
                        NetboxError::Transport {
                            kind: TransportKind::Io,
                            message: chain(e.as_ref()),
                        }
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                etag,
                location,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(NetboxError::Transport {
                kind: TransportKind::Timeout,
                message: format!("no complete answer to {method} {path} within {timeout:?}"),
            }),
        }
    }
}

fn bad_json(path: &str, e: serde_json::Error) -> NetboxError {
    NetboxError::BadResponse {
        context: path.to_owned(),
        detail: format!("not the JSON of a Netbox IP address: {e}"),
    }
}

fn status_error(method: Method, path: &str, resp: Response) -> NetboxError {
    let status = resp.status.as_u16();
    if status == 401 || status == 403 {
        return NetboxError::Auth {
            status,
            detail: detail_of(&resp.body),
        };
    }
    let body = if resp.status.is_redirection() {
        format!(
            "redirect to {:?} (a wrong base URL, or a login page in front of the API)",
            resp.location.unwrap_or_default()
        )
    } else {
        detail_of(&resp.body)
    };
    NetboxError::Http {
        status,
        method,
        path: path.to_owned(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = |u: &str| parse_base(u).unwrap();
        assert_eq!(
            ok("https://netbox.example.com"),
            "https://netbox.example.com/"
        );
        assert_eq!(
            ok("https://netbox.example.com/"),
            "https://netbox.example.com/"
        );
        assert_eq!(
            ok("https://netbox.example.com/api"),
            "https://netbox.example.com/"
        );
        assert_eq!(
            ok("https://netbox.example.com/api/"),
            "https://netbox.example.com/"
        );
        assert_eq!(
            ok("http://10.0.0.1:8000/netbox/"),
            "http://10.0.0.1:8000/netbox/"
        );
        assert_eq!(ok("http://[2001:db8::1]:80"), "http://[2001:db8::1]:80/");
        assert_eq!(ok("HTTPS://nb"), "https://nb/");
        for bad in [
            "",
            "netbox.example.com",
            "ftp://netbox.example.com",
            "https://user:pw@netbox.example.com",
            "https://netbox.example.com/?x=1",
            "https://netbox.example.com/#top",
            "https:///path",
        ] {
            assert!(
                matches!(parse_base(bad), Err(NetboxError::InvalidUrl { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn token_schemes() {
        let h = |t: &str| auth_header(t).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("0123abcd\n"), "Token 0123abcd");
        assert_eq!(h("nbt_abc.def"), "Bearer nbt_abc.def");
        assert_eq!(h("Bearer xyz"), "Bearer xyz");
        assert_eq!(h("Token xyz"), "Token xyz");
        assert!(auth_header("tok").unwrap().is_sensitive());
        assert!(matches!(auth_header(" \n"), Err(NetboxError::MissingToken)));
        assert!(matches!(
            auth_header("a\u{7f}b"),
            Err(NetboxError::InvalidToken)
        ));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("192.0.2.7/24"),
            Some(("192.0.2.7".parse().unwrap(), 24))
        );
        assert_eq!(
            parse_address("2001:db8::7/64"),
            Some(("2001:db8::7".parse().unwrap(), 64))
        );
        assert_eq!(parse_address("192.0.2.7"), None);
        assert_eq!(parse_address("192.0.2.7/33"), None);
        assert_eq!(parse_address("x/24"), None);
    }

    #[test]
    fn markers() {
        assert_eq!(marker("ns/svc").unwrap(), "purelb:ns/svc");
        assert!(marker("").is_err());
        assert!(marker("a\nb").is_err());
        assert!(marker(&"x".repeat(DESCRIPTION_MAX)).is_err());
        assert!(marker(&"x".repeat(DESCRIPTION_MAX - DESCRIPTION_PREFIX.len())).is_ok());
    }

    #[test]
    fn retryable() {
        let t = |kind| NetboxError::Transport {
            kind,
            message: String::new(),
        };
        assert!(t(TransportKind::Connect).is_retryable());
        assert!(t(TransportKind::Timeout).is_retryable());
        assert!(t(TransportKind::Io).is_retryable());
        assert!(!t(TransportKind::Tls).is_retryable());
        let h = |status| NetboxError::Http {
            status,
            method: Method::GET,
            path: String::new(),
            body: String::new(),
        };
        assert!(h(503).is_retryable());
        assert!(h(429).is_retryable());
        assert!(!h(400).is_retryable());
        assert!(!h(302).is_retryable());
        assert!(
            !NetboxError::Auth {
                status: 403,
                detail: String::new()
            }
            .is_retryable()
        );
    }
}
