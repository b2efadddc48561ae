//! Process start-up: the Kubernetes client and JSON logs.

use std::path::{Path, PathBuf};

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--kubeconfig {}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error(transparent)]
    Kubeconfig(KubeconfigError),
    #[error("no --kubeconfig and no in-cluster configuration")]
    NoConfig(#[source] InferConfigError),
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// A client from the kubeconfig file `--kubeconfig` names, else from the in-cluster
/// configuration (service account token and `KUBERNETES_SERVICE_HOST`, or `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                    path: path.to_owned(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(ClientError::Kubeconfig)?
        }
        None => kube::Config::infer().await.map_err(ClientError::NoConfig)?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Logs as JSON lines on stdout, filtered by `filter` (an `EnvFilter` directive such as
/// `info` or `info,purelb_agent=debug`), without span fields.
pub fn init_json_logging(filter: &str) {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}
