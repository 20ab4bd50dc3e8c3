//! The reconciler against an in-memory Kubernetes API (kube-fake-client): what the
//! first reconcile creates, that a second one writes nothing, what a change patches,
//! drift, suspend, an invalid spec, injected API errors, and deletion under both topic
//! policies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventpipe_operator::controller::{error_policy, reconcile, Context, FINALIZER};
use eventpipe_operator::crd::{EventPipeline, Phase, TopicDeletionPolicy};
use eventpipe_operator::metrics::Metrics;
use eventpipe_operator::render::parse_pipeline;
use eventpipe_operator::strimzi::KafkaTopic;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use kube_fake_client::{interceptor, ClientBuilder};
use serde_json::json;

const NS: &str = "eventpipe";
const KAFKA_NS: &str = "kafka";

/// The example as first created: no finalizer yet.
fn created() -> EventPipeline {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/examples/pre-delinquency.yaml");
    let mut p = parse_pipeline(&std::fs::read_to_string(path).unwrap()).unwrap();
    p.metadata.uid = Some("0b0e9b2c-6d8b-4a57-9d1a-2f1c3e6b7a10".into());
    p.metadata.generation = Some(1);
    p
}

/// The example as the operator leaves it after its first look: with the finalizer.
/// (The in-memory API bumps `generation` on any metadata change, where the real one
/// counts spec changes only, so tests of steady state start from here.)
fn example() -> EventPipeline {
    let mut p = created();
    p.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    p
}

/// Every write the API received, as `verb name`.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<String>>>);

impl Writes {
    fn push(&self, w: String) {
        self.0.lock().unwrap().push(w);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Fails the patches named `name` with these errors, in turn, then lets them through.
type Failures = Arc<Mutex<Vec<(String, kube_fake_client::Error)>>>;

struct Harness {
    client: Client,
    ctx: Arc<Context>,
    writes: Writes,
    failures: Failures,
}

async fn harness(pipeline: EventPipeline) -> Harness {
    harness_with(pipeline, Vec::new()).await
}

async fn harness_with(pipeline: EventPipeline, topics: Vec<KafkaTopic>) -> Harness {
    let writes = Writes::default();
    let failures: Failures = Arc::default();
    let (w1, w2, w3, w4, w5, w6) =
        (writes.clone(), writes.clone(), writes.clone(), writes.clone(), writes.clone(), writes.clone());
    let f = failures.clone();
    let funcs = interceptor::Funcs::new()
        .create(move |c| {
            let kind = c.object["kind"].as_str().unwrap_or("?").to_owned();
            w1.push(format!("create {kind}"));
            Ok(None)
        })
        .patch(move |c| {
            let mut failures = f.lock().unwrap();
            if let Some(i) = failures.iter().position(|(n, _)| n == c.name) {
                let (_, e) = failures.remove(i);
                return Err(e);
            }
            // Events are named `<object>.<hex>`; the pipeline's own objects have no dots.
            let verb = if c.name.contains('.') { "event" } else { "patch" };
            w2.push(format!("{verb} {}", c.name));
            Ok(None)
        })
        .patch_status(move |c| {
            w3.push(format!("status {}", c.name));
            Ok(None)
        })
        .delete(move |c| {
            w4.push(format!("delete {}", c.name));
            Ok(None)
        })
        .replace(move |c| {
            w5.push(format!("replace {}", c.name));
            Ok(None)
        })
        .update(move |c| {
            w6.push(format!("update {}", c.object["metadata"]["name"]));
            Ok(None)
        });
    let client = ClientBuilder::new()
        .with_resource::<EventPipeline>()
        .with_resource::<KafkaTopic>()
        .with_status_subresource::<EventPipeline>()
        .with_status_subresource::<KafkaTopic>()
        .with_status_subresource::<Deployment>()
        .with_object(pipeline)
        .with_objects(topics)
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .unwrap();
    let ctx = Arc::new(Context::new(client.clone(), Some("test".into()), Arc::new(Metrics::default())));
    Harness { client, ctx, writes, failures }
}

impl Harness {
    fn pipelines(&self) -> Api<EventPipeline> {
        Api::namespaced(self.client.clone(), NS)
    }
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NS)
    }
    fn topics(&self) -> Api<KafkaTopic> {
        Api::namespaced(self.client.clone(), KAFKA_NS)
    }
    async fn get(&self) -> EventPipeline {
        self.pipelines().get("pre-delinquency").await.unwrap()
    }
    /// Reconciles the pipeline as it is stored now.
    async fn reconcile(&self) -> Result<Action, eventpipe_operator::controller::Error> {
        reconcile(Arc::new(self.get().await), self.ctx.clone()).await
    }
    async fn names<K>(&self, api: Api<K>) -> Vec<String>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut names: Vec<String> =
            api.list(&ListParams::default()).await.unwrap().items.iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }
    async fn edit(&self, change: impl FnOnce(&mut EventPipeline)) {
        let mut p = self.get().await;
        change(&mut p);
        let spec = serde_json::to_value(&p.spec).unwrap();
        self.pipelines()
            .patch("pre-delinquency", &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn first_reconcile_creates_every_object_with_the_expected_fields() {
    let h = harness(created()).await;
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(10)), "provisioning: look again soon");

    assert_eq!(
        h.names(h.deployments()).await,
        [
            "pre-delinquency-dashboard",
            "pre-delinquency-feature-processor",
            "pre-delinquency-intervention",
            "pre-delinquency-producer"
        ]
    );
    let fp = h.deployments().get("pre-delinquency-feature-processor").await.unwrap();
    assert_eq!(fp.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(fp.owner_references()[0].uid, "0b0e9b2c-6d8b-4a57-9d1a-2f1c3e6b7a10");
    let c = &fp.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("eventpipe:dev"));
    assert_eq!(c.command.as_deref(), Some(&["feature-processor".to_owned()][..]));

    let topics = h.topics().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(topics.len(), 8);
    let tx = topics.iter().find(|t| t.name_any() == "pre-delinquency-transactions").unwrap();
    assert_eq!(tx.spec.topic_name.as_deref(), Some("pre-delinquency.transactions"));
    assert_eq!(tx.labels()["strimzi.io/cluster"], "eventpipe-kafka");
    assert!(tx.owner_references().is_empty(), "topics outlive the pipeline only through the finalizer");

    let cm: ConfigMap = Api::namespaced(h.client.clone(), NS).get("pre-delinquency-config").await.unwrap();
    assert!(cm.data.unwrap()["pipeline.yaml"].contains("agent_call: 50"));
    let services = h.names(Api::<Service>::namespaced(h.client.clone(), NS)).await;
    assert_eq!(services, ["pre-delinquency-dashboard", "pre-delinquency-metrics"]);
    let sa = h.names(Api::<ServiceAccount>::namespaced(h.client.clone(), NS)).await;
    assert_eq!(sa, ["pre-delinquency-stages"]);

    let p = h.get().await;
    assert!(p.finalizers().contains(&FINALIZER.to_owned()));
    let status = p.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Provisioning));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.topics_summary.as_deref(), Some("0/8"));
    assert_eq!(status.stages_summary.as_deref(), Some("0/4"));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "TopicsNotReady"));
}

#[tokio::test]
async fn a_second_reconcile_with_nothing_changed_makes_no_writes() {
    let h = harness(example()).await;
    h.reconcile().await.unwrap();
    assert!(!h.writes.take().is_empty());
    h.reconcile().await.unwrap();
    assert_eq!(h.writes.take(), Vec::<String>::new());
}

#[tokio::test]
async fn a_spec_change_patches_only_what_changed() {
    let h = harness(example()).await;
    h.reconcile().await.unwrap();
    h.edit(|p| p.spec.stages.feature_processor.common.replicas = 3).await;
    h.writes.take();
    h.reconcile().await.unwrap();
    let writes = h.writes.take();
    assert!(writes.contains(&"patch pre-delinquency-feature-processor".to_owned()), "{writes:?}");
    let patches: Vec<&String> = writes.iter().filter(|w| w.starts_with("patch ")).collect();
    assert_eq!(patches, ["patch pre-delinquency-feature-processor"], "{writes:?}");
    let fp = h.deployments().get("pre-delinquency-feature-processor").await.unwrap();
    assert_eq!(fp.spec.unwrap().replicas, Some(3));
    let p = h.get().await;
    assert_eq!(p.status.unwrap().observed_generation, p.metadata.generation);
    assert!(writes.contains(&"status pre-delinquency".to_owned()), "the status shows the new replicas: {writes:?}");
}

#[tokio::test]
async fn a_deleted_deployment_is_recreated() {
    let h = harness(example()).await;
    h.reconcile().await.unwrap();
    h.deployments().delete("pre-delinquency-intervention", &DeleteParams::default()).await.unwrap();
    h.writes.take();
    h.reconcile().await.unwrap();
    assert_eq!(
        h.writes.take().iter().filter(|w| w.starts_with("patch ")).collect::<Vec<_>>(),
        ["patch pre-delinquency-intervention"]
    );
    assert!(h.deployments().get_opt("pre-delinquency-intervention").await.unwrap().is_some());
}

#[tokio::test]
async fn suspend_scales_every_stage_to_zero_and_keeps_the_topics() {
    let h = harness(example()).await;
    h.reconcile().await.unwrap();
    h.edit(|p| p.spec.suspend = true).await;
    h.reconcile().await.unwrap();
    for d in h.deployments().list(&ListParams::default()).await.unwrap() {
        assert_eq!(d.spec.unwrap().replicas, Some(0), "{:?}", d.metadata.name);
    }
    assert_eq!(h.topics().list(&ListParams::default()).await.unwrap().items.len(), 8);
    let status = h.get().await.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Suspended));
    let suspended = status.conditions.iter().find(|c| c.type_ == "Suspended").unwrap();
    assert_eq!(suspended.status, "True");
}

#[tokio::test]
async fn an_invalid_spec_sets_the_condition_and_applies_nothing() {
    let mut p = example();
    p.spec.stages.intervention.rules.as_mut().unwrap()[0].when = "band => critical".into();
    let h = harness(p).await;
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.deployments().list(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(h.topics().list(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let status = h.get().await.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.contains("spec.stages.intervention.rules[0].when"), "{}", ready.message);
    // Writes: the status and the Warning Event only.
    let writes = h.writes.take();
    assert_eq!(writes, ["status pre-delinquency", "create Event"], "{writes:?}");
    // Unchanged and still invalid: nothing more.
    h.reconcile().await.unwrap();
    assert_eq!(h.writes.take(), Vec::<String>::new());
}

#[tokio::test]
async fn injected_conflict_and_server_errors_requeue_and_then_converge() {
    let h = harness(example()).await;
    h.failures.lock().unwrap().extend([
        (
            "pre-delinquency-intervention".to_owned(),
            kube_fake_client::Error::Conflict("the object has been modified".into()),
        ),
        ("pre-delinquency-intervention".to_owned(), kube_fake_client::Error::Internal("etcd timeout".into())),
    ]);
    for expected_code in [409, 500] {
        let err = h.reconcile().await.unwrap_err();
        assert_eq!(err.reason(), "ApplyFailed");
        assert!(
            matches!(&err, eventpipe_operator::controller::Error::Apply { source: kube::Error::Api(s), .. } if s.code == expected_code),
            "{err}"
        );
        assert_eq!(error_policy(Arc::new(h.get().await), &err, h.ctx.clone()), Action::requeue(Duration::from_secs(5)));
        let ready = h.get().await.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.reason, "ApplyFailed");
    }
    h.reconcile().await.unwrap();
    assert_eq!(h.names(h.deployments()).await.len(), 4);
    let ready = h.get().await.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "TopicsNotReady", "converged: only waiting for Strimzi now");
}

#[tokio::test]
async fn ready_when_every_topic_and_stage_reports_ready() {
    let h = harness(example()).await;
    h.reconcile().await.unwrap();
    for t in h.topics().list(&ListParams::default()).await.unwrap() {
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        h.topics().patch_status(&t.name_any(), &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    }
    for d in h.deployments().list(&ListParams::default()).await.unwrap() {
        let replicas = d.spec.as_ref().unwrap().replicas.unwrap();
        let status = json!({"status": {"replicas": replicas, "readyReplicas": replicas}});
        h.deployments().patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    }
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    let status = h.get().await.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!((status.topics_summary.as_deref(), status.stages_summary.as_deref()), (Some("8/8"), Some("4/4")));
    assert!(status.conditions.iter().all(|c| c.status == if c.type_ == "Suspended" { "False" } else { "True" }));
    let fp = status.stages.iter().find(|s| s.name == "feature-processor").unwrap();
    assert_eq!((fp.replicas, fp.ready_replicas), (2, 2));
}

/// Reconciles a pipeline, then the same pipeline being deleted (the in-memory API has
/// no finalizer semantics of its own, so the deleting object is made by hand, with the
/// KafkaTopics the first reconcile created).
async fn delete_with(policy: TopicDeletionPolicy) -> Harness {
    let mut p = example();
    p.spec.topic_deletion_policy = policy;
    let first = harness(p.clone()).await;
    first.reconcile().await.unwrap();
    let topics = first.topics().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(topics.len(), 8);

    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    let h = harness_with(p, topics).await;
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    assert!(
        h.pipelines().get_opt("pre-delinquency").await.unwrap().is_none(),
        "the finalizer is removed, so Kubernetes deletes the pipeline"
    );
    assert!(
        h.deployments().list(&ListParams::default()).await.unwrap().items.is_empty(),
        "nothing is applied while deleting"
    );
    h
}

#[tokio::test]
async fn deletion_with_retain_keeps_the_topics_unmanaged() {
    let h = delete_with(TopicDeletionPolicy::Retain).await;
    let topics = h.topics().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(topics.len(), 8);
    for t in topics {
        assert_eq!(t.annotations().get("strimzi.io/managed").map(String::as_str), Some("false"), "{}", t.name_any());
    }
}

#[tokio::test]
async fn deletion_with_delete_removes_the_topics() {
    let h = delete_with(TopicDeletionPolicy::Delete).await;
    assert!(h.topics().list(&ListParams::default()).await.unwrap().items.is_empty());
}
