//! Keeps the webhook's certificates: the leader creates and renews them in a Secret (see
//! [`crate::webhook::certs`] for when) and patches the CA bundle into the webhook configurations; every
//! replica serves what the Secret holds. Runs as a loop that converges, so a webhook
//! configuration re-created by `helm upgrade` with an empty `caBundle` is patched again.
//!
//! The same Secret holds the key of the policies' review stamps (`crate::review`): made once by
//! the leader, kept across renewals, and loaded by every replica, whose webhook stamps with it
//! and whose reconciler checks with it.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use lameduck_api::names::{labels, webhook as names};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    metrics::Metrics,
    review::{self, PolicyReview},
    webhook::certs::{self, Bundle, CertSettings, Plan},
    webhook::https::ServingCert,
};

/// Where the certificates live and what they are for.
#[derive(Clone, Debug)]
pub struct CertConfig {
    pub secret_namespace: String,
    pub secret_name: String,
    pub mutating_configuration: Option<String>,
    pub validating_configuration: Option<String>,
    pub settings: CertSettings,
    /// How often the Secret is read and the renewal rules checked.
    pub check_interval: Duration,
}

/// What one pass found.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error("{0}")]
    Load(String),
    #[error("review key: {0}")]
    Key(String),
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

/// What this replica has loaded from the Secret.
#[derive(Default)]
struct Loaded {
    cert: Option<String>,
    review_key: Option<Vec<u8>>,
}

/// Runs forever: quickly until a certificate is loaded, then every `check_interval`.
pub async fn run(
    client: Client,
    config: CertConfig,
    serving: Arc<ServingCert>,
    review: Arc<PolicyReview>,
    leader: watch::Receiver<bool>,
    metrics: Metrics,
) {
    let mut loaded = Loaded::default();
    loop {
        let is_leader = *leader.borrow();
        match pass(&client, &config, &serving, &review, is_leader, &metrics, &mut loaded).await {
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(error = %err, secret = %config.secret_name, "webhook certificates: retrying")
            }
        }
        let wait = if loaded.cert.is_some() { config.check_interval } else { Duration::from_secs(1) };
        let mut elected = leader.clone();
        // A new leader checks at once rather than at the next tick.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = elected.wait_for(|is| *is), if !is_leader => {}
        }
    }
}

async fn pass(
    client: &Client,
    config: &CertConfig,
    serving: &ServingCert,
    review: &PolicyReview,
    is_leader: bool,
    metrics: &Metrics,
    loaded: &mut Loaded,
) -> Result<(), PassError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.secret_namespace);
    let secret = secrets.get_opt(&config.secret_name).await?;
    let mut bundle = secret.as_ref().and_then(|s| Bundle::from_secret_data(&data_of(s)));
    let mut key = secret
        .as_ref()
        .and_then(|s| data_of(s).remove(names::REVIEW_KEY_KEY))
        .filter(|key| key.len() == review::KEY_LEN);
    if is_leader {
        let now = now();
        let plan = certs::plan(bundle.as_ref(), &config.settings, now);
        let current = bundle.clone().filter(|_| plan == Plan::Keep);
        if current.is_none() || key.is_none() {
            let renewed = match current {
                Some(current) => current,
                None => certs::issue(&plan, bundle.as_ref(), &config.settings, now)?,
            };
            // Kept across renewals: a new key would undo every policy's review.
            let review_key = match key.take() {
                Some(key) => key,
                None => review::new_key().map_err(PassError::Key)?,
            };
            store(&secrets, config, secret.as_ref(), &renewed, &review_key).await?;
            tracing::info!(?plan, secret = %config.secret_name, "webhook certificate and review key stored");
            bundle = Some(renewed);
            key = Some(review_key);
        }
        if let Some(bundle) = &bundle {
            patch_ca_bundles(client, config, bundle).await?;
        }
    }
    if key.is_some() && key != loaded.review_key {
        if let Some(key) = &key {
            review.load_key(key);
        }
        tracing::info!(secret = %config.secret_name, "policy review key loaded");
        loaded.review_key = key;
    }
    let Some(bundle) = bundle else {
        tracing::debug!(secret = %config.secret_name, "no webhook certificate yet; the leader creates it");
        return Ok(());
    };
    if loaded.cert.as_deref() != Some(bundle.cert.as_str()) {
        serving.load(&bundle.cert, &bundle.key).map_err(PassError::Load)?;
        metrics.webhook_certificate_expiry.set(certs::not_after(&bundle.cert).unwrap_or(0));
        tracing::info!(secret = %config.secret_name, "webhook serving certificate loaded");
        loaded.cert = Some(bundle.cert.clone());
    }
    Ok(())
}

/// Writes the bundle: create, or replace conditional on the version read (a conflict means
/// another writer won; the next pass reads what it wrote).
async fn store(
    secrets: &Api<Secret>,
    config: &CertConfig,
    current: Option<&Secret>,
    bundle: &Bundle,
    review_key: &[u8],
) -> Result<(), kube::Error> {
    let mut data: BTreeMap<String, ByteString> =
        bundle.to_secret_data().into_iter().map(|(k, v)| (k, ByteString(v))).collect();
    data.insert(names::REVIEW_KEY_KEY.to_owned(), ByteString(review_key.to_vec()));
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(config.secret_name.clone()),
            namespace: Some(config.secret_namespace.clone()),
            labels: Some(BTreeMap::from([
                (labels::NAME.to_owned(), labels::LAMEDUCK.to_owned()),
                (labels::COMPONENT.to_owned(), "webhook".to_owned()),
                (labels::MANAGED_BY.to_owned(), labels::LAMEDUCK.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    match current {
        None => secrets.create(&PostParams::default(), &secret).await.map(|_| ()),
        Some(current) => {
            secret.metadata.resource_version = current.metadata.resource_version.clone();
            // Keep what others put on the Secret (the chart's labels, say).
            secret.metadata.labels = Some(
                current
                    .metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(secret.metadata.labels.take().unwrap_or_default())
                    .collect(),
            );
            secret.metadata.annotations = current.metadata.annotations.clone();
            secrets.replace(&config.secret_name, &PostParams::default(), &secret).await.map(|_| ())
        }
    }
}

/// Sets `caBundle` on every webhook of both configurations where it differs.
async fn patch_ca_bundles(client: &Client, config: &CertConfig, bundle: &Bundle) -> Result<(), kube::Error> {
    let ca = ByteString(bundle.ca_bundle());
    if let Some(name) = &config.mutating_configuration {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        patch_configuration(&api, name, &ca, |c| {
            c.webhooks.iter().flatten().map(|w| (w.name.clone(), w.client_config.ca_bundle.clone())).collect()
        })
        .await?;
    }
    if let Some(name) = &config.validating_configuration {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        patch_configuration(&api, name, &ca, |c| {
            c.webhooks.iter().flatten().map(|w| (w.name.clone(), w.client_config.ca_bundle.clone())).collect()
        })
        .await?;
    }
    Ok(())
}

/// Patches `caBundle` into the webhooks of configuration `name` whose bundle differs.
/// `bundles` lists each webhook's name and current `caBundle`.
async fn patch_configuration<K>(
    api: &Api<K>,
    name: &str,
    ca: &ByteString,
    bundles: impl Fn(&K) -> Vec<(String, Option<ByteString>)>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(current) = api.get_opt(name).await? else {
        tracing::debug!(configuration = %name, "no webhook configuration to patch yet");
        return Ok(());
    };
    let stale: Vec<String> = bundles(&current)
        .into_iter()
        .filter(|(_, bundle)| bundle.as_ref() != Some(ca))
        .map(|(w, _)| w)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    // `webhooks` merges by name in a strategic-merge patch: only `caBundle` changes.
    let patch = json!({
        "webhooks": stale.iter().map(|w| json!({"name": w, "clientConfig": {"caBundle": ca}})).collect::<Vec<_>>()
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    tracing::info!(configuration = %name, webhooks = ?stale, "caBundle patched");
    Ok(())
}
