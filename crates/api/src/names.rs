//! Every well-known name lameduck shares with Kubernetes, Linkerd and its own components.
//!
//! Other crates import these constants instead of spelling the strings again, so a rename
//! happens in one place.

/// The API group of lameduck's custom resources.
pub const GROUP: &str = "lameduck.io";
/// The served and stored version of the `ShutdownPolicy` resource.
pub const VERSION: &str = "v1alpha1";

/// Container names of the proxies lameduck knows.
pub mod containers {
    /// lameduck's own proxy.
    pub const LAMEDUCK_PROXY: &str = "lameduck-proxy";
    /// Linkerd's proxy, as its injector names it.
    pub const LINKERD_PROXY: &str = "linkerd-proxy";
    /// Istio's sidecar.
    pub const ISTIO_PROXY: &str = "istio-proxy";
    /// The Cloud SQL Auth Proxy, as its documentation names the container.
    pub const CLOUD_SQL_PROXY: &str = "cloud-sql-proxy";
}

/// Ports lameduck's proxy listens on; the same numbers as Linkerd's proxy.
pub mod ports {
    /// `/ready`, `/live`, `/metrics`, `/shutdown`.
    pub const ADMIN: u16 = 4191;
    /// Where meshed clients connect.
    pub const INBOUND: u16 = 4143;
    /// The app's outbound proxy.
    pub const OUTBOUND: u16 = 4140;
    /// The app the proxy forwards inbound traffic to, on loopback.
    pub const APP: u16 = 8080;
    /// cloud-sql-proxy's admin port (`--admin-port`), which serves `/quitquitquit`.
    pub const CLOUD_SQL_ADMIN: u16 = 9091;
    /// Istio's pilot-agent status port, which serves `/quitquitquit`.
    pub const ISTIO_STATUS: u16 = 15020;
}

/// HTTP paths on the proxy admin server.
pub mod paths {
    /// Readiness: 200 while serving, 503 while draining.
    pub const READY: &str = "/ready";
    /// Liveness.
    pub const LIVE: &str = "/live";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// Graceful shutdown (POST, loopback only).
    pub const SHUTDOWN: &str = "/shutdown";
    /// Istio's and cloud-sql-proxy's equivalent of `/shutdown`.
    pub const QUITQUITQUIT: &str = "/quitquitquit";
}

/// Environment variables read by lameduck's programs and by Linkerd's proxy.
pub mod env {
    /// `lameduck-proxy --inbound-addr`.
    pub const PROXY_INBOUND_ADDR: &str = "LAMEDUCK_PROXY_INBOUND_ADDR";
    /// `lameduck-proxy --inbound-target`.
    pub const PROXY_INBOUND_TARGET: &str = "LAMEDUCK_PROXY_INBOUND_TARGET";
    /// `lameduck-proxy --outbound-addr`.
    pub const PROXY_OUTBOUND_ADDR: &str = "LAMEDUCK_PROXY_OUTBOUND_ADDR";
    /// `lameduck-proxy --allow-open-outbound`: serve the outbound proxy on a non-loopback address.
    pub const PROXY_ALLOW_OPEN_OUTBOUND: &str = "LAMEDUCK_PROXY_ALLOW_OPEN_OUTBOUND";
    /// `lameduck-proxy --admin-addr`.
    pub const PROXY_ADMIN_ADDR: &str = "LAMEDUCK_PROXY_ADMIN_ADDR";
    /// `lameduck-proxy --shutdown-grace-period`.
    pub const PROXY_SHUTDOWN_GRACE_PERIOD: &str = "LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD";
    /// `lameduck-proxy --enable-shutdown-endpoint`.
    pub const PROXY_ENABLE_SHUTDOWN_ENDPOINT: &str = "LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT";
    /// cloud-sql-proxy's env form of `--quitquitquit`.
    pub const CLOUD_SQL_PROXY_QUITQUITQUIT: &str = "CSQL_PROXY_QUITQUITQUIT";
    /// `lameduck-proxy --settings-file`.
    pub const PROXY_SETTINGS_FILE: &str = "LAMEDUCK_PROXY_SETTINGS_FILE";
    /// `lameduck-proxy --settings-poll-interval`: how often the settings file is re-read.
    pub const PROXY_SETTINGS_POLL_INTERVAL: &str = "LAMEDUCK_PROXY_SETTINGS_POLL_INTERVAL";
    /// `lameduck-proxy --header-read-timeout`: slowloris guard for HTTP/1 request heads.
    pub const PROXY_HEADER_READ_TIMEOUT: &str = "LAMEDUCK_PROXY_HEADER_READ_TIMEOUT";
    pub const PROXY_MAX_APP_CONNECTIONS: &str = "LAMEDUCK_PROXY_MAX_APP_CONNECTIONS";
    pub const PROXY_INBOUND_IDLE_TIMEOUT: &str = "LAMEDUCK_PROXY_INBOUND_IDLE_TIMEOUT";
    pub const PROXY_MAX_INBOUND_CONNECTIONS: &str = "LAMEDUCK_PROXY_MAX_INBOUND_CONNECTIONS";
    /// `lameduck-proxy --cores`: worker threads, like Linkerd's `LINKERD2_PROXY_CORES`.
    pub const PROXY_CORES: &str = "LAMEDUCK_PROXY_CORES";
    /// `lameduck-proxy --log-format`: `plain` or `json`.
    pub const PROXY_LOG_FORMAT: &str = "LAMEDUCK_PROXY_LOG_FORMAT";
    /// `lameduck-proxy --log-level`: a tracing filter such as `info` or `lameduck_proxy=debug`.
    pub const PROXY_LOG_LEVEL: &str = "LAMEDUCK_PROXY_LOG_LEVEL";

    /// Makes `lameduck-await` skip the readiness wait (not the shutdown).
    pub const AWAIT_DISABLED: &str = "LAMEDUCK_AWAIT_DISABLED";
    /// linkerd-await's name for the same switch, honoured for drop-in use.
    pub const LINKERD_AWAIT_DISABLED: &str = "LINKERD_AWAIT_DISABLED";

    /// Linkerd proxy: how long it drains before closing what is left (default 120s).
    pub const LINKERD_SHUTDOWN_GRACE_PERIOD: &str = "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD";
    /// Linkerd proxy: `/shutdown` answers 404 unless this is `true`.
    pub const LINKERD_SHUTDOWN_ENDPOINT_ENABLED: &str = "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED";

    /// `lameduck-operator --namespace`.
    pub const OPERATOR_NAMESPACE: &str = "LAMEDUCK_OPERATOR_NAMESPACE";
    /// `lameduck-operator --default-profile`.
    pub const OPERATOR_DEFAULT_PROFILE: &str = "LAMEDUCK_OPERATOR_DEFAULT_PROFILE";
    /// `lameduck-operator --dry-run`.
    pub const OPERATOR_DRY_RUN: &str = "LAMEDUCK_OPERATOR_DRY_RUN";
    /// `lameduck-operator --upgrade-crd`: apply its own ShutdownPolicy CRD at start.
    pub const OPERATOR_UPGRADE_CRD: &str = "LAMEDUCK_OPERATOR_UPGRADE_CRD";
    /// `lameduck-operator --admin-addr`.
    pub const OPERATOR_ADMIN_ADDR: &str = "LAMEDUCK_OPERATOR_ADMIN_ADDR";
    /// `lameduck-operator --ephemeral-image`.
    pub const OPERATOR_EPHEMERAL_IMAGE: &str = "LAMEDUCK_OPERATOR_EPHEMERAL_IMAGE";
    /// `lameduck-operator --allowed-ephemeral-image`.
    pub const OPERATOR_ALLOWED_EPHEMERAL_IMAGES: &str = "LAMEDUCK_OPERATOR_ALLOWED_EPHEMERAL_IMAGES";
    /// `lameduck-operator --allow-custom-exec-command`.
    pub const OPERATOR_ALLOW_CUSTOM_EXEC_COMMAND: &str = "LAMEDUCK_OPERATOR_ALLOW_CUSTOM_EXEC_COMMAND";
    pub const OPERATOR_POLICY_REVIEW: &str = "LAMEDUCK_OPERATOR_POLICY_REVIEW";
    /// `lameduck-operator --exclude-namespace`.
    pub const OPERATOR_EXCLUDE_NAMESPACES: &str = "LAMEDUCK_OPERATOR_EXCLUDE_NAMESPACES";
    /// `lameduck-operator --max-ephemeral-containers`.
    pub const OPERATOR_MAX_EPHEMERAL_CONTAINERS: &str = "LAMEDUCK_OPERATOR_MAX_EPHEMERAL_CONTAINERS";
    /// `lameduck-operator --concurrency-per-namespace`.
    pub const OPERATOR_CONCURRENCY_PER_NAMESPACE: &str = "LAMEDUCK_OPERATOR_CONCURRENCY_PER_NAMESPACE";
    /// `lameduck-operator --concurrency`.
    pub const OPERATOR_CONCURRENCY: &str = "LAMEDUCK_OPERATOR_CONCURRENCY";
    /// `lameduck-operator --lease-name`.
    pub const OPERATOR_LEASE_NAME: &str = "LAMEDUCK_OPERATOR_LEASE_NAME";
    /// `lameduck-operator --lease-namespace`.
    pub const OPERATOR_LEASE_NAMESPACE: &str = "LAMEDUCK_OPERATOR_LEASE_NAMESPACE";
    /// `lameduck-operator --lease-duration`.
    pub const OPERATOR_LEASE_DURATION: &str = "LAMEDUCK_OPERATOR_LEASE_DURATION";
    /// `lameduck-operator --identity`.
    pub const OPERATOR_IDENTITY: &str = "LAMEDUCK_OPERATOR_IDENTITY";
    /// `lameduck-operator --status-interval`.
    pub const OPERATOR_STATUS_INTERVAL: &str = "LAMEDUCK_OPERATOR_STATUS_INTERVAL";
    /// `lameduck-operator --log-format`.
    pub const OPERATOR_LOG_FORMAT: &str = "LAMEDUCK_OPERATOR_LOG_FORMAT";
    /// `lameduck-operator --log-level`.
    pub const OPERATOR_LOG_LEVEL: &str = "LAMEDUCK_OPERATOR_LOG_LEVEL";
    /// `--webhook-addr`.
    pub const OPERATOR_WEBHOOK_ADDR: &str = "LAMEDUCK_OPERATOR_WEBHOOK_ADDR";
    /// `--webhook-secret`.
    pub const OPERATOR_WEBHOOK_SECRET: &str = "LAMEDUCK_OPERATOR_WEBHOOK_SECRET";
    /// `--webhook-secret-namespace`.
    pub const OPERATOR_WEBHOOK_SECRET_NAMESPACE: &str = "LAMEDUCK_OPERATOR_WEBHOOK_SECRET_NAMESPACE";
    /// `--webhook-service`.
    pub const OPERATOR_WEBHOOK_SERVICE: &str = "LAMEDUCK_OPERATOR_WEBHOOK_SERVICE";
    /// `--webhook-host`.
    pub const OPERATOR_WEBHOOK_HOSTS: &str = "LAMEDUCK_OPERATOR_WEBHOOK_HOSTS";
    /// `--mutating-webhook-configuration`.
    pub const OPERATOR_MUTATING_CONFIGURATION: &str = "LAMEDUCK_OPERATOR_MUTATING_WEBHOOK_CONFIGURATION";
    /// `--validating-webhook-configuration`.
    pub const OPERATOR_VALIDATING_CONFIGURATION: &str = "LAMEDUCK_OPERATOR_VALIDATING_WEBHOOK_CONFIGURATION";
    /// `--webhook-cert-validity`.
    pub const OPERATOR_WEBHOOK_CERT_VALIDITY: &str = "LAMEDUCK_OPERATOR_WEBHOOK_CERT_VALIDITY";
    /// `--webhook-ca-validity`.
    pub const OPERATOR_WEBHOOK_CA_VALIDITY: &str = "LAMEDUCK_OPERATOR_WEBHOOK_CA_VALIDITY";
    /// `--webhook-cert-check-interval`.
    pub const OPERATOR_WEBHOOK_CERT_CHECK_INTERVAL: &str = "LAMEDUCK_OPERATOR_WEBHOOK_CERT_CHECK_INTERVAL";
    /// The operator's pod name (downward API): its identity in the leader Lease and in events.
    pub const POD_NAME: &str = "POD_NAME";
    /// The operator's namespace (downward API): where its Lease lives.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";

    /// `lameduck-await --port`.
    pub const AWAIT_PORT: &str = "LAMEDUCK_AWAIT_PORT";
    /// `lameduck-await --uri`.
    pub const AWAIT_URI: &str = "LAMEDUCK_AWAIT_URI";
    /// `lameduck-await --backoff`.
    pub const AWAIT_BACKOFF: &str = "LAMEDUCK_AWAIT_BACKOFF";
    /// `lameduck-await --timeout`.
    pub const AWAIT_TIMEOUT: &str = "LAMEDUCK_AWAIT_TIMEOUT";
    /// `lameduck-await --timeout-fatal`.
    pub const AWAIT_TIMEOUT_FATAL: &str = "LAMEDUCK_AWAIT_TIMEOUT_FATAL";
    /// `lameduck-await --shutdown`.
    pub const AWAIT_SHUTDOWN: &str = "LAMEDUCK_AWAIT_SHUTDOWN";
    /// `lameduck-await --verbose`.
    pub const AWAIT_VERBOSE: &str = "LAMEDUCK_AWAIT_VERBOSE";
    /// linkerd-await's name for `--verbose`, honoured for drop-in use.
    pub const LINKERD_AWAIT_VERBOSE: &str = "LINKERD_AWAIT_VERBOSE";
    /// linkerd-await's older name for [`LINKERD_AWAIT_DISABLED`], honoured for drop-in use.
    pub const LINKERD_DISABLED: &str = "LINKERD_DISABLED";
}

/// Annotation keys: lameduck's own and the Linkerd ones lameduck reads or writes.
pub mod annotations {
    /// On the generated CRD: the lameduck release it came from, which `lameduck version
    /// --cluster` and `lameduck check --cluster` compare with their own.
    pub const CRD_VERSION: &str = "lameduck.io/version";
    /// The operator's record of shutdown attempts on a pod (JSON), so a restarted operator or a
    /// new leader never repeats an attempt that may have succeeded.
    pub const SHUTDOWN_ATTEMPTS: &str = "lameduck.io/shutdown-attempts";
    /// Set by the operator once it has reported how its attempts ended (`succeeded`, `failed`
    /// or `gaveUp`), so the outcome is counted once however often the pod is looked at again.
    /// A new attempt (after the proxy restarted or the policy changed) removes `gaveUp`.
    /// Its values are in [`super::shutdown_result`].
    pub const SHUTDOWN_RESULT: &str = "lameduck.io/shutdown-result";
    /// On a `ShutdownPolicy`: the webhook's stamp (an HMAC over the policy's namespace, name and
    /// power-bearing fields, keyed by a Secret only the operator reads). The operator honours
    /// power-bearing fields only where the stamp matches.
    pub const POLICY_REVIEW: &str = "lameduck.io/policy-review";
    /// The `ShutdownPolicy` whose drain settings the webhook applied to a pod.
    pub const POLICY: &str = "lameduck.io/policy";
    /// Drain settings the webhook writes for the proxy's downward-API settings file.
    pub const SHUTDOWN_GRACE_PERIOD: &str = "lameduck.io/shutdown-grace-period";
    /// See [`SHUTDOWN_GRACE_PERIOD`].
    pub const ENABLE_SHUTDOWN_ENDPOINT: &str = "lameduck.io/enable-shutdown-endpoint";
    /// See [`SHUTDOWN_GRACE_PERIOD`].
    pub const WAIT_BEFORE_EXIT: &str = "lameduck.io/wait-before-exit";

    /// Linkerd: inject the proxy into this workload (`enabled`).
    pub const LINKERD_INJECT: &str = "linkerd.io/inject";
    /// Set by Linkerd's proxy injector on every pod it injected.
    pub const LINKERD_PROXY_VERSION: &str = "linkerd.io/proxy-version";
    /// Set by Istio's sidecar injector on every pod it injected.
    pub const ISTIO_SIDECAR_STATUS: &str = "sidecar.istio.io/status";
    /// Linkerd: preStop sleep on the proxy, in whole seconds.
    pub const LINKERD_WAIT_BEFORE_EXIT_SECONDS: &str =
        "config.alpha.linkerd.io/proxy-wait-before-exit-seconds";
    /// Linkerd: the proxy's shutdown grace period, a Go duration.
    pub const LINKERD_SHUTDOWN_GRACE_PERIOD: &str = "config.linkerd.io/shutdown-grace-period";
    /// Linkerd: `enabled` turns on the proxy's `/shutdown` endpoint.
    pub const LINKERD_ADMIN_SHUTDOWN: &str = "config.linkerd.io/proxy-admin-shutdown";
    /// Linkerd: inject the proxy as a native sidecar (`true`). Current spelling.
    pub const LINKERD_NATIVE_SIDECAR: &str = "config.beta.linkerd.io/proxy-enable-native-sidecar";
    /// Linkerd: the deprecated alpha spelling of [`LINKERD_NATIVE_SIDECAR`], still honoured.
    pub const LINKERD_NATIVE_SIDECAR_ALPHA: &str = "config.alpha.linkerd.io/proxy-enable-native-sidecar";
}

/// The values of the [`annotations::SHUTDOWN_RESULT`] annotation.
pub mod shutdown_result {
    /// Every sidecar the operator stopped exited 0.
    pub const SUCCEEDED: &str = "succeeded";
    /// A sidecar the operator stopped exited non-zero: the pod fails.
    pub const FAILED: &str = "failed";
    /// The operator stopped trying; the pod stays stuck until its proxy restarts or its policy
    /// changes.
    pub const GAVE_UP: &str = "gaveUp";
}

/// The operator's defaults and the chart's names for it, for the programs that look at an
/// installed operator from outside (`lameduck check --cluster`).
pub mod operator {
    /// `lameduck-operator --lease-name` when not given (the chart gives the release's name).
    pub const LEASE_NAME: &str = "lameduck-operator";
    /// The operator's container in the chart's Deployment.
    pub const CONTAINER: &str = "operator";
}

/// How Kubernetes names a ServiceAccount when it authorises its requests, for
/// SubjectAccessReviews about the operator's own account.
pub mod accounts {
    /// Followed by `NAMESPACE:NAME`: a ServiceAccount's user name.
    pub const USER_PREFIX: &str = "system:serviceaccount:";
    /// The group of every ServiceAccount; followed by `:NAMESPACE`, those of one namespace.
    pub const GROUP: &str = "system:serviceaccounts";
    /// The group of every authenticated user.
    pub const AUTHENTICATED: &str = "system:authenticated";
}

/// The downward-API file through which lameduck's proxy reads its drain settings live (the pod's
/// annotations, kept in step by the kubelet). Set up by the webhook and `lameduck inject`.
pub mod settings_file {
    /// The pod volume.
    pub const VOLUME: &str = "lameduck-settings";
    /// Where the proxy container mounts it.
    pub const DIR: &str = "/var/run/lameduck";
    /// The file's name in the volume.
    pub const FILE: &str = "annotations";
    /// The whole path, for `LAMEDUCK_PROXY_SETTINGS_FILE`.
    pub const PATH: &str = "/var/run/lameduck/annotations";
}

/// Reasons of the Kubernetes Events the operator publishes on pods; what `kubectl describe pod`
/// shows and what alerts match on.
pub mod events {
    /// The controller name in each event's `reportingController`.
    pub const REPORTER: &str = "lameduck-operator";
    /// The `action` of every event about shutting a proxy down.
    pub const ACTION: &str = "ShutdownProxy";
    /// A shutdown call was made and accepted (Normal).
    pub const SHUTDOWN_REQUESTED: &str = "ShutdownRequested";
    /// A shutdown call failed; the next method follows (Warning).
    pub const SHUTDOWN_CALL_FAILED: &str = "ShutdownCallFailed";
    /// `/shutdown` answered 404: only a signal can stop this proxy (Warning).
    pub const SHUTDOWN_ENDPOINT_DISABLED: &str = "ShutdownEndpointDisabled";
    /// The proxy exited 0 after lameduck's attempts (Normal).
    pub const PROXY_STOPPED: &str = "ProxyStopped";
    /// The proxy exited non-zero after lameduck's attempts: the pod fails (Warning).
    pub const PROXY_FAILED: &str = "ProxyFailed";
    /// Every method of a round failed; the next round follows a backoff (Warning).
    pub const SHUTDOWN_EXHAUSTED: &str = "ShutdownExhausted";
    /// lameduck stopped trying after `completion.maxRounds`, or with no usable method; no
    /// further calls until the proxy restarts or the policy's spec changes (Warning).
    pub const SHUTDOWN_GAVE_UP: &str = "ShutdownGaveUp";
    /// The operator will not act on a policy: it asks for an image off the allowlist or a
    /// custom exec command the operator does not allow (Warning, on the policy).
    pub const POLICY_REFUSED: &str = "PolicyRefused";
    /// With `--dry-run`: what the operator would have done (Normal).
    pub const DRY_RUN: &str = "DryRunWouldShutDown";
    /// The attempt annotation could not be read; the pod is left alone (Warning).
    pub const INVALID_ATTEMPT_LOG: &str = "InvalidAttemptLog";
    /// Deciding or acting on the pod panicked: a bug in lameduck, caught; the operator and its
    /// webhook stay up and look at the pod again after a backoff (Warning).
    pub const RECONCILE_PANICKED: &str = "ReconcilePanicked";
    /// The `action` of events about admission.
    pub const ACTION_ADMIT: &str = "AdmitPod";
    /// A policy selects the pod but the webhook did not apply it (down, or `failurePolicy:
    /// Ignore` after a timeout): the pod runs without its drain settings (Warning).
    pub const ADMITTED_UNMUTATED: &str = "AdmittedUnmutated";
}

/// The admission webhook served by the operator.
pub mod webhook {
    /// Where the API server sends Pod admission reviews.
    pub const MUTATE_PODS_PATH: &str = "/mutate-pods";
    /// Where the API server sends ShutdownPolicy admission reviews.
    pub const VALIDATE_POLICIES_PATH: &str = "/validate-shutdownpolicies";
    /// Where the API server sends ShutdownPolicy writes to be reviewed and stamped.
    pub const MUTATE_POLICIES_PATH: &str = "/mutate-shutdownpolicies";
    /// The policy-stamping webhook's name in the MutatingWebhookConfiguration.
    pub const STAMPING_WEBHOOK: &str = "review.shutdownpolicies.lameduck.io";
    /// The webhook's name in the MutatingWebhookConfiguration.
    pub const MUTATING_WEBHOOK: &str = "pods.lameduck.io";
    /// The webhook's name in the ValidatingWebhookConfiguration.
    pub const VALIDATING_WEBHOOK: &str = "shutdownpolicies.lameduck.io";
    /// Default name of both webhook configurations.
    pub const CONFIGURATION: &str = "lameduck";
    /// Default name of the Secret holding the webhook's CA and serving certificate.
    pub const SECRET: &str = "lameduck-webhook-tls";
    /// Default name of the webhook's Service (its DNS names go into the certificate).
    pub const SERVICE: &str = "lameduck-webhook";
    /// Default port the webhook listens on.
    pub const PORT: u16 = 9443;
    /// Secret keys: the CA certificates (newest first; older ones stay until they expire, so
    /// that a rotation never breaks trust), the CA key, the serving certificate and key.
    pub const CA_CERT_KEY: &str = "ca.crt";
    pub const CA_KEY_KEY: &str = "ca.key";
    pub const TLS_CERT_KEY: &str = "tls.crt";
    pub const TLS_KEY_KEY: &str = "tls.key";
    /// Secret key: the key of the policies' review stamps (32 random bytes, made once by the
    /// leader and kept across certificate renewals).
    pub const REVIEW_KEY_KEY: &str = "policy-review.key";
}

/// Labels lameduck puts on what it creates.
pub mod labels {
    /// `app.kubernetes.io/name`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/component`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/instance`: the chart puts the Helm release's name there.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// Set by Kubernetes on every EndpointSlice: the Service it belongs to.
    pub const ENDPOINT_SLICE_SERVICE: &str = "kubernetes.io/service-name";
    /// `app.kubernetes.io/managed-by`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Set by the Job controller on every pod of a Job (CronJob pods are Job pods): what the
    /// operator's pod watch selects on.
    pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
    /// The value lameduck uses for [`NAME`] and [`MANAGED_BY`].
    pub const LAMEDUCK: &str = "lameduck";
    /// `app.kubernetes.io/version`: the chart puts the release's version on the operator.
    pub const VERSION: &str = "app.kubernetes.io/version";
    /// The value of [`COMPONENT`] on the chart's operator Deployment and pods.
    pub const OPERATOR_COMPONENT: &str = "operator";
}

/// Images built on this machine by `tests/e2e/build-images.sh` (no registry: they are
/// imported into containerd and used with `imagePullPolicy: IfNotPresent`).
pub mod images {
    /// `lameduck-proxy`, which also carries its `shutdown` and `wait` subcommands.
    pub const PROXY: &str = "localhost/lameduck/proxy:dev";
    /// `lameduck-operator`.
    pub const OPERATOR: &str = "localhost/lameduck/operator:dev";
    /// `lameduck-await`.
    pub const AWAIT: &str = "localhost/lameduck/await:dev";
    /// The end-to-end tests' app (`lameduck-testapp`), with `lameduck-await` beside it.
    pub const TESTAPP: &str = "localhost/lameduck/testapp:dev";
    /// For the end-to-end tests: an image laid out as Linkerd's proxy image is (the proxy as
    /// uid 2102 from the image, `/usr/lib/linkerd/linkerd-await`, `/bin/sleep`).
    pub const LINKERD_SHAPED: &str = "localhost/lameduck/linkerd-shaped:dev";
}

/// Kubernetes defaults that lameduck's rules depend on.
pub mod defaults {
    /// `terminationGracePeriodSeconds` when a pod does not set it.
    pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
    /// The proxy's shutdown grace period when nothing sets it (Linkerd's and lameduck's).
    pub const PROXY_SHUTDOWN_GRACE_PERIOD_SECONDS: u64 = 120;
}

/// What `lameduck inject` writes into the manifests it changes.
pub mod inject {
    /// The policy name in the [`super::annotations::POLICY`] annotation of a pod template that
    /// `lameduck inject` set up: no `ShutdownPolicy` object has it, the flags of the run do.
    pub const POLICY: &str = "lameduck-inject";
}
