//! A writer for JSON objects of a fixed shape, for the changelog's hot path.
//!
//! serde_json escapes every string it writes, field names included: for the changelog's
//! records that scan was an eighth of the core path's instructions (callgrind), all of
//! it on constant names that need no escaping. Here names are `'static` literals written
//! as they are; values that are text go through serde_json (escaped) unless they are
//! ASCII by construction (ids, dates, timestamps); numbers are formatted with the same
//! crates serde_json uses (itoa, zmij), so the bytes are serde_json's — the changelog's
//! tests compare them with the serde types' output.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::rfc3339::{Date, Timestamp};

/// An object being written into `out`; [`Object::end`] closes it.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    fn key(&mut self, name: &'static str) {
        debug_assert!(
            name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'),
            "field name {name:?} would need escaping"
        );
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// Text that needs no escaping (ASCII without quotes, backslashes or control
    /// characters), quoted.
    fn ascii(&mut self, name: &'static str, text: &[u8]) {
        self.key(name);
        self.out.push(b'"');
        self.out.extend_from_slice(text);
        self.out.push(b'"');
    }

    /// Any text, escaped as serde_json does.
    pub fn str(&mut self, name: &'static str, value: &str) {
        self.key(name);
        serde_json::to_writer(&mut *self.out, value).expect("a string serializes");
    }

    pub fn uuid(&mut self, name: &'static str, value: Uuid) {
        let mut buffer = Uuid::encode_buffer();
        self.ascii(name, value.hyphenated().encode_lower(&mut buffer).as_bytes());
    }

    pub fn date(&mut self, name: &'static str, value: NaiveDate) {
        let mut buffer = [0u8; 10];
        match Date(value).ascii(&mut buffer) {
            Some(text) => self.ascii(name, text),
            None => self.serde(name, &value),
        }
    }

    pub fn timestamp(&mut self, name: &'static str, value: DateTime<Utc>) {
        let mut buffer = [0u8; 30];
        match Timestamp(value).ascii(&mut buffer) {
            Some(text) => self.ascii(name, text),
            None => self.serde(name, &value),
        }
    }

    pub fn i64(&mut self, name: &'static str, value: i64) {
        self.key(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    pub fn u32(&mut self, name: &'static str, value: u32) {
        self.key(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// As serde_json writes an `f64`: shortest round-trip digits, `null` if not finite.
    ///
    /// Most features are counts, zero, or money (a whole number of cents). The double
    /// nearest to `c / 100`, for whole `c` below 10¹⁵ in size, has `c / 100` as its
    /// shortest round-trip digits: another decimal of as few digits is at least 0.01
    /// away, and doubles below 10¹³ are far closer together than that. Those are
    /// written from the integer `c`.
    pub fn f64(&mut self, name: &'static str, value: f64) {
        self.key(name);
        // The candidate, rounded to the nearest cent by a conversion (`round` is a call
        // on baseline x86-64); it is only taken if it gives `value` back.
        let cents = (value.abs() * 100.0 + 0.5) as u64;
        if cents < 1_000_000_000_000_000 && cents as f64 / 100.0 == value.abs() {
            if value.is_sign_negative() {
                self.out.push(b'-');
            }
            self.out.extend_from_slice(itoa::Buffer::new().format(cents / 100).as_bytes());
            match cents % 100 {
                0 => self.out.extend_from_slice(b".0"),
                c if c % 10 == 0 => self.out.extend_from_slice(&[b'.', b'0' + (c / 10) as u8]),
                c => self.out.extend_from_slice(&[b'.', b'0' + (c / 10) as u8, b'0' + (c % 10) as u8]),
            }
        } else if value.is_finite() {
            self.out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    /// The fields every eventpipe event starts with, in their order.
    pub fn envelope(&mut self, event_id: Uuid, event_time: DateTime<Utc>, schema_version: u32, customer_id: &str) {
        self.uuid("event_id", event_id);
        self.timestamp("event_time", event_time);
        self.u32("schema_version", schema_version);
        self.str("customer_id", customer_id);
    }

    /// Any serializable value, through serde_json.
    pub fn serde<T: serde::Serialize + ?Sized>(&mut self, name: &'static str, value: &T) {
        self.key(name);
        serde_json::to_writer(&mut *self.out, value).expect("a value serializes");
    }

    /// A nested object, written by `write`.
    pub fn object(&mut self, name: &'static str, write: impl FnOnce(&mut Object<'_>)) {
        self.key(name);
        let mut inner = Object::new(self.out);
        write(&mut inner);
        inner.end();
    }

    /// An array of objects, one written by `write` per item.
    pub fn objects<T>(
        &mut self,
        name: &'static str,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Object<'_>, T),
    ) {
        self.key(name);
        self.out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            let mut inner = Object::new(self.out);
            write(&mut inner, item);
            inner.end();
        }
        self.out.push(b']');
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn floats_are_written_as_serde_json_writes_them() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(9);
        let written = |v: f64| {
            let mut out = Vec::new();
            let mut o = Object::new(&mut out);
            o.f64("v", v);
            o.end();
            String::from_utf8(out).unwrap()
        };
        for i in 0..200_000 {
            let v = match i % 4 {
                // Money: whole cents of every size up to the fast path's bound and past it.
                0 => {
                    let bound = 10i64.pow(rng.random_range(1..17));
                    rng.random_range(-bound..bound) as f64 / 100.0
                }
                // Near money: a cent and a little.
                1 => {
                    let money = rng.random_range(-1_000_000i64..1_000_000) as f64 / 100.0;
                    money * (1.0 + f64::EPSILON * rng.random_range(-4.0..4.0))
                }
                // Shares, ratios, slopes, scores.
                2 => rng.random_range(-5.0..10.0),
                _ => f64::from_bits(rng.random()),
            };
            assert_eq!(written(v), format!("{{\"v\":{}}}", serde_json::to_string(&v).unwrap()), "{v:e}");
        }
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let time = "2026-03-04T05:06:07.120Z".parse::<DateTime<Utc>>().unwrap();
        let far = NaiveDate::from_ymd_opt(12_345, 6, 7).unwrap();
        let floats = [
            0.0,
            -0.0,
            1.0,
            -3.0,
            42.0,
            999_999_999_999_999.0,
            -999_999_999_999_999.0,
            1e15,
            1e16,
            123_456_789_012_345_680.0,
            0.1,
            -2.5e-12,
            2.5,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let text = "tab\t \"quoted\" back\\slash \u{1} é \u{2028}";
        let mut out = Vec::new();
        let mut o = Object::new(&mut out);
        o.str("text", text);
        o.uuid("id", Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        o.date("day", time.date_naive());
        o.date("far", far);
        o.timestamp("time", time);
        o.timestamp("far_time", far.and_hms_opt(0, 0, 0).unwrap().and_utc());
        o.i64("min", i64::MIN);
        o.u32("max", u32::MAX);
        o.objects("floats", floats, |o, v| o.f64("v", v));
        o.object("empty", |_| {});
        o.objects("none", std::iter::empty::<u8>(), |_, _| {});
        o.end();
        let expected = serde_json::json!({
            "text": text,
            "id": Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            "day": time.date_naive(),
            "far": far,
            "time": time,
            "far_time": far.and_hms_opt(0, 0, 0).unwrap().and_utc(),
            "min": i64::MIN,
            "max": u32::MAX,
            "floats": floats.iter().map(|v| serde_json::json!({ "v": v })).collect::<Vec<_>>(),
            "empty": {},
            "none": [],
        });
        // serde_json::Value keeps keys in order only with `preserve_order`; compare the
        // text of each value in the written order instead.
        let written = String::from_utf8(out).unwrap();
        let mut rebuilt = String::from("{");
        for (i, name) in
            ["text", "id", "day", "far", "time", "far_time", "min", "max", "floats", "empty", "none"].iter().enumerate()
        {
            if i > 0 {
                rebuilt.push(',');
            }
            rebuilt.push_str(&format!("\"{name}\":{}", serde_json::to_string(&expected[name]).unwrap()));
        }
        rebuilt.push('}');
        assert_eq!(written, rebuilt);
    }
}
