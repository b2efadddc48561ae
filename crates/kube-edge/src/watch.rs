//! Reflector-backed watches whose events are forwarded to a component's input channel.

use std::fmt::Debug;

use futures::StreamExt;
use kube::api::Api;
use kube::core::NamespaceResourceScope;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
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
    K: Watched + 'static,
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

/// Bounds of a kind [`watch`] can follow.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync
{
}

/// The watches of one component, all feeding the same input channel.
pub struct Watches<M> {
    client: Client,
    tx: mpsc::UnboundedSender<M>,
}

impl<M: Send + 'static> Watches<M> {
    pub fn new(client: Client, tx: mpsc::UnboundedSender<M>) -> Self {
        Self { client, tx }
    }

    /// Objects of kind `K` across the cluster, as `config` selects them.
    pub fn all<K: Watched + 'static>(
        &self,
        config: watcher::Config,
        wrap: fn(Event<K>) -> M,
    ) -> Store<K> {
        watch(Api::all(self.client.clone()), config, self.tx.clone(), wrap)
    }

    /// Objects of kind `K` in `namespace`, as `config` selects them.
    pub fn namespaced<K>(
        &self,
        namespace: &str,
        config: watcher::Config,
        wrap: fn(Event<K>) -> M,
    ) -> Store<K>
    where
        K: Watched + Resource<Scope = NamespaceResourceScope> + 'static,
    {
        let api = Api::namespaced(self.client.clone(), namespace);
        watch(api, config, self.tx.clone(), wrap)
    }
}
