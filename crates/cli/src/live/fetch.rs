//! The thin shell of `lameduck check --cluster`: reads the [`Facts`] with a kube client and
//! decides nothing. What to ask once the operator's Deployment is known (its permissions, where
//! to send the probe pod) comes from `plan`; each answer, or the API server's refusal, is kept.
//!
//! Nothing here writes: the probe pod is created with `dryRun`, and SubjectAccessReviews are
//! questions the API server answers without storing them.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        apps::v1::Deployment,
        authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
        coordination::v1::Lease,
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::LabelSelector,
    jiff::{Timestamp, fmt::rfc2822},
};
use kube::{
    Api, Client, CustomResourceExt, Resource, ResourceExt,
    api::{GetParams, ListParams, PostParams},
    client::Body,
};
use lameduck_api::{
    ShutdownPolicy,
    names::{accounts, annotations, labels, webhook as webhook_names},
};
use serde::de::DeserializeOwned;

use super::{
    facts::{
        self, Admission, Cluster, Crd, Facts, Fetched, Need, NodeVersion, Operator, Probe, Scope, ServiceRef,
        ServiceState, Settings, Webhook, WebhookConfiguration, WebhookEntry, WebhookSettings, Workloads,
    },
    plan,
};
use crate::{cluster::ClusterArgs, version::operator_selector};

/// The field manager of the dry-run create, as the API server records who asked.
const FIELD_MANAGER: &str = "lameduck-check";
/// Objects per page of a list, so a large cluster is read in bounded answers.
const PAGE: u32 = 500;
/// SubjectAccessReviews in flight at once.
const REVIEWS_AT_ONCE: usize = 16;

/// The API server's own words for a refusal, without kube's wrapping.
fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Reads every fact; `operator_namespace` limits the operators to one namespace.
pub(crate) async fn facts(access: &ClusterArgs, operator_namespace: Option<&str>) -> Facts {
    let client = match access.client().await {
        Ok(client) => client,
        Err(err) => return Facts { api: Err(format!("{err:#}")), cluster: None },
    };
    match client.apiserver_version().await {
        Ok(info) => {
            Facts { api: Ok(info.git_version), cluster: Some(cluster(&client, operator_namespace).await) }
        }
        Err(err) => Facts { api: Err(message(&err)), cluster: None },
    }
}

async fn cluster(client: &Client, operator_namespace: Option<&str>) -> Cluster {
    let nodes = list_all(&Api::<Node>::all(client.clone()), &ListParams::default()).await.map(|nodes| {
        nodes
            .iter()
            .map(|node| NodeVersion {
                name: node.name_any(),
                kubelet: node
                    .status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|info| info.kubelet_version.clone())
                    .unwrap_or_default(),
            })
            .collect()
    });
    let crd_name = ShutdownPolicy::crd_name();
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(crd_name)
        .await
        .map_err(|e| message(&e))
        .map(|crd| {
            crd.map(|crd| Crd {
                name: crd_name.to_owned(),
                version: crd.annotations().get(annotations::CRD_VERSION).cloned(),
            })
        });
    let deployments: Api<Deployment> = match operator_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let mut operators: Fetched<Vec<Operator>> =
        list_all(&deployments, &ListParams::default().labels(&operator_selector()))
            .await
            .map(|list| list.iter().map(Operator::of_deployment).collect());
    // Where the operators act; everywhere when none was found, so that the workload checks still
    // say what would need one.
    let scope = match &operators {
        Ok(found) => {
            found.iter().map(|o| o.settings.scope()).reduce(Scope::union).unwrap_or_else(Scope::everywhere)
        }
        Err(_) => Scope::everywhere(),
    };
    // Without the CRD there are no policies, which is the CRD check's finding, not this one's.
    let policies = match &crd {
        Ok(None) => Ok(Vec::new()),
        _ => list_in::<ShutdownPolicy>(client, &scope).await,
    };
    let workloads = workloads(client, &scope).await;
    if let Ok(found) = &mut operators {
        let namespaces = if found.iter().any(|o| o.settings.webhook.is_some()) {
            list_all(&Api::<Namespace>::all(client.clone()), &ListParams::default())
                .await
                .map(|list| list.iter().map(|ns| (ns.name_any(), ns.labels().clone())).collect::<Vec<_>>())
        } else {
            Ok(Vec::new())
        };
        for op in found.iter_mut() {
            op.lease = lease(client, &op.settings).await;
            if let Some(settings) = &op.settings.webhook {
                op.webhook =
                    Some(webhook(client, settings, &op.settings.scope(), &policies, &namespaces).await);
            }
            op.access = access(client, &op.namespace, &op.service_account, plan::needs(&op.settings)).await;
        }
    }
    Cluster {
        nodes,
        crd,
        operator_namespace: operator_namespace.map(str::to_owned),
        operators,
        scope,
        policies,
        workloads,
    }
}

/// Every object `api` lists, page by page.
async fn list_all<K>(api: &Api<K>, params: &ListParams) -> Fetched<Vec<K>>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut out = Vec::new();
    let mut params = params.clone().limit(PAGE);
    loop {
        let page = api.list(&params).await.map_err(|e| message(&e))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// Every object of kind `K` in `scope`: one cluster-wide list, or one list per namespace.
async fn list_in<K>(client: &Client, scope: &Scope) -> Fetched<Vec<K>>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    match scope {
        Scope::All { except } => {
            let all = list_all(&Api::<K>::all(client.clone()), &ListParams::default()).await?;
            Ok(all
                .into_iter()
                .filter(|o| o.meta().namespace.as_deref().is_none_or(|ns| !except.contains(ns)))
                .collect())
        }
        Scope::Namespaces(namespaces) => {
            let mut out = Vec::new();
            for namespace in namespaces {
                let api = Api::<K>::namespaced(client.clone(), namespace);
                out.extend(
                    list_all(&api, &ListParams::default())
                        .await
                        .map_err(|e| format!("in namespace {namespace}: {e}"))?,
                );
            }
            Ok(out)
        }
    }
}

async fn workloads(client: &Client, scope: &Scope) -> Fetched<Workloads> {
    let (deployments, stateful_sets, daemon_sets, replica_sets, jobs, cron_jobs, pods) = tokio::join!(
        list_in(client, scope),
        list_in(client, scope),
        list_in(client, scope),
        list_in(client, scope),
        list_in(client, scope),
        list_in(client, scope),
        list_in(client, scope),
    );
    Ok(Workloads {
        deployments: deployments?,
        stateful_sets: stateful_sets?,
        daemon_sets: daemon_sets?,
        replica_sets: replica_sets?,
        jobs: jobs?,
        cron_jobs: cron_jobs?,
        pods: pods?,
    })
}

/// An HTTP `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn http_date(text: &str) -> Option<Timestamp> {
    static PARSER: rfc2822::DateTimeParser = rfc2822::DateTimeParser::new();
    PARSER.parse_timestamp(text).ok()
}

/// The operator's Lease, read with a raw GET so that the answer's `Date` (the API server's clock)
/// comes with it: a renewal is judged by the clock that stamped it, not by this machine's.
async fn lease(client: &Client, settings: &Settings) -> Fetched<Option<facts::Lease>> {
    let url = Lease::url_path(&(), Some(&settings.lease_namespace));
    let request = kube::core::Request::new(url)
        .get(&settings.lease_name, &GetParams::default())
        .map_err(|e| e.to_string())?;
    let response = client.send(request.map(Body::from)).await.map_err(|e| message(&e))?;
    let status = response.status().as_u16();
    let read_at = response
        .headers()
        .get("date")
        .and_then(|value| value.to_str().ok())
        .and_then(http_date)
        .unwrap_or_else(Timestamp::now);
    let body = response.into_body().collect_bytes().await.map_err(|e| message(&e))?;
    if status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        let refusal: Option<kube::core::Status> = serde_json::from_slice(&body).ok();
        return Err(refusal
            .map(|s| s.message)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("HTTP {status}")));
    }
    let lease: Lease = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let spec = lease.spec.unwrap_or_default();
    Ok(Some(facts::Lease {
        namespace: settings.lease_namespace.clone(),
        name: settings.lease_name.clone(),
        holder: spec.holder_identity,
        renewed: spec.renew_time.map(|t| t.0),
        duration_seconds: spec.lease_duration_seconds,
        read_at,
    }))
}

fn entry(
    name: &str,
    config: &WebhookClientConfig,
    failure_policy: Option<&String>,
    namespace_selector: Option<&LabelSelector>,
    object_selector: Option<&LabelSelector>,
) -> WebhookEntry {
    WebhookEntry {
        name: name.to_owned(),
        has_ca_bundle: config.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty()),
        service: config
            .service
            .as_ref()
            .map(|s| ServiceRef { namespace: s.namespace.clone(), name: s.name.clone() }),
        // Kubernetes' default.
        failure_policy: failure_policy.cloned().unwrap_or_else(|| "Fail".to_owned()),
        namespace_selector: namespace_selector.cloned().unwrap_or_default(),
        object_selector: object_selector.cloned().unwrap_or_default(),
    }
}

/// A webhook configuration by name (empty: the operator names none), with its webhooks read by
/// `entries`.
async fn configuration<K>(
    client: &Client,
    name: &str,
    entries: impl Fn(&K) -> Vec<WebhookEntry>,
) -> Fetched<Option<WebhookConfiguration>>
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    if name.is_empty() {
        return Ok(None);
    }
    let found = Api::<K>::all(client.clone()).get_opt(name).await.map_err(|e| message(&e))?;
    Ok(found.map(|c| WebhookConfiguration { name: c.name_any(), webhooks: entries(&c) }))
}

async fn webhook(
    client: &Client,
    settings: &WebhookSettings,
    scope: &Scope,
    policies: &Fetched<Vec<ShutdownPolicy>>,
    namespaces: &Fetched<Vec<(String, BTreeMap<String, String>)>>,
) -> Webhook {
    // The two kinds hold webhooks of two types with the same fields.
    macro_rules! entries {
        () => {
            |c| {
                c.webhooks
                    .iter()
                    .flatten()
                    .map(|w| {
                        entry(
                            &w.name,
                            &w.client_config,
                            w.failure_policy.as_ref(),
                            w.namespace_selector.as_ref(),
                            w.object_selector.as_ref(),
                        )
                    })
                    .collect()
            }
        };
    }
    let mutating =
        configuration::<MutatingWebhookConfiguration>(client, &settings.mutating, entries!()).await;
    let validating =
        configuration::<ValidatingWebhookConfiguration>(client, &settings.validating, entries!()).await;
    // The Service the operator's flags name, and any other the configurations point to.
    let mut refs = BTreeSet::from([ServiceRef {
        namespace: settings.namespace.clone(),
        name: settings.service.clone(),
    }]);
    for configuration in [&mutating, &validating].into_iter().flatten().flatten() {
        refs.extend(configuration.webhooks.iter().filter_map(|w| w.service.clone()));
    }
    let mut services = Vec::new();
    for service in refs {
        let exists = Api::<Service>::namespaced(client.clone(), &service.namespace)
            .get_opt(&service.name)
            .await
            .map(|s| s.is_some())
            .map_err(|e| message(&e));
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), &service.namespace);
        let selector = format!("{}={}", labels::ENDPOINT_SLICE_SERVICE, service.name);
        let ready_endpoints =
            list_all(&slices, &ListParams::default().labels(&selector)).await.map(|slices| {
                slices
                    .iter()
                    .flat_map(|s| &s.endpoints)
                    // Unset means ready, as the EndpointSlice API says.
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                    .count()
            });
        services.push(ServiceState { service, exists, ready_endpoints });
    }
    let probe = match (&mutating, policies, namespaces) {
        (Err(_), _, _) => Probe::NotSent("the MutatingWebhookConfiguration cannot be read".to_owned()),
        (Ok(None), _, _) => {
            Probe::NotSent("there is no MutatingWebhookConfiguration to send a pod through".to_owned())
        }
        (_, Err(err), _) => Probe::NotSent(format!("ShutdownPolicies cannot be listed: {err}")),
        (_, _, Err(err)) => Probe::NotSent(format!("namespaces cannot be listed: {err}")),
        (Ok(Some(configuration)), Ok(policies), Ok(namespaces)) => {
            let chosen = configuration
                .webhooks
                .iter()
                .find(|w| w.name == webhook_names::MUTATING_WEBHOOK)
                .or(configuration.webhooks.first());
            match chosen.map(|w| plan::probe(w, namespaces, scope, policies)) {
                None => Probe::NotSent("the MutatingWebhookConfiguration has no webhooks".to_owned()),
                Some(Err(why)) => Probe::NotSent(why),
                Some(Ok(plan)) => {
                    let outcome = dry_run(client, &plan.namespace, &plan.pod).await;
                    Probe::Sent { plan: Box::new(plan), outcome }
                }
            }
        }
    };
    Webhook { mutating, validating, services, probe }
}

/// Creates `pod` with `dryRun`: it goes through admission, webhooks included, and is not stored.
async fn dry_run(client: &Client, namespace: &str, pod: &Pod) -> Fetched<Admission> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = PostParams { dry_run: true, field_manager: Some(FIELD_MANAGER.to_owned()) };
    match pods.create(&params, pod).await {
        Ok(admitted) => {
            Ok(Admission::Admitted { policy: admitted.annotations().get(annotations::POLICY).cloned() })
        }
        Err(kube::Error::Api(status)) => Ok(Admission::Refused(status.message.clone())),
        Err(err) => Err(message(&err)),
    }
}

/// Asks, for each need, whether the ServiceAccount `namespace/account` has it.
async fn access(
    client: &Client,
    namespace: &str,
    account: &str,
    needs: Vec<Need>,
) -> Vec<(Need, Fetched<bool>)> {
    let user = format!("{}{namespace}:{account}", accounts::USER_PREFIX);
    // What the API server adds to a ServiceAccount's requests, so group bindings count too.
    let groups = vec![
        accounts::GROUP.to_owned(),
        format!("{}:{namespace}", accounts::GROUP),
        accounts::AUTHENTICATED.to_owned(),
    ];
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut out = Vec::with_capacity(needs.len());
    for chunk in needs.chunks(REVIEWS_AT_ONCE) {
        let mut reviews = tokio::task::JoinSet::new();
        for (index, need) in chunk.iter().enumerate() {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.clone()),
                    groups: Some(groups.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        namespace: need.namespace.clone(),
                        verb: Some(need.verb.clone()),
                        group: Some(need.group.clone()),
                        resource: Some(need.resource.clone()),
                        subresource: need.subresource.clone(),
                        name: need.name.clone(),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            let api = api.clone();
            reviews.spawn(async move {
                let answer = api.create(&PostParams::default(), &review).await;
                (index, answer.map(|r| r.status.is_some_and(|s| s.allowed)).map_err(|e| message(&e)))
            });
        }
        let mut answers: Vec<(usize, Fetched<bool>)> = reviews.join_all().await.into_iter().collect();
        answers.sort_by_key(|(index, _)| *index);
        out.extend(chunk.iter().cloned().zip(answers.into_iter().map(|(_, answer)| answer)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_date_header_is_read() {
        let at = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(at.to_string(), "1994-11-06T08:49:37Z");
        assert_eq!(http_date("yesterday"), None);
    }
}
