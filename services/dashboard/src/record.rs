//! Turning the bytes read from the four topics into typed records, or saying why not.
//!
//! The dashboard is a read-only sink: a record it cannot use is counted (by topic and
//! reason) and skipped, never dead-lettered; the stage that wrote it owns that.

use eventpipe_common::events::{CustomerOutcome, Intervention, RiskScore, StageStats, SCHEMA_VERSION};
use eventpipe_common::topics::Topic;

/// One record the dashboard understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// From `P.risk-scores`.
    RiskScore(RiskScore),
    /// From `P.interventions`.
    Intervention(Intervention),
    /// From `P.customer-outcomes`.
    Outcome(CustomerOutcome),
    /// From `P.pipeline-stats`.
    StageStats(StageStats),
}

/// Why a record was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Malformed {
    /// Metric label: `empty` (no payload), `malformed` (not JSON of the topic's type),
    /// `invalid` (the right shape with impossible values), `unexpected_topic`.
    pub reason: &'static str,
    /// What was wrong, for the debug log.
    pub detail: String,
}

impl Malformed {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Malformed { reason, detail: detail.into() }
    }
}

/// The longest customer id accepted (ids are keys in memory and in URLs).
pub const MAX_ID_LEN: usize = 128;

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Malformed> {
    serde_json::from_slice(payload).map_err(|e| Malformed::new("malformed", e.to_string()))
}

fn check_common(customer_id: &str, schema_version: u32) -> Result<(), Malformed> {
    if customer_id.is_empty() || customer_id.len() > MAX_ID_LEN {
        return Err(Malformed::new("invalid", format!("customer_id must be 1-{MAX_ID_LEN} bytes")));
    }
    if schema_version > SCHEMA_VERSION {
        return Err(Malformed::new(
            "invalid",
            format!("schema_version {schema_version} is newer than {SCHEMA_VERSION}"),
        ));
    }
    Ok(())
}

fn check_score(score: f64, what: &str) -> Result<(), Malformed> {
    if score.is_finite() && (0.0..=1.0).contains(&score) {
        Ok(())
    } else {
        Err(Malformed::new("invalid", format!("{what} {score} is not in 0..=1")))
    }
}

/// Decodes and checks a record read from `topic`.
pub fn decode(topic: Topic, payload: Option<&[u8]>) -> Result<Record, Malformed> {
    let payload = payload.filter(|p| !p.is_empty()).ok_or_else(|| Malformed::new("empty", "no payload"))?;
    match topic {
        Topic::RiskScores => {
            let s: RiskScore = parse(payload)?;
            check_common(&s.customer_id, s.schema_version)?;
            check_score(s.score, "score")?;
            if let Some(f) = s.top_factors.iter().find(|f| !f.value.is_finite() || !f.contribution.is_finite()) {
                return Err(Malformed::new("invalid", format!("factor {} is not finite", f.feature)));
            }
            Ok(Record::RiskScore(s))
        }
        Topic::Interventions => {
            let i: Intervention = parse(payload)?;
            check_common(&i.customer_id, i.schema_version)?;
            check_score(i.score, "score")?;
            Ok(Record::Intervention(i))
        }
        Topic::CustomerOutcomes => {
            let o: CustomerOutcome = parse(payload)?;
            check_common(&o.customer_id, o.schema_version)?;
            Ok(Record::Outcome(o))
        }
        Topic::PipelineStats => {
            let s: StageStats = parse(payload)?;
            if s.stage.is_empty() || s.stage.len() > MAX_ID_LEN || s.instance.len() > MAX_ID_LEN {
                return Err(Malformed::new("invalid", "stage must be 1-128 bytes, instance at most 128"));
            }
            if s.window_ms > 3_600_000 {
                return Err(Malformed::new("invalid", format!("window_ms {} is over an hour", s.window_ms)));
            }
            Ok(Record::StageStats(s))
        }
        other => Err(Malformed::new("unexpected_topic", format!("the dashboard does not read {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::score;
    use rstest::rstest;

    #[test]
    fn a_valid_score_decodes() {
        let s = score("C1", 0, 0.4);
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(decode(Topic::RiskScores, Some(&bytes)), Ok(Record::RiskScore(s)));
    }

    #[rstest]
    #[case::no_payload(Topic::RiskScores, None, "empty")]
    #[case::not_json(Topic::RiskScores, Some(&b"\x00garbage"[..]), "malformed")]
    #[case::wrong_type(Topic::CustomerOutcomes, Some(&br#"{"customer_id":"C1"}"#[..]), "malformed")]
    #[case::unexpected_topic(Topic::Transactions, Some(&b"{}"[..]), "unexpected_topic")]
    fn unusable_bytes_are_named(#[case] topic: Topic, #[case] payload: Option<&[u8]>, #[case] reason: &str) {
        assert_eq!(decode(topic, payload).unwrap_err().reason, reason);
    }

    #[rstest]
    #[case::score_above_one(|v: &mut serde_json::Value| v["score"] = 1.5.into())]
    #[case::empty_customer(|v: &mut serde_json::Value| v["customer_id"] = "".into())]
    #[case::future_schema(|v: &mut serde_json::Value| v["schema_version"] = 99.into())]
    fn impossible_values_are_invalid(#[case] edit: fn(&mut serde_json::Value)) {
        let mut v = serde_json::to_value(score("C1", 0, 0.4)).unwrap();
        edit(&mut v);
        let err = decode(Topic::RiskScores, Some(&serde_json::to_vec(&v).unwrap())).unwrap_err();
        assert_eq!(err.reason, "invalid", "{err}");
    }
}
