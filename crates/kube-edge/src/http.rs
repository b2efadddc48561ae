//! `/metrics`, `/healthz` and `/readyz` on a component's metrics port.
//!
//! `/metrics` is the text exposition of the component's registry (500 if it cannot be
//! encoded); `/healthz` is 200 `ok` while the process serves; `/readyz` is 200 `ok` once the
//! component says it is ready ([`Health::set_ready`]), 503 `not ready` before.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What the probes report: live as long as the process serves, ready when the component says.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The text exposition format of `registry`, as served on `/metrics`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<dyn AsRef<Registry> + Send + Sync>,
    health: Arc<Health>,
}

/// Binds `addr`; the returned future serves `metrics` (anything holding the component's
/// registry) and `health` until the listener fails.
pub async fn bind<M>(
    addr: SocketAddr,
    metrics: Arc<M>,
    health: Arc<Health>,
) -> std::io::Result<impl Future<Output = std::io::Result<()>> + Send + 'static>
where
    M: AsRef<Registry> + Send + Sync + 'static,
{
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(Shared { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(async move { axum::serve(listener, app).await })
}

async fn render_metrics(State(shared): State<Shared>) -> Result<String, StatusCode> {
    encode((*shared.metrics).as_ref()).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

async fn readiness(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if shared.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
