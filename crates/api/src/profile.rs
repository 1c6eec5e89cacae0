//! Turning a policy's `proxy` section into the concrete facts the operator and webhook act on.

use crate::{
    ShutdownMethod, ShutdownPolicySpec,
    names::{containers, paths, ports},
    policy::{ProxyProfile, ProxySpec},
};

/// Where the proxy lives in a pod and how to shut it down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedProxy {
    /// The profile the facts came from.
    pub profile: ProxyProfile,
    /// Name of the proxy container.
    pub container_name: String,
    /// Port of its admin server.
    pub admin_port: u16,
    /// Path that shuts it down when POSTed from loopback.
    pub shutdown_path: String,
    /// Command the `Exec` method runs in the proxy container; `None` when there is none.
    pub exec_command: Option<Vec<String>>,
}

impl ProxyProfile {
    /// The container name this profile looks for.
    pub const fn container_name(self) -> Option<&'static str> {
        match self {
            Self::Lameduck => Some(containers::LAMEDUCK_PROXY),
            Self::Linkerd => Some(containers::LINKERD_PROXY),
            Self::Istio => Some(containers::ISTIO_PROXY),
            Self::CloudSqlProxy => Some(containers::CLOUD_SQL_PROXY),
            Self::Custom => None,
        }
    }

    /// The admin port this profile uses.
    pub const fn admin_port(self) -> u16 {
        match self {
            Self::Istio => ports::ISTIO_STATUS,
            Self::CloudSqlProxy => ports::CLOUD_SQL_ADMIN,
            Self::Lameduck | Self::Linkerd | Self::Custom => ports::ADMIN,
        }
    }

    /// The shutdown path this profile uses.
    pub const fn shutdown_path(self) -> &'static str {
        match self {
            Self::Istio | Self::CloudSqlProxy => paths::QUITQUITQUIT,
            Self::Lameduck | Self::Linkerd | Self::Custom => paths::SHUTDOWN,
        }
    }

    /// The command that shuts this proxy down from inside its own container.
    pub fn exec_command(self, admin_port: u16) -> Option<Vec<String>> {
        let argv: Vec<String> = match self {
            Self::Lameduck => vec![
                containers::LAMEDUCK_PROXY.into(),
                "shutdown".into(),
                "--admin-addr".into(),
                format!("127.0.0.1:{admin_port}"),
            ],
            // Linkerd's image is distroless: linkerd-await and sleep are the only programs in it.
            // linkerd-await runs `sleep 0`, then POSTs /shutdown to the given port.
            Self::Linkerd => vec![
                "/usr/lib/linkerd/linkerd-await".into(),
                "--port".into(),
                admin_port.to_string(),
                "--shutdown".into(),
                "--".into(),
                "/bin/sleep".into(),
                "0".into(),
            ],
            Self::Istio => vec!["pilot-agent".into(), "request".into(), "POST".into(), "quitquitquit".into()],
            // cloud-sql-proxy's image is distroless and has no command that stops it.
            Self::CloudSqlProxy | Self::Custom => return None,
        };
        Some(argv)
    }
}

impl ProxySpec {
    /// The profile's facts with this spec's overrides applied.
    ///
    /// A `Custom` profile without `containerName` is refused by the schema; should one reach
    /// here anyway it resolves to lameduck's container name rather than matching nothing silently.
    pub fn resolve(&self) -> ResolvedProxy {
        let admin_port = self
            .admin_port
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port != 0)
            .unwrap_or_else(|| self.profile.admin_port());
        ResolvedProxy {
            profile: self.profile,
            container_name: self
                .container_name
                .clone()
                .or_else(|| self.profile.container_name().map(str::to_owned))
                .unwrap_or_else(|| containers::LAMEDUCK_PROXY.to_owned()),
            admin_port,
            shutdown_path: self
                .shutdown_path
                .clone()
                .unwrap_or_else(|| self.profile.shutdown_path().to_owned()),
            exec_command: self.exec_command.clone().or_else(|| self.profile.exec_command(admin_port)),
        }
    }
}

/// One sidecar the operator stops: where it is, how to stop it, and the field it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    pub proxy: ResolvedProxy,
    /// Its methods, in order: its own, else `completion.methods`.
    pub methods: Vec<ShutdownMethod>,
    /// `spec.proxy` or `spec.sidecars[i]`, for messages.
    pub field: String,
}

impl ShutdownPolicySpec {
    /// The sidecars completion stops, in order: `sidecars`, or `proxy` alone.
    pub fn sidecars(&self) -> Vec<Sidecar> {
        if self.sidecars.is_empty() {
            let proxy = self.proxy.resolve();
            return vec![Sidecar {
                proxy,
                methods: self.completion.methods.clone(),
                field: "spec.proxy".into(),
            }];
        }
        self.sidecars
            .iter()
            .enumerate()
            .map(|(i, s)| Sidecar {
                proxy: s.proxy.resolve(),
                methods: s.methods.clone().unwrap_or_else(|| self.completion.methods.clone()),
                field: format!("spec.sidecars[{i}]"),
            })
            .collect()
    }

    /// The proxy the drain settings apply to: the mesh proxy among `sidecars`, else `proxy`.
    pub fn mesh_proxy(&self) -> &ProxySpec {
        self.sidecars.iter().map(|s| &s.proxy).find(|p| p.profile.is_mesh()).unwrap_or(&self.proxy)
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn profiles_resolve_to_their_proxies() {
        let linkerd = ProxySpec::default().resolve();
        assert_eq!(linkerd.container_name, "linkerd-proxy");
        assert_eq!(linkerd.admin_port, 4191);
        assert_eq!(linkerd.shutdown_path, "/shutdown");
        assert_eq!(
            linkerd.exec_command.unwrap(),
            ["/usr/lib/linkerd/linkerd-await", "--port", "4191", "--shutdown", "--", "/bin/sleep", "0"]
        );

        let lameduck = ProxySpec { profile: ProxyProfile::Lameduck, ..Default::default() }.resolve();
        assert_eq!(lameduck.container_name, "lameduck-proxy");
        assert_eq!(
            lameduck.exec_command.unwrap(),
            ["lameduck-proxy", "shutdown", "--admin-addr", "127.0.0.1:4191"]
        );

        let istio = ProxySpec { profile: ProxyProfile::Istio, ..Default::default() }.resolve();
        assert_eq!((istio.container_name.as_str(), istio.admin_port), ("istio-proxy", 15020));
        assert_eq!(istio.shutdown_path, "/quitquitquit");
    }

    #[test]
    fn overrides_win_and_reach_the_exec_command() {
        let spec = ProxySpec {
            profile: ProxyProfile::Lameduck,
            container_name: Some("sidecar".into()),
            admin_port: Some(9901),
            shutdown_path: Some("/quit".into()),
            exec_command: None,
        };
        let resolved = spec.resolve();
        assert_eq!(resolved.container_name, "sidecar");
        assert_eq!(resolved.admin_port, 9901);
        assert_eq!(resolved.shutdown_path, "/quit");
        assert_eq!(resolved.exec_command.unwrap()[3], "127.0.0.1:9901");
    }

    #[test]
    fn custom_profile_has_no_exec_command_unless_given() {
        let spec = ProxySpec {
            profile: ProxyProfile::Custom,
            container_name: Some("envoy".into()),
            ..Default::default()
        };
        assert_eq!(spec.resolve().exec_command, None);
        let with_cmd = ProxySpec { exec_command: Some(vec!["/quit".into()]), ..spec };
        assert_eq!(with_cmd.resolve().exec_command, Some(vec!["/quit".to_owned()]));
    }

    #[test]
    fn out_of_range_port_falls_back_to_the_profile() {
        let spec = ProxySpec { admin_port: Some(70_000), ..Default::default() };
        assert_eq!(spec.resolve().admin_port, 4191);
    }

    #[test]
    fn sidecars_default_to_the_proxy_alone_and_the_mesh_proxy_is_found_among_them() {
        let shorthand = ShutdownPolicySpec::default();
        let only = shorthand.sidecars();
        assert_eq!((only.len(), only[0].proxy.container_name.as_str()), (1, "linkerd-proxy"));
        assert_eq!((only[0].field.as_str(), only[0].methods.len()), ("spec.proxy", 4));

        let spec: ShutdownPolicySpec = serde_json::from_value(serde_json::json!({
            "completion": {"methods": ["PortForward"]},
            "sidecars": [
                {"profile": "Custom", "containerName": "log-agent", "methods": ["Signal"]},
                {"profile": "CloudSqlProxy"},
                {"profile": "Lameduck"},
            ],
        }))
        .unwrap();
        let sidecars = spec.sidecars();
        let names: Vec<&str> = sidecars.iter().map(|s| s.proxy.container_name.as_str()).collect();
        assert_eq!(names, ["log-agent", "cloud-sql-proxy", "lameduck-proxy"]);
        assert_eq!(sidecars[0].methods, [ShutdownMethod::Signal]);
        assert_eq!(sidecars[1].methods, [ShutdownMethod::PortForward], "completion.methods by default");
        assert_eq!(
            (sidecars[1].proxy.admin_port, sidecars[1].proxy.shutdown_path.as_str()),
            (9091, "/quitquitquit")
        );
        assert_eq!(sidecars[2].field, "spec.sidecars[2]");
        assert_eq!(spec.mesh_proxy().profile, ProxyProfile::Lameduck);
    }

    #[test]
    fn sidecar_names_in_the_crds_rules_match_the_profiles() {
        let schema = serde_json::to_string(&crate::ShutdownPolicy::crd()).unwrap();
        for profile in ProxyProfile::ALL {
            let name = profile.container_name().unwrap_or("");
            let entry = format!("'{}': '{name}'", profile.as_str());
            assert!(schema.contains(&entry), "the uniqueness rule maps {entry}");
        }
    }
}
