//! Validation: every way a spec can be wrong names the resource field, and a valid one
//! resolves as the stages will read it.

use eventpipe_operator::crd::EventPipeline;
use eventpipe_operator::render::parse_pipeline;
use eventpipe_operator::validate::{spec_field, validate};
use rstest::rstest;

const BASE: &str = "apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: demo, namespace: apps}
spec:
  kafka: {strimzi: {cluster: kafka, namespace: kafka}}
";

fn pipeline(extra: &str) -> EventPipeline {
    parse_pipeline(&format!("{BASE}{extra}")).unwrap()
}

#[rstest]
#[case::bad_name("", Some("Demo_1"), "metadata.name", "lowercase")]
#[case::no_kafka_source("", None, "spec.kafka", "exactly one")]
#[case::bad_cluster_name(
    "  kafka: {strimzi: {cluster: My_Kafka}}\n",
    None,
    "spec.kafka.strimzi.cluster",
    "not a Kubernetes object name"
)]
#[case::two_producers("  stages: {producer: {replicas: 2}}\n", None, "spec.stages.producer.replicas", "0 or 1")]
#[case::idle_processor(
    "  stages: {featureProcessor: {replicas: 7}}\n",
    None,
    "spec.stages.featureProcessor.replicas",
    "6 partitions"
)]
#[case::idle_intervention(
    "  topics:\n    riskScores: {partitions: 2}\n",
    None,
    "spec.topics.riskScores.partitions",
    "must equal topics.transactions.partitions"
)]
#[case::not_co_partitioned(
    "  topics: {transactions: {partitions: 12}}\n",
    None,
    "spec.topics.customerOutcomes.partitions",
    "must equal"
)]
#[case::bad_condition(
    "  stages:\n    intervention:\n      rules: [{name: r, when: 'band => high', action: sms_nudge}]\n",
    None,
    "spec.stages.intervention.rules[0].when",
    "unknown operator"
)]
#[case::unknown_action(
    "  stages:\n    intervention:\n      rules: [{name: r, when: 'band >= high', action: carrier_pigeon}]\n",
    None,
    "spec.stages.intervention.rules[0].action",
    "unknown action `carrier_pigeon`"
)]
#[case::bad_cooldown(
    "  stages:\n    intervention:\n      rules: [{name: r, when: 'band >= high', action: sms_nudge, cooldown: soon}]\n",
    None,
    "spec.stages.intervention.rules[0].cooldown",
    "not a duration"
)]
#[case::unknown_capacity_action(
    "  stages: {intervention: {capacity: {fax: 3}}}\n",
    None,
    "spec.stages.intervention.capacity.fax",
    "unknown action"
)]
#[case::duplicate_rule(
    "  stages:\n    intervention:\n      rules: [{name: r, when: 'band >= high', action: sms_nudge}, {name: r, when: 'score > 0.5', action: sms_nudge}]\n",
    None,
    "spec.stages.intervention.rules[1].name",
    "already the name"
)]
#[case::bad_model(
    "  stages: {featureProcessor: {model: '{\"version\": 1}'}}\n",
    None,
    "spec.stages.featureProcessor.model",
    "not a model file"
)]
#[case::score_change_out_of_range(
    "  stages: {featureProcessor: {minScoreChange: 2.0}}\n",
    None,
    "spec.stages.featureProcessor.minScoreChange",
    "between 0 and 1"
)]
#[case::bootstrap_in_properties(
    "  kafka: {bootstrapServers: 'b:9092', properties: {bootstrap.servers: x}}\n",
    None,
    "spec.kafka.properties.bootstrap.servers",
    "kafka.bootstrap_servers"
)]
fn invalid_specs_name_the_field(
    #[case] extra: &str,
    #[case] name: Option<&str>,
    #[case] field: &str,
    #[case] message: &str,
) {
    let mut p = if extra.contains("  kafka:") {
        // Replace the base's Kafka section rather than add a second one.
        parse_pipeline(&format!(
            "{}{extra}",
            BASE.replace("  kafka: {strimzi: {cluster: kafka, namespace: kafka}}\n", "")
        ))
        .unwrap()
    } else {
        pipeline(extra)
    };
    if let Some(name) = name {
        p.metadata.name = Some(name.to_owned());
    }
    if field == "spec.kafka" {
        p.spec.kafka.strimzi = None;
    }
    let err = validate(&p).unwrap_err();
    assert_eq!(err.field, field, "{err}");
    assert!(err.message.contains(message), "{err}");
    if !field.ends_with(".model") {
        // (A position inside the user's own model JSON does mean something.)
        assert!(!err.message.contains(" at line "), "positions in the generated file mean nothing to the user: {err}");
    }
}

#[test]
fn a_valid_spec_resolves_topics_and_bootstrap() {
    let p = validate(&pipeline("  topics:\n    deadLetter: {partitions: 1, retentionMs: 1000}\n")).unwrap();
    assert_eq!(p.bootstrap_servers, "kafka-kafka-bootstrap.kafka.svc:9092");
    let dl = p.topic(eventpipe_common::topics::Topic::DeadLetter);
    assert_eq!((dl.name.as_str(), dl.partitions, dl.config["retention.ms"].as_str()), ("demo.dead-letter", 1, "1000"));
    assert_eq!(p.stages.len(), 4);
    assert!(p.pipeline_file.contains("bootstrap_servers: kafka-kafka-bootstrap.kafka.svc:9092"), "{}", p.pipeline_file);
}

#[test]
fn disabled_stages_are_not_planned_and_their_settings_not_checked() {
    let p = validate(&pipeline(
        "  stages:\n    producer: {enabled: false}\n    intervention:\n      enabled: false\n      capacity: {fax: 1}\n",
    ))
    .unwrap();
    let names: Vec<&str> = p.stages.iter().map(|s| s.stage.name()).collect();
    assert_eq!(names, ["feature-processor", "dashboard"]);
}

#[rstest]
#[case("stages.feature-processor.min_score_change", "spec.stages.featureProcessor.minScoreChange")]
#[case("stages.feature-processor.allowed_lateness_secs", "spec.stages.featureProcessor.allowedLatenessSeconds")]
#[case("topics.customer-outcomes.partitions", "spec.topics.customerOutcomes.partitions")]
#[case("stages.intervention.capacity.agent_call", "spec.stages.intervention.capacity.agent_call")]
#[case("kafka.properties.sasl.password", "spec.kafka.properties.sasl.password")]
#[case("PIPELINE_NAME", "metadata.name")]
fn file_keys_map_to_resource_fields(#[case] key: &str, #[case] field: &str) {
    assert_eq!(spec_field(key), field);
}
