//! Fast paths for the timestamps and dates on the hot path, each falling back to chrono.
//!
//! Every transaction carries an RFC 3339 `event_time`, and every changelog record about
//! ten dates and times. chrono's general parser and its `Display`-based serde output
//! cost more than the rest of decoding a transaction. The common shapes —
//! `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` in, the same as chrono writes it out — are handled
//! here; anything else (offsets, lowercase, leap seconds, years outside 0..=9999) goes
//! to chrono (the `text` functions return `None` for the caller to ask chrono), so the
//! results are always exactly chrono's (tests compare both).

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::de::{self, Deserializer, Visitor};

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` without chrono's general parser; `None` when the
/// text has another shape (chrono then decides).
fn parse_utc_fast(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (&last, rest) = b.split_last()?;
    if last != b'Z' {
        return None;
    }
    let nanos = match &rest[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let (second, minute, hour) = (digits(&b[17..19])?, digits(&b[14..16])?, digits(&b[11..13])?);
    if second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    Some(date.and_hms_nano_opt(hour, minute, second, nanos)?.and_utc())
}

/// Parses an RFC 3339 timestamp exactly as chrono's serde support does.
pub fn parse_utc(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_utc_fast(text) {
        Some(t) => Ok(t),
        None => text.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)),
    }
}

/// Deserializes a `DateTime<Utc>` like chrono, faster (`#[serde(deserialize_with)]`).
pub fn deserialize_utc<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    struct UtcVisitor;
    impl Visitor<'_> for UtcVisitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 formatted date and time string")
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            parse_utc(value).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(UtcVisitor)
}

/// "00", "01", … "99": two digits per lookup.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `v` (below 100) as two digits at `out[at..]`.
fn push2(out: &mut [u8], at: usize, v: u32) {
    let i = v as usize * 2;
    out[at..at + 2].copy_from_slice(&PAIRS[i..i + 2]);
}

/// `YYYY-MM-DD` into `out[..10]`; `false` for years outside 0..=9999.
fn write_date(out: &mut [u8], date: NaiveDate) -> bool {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return false;
    }
    let year = year as u32;
    push2(out, 0, year / 100);
    push2(out, 2, year % 100);
    out[4] = b'-';
    push2(out, 5, date.month());
    out[7] = b'-';
    push2(out, 8, date.day());
    true
}

/// A date written as chrono writes it (`YYYY-MM-DD`), without going through `Debug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

impl Date {
    /// The text's bytes (ASCII), into `buffer`; `None` where chrono writes another shape.
    pub fn ascii(self, buffer: &mut [u8; 10]) -> Option<&[u8]> {
        write_date(buffer, self.0).then_some(&buffer[..])
    }

    /// The text, into `buffer`; `None` where chrono writes another shape.
    pub fn text(self, buffer: &mut [u8; 10]) -> Option<&str> {
        self.ascii(buffer).map(|b| std::str::from_utf8(b).expect("ASCII"))
    }
}

/// A UTC timestamp written as chrono writes it (RFC 3339, `Z`, 0/3/6/9 fraction digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// The text's bytes (ASCII), into `out`; `None` where chrono writes another shape
    /// (a leap second or a far year).
    pub fn ascii(self, out: &mut [u8; 30]) -> Option<&[u8]> {
        let t = self.0.naive_utc();
        let nanos = t.nanosecond();
        if nanos >= 1_000_000_000 || !write_date(out, t.date()) {
            return None;
        }
        let seconds = t.num_seconds_from_midnight();
        out[10] = b'T';
        push2(out, 11, seconds / 3600);
        out[13] = b':';
        push2(out, 14, seconds / 60 % 60);
        out[16] = b':';
        push2(out, 17, seconds % 60);
        // chrono writes the fraction in 3, 6 or 9 digits, as few as show it exactly.
        let (fraction, width) = match nanos {
            0 => (0, 0),
            n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
            n if n % 1_000 == 0 => (n / 1_000, 6),
            n => (n, 9),
        };
        let mut len = 19;
        if width > 0 {
            out[19] = b'.';
            let mut f = fraction;
            let mut at = 20 + width;
            // Two digits at a time from the right, and one more when `width` is odd.
            if width % 2 == 1 {
                at -= 1;
                out[at] = b'0' + (f % 10) as u8;
                f /= 10;
            }
            while at > 20 {
                at -= 2;
                push2(out, at, f % 100);
                f /= 100;
            }
            len = 20 + width;
        }
        out[len] = b'Z';
        Some(&out[..len + 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn chrono_parse(text: &str) -> Result<DateTime<Utc>, String> {
        serde_json::from_value::<DateTime<Utc>>(serde_json::Value::String(text.into())).map_err(|e| e.to_string())
    }

    fn fast_parse(text: &str) -> Result<DateTime<Utc>, String> {
        #[derive(serde::Deserialize)]
        struct T(#[serde(deserialize_with = "deserialize_utc")] DateTime<Utc>);
        serde_json::from_value::<T>(serde_json::Value::String(text.into())).map(|t| t.0).map_err(|e| e.to_string())
    }

    #[test]
    fn parsing_agrees_with_chrono() {
        for text in [
            "2026-01-01T10:00:00Z",
            "2026-12-31T23:59:59.5Z",
            "2026-02-28T00:00:00.123Z",
            "2026-02-28T00:00:00.123456Z",
            "2026-02-28T00:00:00.123456789Z",
            "2026-02-28T00:00:00.1234567891Z",
            "2028-02-29T12:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2026-02-29T12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2026-01-01t10:00:00z",
            "2026-01-01 10:00:00Z",
            "2026-01-01T10:00:00+01:00",
            "2026-01-01T10:00:00-00:30",
            "2026-01-01T10:00:00.Z",
            "2026-01-01T10:00:0aZ",
            "2026-01-01T10:00Z",
            "+2026-01-01T10:00:00Z",
            "2026-1-01T10:00:00Z",
            "",
            "not a time",
            "２０２６-01-01T10:00:00Z",
        ] {
            assert_eq!(fast_parse(text), chrono_parse(text), "{text:?}");
        }
    }

    #[test]
    fn formatting_agrees_with_chrono() {
        let base = "2026-03-04T05:06:07Z".parse::<DateTime<Utc>>().unwrap();
        let mut times = vec![base, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, DateTime::UNIX_EPOCH];
        for nanos in [1, 10, 999, 1_000, 120_000, 1_000_000, 500_000_000, 999_999_999, 123_456_789] {
            times.push(base + TimeDelta::nanoseconds(nanos));
        }
        // Every part of the text: times of day, dates over the four-digit years, and
        // fractions of each width, spread by a large prime step.
        let year_zero = NaiveDate::from_ymd_opt(0, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        for i in 0..20_000i64 {
            let seconds = i * 15_778_463 % (10_000 * 31_556_952);
            let nanos = [0, 7_000_000, 123_000, 987_654_321, 40][i as usize % 5];
            times.push(year_zero + TimeDelta::seconds(seconds) + TimeDelta::nanoseconds(nanos));
        }
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_milli_opt(23, 59, 59, 1_500).unwrap();
        times.push(leap.and_utc());
        times.push(NaiveDate::from_ymd_opt(-5, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc());
        times.push(NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc());
        // chrono's text, as its serde writes it.
        fn chrono_text<T: serde::Serialize>(value: &T) -> String {
            serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()
        }
        let mut left_to_chrono = 0;
        for t in times {
            let d = t.date_naive();
            let far = !(0..=9999).contains(&d.year());
            let mut buffer = [0u8; 30];
            match Timestamp(t).ascii(&mut buffer) {
                Some(text) => assert_eq!(std::str::from_utf8(text).unwrap(), chrono_text(&t), "{t:?}"),
                None => {
                    assert!(far || t.nanosecond() >= 1_000_000_000, "{t:?} left to chrono");
                    left_to_chrono += 1;
                }
            }
            let mut buffer = [0u8; 10];
            match Date(d).text(&mut buffer) {
                Some(text) => assert_eq!(text, chrono_text(&d), "{d:?}"),
                None => assert!(far, "{d:?} left to chrono"),
            }
        }
        // MIN_UTC, MAX_UTC, the leap second and the two far years.
        assert_eq!(left_to_chrono, 5);
    }
}
