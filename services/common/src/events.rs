//! The events that travel between the stages, one type per topic.
//!
//! These types are the wire contract of ARCHITECTURE.md: every event is JSON, carries
//! `event_id`, `event_time` (RFC 3339, UTC) and `schema_version`, and money is integer
//! minor units. The JSON Schema files under `services/common/schemas/` are generated
//! from these types (see [`schemas`]) and a test keeps them in step.
//!
//! Fields are added in a backwards-compatible way (new optional fields); a breaking
//! change bumps [`SCHEMA_VERSION`].

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of the event schemas written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// The namespace of every deterministic (name-based, v5) event id in eventpipe.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5e1f_0a3c_8d2b_4c7e_9a61_0f3b_2d4e_6a81);

/// A deterministic event id derived from the ids of the events that caused it, so a
/// replay of the same input produces the same output ids (downstream can deduplicate).
///
/// It is `Uuid::new_v5(&EVENT_ID_NAMESPACE, name)` for `name` = `kind`, then each part
/// after a 0 byte, hashed in place by the `sha1` crate: uuid's own SHA-1 is portable
/// code, and the changelog derives an id for every record it writes.
pub fn derived_event_id(kind: &str, parts: &[&[u8]]) -> Uuid {
    use sha1::{Digest, Sha1};
    let mut hasher = Sha1::new();
    hasher.update(EVENT_ID_NAMESPACE.as_bytes());
    hasher.update(kind.as_bytes());
    for part in parts {
        hasher.update([0]);
        hasher.update(part);
    }
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// What happened on a customer's current account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// Monthly pay from the employer (credit).
    SalaryCredit,
    /// Money received from another account (credit).
    TransferIn,
    /// A card payment at a merchant (debit).
    CardPurchase,
    /// A bill collected by direct debit (debit).
    DirectDebit,
    /// A direct debit the bank refused for lack of funds; no money moved (amount 0).
    DirectDebitFailed,
    /// Cash taken at an ATM (debit).
    AtmWithdrawal,
    /// Money sent to another account (debit).
    TransferOut,
    /// A loan instalment paid (debit).
    LoanRepayment,
    /// A loan instalment that could not be collected; no money moved (amount 0).
    LoanRepaymentMissed,
    /// A fee charged for an overdrawn day (debit).
    OverdraftFee,
    /// A payment to a gambling operator (debit).
    Gambling,
    /// A buy-now-pay-later purchase or instalment (debit).
    BnplPurchase,
}

impl TransactionKind {
    /// Every kind, in declaration order.
    pub const ALL: [TransactionKind; 12] = [
        Self::SalaryCredit,
        Self::TransferIn,
        Self::CardPurchase,
        Self::DirectDebit,
        Self::DirectDebitFailed,
        Self::AtmWithdrawal,
        Self::TransferOut,
        Self::LoanRepayment,
        Self::LoanRepaymentMissed,
        Self::OverdraftFee,
        Self::Gambling,
        Self::BnplPurchase,
    ];
}

/// The merchant category of a card, gambling or BNPL payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MerchantCategory {
    Groceries,
    Restaurants,
    Transport,
    Fuel,
    Utilities,
    Telecoms,
    Housing,
    Entertainment,
    Clothing,
    Electronics,
    Travel,
    Health,
    Gambling,
    Cash,
    Lending,
}

/// How a transaction reached the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Card in a shop.
    CardPresent,
    /// Card online or in an app.
    CardNotPresent,
    /// Direct debit collection.
    DirectDebit,
    /// Bank transfer (faster payments, BACS).
    BankTransfer,
    /// ATM.
    Atm,
    /// Posted by the bank itself (fees, loan collections).
    Internal,
}

/// One posting on a customer's current account (topic `P.transactions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TransactionEvent {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// When the transaction was posted (RFC 3339, UTC).
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// The customer; also the Kafka key.
    pub customer_id: String,
    /// The customer's current account.
    pub account_id: String,
    /// What happened.
    pub kind: TransactionKind,
    /// Signed amount in minor units: credits positive, debits negative, 0 for refused
    /// collections (`direct_debit_failed`, `loan_repayment_missed`).
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Account balance after this posting: always the previous balance plus `amount_minor`.
    pub balance_after_minor: i64,
    /// Merchant category, for card, gambling and BNPL payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_category: Option<MerchantCategory>,
    /// How the transaction reached the account.
    pub channel: Channel,
}

/// The simulator's ground truth about a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Arrears persisted past the default threshold.
    Defaulted,
    /// A defaulted customer cleared all arrears.
    Cured,
}

/// Ground truth from the simulator (topic `P.customer-outcomes`), so the model can be
/// judged live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerOutcome {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// When the outcome happened (RFC 3339, UTC).
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// The customer; also the Kafka key.
    pub customer_id: String,
    /// `defaulted` or `cured`.
    pub outcome: Outcome,
    /// Days the oldest unpaid arrears had been outstanding at this moment.
    pub days_in_arrears: u32,
    /// Total unpaid arrears in minor units at this moment (0 when cured).
    pub arrears_minor: i64,
}

/// Risk band of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskBand {
    Low,
    Medium,
    High,
    Critical,
}

/// One feature's part in a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskFactor {
    /// Feature name, as in CustomerFeatures.
    pub feature: String,
    /// The feature's raw value.
    pub value: f64,
    /// coefficient × standardized value: its push on the log-odds.
    pub contribution: f64,
}

/// An explainable risk score for a customer (topic `P.risk-scores`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskScore {
    /// Derived from `trigger_event_id`, so a replay yields the same id.
    pub event_id: Uuid,
    /// Event time of the trigger (RFC 3339, UTC).
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// The customer; also the Kafka key.
    pub customer_id: String,
    /// Probability of default within the model's horizon.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub score: f64,
    /// Band of the score.
    pub band: RiskBand,
    /// Version of the model that scored.
    pub model_version: String,
    /// The three features that pushed the score up the most.
    pub top_factors: Vec<RiskFactor>,
    /// The transaction that caused this score.
    pub trigger_event_id: Uuid,
}

/// An action taken for a customer, with why (topic `P.interventions`, the audit trail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Intervention {
    /// Derived from `trigger_score_id` and the rule, so a replay yields the same id.
    pub event_id: Uuid,
    /// Event time of the triggering score (RFC 3339, UTC).
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// The customer; also the Kafka key.
    pub customer_id: String,
    /// The action, e.g. `sms_nudge`, `agent_call`.
    pub action: String,
    /// Name of the rule that fired.
    pub rule: String,
    /// Human-readable reason: the conditions that held.
    pub reason: String,
    /// Score that triggered the action.
    pub score: f64,
    /// Band that triggered the action.
    pub band: RiskBand,
    /// Model version of the triggering score.
    pub model_version: String,
    /// event_id of the triggering RiskScore.
    pub trigger_score_id: Uuid,
}

/// The named per-customer features (formulas in docs/features.md). Money in major
/// units (e.g. pounds), counts as numbers, shares and ratios as fractions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureValues {
    pub salary_days_late: f64,
    pub salary_drop_ratio: f64,
    pub balance_min_7d: f64,
    pub balance_trend_30d: f64,
    pub days_overdrawn_30d: f64,
    pub failed_debits_30d: f64,
    pub missed_repayments_90d: f64,
    pub overdraft_fees_30d: f64,
    pub atm_cash_share_30d: f64,
    pub gambling_share_30d: f64,
    pub bnpl_count_30d: f64,
    pub spend_to_income_30d: f64,
    pub discretionary_spend_change: f64,
    pub txn_count_7d: f64,
    pub inflow_30d: f64,
    pub outflow_30d: f64,
}

impl FeatureValues {
    /// Every feature name, in the order of [`FeatureValues::values`].
    pub const NAMES: [&'static str; 16] = [
        "salary_days_late",
        "salary_drop_ratio",
        "balance_min_7d",
        "balance_trend_30d",
        "days_overdrawn_30d",
        "failed_debits_30d",
        "missed_repayments_90d",
        "overdraft_fees_30d",
        "atm_cash_share_30d",
        "gambling_share_30d",
        "bnpl_count_30d",
        "spend_to_income_30d",
        "discretionary_spend_change",
        "txn_count_7d",
        "inflow_30d",
        "outflow_30d",
    ];

    /// The values in the order of [`FeatureValues::NAMES`].
    pub fn values(&self) -> [f64; 16] {
        [
            self.salary_days_late,
            self.salary_drop_ratio,
            self.balance_min_7d,
            self.balance_trend_30d,
            self.days_overdrawn_30d,
            self.failed_debits_30d,
            self.missed_repayments_90d,
            self.overdraft_fees_30d,
            self.atm_cash_share_30d,
            self.gambling_share_30d,
            self.bnpl_count_30d,
            self.spend_to_income_30d,
            self.discretionary_spend_change,
            self.txn_count_7d,
            self.inflow_30d,
            self.outflow_30d,
        ]
    }

    /// The index of feature `name` in [`FeatureValues::NAMES`].
    pub fn index_of(name: &str) -> Option<usize> {
        Self::NAMES.iter().position(|n| *n == name)
    }
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// One event-time day of a customer's account, the unit of the rolling windows. Zero
/// fields are left out of the JSON to keep the changelog small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DayBucket {
    /// The UTC day.
    pub day: NaiveDate,
    /// Balance after the day's last posting.
    pub closing_balance_minor: i64,
    /// Event time of the day's last posting (decides the closing balance when events
    /// arrive out of order).
    pub closing_time: DateTime<Utc>,
    /// Lowest balance seen that day.
    pub min_balance_minor: i64,
    /// Sum of credits.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub inflow_minor: i64,
    /// Sum of debits (positive number).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub outflow_minor: i64,
    /// Discretionary spending: non-essential card purchases, BNPL, gambling (positive).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub discretionary_minor: i64,
    /// ATM cash (positive number).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub atm_minor: i64,
    /// Gambling (positive number).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub gambling_minor: i64,
    /// Number of postings.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub txn_count: u32,
    /// Refused direct debits.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub failed_debits: u32,
    /// Missed loan repayments.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub missed_repayments: u32,
    /// Overdraft fees.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub overdraft_fees: u32,
    /// BNPL purchases.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub bnpl_count: u32,
}

/// A salary credit remembered for the salary features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SalaryCredit {
    pub day: NaiveDate,
    pub amount_minor: i64,
}

/// The last score emitted for a customer (decides whether the next one is emitted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LastScore {
    pub score: f64,
    pub band: RiskBand,
    /// Event-time day it was computed for.
    pub day: NaiveDate,
}

/// A customer's features and the window state they were computed from (topic
/// `P.customer-features`, compacted: the changelog the feature-processor restores from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerFeatures {
    /// Unique id of this record.
    pub event_id: Uuid,
    /// Event time of the latest transaction applied.
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// The customer; also the Kafka key (with `%` and `/` written `%25` and `%2F`).
    pub customer_id: String,
    /// The event-time day the features describe.
    pub as_of: NaiveDate,
    /// The named features.
    pub features: FeatureValues,
    /// The buckets this record carries, oldest first: the latest day's (the day still
    /// filling up). The earlier days of the window are [`CustomerDay`] records.
    pub days: Vec<DayBucket>,
    /// The latest salary credits, oldest first (at most four).
    #[serde(default)]
    pub salaries: Vec<SalaryCredit>,
    /// The last risk score emitted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_score: Option<LastScore>,
}

/// One day of a customer's window (topic `P.customer-features`, key
/// `customer_id/YYYY-MM-DD`): the changelog's record for a day other than the latest,
/// which rides in the customer's [`CustomerFeatures`]. A tombstone under the same key
/// removes the day once it leaves the 90-day window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerDay {
    /// Unique id of this record, derived from the last transaction applied and the day.
    pub event_id: Uuid,
    /// Event time of the customer's latest transaction when written.
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// The customer (in the key, `%` and `/` are written `%25` and `%2F`).
    pub customer_id: String,
    /// The day's bucket (its `day` is the key's).
    pub bucket: DayBucket,
}

/// Processing latency percentiles over a window, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyPercentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What one instance of a stage did over one window (topic `P.pipeline-stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageStats {
    /// Unique id of this record.
    pub event_id: Uuid,
    /// End of the window (RFC 3339, UTC, wall clock).
    pub event_time: DateTime<Utc>,
    /// Version of this schema.
    pub schema_version: u32,
    /// Stage name: producer, feature-processor, intervention, dashboard.
    pub stage: String,
    /// Instance (POD_NAME).
    pub instance: String,
    /// Start of the window (RFC 3339, UTC, wall clock).
    pub window_start: DateTime<Utc>,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Records consumed in the window.
    pub consumed: u64,
    /// Records produced (acknowledged) in the window.
    pub produced: u64,
    /// Records sent to dead-letter in the window.
    pub dead_lettered: u64,
    /// Consumer lag summed over the instance's partitions at the end of the window.
    pub lag: u64,
    /// Processing latency over the window.
    pub latency: LatencyPercentiles,
}

/// Every event type with the file stem of its JSON Schema.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("transaction-event", schemars::schema_for!(TransactionEvent)),
        ("customer-outcome", schemars::schema_for!(CustomerOutcome)),
        ("customer-features", schemars::schema_for!(CustomerFeatures)),
        ("customer-day", schemars::schema_for!(CustomerDay)),
        ("risk-score", schemars::schema_for!(RiskScore)),
        ("intervention", schemars::schema_for!(Intervention)),
        ("stage-stats", schemars::schema_for!(StageStats)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_event_id("risk-score", &[b"abc"]);
        assert_eq!(a, derived_event_id("risk-score", &[b"abc"]));
        assert_ne!(a, derived_event_id("intervention", &[b"abc"]));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(derived_event_id("k", &[b"ab", b"c"]), derived_event_id("k", &[b"a", b"bc"]));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn derived_ids_are_the_v5_uuids_of_the_joined_name() {
        let event = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let long = [7u8; 200]; // names longer than one SHA-1 block
        let day = 20_454i32.to_be_bytes();
        let cases: [(&str, Vec<&[u8]>); 5] = [
            ("risk-score", vec![event.as_bytes()]),
            ("customer-features", vec![event.as_bytes(), &day]),
            ("", vec![]),
            ("k", vec![b"", b"\0"]),
            ("intervention", vec![&long, b"rule"]),
        ];
        for (kind, parts) in cases {
            let mut name = kind.as_bytes().to_vec();
            for part in &parts {
                name.push(0);
                name.extend_from_slice(part);
            }
            assert_eq!(derived_event_id(kind, &parts), Uuid::new_v5(&EVENT_ID_NAMESPACE, &name), "{kind}");
        }
        // Pinned (Python: uuid.UUID(bytes=sha1(namespace + name).digest()[:16], version=5)),
        // so a change of hashing cannot slip through as "still a v5".
        assert_eq!(
            derived_event_id("risk-score", &[event.as_bytes()]).to_string(),
            "49526ffe-4de8-5fc5-a935-a5ee0f60bb07"
        );
    }

    #[test]
    fn transaction_round_trips_as_snake_case_json() {
        let event = TransactionEvent {
            event_id: Uuid::from_u128(1),
            event_time: "2026-01-02T03:04:05Z".parse().unwrap(),
            schema_version: SCHEMA_VERSION,
            customer_id: "C0000001".into(),
            account_id: "A0000001".into(),
            kind: TransactionKind::DirectDebitFailed,
            amount_minor: 0,
            currency: "GBP".into(),
            balance_after_minor: -1250,
            merchant_category: None,
            channel: Channel::DirectDebit,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "direct_debit_failed");
        assert_eq!(json["event_time"], "2026-01-02T03:04:05Z");
        assert!(json.get("merchant_category").is_none());
        let back: TransactionEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
