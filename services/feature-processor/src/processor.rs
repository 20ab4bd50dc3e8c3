//! The processing core, with no Kafka in it: bytes of a transaction in, a RiskScore (if
//! one is due) and a dirty mark on the customer's changelog out, or the reason the
//! input goes to dead-letter.
//!
//! State is kept per input partition, so a revoked partition's customers can be dropped
//! and an assigned partition's restored from the changelog without touching the rest.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeDelta;
use uuid::Uuid;

use eventpipe_common::events::{
    derived_event_id, CustomerFeatures, LastScore, RiskScore, TransactionEvent, TransactionKind, SCHEMA_VERSION,
};

use eventpipe_common::stream::check_keyed_event;
pub use eventpipe_common::stream::Rejected;

use crate::model::RiskModel;
use crate::window::{Applied, CustomerWindow};

/// Dead-letter reasons.
pub mod reasons {
    pub use eventpipe_common::stream::reasons::{MALFORMED, SCHEMA_INVALID};
    /// A transaction kind this build does not know.
    pub const UNKNOWN_KIND: &str = "unknown_kind";
    /// Behind the customer's latest event by more than the allowed lateness.
    pub const LATE: &str = "late";
}

/// Knobs of the core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreConfig {
    /// How far behind a customer's latest event an event may be and still be applied.
    pub allowed_lateness: TimeDelta,
    /// Emit a new RiskScore when the score moves at least this much (or the band changes).
    pub min_score_change: f64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig { allowed_lateness: TimeDelta::days(1), min_score_change: 0.05 }
    }
}

/// What processing one transaction produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// A RiskScore, when one is due.
    pub score: Option<RiskScore>,
}

/// Kinds that are scored as soon as they arrive.
pub fn is_significant(kind: TransactionKind) -> bool {
    matches!(
        kind,
        TransactionKind::SalaryCredit
            | TransactionKind::DirectDebitFailed
            | TransactionKind::LoanRepaymentMissed
            | TransactionKind::OverdraftFee
            | TransactionKind::Gambling
            | TransactionKind::BnplPurchase
    )
}

/// Decodes and checks a transaction; the error says which dead-letter reason applies.
pub fn decode(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<TransactionEvent, Rejected> {
    let payload = payload.ok_or_else(|| Rejected::new(reasons::MALFORMED, "record has no payload"))?;
    let event: TransactionEvent = serde_json::from_slice(payload).map_err(|e| classify(payload, e))?;
    check_keyed_event(key, &event.customer_id, event.schema_version)?;
    if event.currency.len() != 3 || !event.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Rejected::new(
            reasons::SCHEMA_INVALID,
            format!("currency `{}` is not an ISO 4217 code", event.currency),
        ));
    }
    Ok(event)
}

/// Tells malformed JSON from valid JSON that is not a TransactionEvent, and an unknown
/// kind from other schema errors (only on the error path).
fn classify(payload: &[u8], error: serde_json::Error) -> Rejected {
    if error.is_syntax() || error.is_eof() || error.is_io() {
        return Rejected::new(reasons::MALFORMED, error.to_string());
    }
    let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let kind = value.as_ref().and_then(|v| v.get("kind")).and_then(|k| k.as_str()).map(str::to_owned);
    if let Some(kind) = kind {
        let known = serde_json::from_value::<TransactionKind>(serde_json::Value::String(kind.clone())).is_ok();
        if !known {
            return Rejected::new(reasons::UNKNOWN_KIND, format!("unknown transaction kind `{kind}`"));
        }
    }
    Rejected::new(reasons::SCHEMA_INVALID, error.to_string())
}

/// Customers' windows by input partition, the model, and the customers touched since
/// the changelog was last written.
pub struct Core {
    config: CoreConfig,
    model: Arc<RiskModel>,
    partitions: HashMap<i32, HashMap<String, CustomerWindow>>,
    /// (partition, customer) → id of the last event applied, for the changelog.
    dirty: HashMap<(i32, String), Uuid>,
}

impl Core {
    /// An empty core scoring with `model`.
    pub fn new(config: CoreConfig, model: Arc<RiskModel>) -> Self {
        Core { config, model, partitions: HashMap::new(), dirty: HashMap::new() }
    }

    /// The model in use.
    pub fn model(&self) -> &Arc<RiskModel> {
        &self.model
    }

    /// Switches to another model (hot reload); later scores carry its version.
    pub fn set_model(&mut self, model: Arc<RiskModel>) {
        self.model = model;
    }

    /// The window of `customer` in `partition`, if known.
    pub fn window(&self, partition: i32, customer: &str) -> Option<&CustomerWindow> {
        self.partitions.get(&partition)?.get(customer)
    }

    /// Number of customers held for `partition`.
    pub fn customers_in(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, HashMap::len)
    }

    /// Processes one record of input partition `partition`.
    pub fn process(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<Processed, Rejected> {
        let event = decode(key, payload)?;
        self.apply(partition, &event)
    }

    /// Applies a decoded event; scores it when a score is due.
    pub fn apply(&mut self, partition: i32, event: &TransactionEvent) -> Result<Processed, Rejected> {
        let window = self.partitions.entry(partition).or_default().entry(event.customer_id.clone()).or_default();
        let new_day = match window.apply(event, self.config.allowed_lateness) {
            Applied::Applied { new_day } => new_day,
            Applied::Late { behind } => {
                return Err(Rejected::new(
                    reasons::LATE,
                    format!(
                        "event at {} is {}s behind the customer's latest event (allowed lateness {}s)",
                        event.event_time,
                        behind.num_seconds(),
                        self.config.allowed_lateness.num_seconds()
                    ),
                ))
            }
        };
        self.dirty.insert((partition, event.customer_id.clone()), event.event_id);

        let day = event.event_time.date_naive();
        let due = is_significant(event.kind) || new_day || window.last_score.is_none_or(|s| s.day < day);
        if !due {
            return Ok(Processed { score: None });
        }
        let scored = self.model.score(&window.features());
        let emit = match window.last_score {
            None => true,
            Some(last) => last.band != scored.band || (scored.score - last.score).abs() >= self.config.min_score_change,
        };
        let (score, band) = match (emit, window.last_score) {
            (false, Some(last)) => (last.score, last.band),
            _ => (scored.score, scored.band),
        };
        window.last_score = Some(LastScore { score, band, day });
        if !emit {
            return Ok(Processed { score: None });
        }
        Ok(Processed {
            score: Some(RiskScore {
                event_id: derived_event_id("risk-score", &[event.event_id.as_bytes()]),
                event_time: event.event_time,
                schema_version: SCHEMA_VERSION,
                customer_id: event.customer_id.clone(),
                score: scored.score,
                band: scored.band,
                model_version: self.model.version.clone(),
                top_factors: scored.top_factors,
                trigger_event_id: event.event_id,
            }),
        })
    }

    /// The changelog records of the customers touched since the last call, with their
    /// partitions. Record ids derive from the last event applied, so a replay repeats them.
    pub fn take_changelog(&mut self) -> Vec<(i32, CustomerFeatures)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for ((partition, customer), last_event) in self.dirty.drain() {
            let window = &self.partitions[&partition][&customer];
            let id = derived_event_id("customer-features", &[last_event.as_bytes()]);
            if let Some(record) = window.to_record(&customer, id) {
                out.push((partition, record));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1.customer_id).cmp(&(b.0, &b.1.customer_id)));
        out
    }

    /// Forgets what was touched without writing it (the transaction was aborted; the
    /// state is about to be restored).
    pub fn discard_changelog(&mut self) {
        self.dirty.clear();
    }

    /// Loads a changelog record into `partition`'s state.
    pub fn restore(&mut self, partition: i32, record: &CustomerFeatures) {
        self.partitions
            .entry(partition)
            .or_default()
            .insert(record.customer_id.clone(), CustomerWindow::from_record(record));
    }

    /// Drops the state of `partition` (revoked, or about to be restored).
    pub fn drop_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.dirty.retain(|(p, _), _| *p != partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_classifies_bad_input() {
        let key = Some(&b"C1"[..]);
        assert_eq!(decode(key, None).unwrap_err().reason, reasons::MALFORMED);
        assert_eq!(decode(key, Some(b"{not json")).unwrap_err().reason, reasons::MALFORMED);
        assert_eq!(decode(key, Some(b"[1,2]")).unwrap_err().reason, reasons::SCHEMA_INVALID);
        let event = |kind: &str, customer: &str, currency: &str| {
            format!(
                r#"{{"event_id":"5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81","event_time":"2026-01-01T10:00:00Z","schema_version":1,
                "customer_id":"{customer}","account_id":"A","kind":"{kind}","amount_minor":-100,"currency":"{currency}",
                "balance_after_minor":0,"channel":"card_present"}}"#
            )
        };
        assert!(decode(key, Some(event("card_purchase", "C1", "GBP").as_bytes())).is_ok());
        let e = decode(key, Some(event("crypto_purchase", "C1", "GBP").as_bytes())).unwrap_err();
        assert_eq!((e.reason, e.error.as_str()), (reasons::UNKNOWN_KIND, "unknown transaction kind `crypto_purchase`"));
        assert_eq!(
            decode(key, Some(event("card_purchase", "C2", "GBP").as_bytes())).unwrap_err().reason,
            reasons::SCHEMA_INVALID
        );
        assert_eq!(
            decode(key, Some(event("card_purchase", "C1", "gbp").as_bytes())).unwrap_err().reason,
            reasons::SCHEMA_INVALID
        );
        let no_amount = event("card_purchase", "C1", "GBP").replace(r#""amount_minor":-100,"#, "");
        let e = decode(key, Some(no_amount.as_bytes())).unwrap_err();
        assert_eq!(e.reason, reasons::SCHEMA_INVALID);
        assert!(e.error.contains("amount_minor"), "{}", e.error);
    }
}
