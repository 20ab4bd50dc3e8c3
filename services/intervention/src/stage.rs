//! The intervention engine as a [`StatefulProcessor`]: RiskScores from `risk-scores`
//! are checked and offered to the [`Engine`]; at the end of each batch (the batching
//! window) the engine decides, and the Interventions (the audit trail) and the changed
//! cooldown/capacity state are produced in the batch's transaction.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use eventpipe_common::events::RiskScore;
use eventpipe_common::stream::{
    check_keyed_event, decode_json, reasons, Input, OutputRef, Outputs, Rejected, StatefulProcessor,
};
use eventpipe_common::topics::Topic;

use crate::engine::{describe_critical, Decision, Engine, StateRecord, Suppression};
use crate::settings::InterventionSettings;

/// The stage's own Prometheus counters.
#[derive(Clone)]
pub struct InterventionMetrics {
    fired: Family<ActionLabel, Counter>,
    suppressed: Family<SuppressedLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuppressedLabel {
    reason: String,
}

impl InterventionMetrics {
    /// Registers the counters.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let metrics = InterventionMetrics { fired: Family::default(), suppressed: Family::default() };
        registry.register("eventpipe_interventions", "Interventions produced, by action", metrics.fired.clone());
        registry.register(
            "eventpipe_interventions_suppressed",
            "Scores whose matching rules could not act, by reason (cooldown, capacity)",
            metrics.suppressed.clone(),
        );
        Arc::new(metrics)
    }

    /// Interventions produced for `action` so far.
    pub fn fired(&self, action: &str) -> u64 {
        self.fired.get_or_create(&ActionLabel { action: action.to_owned() }).get()
    }
}

/// Checks a RiskScore record; the error says which dead-letter reason applies.
pub fn decode(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<RiskScore, Rejected> {
    let score: RiskScore = decode_json(payload)?;
    check_keyed_event(key, &score.customer_id, score.schema_version)?;
    if !(score.score.is_finite() && (0.0..=1.0).contains(&score.score)) {
        return Err(Rejected::new(reasons::SCHEMA_INVALID, format!("score {} is not between 0 and 1", score.score)));
    }
    Ok(score)
}

/// The stage: engine plus metrics.
pub struct InterventionStage {
    engine: Engine<Vec<(String, String)>>,
    metrics: Arc<InterventionMetrics>,
    /// The record being written (reused).
    payload: Vec<u8>,
}

impl InterventionStage {
    /// A stage with empty state. `partitions` is the risk-scores topic's partition count.
    pub fn new(settings: &InterventionSettings, partitions: u32, metrics: Arc<InterventionMetrics>) -> Self {
        InterventionStage {
            engine: Engine::new(&settings.rules, settings.capacity.clone(), partitions),
            metrics,
            payload: Vec::with_capacity(512),
        }
    }
}

impl StatefulProcessor for InterventionStage {
    fn process(&mut self, input: &Input<'_>, _out: &mut Outputs<'_>) -> Result<(), Rejected> {
        let score = decode(input.key, input.payload)?;
        self.engine.offer(input.partition, score, input.trace.to_vec());
        Ok(())
    }

    fn end_batch(&mut self, out: &mut Outputs<'_>) {
        for decided in self.engine.decide() {
            if let Some(line) = describe_critical(&decided.score, &decided.decision) {
                // A critical customer inside a cooldown was already acted on: say so
                // once (at the action), not at every new score.
                if matches!(decided.decision, Decision::Suppressed { why: Suppression::Cooldown, .. }) {
                    tracing::debug!(customer = %decided.score.customer_id, score = decided.score.score, reason = %line, "critical risk");
                } else {
                    tracing::warn!(customer = %decided.score.customer_id, score = decided.score.score, reason = %line, "critical risk");
                }
            }
            match decided.decision {
                Decision::Fired(intervention) => {
                    self.metrics.fired.get_or_create(&ActionLabel { action: intervention.action.clone() }).inc();
                    self.payload.clear();
                    serde_json::to_writer(&mut self.payload, &intervention).expect("Intervention serializes");
                    out.send(OutputRef {
                        topic: Topic::Interventions,
                        partition: decided.partition,
                        key: &intervention.customer_id,
                        payload: Some(&self.payload),
                        timestamp_ms: intervention.event_time.timestamp_millis(),
                        headers: &decided.tag,
                    });
                }
                Decision::Suppressed { why, .. } => {
                    self.metrics.suppressed.get_or_create(&SuppressedLabel { reason: why.as_str().to_owned() }).inc();
                }
                Decision::NoRule => {}
            }
        }
        for (partition, record) in self.engine.take_changelog() {
            let timestamp_ms = chrono::Utc::now().timestamp_millis();
            self.payload.clear();
            serde_json::to_writer(&mut self.payload, &record).expect("StateRecord serializes");
            out.send(OutputRef {
                topic: Topic::InterventionState,
                partition,
                key: &record.key(),
                payload: Some(&self.payload),
                timestamp_ms,
                headers: &[],
            });
        }
    }

    fn abort_batch(&mut self) {
        self.engine.discard();
    }

    fn restore(&mut self, partition: i32, _key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), String> {
        let Some(payload) = payload else { return Ok(()) };
        let record: StateRecord = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        self.engine.restore(partition, record);
        Ok(())
    }

    fn drop_partition(&mut self, partition: i32) {
        self.engine.drop_partition(partition);
    }

    fn entries_in(&self, partition: i32) -> usize {
        self.engine.customers_in(partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_classifies_bad_input() {
        let key = Some(&b"C1"[..]);
        let score = |customer: &str, value: &str| {
            format!(
                r#"{{"event_id":"5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81","event_time":"2026-01-01T10:00:00Z","schema_version":1,
                "customer_id":"{customer}","score":{value},"band":"high","model_version":"m","top_factors":[],
                "trigger_event_id":"5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81"}}"#
            )
        };
        assert!(decode(key, Some(score("C1", "0.3").as_bytes())).is_ok());
        assert_eq!(decode(key, None).unwrap_err().reason, reasons::MALFORMED);
        assert_eq!(decode(key, Some(b"{\"event_id\":")).unwrap_err().reason, reasons::MALFORMED);
        assert_eq!(decode(key, Some(b"{\"a\":1}")).unwrap_err().reason, reasons::SCHEMA_INVALID);
        let e = decode(key, Some(score("C1", "1.5").as_bytes())).unwrap_err();
        assert_eq!((e.reason, e.error.as_str()), (reasons::SCHEMA_INVALID, "score 1.5 is not between 0 and 1"));
        assert_eq!(decode(key, Some(score("C2", "0.3").as_bytes())).unwrap_err().reason, reasons::SCHEMA_INVALID);
        let bad_band = score("C1", "0.3").replace("\"high\"", "\"severe\"");
        assert_eq!(decode(key, Some(bad_band.as_bytes())).unwrap_err().reason, reasons::SCHEMA_INVALID);
    }
}
