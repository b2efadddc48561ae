//! External IPAM: the allocator's client for an IPAM sidecar speaking
//! `purelb.ipam.v1.IPAM` over plaintext gRPC on a Unix socket.
//!
//! * [`SidecarConnections`] is the per-socket cache: one lazily connected
//!   channel per socket path, shared by every external ServiceGroup that names
//!   that socket, never closed while the cache lives.
//! * [`SidecarClient`] makes the three calls with a per-call deadline, checks
//!   Allocate answers ([`InvalidResponse`]), keeps the per-pool [`Stats`] cache
//!   and reports every call to an [`RpcObserver`] (for
//!   `purelb_allocator_sidecar_rpc_total{socket,method,code}` and
//!   `purelb_allocator_sidecar_rpc_duration_seconds{socket,method}`).
//! * [`SidecarError::is_retryable`] decides whether a failed allocation is requeued.
//!
//! The wire types generated from `proto/purelb/ipam/v1/ipam.proto` are in
//! [`proto`]; the reference sidecar (`src/bin/ipam-sidecar.rs`) implements
//! [`proto::ipam_server::Ipam`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use proto::ipam_client::IpamClient;

/// Rust types and tonic client/server for `purelb.ipam.v1`, generated at build
/// time from `proto/purelb/ipam/v1/ipam.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod proto {
    tonic::include_proto!("purelb.ipam.v1");
}

/// Socket used when an external ServiceGroup names none.
pub const DEFAULT_SOCKET: &str = "/var/run/purelb/ipam.sock";

/// Deadline of one call unless set otherwise (the allocator's API timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most addresses one Allocate answer may carry; more is a broken sidecar.
pub const MAX_ALLOCATE_IPS: usize = 16;

/// Full gRPC method names: the `method` label of the sidecar RPC metrics.
pub mod method {
    pub const ALLOCATE: &str = "/purelb.ipam.v1.IPAM/Allocate";
    pub const RELEASE: &str = "/purelb.ipam.v1.IPAM/Release";
    pub const STATS: &str = "/purelb.ipam.v1.IPAM/Stats";
}

/// gRPC's canonical name of a status code (`OK`, `Unavailable`,
/// `DeadlineExceeded`, …), as Go's `codes.Code.String()` spells it: the `code`
/// label of `purelb_allocator_sidecar_rpc_total`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Which families an Allocate asks for (`FamilyRequest`). Both false is
/// legal: the sidecar then decides (upstream sends that for a Service without
/// `spec.ipFamilies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Families {
    pub want_ipv4: bool,
    pub want_ipv6: bool,
}

impl Families {
    pub const IPV4: Self = Self {
        want_ipv4: true,
        want_ipv6: false,
    };
    pub const IPV6: Self = Self {
        want_ipv4: false,
        want_ipv6: true,
    };
    pub const DUAL: Self = Self {
        want_ipv4: true,
        want_ipv6: true,
    };

    /// From a Service's `spec.ipFamilies` (`"IPv4"`, `"IPv6"`; others ignored).
    pub fn from_ip_families<'a>(families: impl IntoIterator<Item = &'a str>) -> Self {
        families
            .into_iter()
            .fold(Self::default(), |acc, f| match f {
                "IPv4" => Self {
                    want_ipv4: true,
                    ..acc
                },
                "IPv6" => Self {
                    want_ipv6: true,
                    ..acc
                },
                _ => acc,
            })
    }
}

/// What a Release gives back: one address of the service, or all of them.
pub use crate::ipam::ReleaseTarget;

/// A pool's usage as the sidecar reports it (`StatsResponse`).
pub use crate::ipam::ExternalStats as Stats;

impl From<proto::StatsResponse> for Stats {
    fn from(r: proto::StatsResponse) -> Self {
        Self {
            in_use_v4: r.in_use_v4,
            in_use_v6: r.in_use_v6,
            size_v4: r.size_v4,
            size_v6: r.size_v6,
            has_known_capacity: r.has_known_capacity,
            display_addresses: r.display_addresses,
        }
    }
}

/// An OK Allocate answer that breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponse {
    #[error("returned no IPs and no error")]
    NoAddresses,
    #[error("returned {0} IPs (max {MAX_ALLOCATE_IPS})")]
    TooManyAddresses(usize),
    #[error("returned unparseable IP {0:?}")]
    UnparseableAddress(String),
}

/// Why a sidecar call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SidecarError {
    /// A non-OK gRPC status: from the sidecar, or from the transport (a socket
    /// that is missing or refuses comes back as `Unavailable`).
    #[error("IPAM sidecar {socket}: {method}: {}: {message}", code_name(*.code))]
    Status {
        socket: String,
        method: &'static str,
        code: Code,
        message: String,
    },
    /// No answer within the call's deadline.
    #[error("IPAM sidecar {socket}: {method}: no answer within {timeout:?}")]
    Timeout {
        socket: String,
        method: &'static str,
        timeout: Duration,
    },
    /// The sidecar said OK but its answer is unusable.
    #[error("IPAM sidecar {socket}: {method}: {problem}")]
    InvalidResponse {
        socket: String,
        method: &'static str,
        problem: InvalidResponse,
    },
}

impl SidecarError {
    /// The gRPC code of the failure: a timeout is `DeadlineExceeded`; an
    /// unusable OK answer has none.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Timeout { .. } => Some(Code::DeadlineExceeded),
            Self::InvalidResponse { .. } => None,
        }
    }

    /// Whether the allocator requeues the Service: deadline or
    /// cancellation, and the sidecar-trouble codes `Unavailable`,
    /// `DeadlineExceeded`, `ResourceExhausted`, `Aborted`. Everything else
    /// (`InvalidArgument`, `AlreadyExists`, broken answers, …) waits for the
    /// next event or resync.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Status { code, .. } => is_retryable_code(*code),
            Self::InvalidResponse { .. } => false,
        }
    }

    /// The method that failed (a [`method`] constant).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Status { method, .. }
            | Self::Timeout { method, .. }
            | Self::InvalidResponse { method, .. } => method,
        }
    }
}

/// PureLB's retryable gRPC codes. `Cancelled` is what a cancelled call context
/// turns into, which PureLB also requeues.
pub fn is_retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    )
}

/// One finished call, as the metrics interceptor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcObservation<'a> {
    /// Socket path as configured (the `socket` label).
    pub socket: &'a str,
    /// Full gRPC method name (the `method` label).
    pub method: &'static str,
    /// gRPC outcome; `DeadlineExceeded` for a local timeout, `OK` for an OK
    /// answer even if it then fails validation. Label with [`code_name`].
    pub code: Code,
    /// Wall time of the call.
    pub duration: Duration,
}

/// Receives every call's outcome; the controller feeds its Prometheus
/// counter and histogram from it. Called inline: keep it cheap.
pub type RpcObserver = Arc<dyn Fn(&RpcObservation<'_>) + Send + Sync>;

/// The per-socket connection cache: one lazily connected channel
/// per socket path, shared by every group using that socket.
#[derive(Clone, Default)]
pub struct SidecarConnections {
    inner: Arc<ConnectionsInner>,
}

#[derive(Default)]
struct ConnectionsInner {
    clients: Mutex<HashMap<String, SidecarClient>>,
    observer: Option<RpcObserver>,
    timeout: Option<Duration>,
}

impl fmt::Debug for SidecarConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sockets: Vec<String> = lock(&self.inner.clients).keys().cloned().collect();
        f.debug_struct("SidecarConnections")
            .field("sockets", &sockets)
            .field("timeout", &self.timeout())
            .finish_non_exhaustive()
    }
}

impl SidecarConnections {
    /// An empty cache; clients get [`DEFAULT_TIMEOUT`] and no observer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache whose clients report to `observer` and use `timeout`.
    pub fn with_options(observer: Option<RpcObserver>, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(ConnectionsInner {
                clients: Mutex::default(),
                observer,
                timeout: Some(timeout),
            }),
        }
    }

    /// The default deadline of the clients handed out.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The client for `socket` (empty ⇒ [`DEFAULT_SOCKET`]), created on first
    /// use. No connection is made until the first call; a failed connection
    /// is retried on the next call.
    pub fn client(&self, socket: &str) -> SidecarClient {
        let socket = if socket.is_empty() {
            DEFAULT_SOCKET
        } else {
            socket
        };
        lock(&self.inner.clients)
            .entry(socket.to_owned())
            .or_insert_with(|| {
                SidecarClient::connect_lazy(socket)
                    .with_timeout(self.timeout())
                    .with_observer(self.inner.observer.clone())
            })
            .clone()
    }

    /// Socket paths with a client, sorted.
    pub fn sockets(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.clients).keys().cloned().collect();
        v.sort();
        v
    }
}

/// A client of one sidecar socket. Cheap to clone; clones share the channel
/// and the stats cache.
#[derive(Clone)]
pub struct SidecarClient {
    socket: Arc<str>,
    channel: Channel,
    timeout: Duration,
    observer: Option<RpcObserver>,
    stats: Arc<Mutex<HashMap<String, Stats>>>,
}

impl fmt::Debug for SidecarClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SidecarClient")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SidecarClient {
    /// A client for the Unix socket at `socket`, connecting on first use
    /// (plaintext HTTP/2; `:authority` is a placeholder, as with Go's
    /// `unix://` target). Must be called inside a Tokio runtime.
    pub fn connect_lazy(socket: &str) -> Self {
        let endpoint = Endpoint::from_shared(format!("unix://{socket}"))
            .expect("a unix: URI made from a UTF-8 path always parses")
            .connect_timeout(DEFAULT_TIMEOUT);
        Self {
            socket: Arc::from(socket),
            channel: endpoint.connect_lazy(),
            timeout: DEFAULT_TIMEOUT,
            observer: None,
            stats: Arc::default(),
        }
    }

    /// The same client (same channel, same stats cache) with another
    /// deadline per call, e.g. 500 ms during shutdown.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client reporting each call to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Option<RpcObserver>) -> Self {
        self.observer = observer;
        self
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Addresses for `service` ("namespace/name") from `pool` (the
    /// ServiceGroup name), one per wanted family as the sidecar sees fit;
    /// idempotent on (pool, service). The answer is checked: at least one
    /// and at most [`MAX_ALLOCATE_IPS`] addresses, all parseable. Returned
    /// as the sidecar sent them (no family check, duplicates kept). On
    /// success the pool's stats are refreshed.
    pub async fn allocate(
        &self,
        pool: &str,
        service: &str,
        sharing_key: &str,
        families: Families,
    ) -> Result<Vec<IpAddr>, SidecarError> {
        let selector = proto::allocate_request::Selector::Families(proto::FamilyRequest {
            want_ipv4: families.want_ipv4,
            want_ipv6: families.want_ipv6,
        });
        self.allocate_with(pool, service, sharing_key, selector)
            .await
    }

    /// Like [`allocate`](Self::allocate) with the `explicit` selector: these
    /// addresses and no others. PureLB itself never sends it (specific
    /// addresses never resolve to an external pool), but the contract has it.
    pub async fn allocate_explicit(
        &self,
        pool: &str,
        service: &str,
        sharing_key: &str,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>, SidecarError> {
        let selector = proto::allocate_request::Selector::Explicit(proto::ExplicitIPs {
            ips: ips.iter().map(IpAddr::to_string).collect(),
        });
        self.allocate_with(pool, service, sharing_key, selector)
            .await
    }

    async fn allocate_with(
        &self,
        pool: &str,
        service: &str,
        sharing_key: &str,
        selector: proto::allocate_request::Selector,
    ) -> Result<Vec<IpAddr>, SidecarError> {
        let request = proto::AllocateRequest {
            pool: pool.to_owned(),
            service: service.to_owned(),
            sharing_key: sharing_key.to_owned(),
            selector: Some(selector),
        };
        let response = self
            .call(method::ALLOCATE, request, |mut c, r| async move {
                c.allocate(r).await
            })
            .await?;
        let ips = parse_allocate_response(&response).map_err(|problem| {
            SidecarError::InvalidResponse {
                socket: self.socket.to_string(),
                method: method::ALLOCATE,
                problem,
            }
        })?;
        self.refresh_stats(pool).await;
        Ok(ips)
    }

    /// Gives back one address of `service`, or all of them. Releasing what
    /// the sidecar does not hold is OK by contract. On success the pool's
    /// stats are refreshed.
    pub async fn release(
        &self,
        pool: &str,
        service: &str,
        target: ReleaseTarget,
    ) -> Result<(), SidecarError> {
        let target = match target {
            ReleaseTarget::Ip(ip) => proto::release_request::Target::Ip(ip.to_string()),
            ReleaseTarget::All => proto::release_request::Target::All(true),
        };
        let request = proto::ReleaseRequest {
            pool: pool.to_owned(),
            service: service.to_owned(),
            target: Some(target),
        };
        self.call(method::RELEASE, request, |mut c, r| async move {
            c.release(r).await
        })
        .await?;
        self.refresh_stats(pool).await;
        Ok(())
    }

    /// Asks the sidecar for `pool`'s stats now and caches the answer.
    pub async fn stats(&self, pool: &str) -> Result<Stats, SidecarError> {
        let request = proto::StatsRequest {
            pool: pool.to_owned(),
        };
        let stats = Stats::from(
            self.call(method::STATS, request, |mut c, r| async move {
                c.stats(r).await
            })
            .await?,
        );
        lock(&self.stats).insert(pool.to_owned(), stats.clone());
        Ok(stats)
    }

    /// The last stats of `pool`, without a call.
    pub fn cached_stats(&self, pool: &str) -> Option<Stats> {
        lock(&self.stats).get(pool).cloned()
    }

    /// What a status publish uses: the cached stats, asking the
    /// sidecar only when nothing is cached for `pool` yet.
    pub async fn stats_cached_or_fetch(&self, pool: &str) -> Result<Stats, SidecarError> {
        match self.cached_stats(pool) {
            Some(s) => Ok(s),
            None => self.stats(pool).await,
        }
    }

    /// Drops `pool`'s cached stats (the pool went away).
    pub fn forget_stats(&self, pool: &str) {
        lock(&self.stats).remove(pool);
    }

    /// Best-effort refresh after a mutation: a failure keeps the old cache
    /// (and is still reported to the observer).
    async fn refresh_stats(&self, pool: &str) {
        let _ = self.stats(pool).await;
    }

    /// One unary call with the deadline, the `grpc-timeout` header and the
    /// observer.
    async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        f: F,
    ) -> Result<Resp, SidecarError>
    where
        F: FnOnce(IpamClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.timeout);
        let client = IpamClient::new(self.channel.clone());
        let start = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, f(client, request)).await;
        let duration = start.elapsed();
        let result = match outcome {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // tonic enforces the `grpc-timeout` header too, and reports its
            // expiry as `Cancelled`: the same deadline, whichever fired first.
            Ok(Err(status)) if status.code() == Code::Cancelled && duration >= self.timeout => {
                Err(SidecarError::Timeout {
                    socket: self.socket.to_string(),
                    method,
                    timeout: self.timeout,
                })
            }
            Ok(Err(status)) => Err(SidecarError::Status {
                socket: self.socket.to_string(),
                method,
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Err(_elapsed) => Err(SidecarError::Timeout {
                socket: self.socket.to_string(),
                method,
                timeout: self.timeout,
            }),
        };
        if let Some(observer) = &self.observer {
            let code = match &result {
                Ok(_) => Code::Ok,
                Err(e) => e.code().unwrap_or(Code::Ok),
            };
            observer(&RpcObservation {
                socket: &self.socket,
                method,
                code,
                duration,
            });
        }
        result
    }
}

/// Checks an OK Allocate answer: 1..=16 addresses, all
/// parseable (surrounding whitespace or a zone is not an address).
pub fn parse_allocate_response(
    response: &proto::AllocateResponse,
) -> Result<Vec<IpAddr>, InvalidResponse> {
    match response.ips.len() {
        0 => return Err(InvalidResponse::NoAddresses),
        n if n > MAX_ALLOCATE_IPS => return Err(InvalidResponse::TooManyAddresses(n)),
        _ => {}
    }
    response
        .ips
        .iter()
        .map(|a| {
            a.ip.parse::<IpAddr>()
                .map_err(|_| InvalidResponse::UnparseableAddress(a.ip.clone()))
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_match_go() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::ResourceExhausted), "ResourceExhausted");
        assert_eq!(code_name(Code::Unavailable), "Unavailable");
    }

    #[test]
    fn retryable_codes_follow_spec() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Cancelled,
        ] {
            assert!(is_retryable_code(code), "{code:?}");
        }
        for code in [
            Code::Ok,
            Code::InvalidArgument,
            Code::AlreadyExists,
            Code::NotFound,
            Code::Internal,
            Code::Unknown,
            Code::FailedPrecondition,
            Code::Unimplemented,
        ] {
            assert!(!is_retryable_code(code), "{code:?}");
        }
    }

    #[test]
    fn families_from_spec() {
        assert_eq!(Families::from_ip_families(["IPv4"]), Families::IPV4);
        assert_eq!(Families::from_ip_families(["IPv6", "IPv4"]), Families::DUAL);
        assert_eq!(Families::from_ip_families([]), Families::default());
    }

    fn response(ips: &[&str]) -> proto::AllocateResponse {
        proto::AllocateResponse {
            ips: ips
                .iter()
                .map(|ip| proto::AllocatedIp {
                    ip: (*ip).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn allocate_response_validation() {
        assert_eq!(
            parse_allocate_response(&response(&[])),
            Err(InvalidResponse::NoAddresses)
        );
        let many: Vec<String> = (1..=17).map(|i| format!("10.0.0.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            parse_allocate_response(&response(&many)),
            Err(InvalidResponse::TooManyAddresses(17))
        );
        assert_eq!(
            parse_allocate_response(&response(&many[..16])).map(|v| v.len()),
            Ok(16)
        );
        assert_eq!(
            parse_allocate_response(&response(&["10.0.0.1", " 10.0.0.2"])),
            Err(InvalidResponse::UnparseableAddress(" 10.0.0.2".into()))
        );
        assert_eq!(
            parse_allocate_response(&response(&["10.0.0.1", "fd00::1"])).unwrap(),
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
    }
}
