//! The operator's command line. Every flag also reads an environment variable
//! `LAMEDUCK_OPERATOR_<FLAG>`; the names live in `lameduck_api::names::env`.

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};
use lameduck_api::{
    GoDuration, ProxyProfile,
    names::{self, env, images, webhook},
};

use crate::{
    controller::applied::{Fallback, default_spec},
    leader::LeaseSettings,
    powers::Limits,
    review::Mode,
    webhook::certs::CertSettings,
    webhook::secret::CertConfig,
};

/// Namespaces the operator never watches, whatever `--exclude-namespace` says.
pub const ALWAYS_EXCLUDED: [&str; 1] = ["kube-system"];

/// Finishes run-to-completion pods whose main containers exited while sidecars run.

#[derive(Debug, Clone, Parser)]
#[command(name = "lameduck-operator", version)]
pub struct Cli {
    /// Watch only these namespaces (repeat the flag or separate with commas); all when empty.
    #[arg(long = "namespace", env = env::OPERATOR_NAMESPACE, value_delimiter = ',', value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Also finish the run-to-completion pods that no ShutdownPolicy selects: `auto` those that
    /// Linkerd's or Istio's injector marked, with that mesh's profile and only PortForward;
    /// `linkerd` or `lameduck` every such pod, with that profile's defaults.
    #[arg(long, env = env::OPERATOR_DEFAULT_PROFILE, value_name = "PROFILE")]
    pub default_profile: Option<DefaultProfile>,
    /// Observe and report (events, metrics, status) without shutting any proxy down.
    #[arg(long, env = env::OPERATOR_DRY_RUN)]
    pub dry_run: bool,
    /// At start, apply this release's ShutdownPolicy CRD when the installed one is from an older
    /// release, or records none (Helm never upgrades a chart's CRDs). Needs `get` and `patch` on
    /// that CRD.
    #[arg(long, env = env::OPERATOR_UPGRADE_CRD)]
    pub upgrade_crd: bool,
    /// `/live`, `/ready` and `/metrics`.
    #[arg(long, env = env::OPERATOR_ADMIN_ADDR, default_value = "0.0.0.0:9090", value_name = "ADDR")]
    pub admin_addr: String,
    /// Image of the EphemeralContainer and Signal methods when a policy names none.
    #[arg(long, env = env::OPERATOR_EPHEMERAL_IMAGE, default_value = images::PROXY, value_name = "IMAGE")]
    pub ephemeral_image: String,
    /// Images a policy's completion.ephemeralImage may name, besides --ephemeral-image (repeat
    /// the flag or separate with commas).
    #[arg(long = "allowed-ephemeral-image", env = env::OPERATOR_ALLOWED_EPHEMERAL_IMAGES, value_delimiter = ',', value_name = "IMAGE")]
    pub allowed_ephemeral_images: Vec<String>,
    /// Run a policy's proxy.execCommand; without it, policies that set one are refused.
    #[arg(long, env = env::OPERATOR_ALLOW_CUSTOM_EXEC_COMMAND)]
    pub allow_custom_exec_command: bool,
    /// `required`: a policy's power-bearing fields (another container, port, path, command or
    /// image than its profile's) count only where the webhook's review stamp matches them.
    /// `off` trusts every stored policy: only for an operator without its webhook whose
    /// policies are written by whoever runs it.
    #[arg(long, env = env::OPERATOR_POLICY_REVIEW, value_enum, default_value_t = Mode::Required, value_name = "MODE")]
    pub policy_review: Mode,
    /// Never watch or act in these namespaces (repeat the flag or separate with commas), beside
    /// kube-system, which is always left out.
    #[arg(long = "exclude-namespace", env = env::OPERATOR_EXCLUDE_NAMESPACES, value_delimiter = ',', value_name = "NS")]
    pub exclude_namespaces: Vec<String>,
    /// The most ephemeral containers lameduck adds to one pod (they can never be removed).
    #[arg(long, env = env::OPERATOR_MAX_EPHEMERAL_CONTAINERS, default_value_t = 4, value_name = "N")]
    pub max_ephemeral_containers: u32,
    /// Pods reconciled at once; a shutdown call can take up to a policy's attemptTimeout.
    #[arg(long, env = env::OPERATOR_CONCURRENCY, default_value_t = 16, value_name = "N")]
    pub concurrency: u16,
    /// Shutdown calls in flight at once in one namespace; defaults to a quarter of
    /// --concurrency (at least 1), so one namespace's hanging pods cannot starve the others.
    #[arg(long, env = env::OPERATOR_CONCURRENCY_PER_NAMESPACE, value_name = "N")]
    pub concurrency_per_namespace: Option<u16>,
    /// Name of the leader-election Lease.
    #[arg(long, env = env::OPERATOR_LEASE_NAME, default_value = names::operator::LEASE_NAME, value_name = "NAME")]
    pub lease_name: String,
    /// Namespace of the Lease; defaults to $POD_NAMESPACE, else the first --namespace, else `default`.
    #[arg(long, env = env::OPERATOR_LEASE_NAMESPACE, value_name = "NS")]
    pub lease_namespace: Option<String>,
    /// How long the Lease holds without renewal: the longest a new leader waits after a crash.
    #[arg(long, env = env::OPERATOR_LEASE_DURATION, default_value = "15s", value_name = "DURATION")]
    pub lease_duration: String,
    /// This replica's name in the Lease and in events; defaults to $POD_NAME, else host and PID.
    #[arg(long, env = env::OPERATOR_IDENTITY, value_name = "NAME")]
    pub identity: Option<String>,
    /// How often gauges and ShutdownPolicy statuses are brought up to date.
    #[arg(long, env = env::OPERATOR_STATUS_INTERVAL, default_value = "5s", value_name = "DURATION")]
    pub status_interval: String,
    /// Serve the admission webhook (HTTPS) here, e.g. `0.0.0.0:9443`; no webhook when unset.
    #[arg(long, env = env::OPERATOR_WEBHOOK_ADDR, value_name = "ADDR")]
    pub webhook_addr: Option<String>,
    /// Secret that holds the webhook's CA and serving certificate (created and renewed by the
    /// leader).
    #[arg(long, env = env::OPERATOR_WEBHOOK_SECRET, default_value = webhook::SECRET, value_name = "NAME")]
    pub webhook_secret: String,
    /// Namespace of that Secret and of the webhook Service; defaults to the Lease's namespace.
    #[arg(long, env = env::OPERATOR_WEBHOOK_SECRET_NAMESPACE, value_name = "NS")]
    pub webhook_secret_namespace: Option<String>,
    /// The webhook's Service: its DNS names go into the serving certificate.
    #[arg(long, env = env::OPERATOR_WEBHOOK_SERVICE, default_value = webhook::SERVICE, value_name = "NAME")]
    pub webhook_service: String,
    /// More DNS names or IP addresses for the serving certificate (repeat, or separate with commas).
    #[arg(long = "webhook-host", env = env::OPERATOR_WEBHOOK_HOSTS, value_delimiter = ',', value_name = "HOST")]
    pub webhook_hosts: Vec<String>,
    /// MutatingWebhookConfiguration whose `caBundle` the leader keeps current; `""` for none.
    #[arg(long, env = env::OPERATOR_MUTATING_CONFIGURATION, default_value = webhook::CONFIGURATION, value_name = "NAME")]
    pub mutating_webhook_configuration: String,
    /// ValidatingWebhookConfiguration whose `caBundle` the leader keeps current; `""` for none.
    #[arg(long, env = env::OPERATOR_VALIDATING_CONFIGURATION, default_value = webhook::CONFIGURATION, value_name = "NAME")]
    pub validating_webhook_configuration: String,
    /// How long a serving certificate is valid; renewed with a third of it left.
    #[arg(long, env = env::OPERATOR_WEBHOOK_CERT_VALIDITY, default_value = "2160h", value_name = "DURATION")]
    pub webhook_cert_validity: String,
    /// How long the webhook's CA is valid; renewed with a third of it left.
    #[arg(long, env = env::OPERATOR_WEBHOOK_CA_VALIDITY, default_value = "87600h", value_name = "DURATION")]
    pub webhook_ca_validity: String,
    /// How often the certificates are checked (and the `caBundle`s re-patched if needed).
    #[arg(long, env = env::OPERATOR_WEBHOOK_CERT_CHECK_INTERVAL, default_value = "1m", value_name = "DURATION")]
    pub webhook_cert_check_interval: String,
    /// `plain` or `json`.
    #[arg(long, env = env::OPERATOR_LOG_FORMAT, default_value = "plain", value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `lameduck_operator=debug`.
    #[arg(long, env = env::OPERATOR_LOG_LEVEL, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

/// The profiles `--default-profile` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DefaultProfile {
    Auto,
    Linkerd,
    Lameduck,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub namespaces: Vec<String>,
    pub default: Fallback,
    pub dry_run: bool,
    pub upgrade_crd: bool,
    pub admin_addr: SocketAddr,
    pub ephemeral_image: String,
    pub limits: Limits,
    pub exclude_namespaces: Vec<String>,
    pub policy_review: Mode,
    pub max_ephemeral_containers: u32,
    pub concurrency: u16,
    pub concurrency_per_namespace: usize,
    pub lease: LeaseSettings,
    pub status_interval: Duration,
    pub webhook: Option<WebhookConfig>,
}

/// The admission webhook's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub certs: CertConfig,
}

/// A DNS name (RFC 1123 subdomain, `*.` allowed first) or an IP address.
fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    let value: GoDuration = text.parse().map_err(|err| format!("--{flag}: {err}"))?;
    match value.as_std() {
        Duration::ZERO => Err(format!("--{flag}: must be more than 0s")),
        d => Ok(d),
    }
}

impl Cli {
    /// Checks every flag; each error names its flag. `env_pod` is ($POD_NAME, $POD_NAMESPACE).
    pub fn validate(
        &self,
        pod_name: Option<String>,
        pod_namespace: Option<String>,
    ) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let admin_addr = self.admin_addr.parse::<SocketAddr>().map_err(|_| {
            errors.push(format!("--admin-addr: {:?} is not an address such as 0.0.0.0:9090", self.admin_addr))
        });
        let lease_duration = duration("lease-duration", &self.lease_duration).map_err(|e| errors.push(e));
        let status_interval = duration("status-interval", &self.status_interval).map_err(|e| errors.push(e));
        let is_namespace = |namespace: &str| {
            !namespace.is_empty()
                && namespace.len() <= 63
                && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        for (flag, list) in
            [("--namespace", &self.namespaces), ("--exclude-namespace", &self.exclude_namespaces)]
        {
            for namespace in list.iter().filter(|ns| !is_namespace(ns)) {
                errors.push(format!("{flag}: {namespace:?} is not a namespace name"));
            }
        }
        for namespace in self.namespaces.iter().filter(|ns| self.exclude_namespaces.contains(ns)) {
            errors.push(format!("--exclude-namespace: {namespace:?} is also given to --namespace"));
        }
        for namespace in self.namespaces.iter().filter(|ns| ALWAYS_EXCLUDED.contains(&ns.as_str())) {
            errors
                .push(format!("--namespace: {namespace:?} is never watched (the cluster's own components)"));
        }
        if self.concurrency == 0 {
            errors.push("--concurrency: must be at least 1".to_owned());
        }
        let concurrency_per_namespace = match self.concurrency_per_namespace {
            Some(0) => {
                errors.push("--concurrency-per-namespace: must be at least 1".to_owned());
                1
            }
            Some(n) if n > self.concurrency => {
                errors.push(format!(
                    "--concurrency-per-namespace: {n} is more than --concurrency ({})",
                    self.concurrency
                ));
                1
            }
            Some(n) => usize::from(n),
            None => usize::from(self.concurrency / 4).max(1),
        };
        let is_image = |image: &str| !image.trim().is_empty() && !image.contains(' ');
        if !is_image(&self.ephemeral_image) {
            errors.push(format!("--ephemeral-image: {:?} is not an image reference", self.ephemeral_image));
        }
        for image in self.allowed_ephemeral_images.iter().filter(|i| !is_image(i)) {
            errors.push(format!("--allowed-ephemeral-image: {image:?} is not an image reference"));
        }
        if self.max_ephemeral_containers == 0 || self.max_ephemeral_containers > 64 {
            errors.push(format!(
                "--max-ephemeral-containers: {} is not between 1 and 64",
                self.max_ephemeral_containers
            ));
        }
        let webhook_addr = self.webhook_addr.as_ref().map(|addr| {
            addr.parse::<SocketAddr>().map_err(|_| {
                errors.push(format!("--webhook-addr: {addr:?} is not an address such as 0.0.0.0:9443"))
            })
        });
        let cert_validity =
            duration("webhook-cert-validity", &self.webhook_cert_validity).map_err(|e| errors.push(e));
        let ca_validity =
            duration("webhook-ca-validity", &self.webhook_ca_validity).map_err(|e| errors.push(e));
        let check_interval = duration("webhook-cert-check-interval", &self.webhook_cert_check_interval)
            .map_err(|e| errors.push(e));
        if let (Ok(cert), Ok(ca)) = (&cert_validity, &ca_validity)
            && cert >= ca
        {
            errors.push("--webhook-cert-validity: must be shorter than --webhook-ca-validity".to_owned());
        }
        for host in &self.webhook_hosts {
            if !is_host(host) {
                errors.push(format!("--webhook-host: {host:?} is not a DNS name or an IP address"));
            }
        }
        if !is_host(&self.webhook_service) || self.webhook_service.contains('.') {
            errors.push(format!("--webhook-service: {:?} is not a Service name", self.webhook_service));
        }
        let (
            Ok(admin_addr),
            Ok(lease_duration),
            Ok(status_interval),
            Ok(cert_validity),
            Ok(ca_validity),
            Ok(check_interval),
            Ok(webhook_addr),
            true,
        ) = (
            admin_addr,
            lease_duration,
            status_interval,
            cert_validity,
            ca_validity,
            check_interval,
            webhook_addr.transpose(),
            errors.is_empty(),
        )
        else {
            return Err(errors);
        };
        let lease_namespace = self
            .lease_namespace
            .clone()
            .or(pod_namespace)
            .or_else(|| self.namespaces.first().cloned())
            .unwrap_or_else(|| "default".to_owned());
        let webhook = match webhook_addr {
            None => None,
            Some(addr) => {
                let namespace =
                    self.webhook_secret_namespace.clone().unwrap_or_else(|| lease_namespace.clone());
                let service = &self.webhook_service;
                let mut hosts = vec![
                    format!("{service}.{namespace}.svc"),
                    format!("{service}.{namespace}.svc.cluster.local"),
                ];
                hosts.extend(self.webhook_hosts.iter().cloned());
                let optional = |name: &str| (!name.is_empty()).then(|| name.to_owned());
                Some(WebhookConfig {
                    addr,
                    certs: CertConfig {
                        secret_namespace: namespace,
                        secret_name: self.webhook_secret.clone(),
                        mutating_configuration: optional(&self.mutating_webhook_configuration),
                        validating_configuration: optional(&self.validating_webhook_configuration),
                        settings: CertSettings { hosts, cert_validity, ca_validity },
                        check_interval,
                    },
                })
            }
        };
        let identity = self.identity.clone().or(pod_name).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        Ok(Config {
            namespaces: self.namespaces.clone(),
            default: match self.default_profile {
                None => Fallback::Off,
                Some(DefaultProfile::Auto) => Fallback::auto(),
                Some(DefaultProfile::Linkerd) => {
                    Fallback::Profile(Box::new(default_spec(ProxyProfile::Linkerd)))
                }
                Some(DefaultProfile::Lameduck) => {
                    Fallback::Profile(Box::new(default_spec(ProxyProfile::Lameduck)))
                }
            },
            dry_run: self.dry_run,
            upgrade_crd: self.upgrade_crd,
            admin_addr,
            ephemeral_image: self.ephemeral_image.clone(),
            limits: Limits {
                allowed_images: std::iter::once(&self.ephemeral_image)
                    .chain(&self.allowed_ephemeral_images)
                    .fold(Vec::new(), |mut images, image| {
                        if !images.contains(image) {
                            images.push(image.clone());
                        }
                        images
                    }),
                allow_custom_exec_command: self.allow_custom_exec_command,
            },
            // Whatever the flag says: a chart value that overrides its list must not let the
            // operator act on the cluster's own components.
            exclude_namespaces: ALWAYS_EXCLUDED
                .iter()
                .map(|ns| (*ns).to_owned())
                .chain(self.exclude_namespaces.iter().cloned())
                .fold(Vec::new(), |mut all, ns| {
                    if !all.contains(&ns) {
                        all.push(ns);
                    }
                    all
                }),
            policy_review: self.policy_review,
            max_ephemeral_containers: self.max_ephemeral_containers,
            concurrency: self.concurrency,
            concurrency_per_namespace,
            lease: LeaseSettings {
                namespace: lease_namespace,
                name: self.lease_name.clone(),
                identity,
                duration_secs: lease_duration.as_secs().max(1),
            },
            status_interval,
            webhook,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("lameduck-operator").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_watch_everything_and_act() {
        let config = parse(&[]).validate(Some("op-0".into()), Some("lameduck".into())).unwrap();
        assert!(config.namespaces.is_empty() && !config.dry_run && config.default == Fallback::Off);
        assert_eq!(config.lease.namespace, "lameduck");
        assert_eq!(config.lease.identity, "op-0");
        assert_eq!(config.lease.duration_secs, 15);
        assert_eq!(config.exclude_namespaces, ["kube-system"], "kube-system is always left out");
        assert_eq!(config.ephemeral_image, images::PROXY);
        assert_eq!(config.limits.allowed_images, [images::PROXY]);
        assert!(!config.limits.allow_custom_exec_command);
        assert_eq!((config.max_ephemeral_containers, config.concurrency_per_namespace), (4, 4));
    }

    #[test]
    fn policy_limits_and_shares() {
        let config = parse(&[
            "--allowed-ephemeral-image",
            "a:1,b:2",
            "--allowed-ephemeral-image",
            "a:1",
            "--allow-custom-exec-command",
            "--exclude-namespace",
            "kube-system,lameduck",
            "--concurrency",
            "2",
        ])
        .validate(None, None)
        .unwrap();
        assert_eq!(config.limits.allowed_images, [images::PROXY, "a:1", "b:2"]);
        assert!(config.limits.allow_custom_exec_command);
        assert_eq!(config.exclude_namespaces, ["kube-system", "lameduck"]);
        assert_eq!(config.concurrency_per_namespace, 1, "a quarter of 2, at least 1");
        let errors = parse(&[
            "--allowed-ephemeral-image",
            "has space",
            "--exclude-namespace",
            "Bad",
            "--namespace",
            "jobs",
            "--exclude-namespace",
            "jobs",
            "--max-ephemeral-containers",
            "0",
            "--concurrency-per-namespace",
            "20",
        ])
        .validate(None, None)
        .unwrap_err()
        .join("\n");
        for flag in [
            "--allowed-ephemeral-image",
            "--exclude-namespace: \"Bad\"",
            "--exclude-namespace: \"jobs\"",
            "--max-ephemeral-containers",
            "--concurrency-per-namespace",
        ] {
            assert!(errors.contains(flag), "{flag} not named in\n{errors}");
        }
    }

    #[test]
    fn namespaces_profile_and_dry_run() {
        let cli =
            parse(&["--namespace", "a,b", "--namespace", "c", "--default-profile", "linkerd", "--dry-run"]);
        let config = cli.validate(None, None).unwrap();
        assert_eq!(config.namespaces, ["a", "b", "c"]);
        assert_eq!(config.lease.namespace, "a");
        assert!(config.dry_run);
        let Fallback::Profile(spec) = config.default else { panic!("a profile") };
        assert_eq!(spec.proxy.resolve().container_name, "linkerd-proxy");
    }

    #[test]
    fn every_bad_flag_is_named() {
        let cli = parse(&[
            "--admin-addr",
            "nowhere",
            "--lease-duration",
            "0s",
            "--status-interval",
            "soon",
            "--namespace",
            "Bad_NS",
            "--concurrency",
            "0",
        ]);
        let errors = cli.validate(None, None).unwrap_err().join("\n");
        for flag in ["--admin-addr", "--lease-duration", "--status-interval", "--namespace", "--concurrency"]
        {
            assert!(errors.contains(flag), "{flag} not named in\n{errors}");
        }
        assert!(Cli::try_parse_from(["lameduck-operator", "--default-profile", "istio"]).is_err());
    }

    #[test]
    fn the_webhook_is_off_unless_given_an_address_and_its_certificate_names_the_service() {
        assert!(parse(&[]).validate(None, Some("ld".into())).unwrap().webhook.is_none());
        let config = parse(&["--webhook-addr", "0.0.0.0:9443", "--webhook-host", "127.0.0.1,op.example"])
            .validate(None, Some("ld".into()))
            .unwrap();
        let webhook = config.webhook.unwrap();
        assert_eq!(webhook.addr.port(), 9443);
        assert_eq!(webhook.certs.secret_namespace, "ld");
        assert_eq!(
            webhook.certs.settings.hosts,
            ["lameduck-webhook.ld.svc", "lameduck-webhook.ld.svc.cluster.local", "127.0.0.1", "op.example"]
        );
        assert_eq!(webhook.certs.mutating_configuration.as_deref(), Some("lameduck"));
        let none = parse(&["--webhook-addr", "127.0.0.1:1", "--validating-webhook-configuration", ""])
            .validate(None, None)
            .unwrap();
        assert_eq!(none.webhook.unwrap().certs.validating_configuration, None);
    }

    #[test]
    fn bad_webhook_flags_are_named() {
        let cli = parse(&[
            "--webhook-addr",
            "here",
            "--webhook-host",
            "Not A Host",
            "--webhook-cert-validity",
            "100000h",
            "--webhook-cert-check-interval",
            "0s",
            "--webhook-service",
            "a.b",
        ]);
        let errors = cli.validate(None, None).unwrap_err().join("\n");
        for flag in [
            "--webhook-addr",
            "--webhook-host",
            "--webhook-cert-validity",
            "--webhook-cert-check-interval",
            "--webhook-service",
        ] {
            assert!(errors.contains(flag), "{flag} not named in\n{errors}");
        }
    }
}
