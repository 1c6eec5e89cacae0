//! `lameduck-operator`: watches run-to-completion pods, stops their sidecars once the main
//! containers have exited, reports.
#![forbid(unsafe_code)]
// Nothing that came from the API server, a pod, a policy or a client may panic this process: no
// unwrap or expect outside tests (clippy.toml allows them there).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt, future, future::BoxFuture};
use k8s_openapi::api::{authentication::v1::UserInfo, authorization::v1::SubjectAccessReview};
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use lameduck_api::{
    ShutdownPolicy, ShutdownPolicySpec, build,
    names::{annotations, env},
};
use lameduck_operator::{
    admin,
    audit::pod::AdmittedPod,
    audit::{self, index::PodIndex},
    cli::{Cli, Config, LogFormat},
    controller::books::Bookkeeping,
    controller::pod::SlimPod,
    controller::{
        reconcile::{Context, error_policy, reconcile},
        settings::Settings,
    },
    crd::Plan,
    events::Publisher,
    leader,
    metrics::Metrics,
    powers::{self, Power},
    review::{self, PolicyReview},
    status::writer::{self as status, Scope},
    webhook::admission::PodLabels,
    webhook::{
        https::{self as webhook, Knowledge, ServingCert},
        secret as webhook_certs,
    },
};
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::watch};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.validate(std::env::var(env::POD_NAME).ok(), std::env::var(env::POD_NAMESPACE).ok())
    {
        Ok(config) => config,
        Err(errors) => {
            for error in errors {
                eprintln!("error: {error}");
            }
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Raises `flag` once the watch has listed everything. (Not `Store::wait_until_ready`: its
/// readiness future wakes only one waiter, and the controller already waits on the pod store.)
fn synced_when_listed<K>(flag: Arc<AtomicBool>) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            flag.store(true, Ordering::Release);
        }
    }
}

fn all_set(flags: &[Arc<AtomicBool>]) -> bool {
    flags.iter().all(|flag| flag.load(Ordering::Acquire))
}

/// Waits until `ready()` holds, checking every 50 ms (the sync flags are plain atomics).
async fn until(ready: impl Fn() -> bool) {
    while !ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The field selector that leaves `namespaces` out of a watch; `None` when there are none.
fn exclusion(namespaces: &[String]) -> Option<String> {
    (!namespaces.is_empty()).then(|| {
        namespaces.iter().map(|ns| format!("metadata.namespace!={ns}")).collect::<Vec<_>>().join(",")
    })
}

/// The field selector of run-to-completion pods (`restartPolicy` `Never` or `OnFailure`).
const RUN_TO_COMPLETION: &str = "spec.restartPolicy!=Always";

/// `fields` and the exclusions, as one field selector.
fn join_fields(fields: &str, excluded: &Option<String>) -> String {
    match excluded {
        Some(excluded) => format!("{fields},{excluded}"),
        None => fields.to_owned(),
    }
}

fn with_fields(config: watcher::Config, fields: &Option<String>) -> watcher::Config {
    match fields {
        Some(fields) => config.fields(fields),
        None => config,
    }
}

async fn terminated() {
    match tokio::signal::unix::signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(err) => {
            tracing::warn!(error = %err, "cannot handle SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster service account, or KUBECONFIG)")?;
    let metrics = Metrics::new();
    let listener = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}: cannot listen", config.admin_addr))?;
    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(admin::serve(listener, ready_rx, metrics.clone()));

    if config.upgrade_crd {
        // Before the watches, so they see this release's schema.
        match lameduck_operator::crd::upgrade(client.clone()).await {
            Ok(Plan::Apply { from }) => tracing::info!(
                from = from.as_deref().unwrap_or("unversioned"),
                to = build::VERSION,
                "applied this release's ShutdownPolicy CRD"
            ),
            Ok(Plan::Current) => {
                tracing::info!(version = build::VERSION, "the ShutdownPolicy CRD is this release's already")
            }
            Ok(Plan::Newer { installed }) => tracing::warn!(%installed, ours = build::VERSION,
                "the ShutdownPolicy CRD comes from a newer release; left as it is"),
            Ok(Plan::Unreadable { installed }) => tracing::warn!(
                %installed,
                ours = build::VERSION,
                annotation = annotations::CRD_VERSION,
                "the ShutdownPolicy CRD's version annotation is not a semantic version, so it cannot be told \
                 older; left as it is (fix or remove the annotation to have it upgraded)"
            ),
            Ok(Plan::Missing) => tracing::warn!(
                "no ShutdownPolicy CRD: install it with the chart or `lameduck crds | kubectl apply -f -`"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "cannot upgrade the ShutdownPolicy CRD (--upgrade-crd); running with the installed one")
            }
        }
    }
    let election = leader::join(client.clone(), &config.lease, metrics.clone()).await.with_context(|| {
        format!("leader election on Lease {}/{}", config.lease.namespace, config.lease.name)
    })?;
    let publisher = Publisher::new(client.clone(), config.lease.identity.clone());
    // The webhook stamps the policies it reviewed with this key (from its Secret); the
    // reconciler and the status loop check the stamps.
    let review = Arc::new(match config.webhook {
        Some(_) => PolicyReview::new(config.policy_review),
        None => {
            if config.policy_review == review::Mode::Required {
                tracing::warn!(
                    "--policy-review required without the webhook: no policy can be reviewed, so policies that ask \
                     for another container, port, path, command or image than their profile's are not acted on"
                );
            }
            PolicyReview::without_webhook(config.policy_review)
        }
    });
    let settings = Settings {
        dry_run: config.dry_run,
        default: config.default.clone(),
        ephemeral_image: config.ephemeral_image.clone(),
        limits: config.limits.clone(),
        review: review.clone(),
        max_ephemeral_containers: config.max_ephemeral_containers,
        concurrency_per_namespace: config.concurrency_per_namespace,
    };
    // Excluded namespaces are left out of every watch, so nothing in them is seen or acted on.
    let excluded = exclusion(&config.exclude_namespaces);
    tracing::info!(namespaces = ?config.namespaces, dry_run = config.dry_run, identity = %config.lease.identity,
        default_profile = %config.default.describe(), "starting");

    // The webhook's listener is bound first, so that a port in use fails the start.
    let webhook_listener = match &config.webhook {
        Some(webhook) => Some(
            TcpListener::bind(webhook.addr)
                .await
                .with_context(|| format!("--webhook-addr {}: cannot listen", webhook.addr))?,
        ),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let namespaces: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    let mut scopes = Vec::new();
    let mut sync_flags = Vec::new();
    let mut pod_apis = Vec::new();
    for namespace in namespaces {
        pod_apis.push(match &namespace {
            Some(ns) => Api::<AdmittedPod>::namespaced(client.clone(), ns),
            None => Api::<AdmittedPod>::all(client.clone()),
        });
        let (pods_api, policies_api): (Api<SlimPod>, Api<ShutdownPolicy>) = match &namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let (pod_reader, pod_writer) = reflector::store();
        let (pods_synced, policies_synced) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        sync_flags.extend([pods_synced.clone(), policies_synced.clone()]);
        let (policy_reader, policy_writer) = reflector::store();
        // Run-to-completion pods only, whatever owns them, trimmed before they are cached. The
        // API server filters: pods that restart always (most of a cluster) never reach the cache.
        let run_to_completion = join_fields(RUN_TO_COMPLETION, &excluded);
        let pods = watcher(pods_api, watcher::Config::default().fields(&run_to_completion))
            .default_backoff()
            .modify(SlimPod::trim)
            .reflect(pod_writer)
            .inspect(synced_when_listed(pods_synced.clone()))
            .applied_objects();
        // Status writes change neither: only spec changes and new review stamps re-trigger the
        // pods.
        let policies = watcher(policies_api, with_fields(watcher::Config::default(), &excluded))
            .default_backoff()
            .modify(|p| p.managed_fields_mut().clear())
            .reflect(policy_writer)
            .inspect(synced_when_listed(policies_synced.clone()))
            .applied_objects()
            .predicate_filter(review::pods_care_about, Default::default());
        let books = Arc::new(Bookkeeping::default());
        let ctx = Arc::new(Context::new(
            client.clone(),
            policy_reader.clone(),
            settings.clone(),
            election.is_leader.clone(),
            metrics.clone(),
            publisher.clone(),
            books.clone(),
        ));
        let mapper_pods = pod_reader.clone();
        let controller = Controller::for_stream(pods, pod_reader.clone())
            .with_config(ControllerConfig::default().concurrency(config.concurrency))
            .watches_stream(policies, move |policy: ShutdownPolicy| {
                let namespace = policy.namespace();
                mapper_pods
                    .state()
                    .into_iter()
                    .filter(|pod| pod.namespace() == namespace)
                    .map(|pod| ObjectRef::from(pod.as_ref()))
                    .collect::<Vec<_>>()
            })
            .reconcile_all_on(leader::elected(election.is_leader.clone()))
            .graceful_shutdown_on(stopping())
            .run(reconcile, error_policy, ctx)
            .for_each(|result| {
                // Reconcile errors are counted and logged by error_policy; what is left here is
                // the watch itself failing (RBAC, API server unreachable), retried with backoff.
                if let Err(kube::runtime::controller::Error::QueueError(err)) = result {
                    tracing::warn!(error = %err, "watch failed; retrying");
                }
                future::ready(())
            });
        controllers.push(controller);
        scopes.push(Scope { pods: pod_reader, policies: policy_reader, books });
    }

    let serving = match (&config.webhook, webhook_listener) {
        (Some(webhook), Some(listener)) => Some(start_webhook(
            &client,
            webhook,
            listener,
            &scopes,
            pod_apis,
            &excluded,
            &sync_flags,
            &publisher,
            &election.is_leader,
            &metrics,
            config.status_interval,
            &review,
        )?),
        _ => None,
    };
    tokio::spawn(async move {
        until(|| all_set(&sync_flags) && serving.as_ref().is_none_or(|s| s.is_loaded())).await;
        tracing::info!("caches synced; ready");
        let _ = ready_tx.send(true);
    });
    let reporting = status::Reporting {
        client: client.clone(),
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        leader: election.is_leader.clone(),
    };
    let status_task = tokio::spawn(status::run(reporting, scopes, settings, config.status_interval));

    let controllers = future::join_all(controllers);
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => anyhow::bail!("the pod watch ended"),
        _ = terminated() => tracing::info!("terminating: finishing reconciles in flight"),
    }
    let _ = stop_tx.send(true);
    // Reconciles in flight finish (each is bounded by its attempt timeout), then the Lease is
    // released so that another replica takes over at once.
    if tokio::time::timeout(Duration::from_secs(60), controllers).await.is_err() {
        tracing::warn!("reconciles still running after 60s; leaving them");
    }
    status_task.abort();
    match tokio::time::timeout(Duration::from_secs(5), election.resign()).await {
        Ok(Ok(())) => tracing::info!("left the leader election"),
        Ok(Err(err)) => tracing::warn!(error = %err, "lease not released; it expires by itself"),
        Err(_) => tracing::warn!("lease release timed out; it expires by itself"),
    }
    Ok(())
}

/// The webhook reads the policy caches and the pod index, and asks the API server about users.
struct Caches {
    policies: Vec<reflector::Store<ShutdownPolicy>>,
    pods: Arc<PodIndex>,
    reviews: Api<SubjectAccessReview>,
    stamps: Arc<PolicyReview>,
}

impl Knowledge for Caches {
    fn policies(&self) -> Vec<Arc<ShutdownPolicy>> {
        self.policies.iter().flat_map(reflector::Store::state).collect()
    }

    fn pods_in(&self, namespace: &str) -> Vec<PodLabels> {
        self.pods.labels_in(namespace)
    }

    fn stamp(&self, namespace: &str, name: &str, spec: &ShutdownPolicySpec) -> Option<String> {
        self.stamps.stamp(namespace, name, spec)
    }

    fn may<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
        power: Power,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let review = powers::access_review(user, namespace, power);
            // The API server answers within the webhook's own timeout, or the policy is refused.
            let params = PostParams::default();
            let asked = tokio::time::timeout(Duration::from_secs(3), self.reviews.create(&params, &review));
            match asked.await {
                Ok(Ok(answer)) => Ok(answer.status.is_some_and(|s| s.allowed)),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("the SubjectAccessReview took more than 3s".into()),
            }
        })
    }
}

/// Starts the webhook server, its certificate keeper, and the watch on admitted pods. Returns
/// the serving certificate, which readiness waits for.
#[allow(clippy::too_many_arguments)]
fn start_webhook(
    client: &Client,
    config: &lameduck_operator::cli::WebhookConfig,
    listener: TcpListener,
    scopes: &[Scope],
    pod_apis: Vec<Api<AdmittedPod>>,
    excluded: &Option<String>,
    sync_flags: &[Arc<AtomicBool>],
    publisher: &Publisher,
    is_leader: &watch::Receiver<bool>,
    metrics: &Metrics,
    export_interval: Duration,
    review: &Arc<PolicyReview>,
) -> anyhow::Result<Arc<ServingCert>> {
    let serving = Arc::new(ServingCert::default());
    let tls = webhook::tls_config(serving.clone()).context("webhook TLS configuration")?;
    let policies: Vec<_> = scopes.iter().map(|s| s.policies.clone()).collect();
    let index = Arc::new(PodIndex::default());
    let caches = Arc::new(Caches {
        policies: policies.clone(),
        pods: index.clone(),
        reviews: Api::all(client.clone()),
        stamps: review.clone(),
    });
    tokio::spawn(webhook::serve(listener, tls, caches, metrics.clone()));
    tokio::spawn(webhook_certs::run(
        client.clone(),
        config.certs.clone(),
        serving.clone(),
        review.clone(),
        is_leader.clone(),
        metrics.clone(),
    ));
    // Pods are assessed against the policies, so the policy caches must be filled first.
    let synced = sync_flags.to_vec();
    for api in pod_apis {
        let (policies, index, publisher, leader, synced) =
            (policies.clone(), index.clone(), publisher.clone(), is_leader.clone(), synced.clone());
        let watch_config = with_fields(watcher::Config::default(), excluded);
        tokio::spawn(async move {
            until(|| all_set(&synced)).await;
            let pods = watcher(api, watch_config).default_backoff();
            audit::index::follow(pods, policies, index, publisher, leader).await;
        });
    }
    let (metrics, leader) = (metrics.clone(), is_leader.clone());
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(export_interval);
        loop {
            ticker.tick().await;
            audit::index::export(&index, &metrics, *leader.borrow());
        }
    });
    tracing::info!(addr = %config.addr, secret = %config.certs.secret_name, "admission webhook serving");
    Ok(serving)
}
