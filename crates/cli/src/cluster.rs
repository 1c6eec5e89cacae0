//! How the cluster commands reach a cluster: the kubeconfig and context flags kubectl takes, so
//! `kubectl lameduck ... --context staging` means what it means to kubectl.

use std::path::PathBuf;

use anyhow::Context as _;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Flags of every command that talks to a cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClusterArgs {
    /// The kubeconfig file, as for kubectl (else `$KUBECONFIG`, else `~/.kube/config`).
    #[arg(long, value_name = "FILE", global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (else its current context).
    #[arg(long, value_name = "NAME", global = true)]
    context: Option<String>,
}

impl ClusterArgs {
    /// A client for the cluster these flags name.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
                Config::from_custom_kubeconfig(file, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .with_context(|| match &self.context {
            Some(context) => format!("no usable kubeconfig context {context:?} (--context)"),
            None => "no usable kubeconfig: set --kubeconfig or $KUBECONFIG, as for kubectl".to_owned(),
        })?;
        Client::try_from(config).context("cannot build a Kubernetes client")
    }
}
