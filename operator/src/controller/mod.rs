//! The reconciler: one EventPipeline at a time, top to bottom —
//! finalizer → validate (pure) → build desired objects (pure) → server-side apply in a
//! fixed order, pruning what the pipeline owns but no longer wants → status →
//! Kubernetes Events for what changed or failed. Deletion goes through the finalizer,
//! which honours `topicDeletionPolicy` for the KafkaTopics (the other objects carry
//! owner references and are garbage-collected).

pub mod apply;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::build::labels::{owned_selector, topic_selector, MANAGER, PIPELINE_NAMESPACE_LABEL};
use crate::build::{desired, Desired};
use crate::crd::{EventPipeline, EventPipelineStatus, Phase, TopicDeletionPolicy};
use crate::metrics::Metrics;
use crate::strimzi::{KafkaTopic, MANAGED_ANNOTATION};
use crate::validate::{validate, Pipeline};
use apply::{sync, FIELD_MANAGER};
use status::Observed;

/// The finalizer that lets the operator deal with the KafkaTopics on deletion.
pub const FINALIZER: &str = "eventpipe.dev/topics";

/// What failed; the variant name is the `reason` in metrics, Events and conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list {kind}: {source}")]
    List { kind: String, source: kube::Error },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply { kind: String, name: String, source: kube::Error },
    #[error("cannot prune {kind} {name}: {source}")]
    Prune { kind: String, name: String, source: kube::Error },
    #[error("cannot update the status: {0}")]
    Status(#[source] kube::Error),
    #[error("cannot update the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("cannot clean up KafkaTopic {name}: {source}")]
    Cleanup { name: String, source: kube::Error },
}

impl Error {
    /// The variant's name, for metrics labels, Events and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::List { .. } => "ListFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune { .. } => "PruneFailed",
            Error::Status(_) => "StatusFailed",
            Error::Finalizer(_) => "FinalizerFailed",
            Error::Cleanup { .. } => "CleanupFailed",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context for `client`, reporting Events as `instance` of the operator.
    pub fn new(client: Client, instance: Option<String>, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter { controller: MANAGER.into(), instance };
        Context { recorder: Recorder::new(client.clone(), reporter), client, metrics }
    }
}

/// How often a pipeline is looked at again when nothing happens (status refresh).
const RESYNC: Duration = Duration::from_secs(60);
/// How soon while objects are still becoming ready.
const PROVISIONING_RESYNC: Duration = Duration::from_secs(10);

/// Reconciles one EventPipeline.
pub async fn reconcile(pipeline: Arc<EventPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&pipeline, &ctx).await;
    ctx.metrics.observe(started.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

async fn reconcile_inner(pipeline: &EventPipeline, ctx: &Context) -> Result<Action, Error> {
    let namespace = pipeline.namespace().unwrap_or_else(|| "default".into());
    let api: Api<EventPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let has_finalizer = pipeline.finalizers().iter().any(|f| f == FINALIZER);

    if pipeline.meta().deletion_timestamp.is_some() {
        if has_finalizer {
            cleanup(pipeline, ctx).await?;
            remove_finalizer(&api, pipeline).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        add_finalizer(&api, pipeline).await?;
    }

    let observed = Observed {
        generation: pipeline.metadata.generation,
        previous: pipeline.status.as_ref(),
        now: Time(Timestamp::now()),
    };
    let validated = match validate(pipeline) {
        Ok(v) => v,
        Err(invalid) => {
            let message = format!("spec not applied: {invalid}");
            let status = status::not_applied(&observed, Phase::Failed, "InvalidSpec", &message);
            if write_status(&api, pipeline, &status).await? {
                publish(ctx, pipeline, EventType::Warning, "InvalidSpec", "Validate", invalid.to_string()).await;
            }
            // Nothing to retry: a spec change brings the next reconcile.
            return Ok(Action::await_change());
        }
    };

    let objects = desired(&validated);
    match apply_all(ctx, &validated, &objects).await {
        Ok((changes, deployments, topics)) => {
            let status = status::applied(&observed, &validated, &deployments, &topics);
            let running = status.phase == Some(Phase::Running);
            write_status(&api, pipeline, &status).await?;
            if !changes.is_empty() {
                publish(ctx, pipeline, EventType::Normal, "Applied", "Reconcile", changes.join("; ")).await;
            }
            Ok(Action::requeue(if running { RESYNC } else { PROVISIONING_RESYNC }))
        }
        Err(e) => {
            // Best effort: the status says why, then the error policy retries.
            let was_running = pipeline.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p == Phase::Running);
            let phase = if was_running { Phase::Degraded } else { Phase::Failed };
            let status = status::not_applied(&observed, phase, e.reason(), &e.to_string());
            let _ = write_status(&api, pipeline, &status).await;
            publish(ctx, pipeline, EventType::Warning, e.reason(), "Reconcile", e.to_string()).await;
            Err(e)
        }
    }
}

type Applied = (Vec<String>, Vec<Deployment>, Vec<KafkaTopic>);

/// Applies every kind in a fixed order — what the stages need before they start
/// (account, configuration, topics), then Services, then Deployments.
async fn apply_all(ctx: &Context, pipeline: &Pipeline, objects: &Desired) -> Result<Applied, Error> {
    let client = &ctx.client;
    let ns = &pipeline.namespace;
    let owned = owned_selector(pipeline);
    let mut changes = Vec::new();
    let mut note = |kind: &str, applied: Vec<String>, pruned: Vec<String>| {
        if !applied.is_empty() {
            changes.push(format!("applied {kind} {}", applied.join(", ")));
        }
        if !pruned.is_empty() {
            changes.push(format!("deleted {kind} {}", pruned.join(", ")));
        }
    };

    let s = sync(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &owned,
        std::slice::from_ref(&objects.service_account),
    )
    .await?;
    note("ServiceAccount", s.applied, s.pruned);
    let s = sync(&Api::<ConfigMap>::namespaced(client.clone(), ns), &owned, std::slice::from_ref(&objects.config_map))
        .await?;
    note("ConfigMap", s.applied, s.pruned);
    let topics = match &pipeline.strimzi {
        Some(strimzi) => {
            let api = Api::<KafkaTopic>::namespaced(client.clone(), &strimzi.namespace);
            let s = sync(&api, &topic_selector(pipeline), &objects.topics).await?;
            note("KafkaTopic", s.applied, s.pruned);
            s.live
        }
        None => Vec::new(),
    };
    let s = sync(&Api::<Service>::namespaced(client.clone(), ns), &owned, &objects.services).await?;
    note("Service", s.applied, s.pruned);
    let s = sync(&Api::<Deployment>::namespaced(client.clone(), ns), &owned, &objects.deployments).await?;
    note("Deployment", s.applied, s.pruned);
    Ok((changes, s.live, topics))
}

/// Writes `status` unless it is already the pipeline's; whether it wrote.
async fn write_status(
    api: &Api<EventPipeline>,
    pipeline: &EventPipeline,
    status: &EventPipelineStatus,
) -> Result<bool, Error> {
    if pipeline.status.as_ref() == Some(status) {
        return Ok(false);
    }
    api.patch_status(&pipeline.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(Error::Status)?;
    Ok(true)
}

async fn add_finalizer(api: &Api<EventPipeline>, pipeline: &EventPipeline) -> Result<(), Error> {
    let mut finalizers = pipeline.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": pipeline.resource_version()}});
    api.patch(&pipeline.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.map_err(Error::Finalizer)?;
    Ok(())
}

async fn remove_finalizer(api: &Api<EventPipeline>, pipeline: &EventPipeline) -> Result<(), Error> {
    let finalizers: Vec<&String> = pipeline.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": pipeline.resource_version()}});
    match api.patch(&pipeline.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Finalizer(e)),
    }
}

/// On deletion: `Retain` marks every KafkaTopic of the pipeline unmanaged and leaves
/// it (Strimzi then keeps the topic and its data); `Delete` deletes them.
async fn cleanup(pipeline: &EventPipeline, ctx: &Context) -> Result<(), Error> {
    let Some(strimzi) = pipeline.spec.kafka.strimzi.as_ref() else {
        return Ok(());
    };
    let ns = pipeline.namespace().unwrap_or_else(|| "default".into());
    let topics_ns = strimzi.namespace.clone().unwrap_or_else(|| ns.clone());
    let api: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &topics_ns);
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/managed-by={MANAGER},{PIPELINE_NAMESPACE_LABEL}={ns}",
        pipeline.name_any()
    );
    let topics = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List { kind: "KafkaTopic".into(), source })?;
    let policy = pipeline.spec.topic_deletion_policy;
    let mut names = Vec::new();
    for topic in topics {
        let name = topic.name_any();
        let result = match policy {
            TopicDeletionPolicy::Retain => {
                if topic.annotations().get(MANAGED_ANNOTATION).map(String::as_str) == Some("false") {
                    continue;
                }
                let patch = json!({
                    "apiVersion": "kafka.strimzi.io/v1",
                    "kind": "KafkaTopic",
                    "metadata": {"name": name, "annotations": {MANAGED_ANNOTATION: "false"}},
                });
                api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await.map(|_| ())
            }
            TopicDeletionPolicy::Delete => api.delete(&name, &DeleteParams::background()).await.map(|_| ()),
        };
        match result {
            Ok(()) => names.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Cleanup { name, source }),
        }
    }
    if !names.is_empty() {
        let (reason, what) = match policy {
            TopicDeletionPolicy::Retain => ("TopicsRetained", "left unmanaged (data kept)"),
            TopicDeletionPolicy::Delete => ("TopicsDeleted", "deleted"),
        };
        publish(
            ctx,
            pipeline,
            EventType::Normal,
            reason,
            "Delete",
            format!("KafkaTopics {what}: {}", names.join(", ")),
        )
        .await;
    }
    Ok(())
}

/// Publishes an Event on the pipeline; a failure is logged, never fatal.
async fn publish(ctx: &Context, pipeline: &EventPipeline, type_: EventType, reason: &str, action: &str, note: String) {
    // Kubernetes caps an Event's note at 1 kB.
    let mut note = note;
    let mut end = note.len().min(1000);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&event, &pipeline.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish an Event");
    }
}

/// Requeues a failed reconcile after a short delay.
pub fn error_policy(pipeline: Arc<EventPipeline>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pipeline = %pipeline.name_any(), reason = error.reason(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until `shutdown`: watches EventPipelines (in `namespace`, or
/// everywhere), the objects they own, and their KafkaTopics by label.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
        client: &Client,
        ns: &Option<String>,
    ) -> Api<K> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    // KafkaTopics live in the Kafka cluster's namespace: always watched cluster-wide.
    let topics: Api<KafkaTopic> = Api::all(client.clone());
    Controller::new(api::<EventPipeline>(&client, &namespace), watcher::Config::default())
        .owns(api::<Deployment>(&client, &namespace), managed.clone())
        .owns(api::<ConfigMap>(&client, &namespace), managed.clone())
        .owns(api::<Service>(&client, &namespace), managed.clone())
        .owns(api::<ServiceAccount>(&client, &namespace), managed.clone())
        .watches(topics, managed, |topic: KafkaTopic| {
            let labels = topic.labels();
            let name = labels.get("app.kubernetes.io/instance").cloned();
            let ns = labels.get(PIPELINE_NAMESPACE_LABEL).cloned();
            name.zip(ns).map(|(name, ns)| ObjectRef::new(&name).within(&ns))
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(pipeline = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
