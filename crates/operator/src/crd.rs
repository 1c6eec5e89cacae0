//! Keeping the ShutdownPolicy CRD current across upgrades. Helm installs the files under a
//! chart's `crds/` once and never upgrades them, so a `helm upgrade` to a release that adds fields
//! would leave the API server pruning them. With `--upgrade-crd` (the chart's default), the
//! operator applies its own CRD at start by server-side apply when the installed one comes from an
//! older release. The chart grants `get` and `patch` on that one CRD by name, and nothing else on
//! CRDs.
//!
//! The decision compares the installed CRD's `lameduck.io/version` annotation with this binary's
//! release version (`build::VERSION`, stamped at build from `LAMEDUCK_VERSION`, the chart's
//! `appVersion` in the images) by SemVer precedence, pre-releases before their release
//! (`1.0.0-rc.1` < `1.0.0`), build metadata ignored:
//!
//! | installed CRD | plan | applied |
//! |---|---|---|
//! | none | [`Plan::Missing`] | no: the operator may not create CRDs |
//! | no version annotation (from before versions were recorded) | [`Plan::Apply`] | yes |
//! | older | [`Plan::Apply`] | yes |
//! | the same | [`Plan::Current`] | no: nothing to do, and a rollback to a rebuilt release changes nothing |
//! | newer | [`Plan::Newer`] | no: never a downgrade, which would strip fields newer policies use |
//! | not a semantic version | [`Plan::Unreadable`] | no: it is not trusted to be older either |
//!
//! The apply is conditional on the `resourceVersion` the decision read (server-side apply with
//! `metadata.resourceVersion` set), so a CRD changed between the read and the apply (another
//! replica, a `kubectl apply`, a newer operator) makes the API server answer 409 Conflict instead
//! of being overwritten. Then the CRD is read and the decision made again, up to [`ATTEMPTS`]
//! times; it is never applied blindly.

use std::cmp::Ordering;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use lameduck_api::{build, names::annotations, policy::shutdown_policy_crd};
use semver::Version;

/// The field manager of the operator's applies.
const FIELD_MANAGER: &str = "lameduck-operator";

/// Reads and decisions made at most, when each apply loses to a change made since its read.
pub const ATTEMPTS: u32 = 3;

/// What to do about the installed CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No CRD: the chart or `lameduck crds | kubectl apply -f -` installs it (the operator may
    /// not create CRDs).
    Missing,
    /// Apply ours: the installed one is from an older release (`from`: its version, `None` when
    /// it carries none, as CRDs from before versions were recorded).
    Apply { from: Option<String> },
    /// Leave it: it is this release's already.
    Current,
    /// Leave it: it comes from a newer release.
    Newer { installed: String },
    /// Leave it: its version annotation is not a semantic version, so it cannot be told older.
    Unreadable { installed: String },
}

/// Why the CRD could not be upgraded. The operator runs on with the CRD it finds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "this build's version (LAMEDUCK_VERSION at build time) {version:?} is not a semantic version: {source}"
    )]
    OurVersion { version: &'static str, source: semver::Error },
    #[error(
        "the installed CRD {name} has no metadata.resourceVersion to make the apply conditional on; not applied"
    )]
    NoResourceVersion { name: String },
    #[error(
        "the CRD {name} changed between each read and the apply that followed it, {attempts} times; not applied"
    )]
    Contended { name: String, attempts: u32 },
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Decides from the installed CRD, if any, and this binary's version.
pub fn plan(installed: Option<&CustomResourceDefinition>, ours: &Version) -> Plan {
    let Some(installed) = installed else { return Plan::Missing };
    let Some(version) = installed.annotations().get(annotations::CRD_VERSION) else {
        return Plan::Apply { from: None };
    };
    let Ok(theirs) = Version::parse(version) else {
        return Plan::Unreadable { installed: version.clone() };
    };
    // Precedence, not `Ord`: `Ord` also orders build metadata, which SemVer says to ignore.
    match theirs.cmp_precedence(ours) {
        Ordering::Less => Plan::Apply { from: Some(version.clone()) },
        Ordering::Equal => Plan::Current,
        Ordering::Greater => Plan::Newer { installed: version.clone() },
    }
}

/// Applies this release's CRD when [`plan`] says so, conditional on the version it read, and says
/// what it did. Errors (no permission, say) are the caller's to report.
pub async fn upgrade(client: Client) -> Result<Plan, Error> {
    let ours_version = Version::parse(build::VERSION)
        .map_err(|source| Error::OurVersion { version: build::VERSION, source })?;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let ours = shutdown_policy_crd();
    let name = ours.name_any();
    for attempt in 1..=ATTEMPTS {
        let installed = crds.get_opt(&name).await?;
        let plan = plan(installed.as_ref(), &ours_version);
        if !matches!(plan, Plan::Apply { .. }) {
            return Ok(plan);
        }
        let Some(read) = installed.and_then(|crd| crd.metadata.resource_version) else {
            return Err(Error::NoResourceVersion { name });
        };
        let mut applied = ours.clone();
        // A precondition: the API server refuses (409) if the CRD is no longer the one decided on.
        applied.metadata.resource_version = Some(read.clone());
        // Forced: the fields helm or kubectl set at install become the operator's.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match crds.patch(&name, &params, &Patch::Apply(&applied)).await {
            Ok(_) => return Ok(plan),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(crd = %name, resource_version = %read, attempt,
                    "the CRD changed since it was read; reading it again before deciding again");
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Contended { name, attempts: ATTEMPTS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: &str) -> Version {
        Version::parse(version).unwrap()
    }

    fn installed(version: Option<&str>) -> CustomResourceDefinition {
        let mut crd = shutdown_policy_crd();
        let annotations = crd.metadata.annotations.get_or_insert_with(Default::default);
        annotations.clear();
        if let Some(version) = version {
            annotations.insert(annotations::CRD_VERSION.to_owned(), version.to_owned());
        }
        crd
    }

    fn plan_for(version: Option<&str>, ours: &str) -> Plan {
        plan(Some(&installed(version)), &v(ours))
    }

    #[test]
    fn no_crd_is_missing() {
        assert_eq!(plan(None, &v("0.2.0")), Plan::Missing);
    }

    #[test]
    fn an_unversioned_crd_is_upgraded() {
        assert_eq!(plan_for(None, "0.2.0"), Plan::Apply { from: None });
    }

    #[test]
    fn an_older_crd_is_upgraded() {
        assert_eq!(plan_for(Some("0.1.9"), "0.2.0"), Plan::Apply { from: Some("0.1.9".into()) });
        assert_eq!(
            plan_for(Some("0.2.9"), "0.2.10"),
            Plan::Apply { from: Some("0.2.9".into()) },
            "versions compare as numbers"
        );
    }

    #[test]
    fn a_crd_of_this_release_is_not_applied() {
        assert_eq!(plan_for(Some("0.2.0"), "0.2.0"), Plan::Current);
        assert_eq!(plan_for(Some("1.0.0-rc.1"), "1.0.0-rc.1"), Plan::Current);
        assert_eq!(plan_for(Some("0.2.0+build.7"), "0.2.0"), Plan::Current, "build metadata is ignored");
    }

    #[test]
    fn a_newer_crd_is_left_alone() {
        assert_eq!(plan_for(Some("0.2.10"), "0.2.9"), Plan::Newer { installed: "0.2.10".into() });
        assert_eq!(plan_for(Some("1.0.0-rc.1"), "0.9.0"), Plan::Newer { installed: "1.0.0-rc.1".into() });
    }

    #[test]
    fn a_release_candidate_is_older_than_its_release() {
        // The release upgrades its own candidate's CRD; the candidate leaves the release's alone.
        assert_eq!(plan_for(Some("1.0.0-rc.1"), "1.0.0"), Plan::Apply { from: Some("1.0.0-rc.1".into()) });
        assert_eq!(plan_for(Some("1.0.0"), "1.0.0-rc.1"), Plan::Newer { installed: "1.0.0".into() });
        assert_eq!(
            plan_for(Some("1.0.0-rc.1"), "1.0.0-rc.2"),
            Plan::Apply { from: Some("1.0.0-rc.1".into()) }
        );
    }

    #[test]
    fn an_unreadable_version_is_not_applied() {
        for version in ["main", "", "v0.1.0", "0.1"] {
            assert_eq!(plan_for(Some(version), "0.2.0"), Plan::Unreadable { installed: version.into() });
        }
    }

    #[test]
    fn this_build_has_a_semantic_version() {
        Version::parse(build::VERSION).unwrap();
    }

    /// The chart's `crds/` carry the workspace's version: not newer than the chart's operator
    /// (its `appVersion`), or a later release's operator could take that CRD for its own.
    #[test]
    fn the_charts_crds_are_not_newer_than_its_operator() {
        let chart = include_str!("../../../deploy/lameduck/Chart.yaml");
        let app_version = chart
            .lines()
            .find_map(|line| line.strip_prefix("appVersion:"))
            .map(|value| value.trim().trim_matches('"'))
            .expect("Chart.yaml has an appVersion");
        assert_ne!(
            v(build::PACKAGE_VERSION).cmp_precedence(&v(app_version)),
            Ordering::Greater,
            "the workspace's version {} (the chart's crds/) is newer than the chart's appVersion {app_version}",
            build::PACKAGE_VERSION
        );
    }

    mod conditional {
        use std::time::Duration;

        use http::{Method, Request, Response};
        use kube::client::Body;
        use serde_json::json;
        use tower_test::mock::Handle;

        use super::*;

        type ApiServer = Handle<Request<Body>, Response<Body>>;

        const PATH: &str =
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/shutdownpolicies.lameduck.io";

        fn client() -> (Client, ApiServer) {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            (Client::new(service, "default"), handle)
        }

        fn ok(body: &impl serde::Serialize) -> Response<Body> {
            Response::builder().status(200).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
        }

        fn conflict() -> Response<Body> {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                "reason": "Conflict", "message": "the object has been modified"});
            Response::builder().status(409).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
        }

        fn at(version: Option<&str>, resource_version: &str) -> CustomResourceDefinition {
            let mut crd = installed(version);
            crd.metadata.resource_version = Some(resource_version.to_owned());
            crd
        }

        /// Answers the read with `crd`.
        async fn read(server: &mut ApiServer, crd: &CustomResourceDefinition) {
            let (request, respond) = server.next_request().await.expect("a read");
            assert_eq!((request.method(), request.uri().path()), (&Method::GET, PATH));
            respond.send_response(ok(crd));
        }

        /// Takes the apply, checks it is conditional on `resource_version`, and answers `response`.
        async fn apply(server: &mut ApiServer, resource_version: &str, response: Response<Body>) {
            let (request, respond) = server.next_request().await.expect("an apply");
            assert_eq!((request.method(), request.uri().path()), (&Method::PATCH, PATH));
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert!(
                query.contains("fieldManager=lameduck-operator") && query.contains("force=true"),
                "{query}"
            );
            let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(patch["metadata"]["resourceVersion"], resource_version);
            assert_eq!(patch["metadata"]["annotations"][annotations::CRD_VERSION], build::VERSION);
            respond.send_response(response);
        }

        async fn no_more(server: &mut ApiServer) {
            if let Ok(Some((request, _))) =
                tokio::time::timeout(Duration::from_millis(200), server.next_request()).await
            {
                panic!("an unexpected call: {} {}", request.method(), request.uri());
            }
        }

        #[tokio::test]
        async fn the_apply_is_conditional_on_the_version_read() {
            let (client, mut server) = client();
            let api = tokio::spawn(async move {
                let old = at(None, "7");
                read(&mut server, &old).await;
                apply(&mut server, "7", ok(&at(Some(build::VERSION), "8"))).await;
                no_more(&mut server).await;
            });
            assert_eq!(upgrade(client).await.unwrap(), Plan::Apply { from: None });
            api.await.unwrap();
        }

        #[tokio::test]
        async fn a_conflict_reads_and_decides_again() {
            let (client, mut server) = client();
            let api = tokio::spawn(async move {
                read(&mut server, &at(Some("0.0.1"), "7")).await;
                apply(&mut server, "7", conflict()).await;
                // Meanwhile a newer release's operator applied its CRD: it is left alone.
                read(&mut server, &at(Some("999.0.0"), "9")).await;
                no_more(&mut server).await;
            });
            assert_eq!(upgrade(client).await.unwrap(), Plan::Newer { installed: "999.0.0".into() });
            api.await.unwrap();
        }

        #[tokio::test]
        async fn conflicts_without_end_give_up_after_the_last_attempt() {
            let (client, mut server) = client();
            let api = tokio::spawn(async move {
                for n in 0..ATTEMPTS {
                    let resource_version = (10 + n).to_string();
                    read(&mut server, &at(Some("0.0.1"), &resource_version)).await;
                    apply(&mut server, &resource_version, conflict()).await;
                }
                no_more(&mut server).await;
            });
            let error = upgrade(client).await.unwrap_err();
            assert!(matches!(error, Error::Contended { attempts: ATTEMPTS, .. }), "{error}");
            api.await.unwrap();
        }

        #[tokio::test]
        async fn a_crd_without_a_resource_version_is_not_applied() {
            let (client, mut server) = client();
            let api = tokio::spawn(async move {
                read(&mut server, &installed(None)).await;
                no_more(&mut server).await;
            });
            let error = upgrade(client).await.unwrap_err();
            assert!(matches!(error, Error::NoResourceVersion { .. }), "{error}");
            api.await.unwrap();
        }
    }
}
