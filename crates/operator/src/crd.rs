//! Keeping the ShutdownPolicy CRD current across upgrades. Helm installs the files under a
//! chart's `crds/` once and never upgrades them, so a `helm upgrade` to a release that adds fields
//! would leave the API server pruning them. With `--upgrade-crd` (the chart's default), the
//! operator applies its own CRD at start by server-side apply, unless the installed one says it
//! comes from a newer release (a downgrade never strips fields a newer release's policies use).
//! The chart grants `get` and `patch` on that one CRD by name, and nothing else on CRDs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use lameduck_api::{build, names::annotations, policy::shutdown_policy_crd};

/// The field manager of the operator's applies.
const FIELD_MANAGER: &str = "lameduck-operator";

/// What to do about the installed CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No CRD: the chart or `lameduck crds | kubectl apply -f -` installs it (the operator may
    /// not create CRDs).
    Missing,
    /// Apply ours: the installed one is from this release or an older one (`from`: its version,
    /// `None` when it carries none, as CRDs from before versions were recorded).
    Apply { from: Option<String> },
    /// Leave it: it comes from a newer release.
    Newer { installed: String },
}

/// A release version as numbers (`0.2.10` is newer than `0.2.9`); pre-release and build suffixes
/// are ignored.
fn numbers(version: &str) -> Option<Vec<u64>> {
    let core = version.trim_start_matches('v').split(['-', '+']).next()?;
    core.split('.').map(|part| part.parse().ok()).collect()
}

/// Decides from the installed CRD, if any, and this binary's version.
pub fn plan(installed: Option<&CustomResourceDefinition>, ours: &str) -> Plan {
    let Some(installed) = installed else { return Plan::Missing };
    let version = installed.annotations().get(annotations::CRD_VERSION).cloned();
    match (version.as_deref().and_then(numbers), numbers(ours)) {
        (Some(theirs), Some(mine)) if theirs > mine => Plan::Newer { installed: version.unwrap_or_default() },
        _ => Plan::Apply { from: version },
    }
}

/// Applies this release's CRD when [`plan`] says so, and says what it did. Errors (no
/// permission, say) are the caller's to report; the operator runs on with the CRD it finds.
pub async fn upgrade(client: Client) -> Result<Plan, kube::Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let ours = shutdown_policy_crd();
    let name = ours.name_any();
    let installed = crds.get_opt(&name).await?;
    let plan = plan(installed.as_ref(), build::VERSION);
    if let Plan::Apply { .. } = plan {
        // Forced: the fields helm or kubectl set at install become the operator's.
        crds.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&ours)).await?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(version: Option<&str>) -> CustomResourceDefinition {
        let mut crd = shutdown_policy_crd();
        let annotations = crd.metadata.annotations.get_or_insert_with(Default::default);
        annotations.clear();
        if let Some(version) = version {
            annotations.insert(annotations::CRD_VERSION.to_owned(), version.to_owned());
        }
        crd
    }

    #[test]
    fn an_older_or_unversioned_crd_is_upgraded_and_a_newer_one_kept() {
        assert_eq!(plan(None, "0.2.0"), Plan::Missing);
        assert_eq!(plan(Some(&installed(None)), "0.2.0"), Plan::Apply { from: None });
        assert_eq!(
            plan(Some(&installed(Some("0.1.9"))), "0.2.0"),
            Plan::Apply { from: Some("0.1.9".into()) }
        );
        assert_eq!(
            plan(Some(&installed(Some("0.2.0"))), "0.2.0"),
            Plan::Apply { from: Some("0.2.0".into()) }
        );
        assert_eq!(
            plan(Some(&installed(Some("0.2.10"))), "0.2.9"),
            Plan::Newer { installed: "0.2.10".into() },
            "versions compare as numbers"
        );
        assert_eq!(
            plan(Some(&installed(Some("v1.0.0-rc.1"))), "0.9.0"),
            Plan::Newer { installed: "v1.0.0-rc.1".into() }
        );
        // A version that cannot be read is not trusted to be newer.
        assert_eq!(plan(Some(&installed(Some("main"))), "0.2.0"), Plan::Apply { from: Some("main".into()) });
    }
}
