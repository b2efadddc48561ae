//! The shared plumbing against the real test control plane (`testbed::controlplane`): a watch
//! fills its store and forwards events, the recorder writes an event once within the window,
//! the client is built from a kubeconfig; and the probe server's endpoints and status codes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use purelb_kube_edge::events::{Event, EventSink};
use purelb_kube_edge::http::{self, Health};
use purelb_kube_edge::{setup, watch};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(30);

fn config_map(name: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({ "metadata": { "name": name } }),
    )?)
}

#[tokio::test]
async fn watch_fills_the_store_and_forwards_wrapped_events() -> anyhow::Result<()> {
    let cp = testbed::controlplane::shared();
    let ns = cp.test_namespace("edge-watch").await?;
    let api = Api::<ConfigMap>::namespaced(cp.client().await?, ns.name());
    api.create(&PostParams::default(), &config_map("before")?)
        .await?;

    #[derive(Debug)]
    enum Input {
        ConfigMap(Box<watcher::Event<ConfigMap>>),
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let store = watch(api.clone(), watcher::Config::default(), tx, |e| {
        Input::ConfigMap(Box::new(e))
    });
    tokio::time::timeout(TIMEOUT, store.wait_until_ready()).await??;
    assert!(store.state().iter().any(|c| c.name_any() == "before"));

    api.create(&PostParams::default(), &config_map("after")?)
        .await?;
    tokio::time::timeout(TIMEOUT, async {
        while let Some(Input::ConfigMap(event)) = rx.recv().await {
            if let watcher::Event::Apply(c) = *event
                && c.name_any() == "after"
            {
                return;
            }
        }
        panic!("watch channel closed");
    })
    .await?;
    assert!(store.state().iter().any(|c| c.name_any() == "after"));
    Ok(())
}

#[tokio::test]
async fn event_sink_writes_a_repeat_once_and_names_its_source() -> anyhow::Result<()> {
    let cp = testbed::controlplane::shared();
    let ns = cp.test_namespace("edge-events").await?;
    let client = cp.client().await?;
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns.name());
    let object = api
        .create(&PostParams::default(), &config_map("target")?)
        .await?;
    let regarding = object.object_ref(&());

    let sink = EventSink::spawn(client.clone(), "purelb-test", Some("node-x".to_owned()));
    sink.record(regarding.clone(), Event::normal("Tested", "first"));
    sink.record(regarding.clone(), Event::normal("Tested", "first"));
    sink.record(regarding.clone(), Event::warning("Tested", "second"));

    // Events are written in order: once "second" is there, the repeat of "first" was handled.
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client, ns.name());
    let written = tokio::time::timeout(TIMEOUT, async {
        loop {
            let list = events.list(&ListParams::default()).await?;
            let ours: Vec<_> = list
                .items
                .into_iter()
                .filter(|e| e.involved_object.uid == regarding.uid)
                .collect();
            if ours.iter().any(|e| e.message.as_deref() == Some("second")) {
                return anyhow::Ok(ours);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await??;
    let mut messages: Vec<_> = written
        .iter()
        .map(|e| {
            (
                e.message.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
            )
        })
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            ("first".to_owned(), "Normal".to_owned()),
            ("second".to_owned(), "Warning".to_owned())
        ]
    );
    for e in &written {
        assert_eq!(e.reason.as_deref(), Some("Tested"));
        assert_eq!(e.reporting_component.as_deref(), Some("purelb-test"));
        assert_eq!(e.reporting_instance.as_deref(), Some("node-x"));
        let source = e.source.clone().unwrap_or_default();
        assert_eq!(source.component.as_deref(), Some("purelb-test"));
        assert_eq!(source.host.as_deref(), Some("node-x"));
        assert_eq!(e.count, Some(1));
    }
    Ok(())
}

#[tokio::test]
async fn client_comes_from_the_kubeconfig_named() -> anyhow::Result<()> {
    let cp = testbed::controlplane::shared();
    let client = setup::client(Some(cp.kubeconfig_path())).await?;
    let namespaces = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await?;
    assert!(namespaces.items.iter().any(|n| n.name_any() == "default"));

    let missing = std::path::Path::new("/nonexistent/kubeconfig");
    let Err(error) = setup::client(Some(missing)).await else {
        panic!("a client from a missing kubeconfig");
    };
    assert_eq!(error.to_string(), "--kubeconfig /nonexistent/kubeconfig");
    Ok(())
}

struct Metrics(Registry);

impl AsRef<Registry> for Metrics {
    fn as_ref(&self) -> &Registry {
        &self.0
    }
}

/// One HTTP/1.1 request; the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn probes_and_metrics_are_served() -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    registry.register("edge_test", "A counter of the test", counter.clone());
    counter.inc();
    let metrics = Arc::new(Metrics(registry));
    let health = Arc::new(Health::default());

    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = tokio::spawn(http::bind(addr, metrics, health.clone()).await?);

    assert_eq!(get(addr, "/healthz").await?, (200, "ok".to_owned()));
    assert_eq!(get(addr, "/readyz").await?, (503, "not ready".to_owned()));
    health.set_ready(true);
    assert_eq!(get(addr, "/readyz").await?, (200, "ok".to_owned()));
    let (status, body) = get(addr, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(body.contains("edge_test_total 1"), "{body}");
    assert_eq!(get(addr, "/nothing").await?.0, 404);

    // A second bind to the same address fails at bind time, not later.
    assert!(
        http::bind(addr, Arc::new(Metrics(Registry::default())), health)
            .await
            .is_err()
    );
    server.abort();
    Ok(())
}
