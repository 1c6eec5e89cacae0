//! `lameduck version`: this CLI's version and, with `--cluster`, the installed operator's (the
//! chart's `app.kubernetes.io/version` label on its Deployment) and the CRD's (the
//! `lameduck.io/version` annotation `lameduck crds` writes). Fetching is a thin shell; the
//! report is rendered by pure functions.

use std::fmt::Write as _;

use k8s_openapi::{
    api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client, CustomResourceExt, ResourceExt, api::ListParams};
use lameduck_api::{
    ShutdownPolicy, build,
    names::{annotations, labels},
};
use serde::Serialize;

/// What a build is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Build {
    pub(crate) version: String,
    pub(crate) revision: String,
}

impl Build {
    /// This binary's.
    pub(crate) fn this() -> Self {
        Self { version: build::VERSION.to_owned(), revision: build::REVISION.to_owned() }
    }
}

/// An operator Deployment the chart installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Operator {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `None` when the Deployment carries no version label.
    pub(crate) version: Option<String>,
    pub(crate) ready_replicas: i32,
    pub(crate) replicas: i32,
}

/// The ShutdownPolicy CRD as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Crd {
    pub(crate) name: String,
    /// `None` when the CRD carries no version annotation (installed by hand from an older one).
    pub(crate) version: Option<String>,
}

/// What the cluster runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Installed {
    pub(crate) operators: Vec<Operator>,
    /// `None` when the CRD is not installed.
    pub(crate) crd: Option<Crd>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Versions {
    pub(crate) client: Build,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<Installed>,
}

/// The label selector of the chart's operator Deployments.
pub(crate) fn operator_selector() -> String {
    format!("{}={},{}={}", labels::COMPONENT, labels::OPERATOR_COMPONENT, labels::NAME, labels::LAMEDUCK)
}

/// Reads what the cluster runs: operator Deployments in every namespace, and the CRD.
pub(crate) async fn installed(client: Client) -> anyhow::Result<Installed> {
    use anyhow::Context as _;
    let deployments: Api<Deployment> = Api::all(client.clone());
    let list = deployments
        .list(&ListParams::default().labels(&operator_selector()))
        .await
        .context("cannot list Deployments in all namespaces")?;
    let operators = list
        .items
        .iter()
        .map(|d| Operator {
            namespace: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            version: d.labels().get(labels::VERSION).cloned(),
            ready_replicas: d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
            replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        })
        .collect();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let name = ShutdownPolicy::crd_name();
    let crd = crds
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read CustomResourceDefinition {name}"))?
        .map(|crd| Crd {
            name: name.to_owned(),
            version: crd.annotations().get(annotations::CRD_VERSION).cloned(),
        });
    Ok(Installed { operators, crd })
}

/// The report as people read it, a line per component, like `kubectl version`.
pub(crate) fn render_text(versions: &Versions) -> String {
    let mut out = String::new();
    let client = &versions.client;
    let _ = writeln!(out, "Client version: {} (revision {})", client.version, client.revision);
    let Some(installed) = &versions.cluster else { return out };
    if installed.operators.is_empty() {
        let _ = writeln!(out, "Operator version: not found (no Deployment labelled {})", operator_selector());
    }
    for op in &installed.operators {
        let _ = writeln!(
            out,
            "Operator version: {} ({}/{}, {}/{} ready)",
            op.version.as_deref().unwrap_or("unknown"),
            op.namespace,
            op.name,
            op.ready_replicas,
            op.replicas
        );
    }
    match &installed.crd {
        None => {
            let _ = writeln!(out, "CRD version: not installed ({})", ShutdownPolicy::crd_name());
        }
        Some(crd) => {
            let version = crd.version.as_deref().map_or_else(
                || format!("unknown (no {} annotation)", annotations::CRD_VERSION),
                str::to_owned,
            );
            let _ = writeln!(out, "CRD version: {version} ({})", crd.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> Build {
        Build { version: "0.2.0".into(), revision: "0123456789ab".into() }
    }

    #[test]
    fn the_client_alone_is_one_line() {
        let text = render_text(&Versions { client: build(), cluster: None });
        assert_eq!(text, "Client version: 0.2.0 (revision 0123456789ab)\n");
    }

    #[test]
    fn a_cluster_shows_each_operator_and_the_crd() {
        let installed = Installed {
            operators: vec![Operator {
                namespace: "lameduck-system".into(),
                name: "lameduck".into(),
                version: Some("0.2.0".into()),
                ready_replicas: 1,
                replicas: 2,
            }],
            crd: Some(Crd { name: "shutdownpolicies.lameduck.io".into(), version: None }),
        };
        let text = render_text(&Versions { client: build(), cluster: Some(installed) });
        assert_eq!(
            text,
            "Client version: 0.2.0 (revision 0123456789ab)\n\
             Operator version: 0.2.0 (lameduck-system/lameduck, 1/2 ready)\n\
             CRD version: unknown (no lameduck.io/version annotation) (shutdownpolicies.lameduck.io)\n"
        );
    }

    #[test]
    fn nothing_installed_says_so() {
        let installed = Installed { operators: vec![], crd: None };
        let text = render_text(&Versions { client: build(), cluster: Some(installed) });
        assert!(
            text.contains("Operator version: not found (no Deployment labelled app.kubernetes.io/component=operator,app.kubernetes.io/name=lameduck)"),
            "{text}"
        );
        assert!(text.contains("CRD version: not installed (shutdownpolicies.lameduck.io)"), "{text}");
    }

    #[test]
    fn json_carries_the_same() {
        let json = serde_json::to_value(Versions { client: build(), cluster: None }).unwrap();
        assert_eq!(json, serde_json::json!({"client": {"version": "0.2.0", "revision": "0123456789ab"}}));
    }
}
