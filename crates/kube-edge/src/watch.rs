//! A reflector-backed watch whose events are forwarded to a component's input channel.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

/// Runs a reflector for `api` (with `config`) and sends each of its events, wrapped by `wrap`,
/// to `tx`; returns the reflector's store. Watch errors are logged and retried with the
/// default backoff; the task ends when `tx`'s receiver is gone.
pub fn watch<K, M>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<M>,
    wrap: fn(Event<K>) -> M,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    M: Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if tx.send(wrap(event)).is_err() {
                        return;
                    }
                }
                Err(error) => tracing::warn!(op = "watch", %error, "watch failed; retrying"),
            }
        }
    });
    reader
}
