//! The processing core, with no Kafka in it: bytes of a transaction in, a RiskScore (if
//! one is due) and a note of the changed day for the changelog out, or the reason the
//! input goes to dead-letter.
//!
//! State is kept per input partition, so a revoked partition's customers can be dropped
//! and an assigned partition's restored from the changelog without touching the rest.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use compact_str::CompactString;
use hashbrown::HashMap;
use serde::Deserialize;
use smallvec::SmallVec;
use uuid::Uuid;

use eventpipe_common::events::{
    derived_event_id, Channel, CustomerFeatures, FeatureValues, LastScore, MerchantCategory, RiskScore,
    TransactionEvent, TransactionKind, SCHEMA_VERSION,
};

use eventpipe_common::stream::check_keyed_event;
pub use eventpipe_common::stream::Rejected;

use crate::changelog::{self, CustomerDay};
use crate::json::Object;
use crate::model::{RiskModel, Scorer};
use crate::window::{day_number, utc_day, Applied, CustomerWindow, Posting};

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

/// Appends the JSON of `score` to `out`: the bytes of `serde_json::to_vec(score)`, with
/// its constant field names written unescaped (see [`crate::json`]).
pub fn encode_score(out: &mut Vec<u8>, score: &RiskScore) {
    let mut o = Object::new(out);
    o.envelope(score.event_id, score.event_time, score.schema_version, &score.customer_id);
    o.f64("score", score.score);
    o.serde("band", &score.band);
    o.str("model_version", &score.model_version);
    o.objects("top_factors", &score.top_factors, |o, f| {
        o.str("feature", &f.feature);
        o.f64("value", f.value);
        o.f64("contribution", f.contribution);
    });
    o.uuid("trigger_event_id", score.trigger_event_id);
    o.end();
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

/// A transaction as decoded on the hot path: the strings borrowed from the input where
/// they need no unescaping, the timestamp parsed by [`crate::rfc3339`]. It accepts and
/// rejects exactly what [`TransactionEvent`] does.
#[derive(Debug, Deserialize)]
pub struct TransactionView<'a> {
    pub event_id: Uuid,
    #[serde(deserialize_with = "crate::rfc3339::deserialize_utc")]
    pub event_time: DateTime<Utc>,
    pub schema_version: u32,
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    #[serde(borrow)]
    pub account_id: Cow<'a, str>,
    pub kind: TransactionKind,
    pub amount_minor: i64,
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    pub balance_after_minor: i64,
    #[serde(default)]
    pub merchant_category: Option<MerchantCategory>,
    pub channel: Channel,
}

impl<'a> From<&'a TransactionEvent> for TransactionView<'a> {
    fn from(e: &'a TransactionEvent) -> Self {
        TransactionView {
            event_id: e.event_id,
            event_time: e.event_time,
            schema_version: e.schema_version,
            customer_id: Cow::Borrowed(&e.customer_id),
            account_id: Cow::Borrowed(&e.account_id),
            kind: e.kind,
            amount_minor: e.amount_minor,
            currency: Cow::Borrowed(&e.currency),
            balance_after_minor: e.balance_after_minor,
            merchant_category: e.merchant_category,
            channel: e.channel,
        }
    }
}

impl TransactionView<'_> {
    fn posting(&self) -> Posting {
        Posting {
            event_time: self.event_time,
            kind: self.kind,
            amount_minor: self.amount_minor,
            balance_after_minor: self.balance_after_minor,
            merchant_category: self.merchant_category,
        }
    }
}

/// Decodes and checks a transaction; the error says which dead-letter reason applies.
pub fn decode<'a>(key: Option<&[u8]>, payload: Option<&'a [u8]>) -> Result<TransactionView<'a>, Rejected> {
    let payload = payload.ok_or_else(|| Rejected::new(reasons::MALFORMED, "record has no payload"))?;
    // Checking the UTF-8 of the whole payload at once is cheaper than serde_json
    // checking each string; invalid UTF-8 goes the slice way, for serde_json's error.
    // The producer's own shape is read by the fast path; serde_json decides the rest.
    let parsed = match std::str::from_utf8(payload) {
        Ok(text) => match crate::fast_decode::decode(text) {
            Some(view) => Ok(view),
            None => serde_json::from_str::<TransactionView<'a>>(text),
        },
        Err(_) => serde_json::from_slice(payload),
    };
    let event = parsed.map_err(|e| classify(payload, e))?;
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

/// A changelog record to write: to `partition` of `P.customer-features`, under `key`,
/// borrowed from the core for the write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangelogRecord<'a> {
    pub partition: i32,
    pub key: &'a str,
    /// `None`: a tombstone.
    pub payload: Option<&'a [u8]>,
    /// The customer's latest event time, in milliseconds.
    pub timestamp_ms: i64,
}

/// A customer's window, and what changed in it since the changelog was last written.
#[derive(Debug, Default)]
struct Customer {
    window: CustomerWindow,
    /// Id of the last event applied since the last write; `None`: nothing to write.
    last_event: Option<Uuid>,
    /// Day numbers whose buckets changed since the last write.
    changed: SmallVec<[i32; 4]>,
    /// Day numbers that fell out of the ring since the last write.
    evicted: Vec<i32>,
    /// Day numbers whose buckets ride only in the last `customer_id` record written or
    /// restored (the latest day): when that record is replaced by one carrying another
    /// day, they get day records of their own.
    carried: SmallVec<[i32; 2]>,
    /// The window's features, when computed (to score) since the window last changed:
    /// the changelog record reuses them.
    features: Option<FeatureValues>,
}

/// One input partition's customers, and the customers touched since the last write.
#[derive(Debug, Default)]
struct PartitionState {
    /// By customer id, kept inline (ids are short): comparing a key reads no other memory.
    customers: HashMap<CompactString, Customer>,
    dirty: Vec<CompactString>,
}

/// Customers' windows by input partition, the model, and what changed since the
/// changelog was last written.
pub struct Core {
    config: CoreConfig,
    scorer: Scorer,
    partitions: HashMap<i32, PartitionState>,
    /// The changelog record being written, and its key (reused).
    payload: Vec<u8>,
    key: String,
}

impl Core {
    /// An empty core scoring with `model`.
    pub fn new(config: CoreConfig, model: Arc<RiskModel>) -> Self {
        Core {
            config,
            scorer: Scorer::new(model),
            partitions: HashMap::new(),
            payload: Vec::with_capacity(1024),
            key: String::with_capacity(64),
        }
    }

    /// The model in use.
    pub fn model(&self) -> &Arc<RiskModel> {
        self.scorer.model()
    }

    /// Switches to another model (hot reload); later scores carry its version.
    pub fn set_model(&mut self, model: Arc<RiskModel>) {
        self.scorer = Scorer::new(model);
    }

    /// The window of `customer` in `partition`, if known.
    pub fn window(&self, partition: i32, customer: &str) -> Option<&CustomerWindow> {
        Some(&self.partitions.get(&partition)?.customers.get(customer)?.window)
    }

    /// Number of customers held for `partition`.
    pub fn customers_in(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |p| p.customers.len())
    }

    /// Processes one record of input partition `partition`.
    pub fn process(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<Processed, Rejected> {
        let event = decode(key, payload)?;
        self.apply_view(partition, &event)
    }

    /// Applies a decoded event; scores it when a score is due.
    pub fn apply(&mut self, partition: i32, event: &TransactionEvent) -> Result<Processed, Rejected> {
        self.apply_view(partition, &TransactionView::from(event))
    }

    fn apply_view(&mut self, partition: i32, event: &TransactionView<'_>) -> Result<Processed, Rejected> {
        let state = self.partitions.entry(partition).or_default();
        let customer = state.customers.entry(CompactString::from(event.customer_id.as_ref())).or_default();
        let evicted_before = customer.evicted.len();
        let new_day = match customer.window.apply_posting(
            &event.posting(),
            self.config.allowed_lateness,
            &mut customer.evicted,
        ) {
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
        customer.features = None;
        let day = utc_day(event.event_time);
        let number = day_number(day);
        if customer.last_event.is_none() {
            state.dirty.push(CompactString::from(event.customer_id.as_ref()));
        }
        customer.last_event = Some(event.event_id);
        if !customer.changed.contains(&number) {
            customer.changed.push(number);
        }
        if customer.evicted.len() > evicted_before {
            let evicted = &customer.evicted[evicted_before..];
            customer.changed.retain(|d| !evicted.contains(d));
        }

        let window = &mut customer.window;
        let due = is_significant(event.kind) || new_day || window.last_score.is_none_or(|s| s.day < day);
        if !due {
            return Ok(Processed { score: None });
        }
        let features = &*customer.features.insert(window.features());
        let (score, band) = self.scorer.score(features);
        let emit = match window.last_score {
            None => true,
            Some(last) => last.band != band || (score - last.score).abs() >= self.config.min_score_change,
        };
        // A late event scores with the day it belongs to, but the day last scored never
        // moves back: the customer's latest day stays scored.
        let kept = match (emit, window.last_score) {
            (false, Some(last)) => LastScore { day: day.max(last.day), ..last },
            (true, Some(last)) => LastScore { score, band, day: day.max(last.day) },
            (true, None) | (false, None) => LastScore { score, band, day },
        };
        window.last_score = Some(kept);
        if !emit {
            return Ok(Processed { score: None });
        }
        Ok(Processed {
            score: Some(RiskScore {
                event_id: derived_event_id("risk-score", &[event.event_id.as_bytes()]),
                event_time: event.event_time,
                schema_version: SCHEMA_VERSION,
                customer_id: event.customer_id.clone().into_owned(),
                score,
                band,
                model_version: self.scorer.model().version.clone(),
                top_factors: self.scorer.top_factors(features),
                trigger_event_id: event.event_id,
            }),
        })
    }

    /// Writes the changelog of what changed since the last call: for each touched
    /// customer, one record per changed day, a tombstone per day that left the ring, and
    /// its `customer_id` record (see [`crate::changelog`]). Record ids derive from the
    /// last event applied, so a replay repeats them.
    pub fn take_changelog(&mut self, mut write: impl FnMut(ChangelogRecord<'_>)) {
        let Core { partitions, payload, key, .. } = self;
        for (&partition, state) in partitions.iter_mut() {
            for customer_id in state.dirty.drain(..) {
                let Some(customer) = state.customers.get_mut(&customer_id) else { continue };
                let Some(last_event) = customer.last_event.take() else { continue };
                let features = customer.features.take().unwrap_or_else(|| customer.window.features());
                let window = &customer.window;
                let Some(latest) = window.latest_event_time() else { continue };
                let timestamp_ms = latest.timestamp_millis();
                let latest_day = day_number(utc_day(latest));
                // Days the previous customer record carried now need records of their own.
                for day in customer.carried.drain(..) {
                    if day != latest_day && window.bucket(day).is_some() && !customer.changed.contains(&day) {
                        customer.changed.push(day);
                    }
                }
                for day in customer.changed.drain(..).filter(|d| *d != latest_day) {
                    payload.clear();
                    changelog::encode_day(
                        payload,
                        &customer_id,
                        window,
                        day,
                        changelog::day_record_id(last_event, day),
                    );
                    changelog::write_day_key(key, &customer_id, day);
                    write(ChangelogRecord { partition, key, payload: Some(payload), timestamp_ms });
                }
                for day in customer.evicted.drain(..) {
                    changelog::write_day_key(key, &customer_id, day);
                    write(ChangelogRecord { partition, key, payload: None, timestamp_ms });
                }
                payload.clear();
                let id = changelog::customer_record_id(last_event);
                changelog::encode_customer(payload, &customer_id, window, &features, id);
                customer.carried.push(latest_day);
                let key = changelog::customer_key(&customer_id);
                write(ChangelogRecord { partition, key: &key, payload: Some(payload), timestamp_ms });
            }
        }
    }

    /// Forgets what was touched without writing it (the transaction was aborted; the
    /// state is about to be restored).
    pub fn discard_changelog(&mut self) {
        for state in self.partitions.values_mut() {
            for customer_id in state.dirty.drain(..) {
                if let Some(c) = state.customers.get_mut(&customer_id) {
                    c.last_event = None;
                    c.changed.clear();
                    c.evicted.clear();
                }
            }
        }
    }

    /// Loads one changelog record (key and payload as on the topic; `None` payload is a
    /// tombstone) into `partition`'s state.
    pub fn restore_record(&mut self, partition: i32, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), String> {
        let key = key.and_then(|k| std::str::from_utf8(k).ok()).unwrap_or_default();
        match (changelog::parse_day_key(key), payload) {
            (Some(_), Some(payload)) => {
                let record: CustomerDay = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let state = self.partitions.entry(partition).or_default();
                let customer = state.customers.entry(CompactString::from(record.customer_id.as_str())).or_default();
                customer.window.merge_day(record.bucket);
                customer.features = None;
            }
            (Some((customer_id, day)), None) => {
                if let Some(c) = self.partitions.get_mut(&partition).and_then(|p| p.customers.get_mut(&*customer_id)) {
                    c.window.remove_day(day);
                    c.features = None;
                }
            }
            (None, Some(payload)) => {
                let record: CustomerFeatures = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                self.restore(partition, &record);
            }
            // The whole-window format never wrote tombstones; nothing to forget.
            (None, None) => {}
        }
        Ok(())
    }

    /// Folds a `customer_id` changelog record into `partition`'s state.
    pub fn restore(&mut self, partition: i32, record: &CustomerFeatures) {
        let state = self.partitions.entry(partition).or_default();
        let customer = state.customers.entry(CompactString::from(record.customer_id.as_str())).or_default();
        customer.window.merge_record(record);
        customer.features = None;
        customer.carried.clear();
        customer.carried.extend(record.days.iter().map(|b| day_number(b.day)));
    }

    /// Drops the state of `partition` (revoked, or about to be restored).
    pub fn drop_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::RING_DAYS;

    fn built_in_model() -> Arc<RiskModel> {
        Arc::new(serde_json::from_str(crate::settings::BUILT_IN_MODEL).unwrap())
    }

    /// A card-present GBP transaction of `customer`'s account A1 at `time` (RFC 3339),
    /// with event id `n`.
    fn posting(
        customer: &str,
        time: &str,
        kind: TransactionKind,
        amount: i64,
        balance: i64,
        n: u128,
    ) -> TransactionEvent {
        TransactionEvent {
            event_id: Uuid::from_u128(n),
            event_time: time.parse().unwrap(),
            schema_version: SCHEMA_VERSION,
            customer_id: customer.into(),
            account_id: "A1".into(),
            kind,
            amount_minor: amount,
            currency: "GBP".into(),
            balance_after_minor: balance,
            merchant_category: None,
            channel: Channel::CardPresent,
        }
    }

    #[test]
    fn decode_classifies_bad_input() {
        let key = Some(&b"C1"[..]);
        assert_eq!(decode(key, None).unwrap_err().reason, reasons::MALFORMED);
        assert_eq!(decode(key, Some(b"{not json")).unwrap_err().reason, reasons::MALFORMED);
        let bytes = b"{\"customer_id\":\"C\xff1\"}";
        let bad_utf8 = decode(key, Some(bytes)).unwrap_err();
        let expected = serde_json::from_slice::<TransactionEvent>(bytes).unwrap_err().to_string();
        assert_eq!((bad_utf8.reason, bad_utf8.error), (reasons::MALFORMED, expected));
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

    /// Simulated customers over more days than the ring holds, with some events arriving
    /// late (within the allowed lateness) so that earlier days change again.
    fn history(customers: u32, days: u32) -> Vec<TransactionEvent> {
        let mut events = crate::window::testing::simulated(customers, 3, days);
        // Hold back every 10th event by 20 hours (still within a day's lateness).
        crate::window::testing::hold_back(&mut events, 10);
        events
    }

    #[test]
    fn scores_encode_byte_for_byte_as_serde_json() {
        let model = built_in_model();
        let mut core = Core::new(CoreConfig::default(), model);
        let mut scores: Vec<RiskScore> = history(40, 90).iter().filter_map(|e| core.apply(0, e).ok()?.score).collect();
        assert!(scores.len() > 100, "{} scores", scores.len());
        // Text from outside (ids, model versions) is escaped; odd numbers keep serde_json's form.
        let mut odd = scores[0].clone();
        odd.customer_id = "C \"7\"\t\\ é".into();
        odd.model_version = "v2\u{1}".into();
        odd.score = 1e-300;
        odd.top_factors[0].value = f64::NAN;
        odd.top_factors[1].contribution = -1e300;
        scores.push(odd);
        for score in &scores {
            let mut fast = Vec::new();
            encode_score(&mut fast, score);
            assert_eq!(String::from_utf8(fast).unwrap(), serde_json::to_string(score).unwrap());
        }
    }

    /// A changelog record as the broker keeps it.
    #[derive(Debug, Clone)]
    struct Written {
        partition: i32,
        key: String,
        payload: Option<Vec<u8>>,
    }

    fn own(r: ChangelogRecord<'_>) -> Written {
        Written { partition: r.partition, key: r.key.to_owned(), payload: r.payload.map(<[u8]>::to_vec) }
    }

    /// Kafka's compaction: the latest record of each key, in offset order; with
    /// `drop_tombstones`, as after `delete.retention.ms`.
    fn compact(records: &[Written], drop_tombstones: bool) -> Vec<Written> {
        let last: HashMap<&str, usize> = records.iter().enumerate().map(|(i, r)| (r.key.as_str(), i)).collect();
        records
            .iter()
            .enumerate()
            .filter(|(i, r)| last[r.key.as_str()] == *i && !(drop_tombstones && r.payload.is_none()))
            .map(|(_, r)| r.clone())
            .collect()
    }

    #[test]
    fn per_day_changelog_rebuilds_every_window_before_and_after_compaction() {
        let model = built_in_model();
        let events = history(12, 150);
        let mut core = Core::new(CoreConfig::default(), model.clone());
        let mut records = Vec::new();
        let mut late = 0;
        for (i, e) in events.iter().enumerate() {
            let json = serde_json::to_vec(e).unwrap();
            if core.process(2, Some(e.customer_id.as_bytes()), Some(&json)).is_err() {
                late += 1;
            }
            if i % 37 == 0 {
                core.take_changelog(|r| records.push(own(r)));
            }
        }
        core.take_changelog(|r| records.push(own(r)));
        assert_eq!(late, 0, "the held-back events are within the allowed lateness");
        let tombstones = records.iter().filter(|r| r.payload.is_none()).count();
        assert!(tombstones > 12 * 40, "days left the 90-day ring: {tombstones} tombstones");
        assert!(records.iter().all(|r| r.partition == 2));

        for log in [records.clone(), compact(&records, false), compact(&records, true)] {
            let mut rebuilt = Core::new(CoreConfig::default(), model.clone());
            for r in &log {
                rebuilt.restore_record(2, Some(r.key.as_bytes()), r.payload.as_deref()).unwrap();
            }
            assert_eq!(rebuilt.customers_in(2), 12);
            for e in &events {
                assert_eq!(rebuilt.window(2, &e.customer_id), core.window(2, &e.customer_id));
            }
        }
        // Compaction keeps at most a ring of days and one customer record per customer.
        assert!(compact(&records, true).len() <= 12 * (RING_DAYS as usize + 1));
    }

    #[test]
    fn an_aborted_batch_writes_nothing_and_the_next_batch_only_its_own_days() {
        let model = built_in_model();
        let events = history(2, 20);
        let mut core = Core::new(CoreConfig::default(), model);
        for e in &events[..20] {
            core.apply(0, e).ok();
        }
        core.discard_changelog();
        let mut written = Vec::new();
        core.take_changelog(|r| written.push(own(r)));
        assert!(written.is_empty());
        let last = events.last().unwrap();
        core.apply(0, last).unwrap();
        core.take_changelog(|r| written.push(own(r)));
        let day = last.event_time.date_naive();
        let keys: Vec<_> = written.iter().map(|r| r.key.as_str()).collect();
        // The only changed day is the latest: it rides in the customer record.
        assert_eq!(keys, [last.customer_id.as_str()]);
        let window = core.window(0, &last.customer_id).unwrap();
        let record: CustomerFeatures = serde_json::from_slice(written[0].payload.as_ref().unwrap()).unwrap();
        assert_eq!((record.as_of, record.event_time), (day, last.event_time));
        assert_eq!(record.days, [window.days().last().unwrap().clone()]);
        assert_eq!(record.features, window.features());
    }

    #[test]
    fn a_customer_active_one_day_per_batch_costs_one_record_until_the_day_changes() {
        let model = built_in_model();
        let event = |day: u32, hour: u32, n: u128| {
            let time = format!("2026-03-{day:02}T{hour:02}:00:00Z");
            posting("C1", &time, TransactionKind::CardPurchase, -500, 10_000 - 500 * n as i64, n)
        };
        let mut core = Core::new(CoreConfig::default(), model.clone());
        let mut batches: Vec<Vec<Written>> = Vec::new();
        let mut batch = |core: &mut Core, events: &[TransactionEvent]| {
            for e in events {
                core.apply(0, e).unwrap();
            }
            let mut written = Vec::new();
            core.take_changelog(|r| written.push(own(r)));
            batches.push(written);
        };
        batch(&mut core, &[event(1, 9, 1), event(1, 10, 2)]);
        batch(&mut core, &[event(1, 11, 3)]);
        // 2 March begins: 1 March, carried so far, gets its own record.
        batch(&mut core, &[event(2, 9, 4)]);
        // A late event for 1 March, the day before the latest.
        batch(&mut core, &[event(1, 23, 5)]);
        let keys: Vec<Vec<&str>> = batches.iter().map(|b| b.iter().map(|r| r.key.as_str()).collect()).collect();
        assert_eq!(keys, [vec!["C1"], vec!["C1"], vec!["C1/2026-03-01", "C1"], vec!["C1/2026-03-01", "C1"]]);

        // Compacted, the log is one day record and the customer record carrying 2 March.
        let log: Vec<Written> = batches.concat();
        let compacted = compact(&log, true);
        assert_eq!(compacted.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["C1/2026-03-01", "C1"]);
        let mut rebuilt = Core::new(CoreConfig::default(), model);
        for r in &compacted {
            rebuilt.restore_record(0, Some(r.key.as_bytes()), r.payload.as_deref()).unwrap();
        }
        assert_eq!(rebuilt.window(0, "C1"), core.window(0, "C1"));
        assert_eq!(rebuilt.window(0, "C1").unwrap().days().count(), 2);
    }

    #[test]
    fn a_customer_id_shaped_like_another_customers_day_key_keeps_its_own_records() {
        let model = built_in_model();
        let event = |customer: &str, day: u32, n: u128| {
            let time = format!("2026-03-{day:02}T09:00:00Z");
            posting(customer, &time, TransactionKind::CardPurchase, -500 * n as i64, 10_000 - 500 * n as i64, n)
        };
        // `A`'s record for 1 March would be keyed `A/2026-03-01`: the other customer's id.
        let customers = ["A", "A/2026-03-01", "100%"];
        let mut core = Core::new(CoreConfig::default(), model.clone());
        let mut log = Vec::new();
        for (n, day) in [(1, 1), (2, 2)] {
            for (i, customer) in customers.iter().enumerate() {
                core.apply(0, &event(customer, day, n * 10 + i as u128)).unwrap();
            }
            core.take_changelog(|r| log.push(own(r)));
        }
        let keys: Vec<&str> = log.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "A",
                "A%2F2026-03-01",
                "100%25",
                "A/2026-03-01",
                "A",
                "A%2F2026-03-01/2026-03-01",
                "A%2F2026-03-01",
                "100%25/2026-03-01",
                "100%25"
            ]
        );
        for log in [log.clone(), compact(&log, true)] {
            let mut rebuilt = Core::new(CoreConfig::default(), model.clone());
            for r in &log {
                rebuilt.restore_record(0, Some(r.key.as_bytes()), r.payload.as_deref()).unwrap();
            }
            for customer in customers {
                assert_eq!(rebuilt.window(0, customer), core.window(0, customer), "{customer}");
                assert_eq!(rebuilt.window(0, customer).unwrap().days().count(), 2, "{customer}");
            }
        }
    }

    #[test]
    fn a_late_significant_event_does_not_move_the_day_last_scored_back() {
        let model = built_in_model();
        let event = |time: &str, kind: TransactionKind, n: u128| posting("C1", time, kind, -2_000, 50_000, n);
        let march = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let last_scored = |core: &Core| core.window(0, "C1").unwrap().last_score.unwrap().day;
        for min_score_change in [0.0, 1.0] {
            // Every score emitted, or none after the first: both keep the latest day.
            let mut core = Core::new(CoreConfig { min_score_change, ..CoreConfig::default() }, model.clone());
            core.apply(0, &event("2026-03-02T09:00:00Z", TransactionKind::CardPurchase, 1)).unwrap();
            assert_eq!(last_scored(&core), march(2));
            // Late, but within the allowed lateness, and significant: it is scored.
            core.apply(0, &event("2026-03-01T23:00:00Z", TransactionKind::Gambling, 2)).unwrap();
            assert_eq!(last_scored(&core), march(2), "min_score_change {min_score_change}");
            // So the next ordinary event of 2 March is not due a score.
            let next = core.apply(0, &event("2026-03-02T10:00:00Z", TransactionKind::CardPurchase, 3)).unwrap();
            assert_eq!(next.score, None);
        }
    }
}
