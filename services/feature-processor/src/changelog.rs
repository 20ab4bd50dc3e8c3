//! The changelog on `P.customer-features`: a customer's window written as the parts
//! that changed, not as a whole.
//!
//! - Key `customer_id/YYYY-MM-DD`: a [`CustomerDay`], that one day's bucket. When the day
//!   falls out of the 90-day ring the key gets a tombstone, so compaction drops it (the
//!   way Kafka Streams keys a windowed store's changelog: the window in the key).
//! - Key `customer_id`: the customer's [`CustomerFeatures`] with `days` holding only the
//!   bucket of the latest day — the features as of the write, the customer-wide state
//!   (latest event time, salaries, last score) and the day still filling up.
//!
//! Per batch, each touched customer gets one record per changed day other than its
//! latest, a tombstone per day that left the ring, then its `customer_id` record. The
//! latest day rides in the customer record, so a customer active on one day per batch
//! (live traffic) costs one record, not two; when a later day takes its place, the day
//! the previous customer record carried gets a day record of its own before compaction
//! could drop it. Rebuilding folds a partition's records in offset order: a day record
//! replaces that day's bucket, a tombstone removes it, a `customer_id` record replaces
//! the customer-wide state and the buckets it holds (one in this format; none in the
//! earlier per-day format, every bucket in the whole-window one — its days are given
//! day records on the customer's next write). In keys, `%` and `/` in a customer id are
//! escaped (see [`customer_key`]).
use std::borrow::Cow;

use uuid::Uuid;

pub use eventpipe_common::events::CustomerDay;
use eventpipe_common::events::{derived_event_id, CustomerFeatures, DayBucket, FeatureValues, SCHEMA_VERSION};

use crate::json::Object;
use crate::rfc3339::Date;
use crate::window::{date_of, day_number, utc_day, CustomerWindow};

/// Appends `customer_id` as it appears in keys: `%` as `%25` and `/` as `%2F`, so that
/// no customer's key can be read as another's day key (`/` separates the day). Ids
/// without either character, the producer's among them, are written as they are.
fn push_key_id(key: &mut String, customer_id: &str) {
    if !customer_id.contains(['%', '/']) {
        key.push_str(customer_id);
        return;
    }
    for c in customer_id.chars() {
        match c {
            '%' => key.push_str("%25"),
            '/' => key.push_str("%2F"),
            c => key.push(c),
        }
    }
}

/// Undoes [`push_key_id`].
fn key_id(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace("%2F", "/").replace("%25", "%"))
}

/// The key of a customer's `customer_id` record: the id itself, unless it holds `%` or
/// `/` (see [`push_key_id`]).
pub fn customer_key(customer_id: &str) -> Cow<'_, str> {
    if !customer_id.contains(['%', '/']) {
        return Cow::Borrowed(customer_id);
    }
    let mut key = String::with_capacity(customer_id.len() + 8);
    push_key_id(&mut key, customer_id);
    Cow::Owned(key)
}

/// Writes over `key` the key of a customer's record for day number `day`:
/// `customer_id/YYYY-MM-DD`.
pub fn write_day_key(key: &mut String, customer_id: &str, day: i32) {
    key.clear();
    push_key_id(key, customer_id);
    key.push('/');
    let date = date_of(day);
    let mut buffer = [0u8; 10];
    match Date(date).text(&mut buffer) {
        Some(text) => key.push_str(text),
        None => key.push_str(&date.to_string()),
    }
}

/// Splits a day key into customer id and day number; `None` for any other key.
pub fn parse_day_key(key: &str) -> Option<(Cow<'_, str>, i32)> {
    let (customer, day) = key.rsplit_once('/')?;
    let day = day.parse().ok()?;
    Some((key_id(customer), day_number(day)))
}

/// A bucket's fields, in [`DayBucket`]'s order, zeros skipped as its serde does.
fn write_bucket(o: &mut Object<'_>, b: &DayBucket) {
    o.date("day", b.day);
    o.i64("closing_balance_minor", b.closing_balance_minor);
    o.timestamp("closing_time", b.closing_time);
    o.i64("min_balance_minor", b.min_balance_minor);
    for (name, v) in [
        ("inflow_minor", b.inflow_minor),
        ("outflow_minor", b.outflow_minor),
        ("discretionary_minor", b.discretionary_minor),
        ("atm_minor", b.atm_minor),
        ("gambling_minor", b.gambling_minor),
        ("txn_count", i64::from(b.txn_count)),
        ("failed_debits", i64::from(b.failed_debits)),
        ("missed_repayments", i64::from(b.missed_repayments)),
        ("overdraft_fees", i64::from(b.overdraft_fees)),
        ("bnpl_count", i64::from(b.bnpl_count)),
    ] {
        if v != 0 {
            o.i64(name, v);
        }
    }
}

/// The id of a `customer_id` record: derived from the last event applied.
pub fn customer_record_id(last_event: Uuid) -> Uuid {
    derived_event_id("customer-features", &[last_event.as_bytes()])
}

/// The id of a day record: derived from the last event applied and the day.
pub fn day_record_id(last_event: Uuid, day: i32) -> Uuid {
    derived_event_id("customer-features", &[last_event.as_bytes(), &day.to_be_bytes()])
}

/// Appends the JSON of `window`'s record for day number `day` (which must hold a
/// bucket) to `out`.
pub fn encode_day(out: &mut Vec<u8>, customer_id: &str, window: &CustomerWindow, day: i32, event_id: Uuid) {
    let bucket = window.bucket(day).expect("a changed day has a bucket");
    let event_time = window.latest_event_time().expect("a changed window has an event");
    let mut o = Object::new(out);
    o.envelope(event_id, event_time, SCHEMA_VERSION, customer_id);
    o.object("bucket", |o| write_bucket(o, bucket));
    o.end();
}

/// Appends the JSON of `window`'s `customer_id` record to `out`, with `features` as
/// the window's current features.
pub fn encode_customer(
    out: &mut Vec<u8>,
    customer_id: &str,
    window: &CustomerWindow,
    features: &FeatureValues,
    event_id: Uuid,
) {
    let event_time = window.latest_event_time().expect("a changed window has an event");
    let as_of = utc_day(event_time);
    let mut o = Object::new(out);
    o.envelope(event_id, event_time, SCHEMA_VERSION, customer_id);
    o.date("as_of", as_of);
    o.object("features", |o| {
        for (name, value) in FeatureValues::NAMES.into_iter().zip(features.values()) {
            o.f64(name, value);
        }
    });
    o.objects("days", window.bucket(day_number(as_of)), write_bucket);
    o.objects("salaries", window.salaries(), |o, s| {
        o.date("day", s.day);
        o.i64("amount_minor", s.amount_minor);
    });
    if let Some(last) = window.last_score {
        o.object("last_score", |o| {
            o.f64("score", last.score);
            o.serde("band", &last.band);
            o.date("day", last.day);
        });
    }
    o.end();
}

/// [`encode_day`]'s record as a value.
pub fn day_record(customer_id: &str, window: &CustomerWindow, day: i32, event_id: Uuid) -> Option<CustomerDay> {
    Some(CustomerDay {
        event_id,
        event_time: window.latest_event_time()?,
        schema_version: SCHEMA_VERSION,
        customer_id: customer_id.to_owned(),
        bucket: window.bucket(day)?.clone(),
    })
}

/// [`encode_customer`]'s record as a value.
pub fn customer_record(
    customer_id: &str,
    window: &CustomerWindow,
    features: &FeatureValues,
    event_id: Uuid,
) -> Option<CustomerFeatures> {
    let event_time = window.latest_event_time()?;
    Some(CustomerFeatures {
        event_id,
        event_time,
        schema_version: SCHEMA_VERSION,
        customer_id: customer_id.to_owned(),
        as_of: utc_day(event_time),
        features: features.clone(),
        days: window.bucket(day_number(utc_day(event_time))).into_iter().cloned().collect(),
        salaries: window.salaries().to_vec(),
        last_score: window.last_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeDelta};
    use eventpipe_common::events::{Channel, LastScore, RiskBand, TransactionEvent, TransactionKind};

    #[test]
    fn keys_carry_the_day_and_parse_back() {
        let day = day_number(NaiveDate::from_ymd_opt(2026, 3, 9).unwrap());
        let mut key = "left over".to_owned();
        write_day_key(&mut key, "C0000001", day);
        assert_eq!(key, "C0000001/2026-03-09");
        assert_eq!(parse_day_key("C0000001/2026-03-09"), Some(("C0000001".into(), day)));
        assert_eq!(parse_day_key("C0000001"), None);
        assert_eq!(parse_day_key("C0000001/yesterday"), None);
        assert_eq!(customer_key("C0000001"), "C0000001");
    }

    #[test]
    fn no_customer_key_reads_as_another_customers_day_key() {
        let day = day_number(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        let mut key = String::new();
        // A customer whose id looks like customer `A`'s day key, and ids with the escape.
        for id in ["A/2026-03-01", "a/b", "100%", "%2F", "/", "%"] {
            let customer = customer_key(id);
            assert_eq!(parse_day_key(&customer), None, "{id}: its customer key {customer} is no day key");
            write_day_key(&mut key, id, day);
            assert_eq!(parse_day_key(&key), Some((id.into(), day)), "{id}: its day key {key}");
        }
        write_day_key(&mut key, "A", day);
        assert_ne!(key, customer_key("A/2026-03-01"));
        assert_eq!(customer_key("A/2026-03-01"), "A%2F2026-03-01");
    }

    #[test]
    fn fast_encodings_are_byte_for_byte_the_serde_json_of_the_record_types() {
        let start = "2026-01-01T08:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let mut window = CustomerWindow::default();
        let kinds = [TransactionKind::SalaryCredit, TransactionKind::Gambling, TransactionKind::CardPurchase];
        for i in 0..200i64 {
            let event = TransactionEvent {
                event_id: Uuid::from_u128(i as u128),
                event_time: start + TimeDelta::hours(7 * i) + TimeDelta::microseconds(i * 1_001),
                schema_version: SCHEMA_VERSION,
                customer_id: "C1".into(),
                account_id: "A1".into(),
                kind: kinds[i as usize % 3],
                amount_minor: if i % 3 == 0 { 150_000 } else { -1_234 * i },
                currency: "GBP".into(),
                balance_after_minor: 5_000 - 17 * i,
                merchant_category: None,
                channel: Channel::Internal,
            };
            window.apply(&event, TimeDelta::days(1));
            if i % 11 == 0 {
                window.last_score = Some(LastScore {
                    score: 0.1 * (i % 7) as f64,
                    band: RiskBand::High,
                    day: event.event_time.date_naive(),
                });
            }
            let day = day_number(event.event_time.date_naive());
            let features = window.features();
            let id = day_record_id(event.event_id, day);
            // The id is the one text field written from outside: escaped as serde_json does.
            for customer in ["C1", "Ç \"1\"\t\\"] {
                let mut fast = Vec::new();
                encode_day(&mut fast, customer, &window, day, id);
                let slow = serde_json::to_vec(&day_record(customer, &window, day, id).unwrap()).unwrap();
                assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
                let mut fast = Vec::new();
                encode_customer(&mut fast, customer, &window, &features, id);
                let slow = serde_json::to_vec(&customer_record(customer, &window, &features, id).unwrap()).unwrap();
                assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
            }
        }
    }
}
