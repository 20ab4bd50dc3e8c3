//! Builders of events for the state's unit tests.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use eventpipe_common::events::{
    CustomerOutcome, Intervention, Outcome, RiskBand, RiskFactor, RiskScore, SCHEMA_VERSION,
};

/// Day `d` after 2026-03-01 (UTC midnight).
pub fn day(d: i64) -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::days(d)
}

/// The band the built-in model would give `score`.
pub fn band_of(score: f64) -> RiskBand {
    match score {
        s if s >= 0.5 => RiskBand::Critical,
        s if s >= 0.2 => RiskBand::High,
        s if s >= 0.05 => RiskBand::Medium,
        _ => RiskBand::Low,
    }
}

/// A score for `customer` on day `d`; its id depends on all three inputs.
pub fn score(customer: &str, d: i64, score: f64) -> RiskScore {
    RiskScore {
        event_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{customer}/{d}/{score}").as_bytes()),
        event_time: day(d),
        schema_version: SCHEMA_VERSION,
        customer_id: customer.into(),
        score,
        band: band_of(score),
        model_version: "test-model".into(),
        top_factors: vec![
            RiskFactor { feature: "missed_repayments_90d".into(), value: 2.0, contribution: 1.5 },
            RiskFactor { feature: "days_overdrawn_30d".into(), value: 9.0, contribution: 0.8 },
        ],
        trigger_event_id: Uuid::from_u128(d as u128),
    }
}

/// An intervention for `customer` on day `d`.
pub fn intervention(customer: &str, d: i64, action: &str) -> Intervention {
    Intervention {
        event_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{customer}/{d}/{action}").as_bytes()),
        event_time: day(d),
        schema_version: SCHEMA_VERSION,
        customer_id: customer.into(),
        action: action.into(),
        rule: "test-rule".into(),
        reason: "score >= 0.5".into(),
        score: 0.6,
        band: RiskBand::Critical,
        model_version: "test-model".into(),
        trigger_score_id: Uuid::from_u128(d as u128),
    }
}

/// An outcome for `customer` on day `d`.
pub fn outcome(customer: &str, d: i64, outcome: Outcome) -> CustomerOutcome {
    CustomerOutcome {
        event_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{customer}/{d}/{outcome:?}").as_bytes()),
        event_time: day(d),
        schema_version: SCHEMA_VERSION,
        customer_id: customer.into(),
        outcome,
        days_in_arrears: 90,
        arrears_minor: 120_000,
    }
}
