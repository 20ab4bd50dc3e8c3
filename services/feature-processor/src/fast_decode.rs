//! A fast path for decoding a transaction, in front of serde_json.
//!
//! With serde_json alone, decoding took 47 % of the core path's instructions (callgrind,
//! the feature-processor bench): more than updating the window, scoring and writing the
//! changelog together. General fast JSON libraries did not help on a record this small
//! (sonic-rs measured 20–40 % slower, and accepts some inputs serde_json rejects). So the
//! shape every producer writes — one flat object of the known fields, each once, strings
//! without escapes, plain integers — is read here directly, keys in the producer's order
//! compared whole; anything else (an escape, an unknown or repeated field, a float, `-0`,
//! an overflow, a value the types refuse) returns `None` and serde_json decides, with its
//! own error message. What this accepts, serde_json accepts as the same value: the tests
//! compare both on simulated records and on 60 000 random mutations of them. Field values
//! are converted by the types' own serde impls (enums, UUID) and by
//! [`crate::rfc3339::parse_utc`] (timestamps), as serde_json would. It takes 46 % fewer
//! instructions per record than serde_json.

use std::borrow::Cow;

use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::de::{Deserialize, IntoDeserializer};

use crate::processor::TransactionView;

/// Reads `text` as a transaction when it has the common shape; `None`: let serde_json decide.
pub fn decode(text: &str) -> Option<TransactionView<'_>> {
    let mut r = Reader { text, at: 0 };
    let mut f = Fields::default();
    r.skip_ws();
    r.eat(b'{')?;
    r.skip_ws();
    if r.peek()? == b'}' {
        return None; // missing fields: serde_json says which
    }
    // Producers write the fields in the struct's order, without spaces: the separator
    // and key after the last field read are tried first as a whole (`,"name":`), and
    // the separator and key are read and matched one by one only when they are not.
    let mut next = 0;
    loop {
        let field = match FIELDS.get(next).filter(|(key, _)| r.literal(if next == 0 { &key[1..] } else { key })) {
            Some(&(_, field)) => field,
            None => {
                if next > 0 {
                    r.skip_ws();
                    match r.next()? {
                        b',' => r.skip_ws(),
                        b'}' => break,
                        _ => return None,
                    }
                }
                let key = r.string()?;
                r.skip_ws();
                r.eat(b':')?;
                FIELDS.iter().find(|(quoted, _)| &quoted[2..quoted.len() - 2] == key)?.1
            }
        };
        next = field as usize + 1;
        r.skip_ws();
        match field {
            Field::EventId => set(&mut f.event_id, r.uuid()?)?,
            Field::EventTime => set(&mut f.event_time, crate::rfc3339::parse_utc(r.token()?).ok()?)?,
            Field::SchemaVersion => set(&mut f.schema_version, u32::try_from(r.integer()?).ok()?)?,
            Field::CustomerId => set(&mut f.customer_id, r.string()?)?,
            Field::AccountId => set(&mut f.account_id, r.string()?)?,
            Field::Kind => set(&mut f.kind, from_str(r.token()?)?)?,
            Field::AmountMinor => set(&mut f.amount_minor, r.integer()?)?,
            Field::Currency => set(&mut f.currency, r.string()?)?,
            Field::BalanceAfterMinor => set(&mut f.balance_after_minor, r.integer()?)?,
            Field::MerchantCategory => {
                let category = if r.literal("null") { None } else { Some(from_str(r.token()?)?) };
                set(&mut f.merchant_category, category)?
            }
            Field::Channel => set(&mut f.channel, from_str(r.token()?)?)?,
        }
    }
    r.skip_ws();
    if r.at != text.len() {
        return None;
    }
    Some(TransactionView {
        event_id: f.event_id?,
        event_time: f.event_time?,
        schema_version: f.schema_version?,
        customer_id: Cow::Borrowed(f.customer_id?),
        account_id: Cow::Borrowed(f.account_id?),
        kind: f.kind?,
        amount_minor: f.amount_minor?,
        currency: Cow::Borrowed(f.currency?),
        balance_after_minor: f.balance_after_minor?,
        merchant_category: f.merchant_category.flatten(),
        channel: f.channel?,
    })
}

/// The fields, in [`TransactionView`]'s (and the producer's) order.
#[derive(Clone, Copy)]
enum Field {
    EventId,
    EventTime,
    SchemaVersion,
    CustomerId,
    AccountId,
    Kind,
    AmountMinor,
    Currency,
    BalanceAfterMinor,
    MerchantCategory,
    Channel,
}

/// Each field's key as written after the field before it: a comma, the key quoted, and
/// its colon, in [`Field`]'s order.
const FIELDS: [(&str, Field); 11] = [
    (",\"event_id\":", Field::EventId),
    (",\"event_time\":", Field::EventTime),
    (",\"schema_version\":", Field::SchemaVersion),
    (",\"customer_id\":", Field::CustomerId),
    (",\"account_id\":", Field::AccountId),
    (",\"kind\":", Field::Kind),
    (",\"amount_minor\":", Field::AmountMinor),
    (",\"currency\":", Field::Currency),
    (",\"balance_after_minor\":", Field::BalanceAfterMinor),
    (",\"merchant_category\":", Field::MerchantCategory),
    (",\"channel\":", Field::Channel),
];

#[derive(Default)]
struct Fields<'a> {
    event_id: Option<uuid::Uuid>,
    event_time: Option<chrono::DateTime<chrono::Utc>>,
    schema_version: Option<u32>,
    customer_id: Option<&'a str>,
    account_id: Option<&'a str>,
    kind: Option<eventpipe_common::events::TransactionKind>,
    amount_minor: Option<i64>,
    currency: Option<&'a str>,
    balance_after_minor: Option<i64>,
    merchant_category: Option<Option<eventpipe_common::events::MerchantCategory>>,
    channel: Option<eventpipe_common::events::Channel>,
}

/// Sets a field seen for the first time; a repeated field is serde_json's to refuse.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// A value from a JSON string through its type's own `Deserialize`, as serde_json
/// hands it a borrowed string.
fn from_str<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    let deserializer: StrDeserializer<'a, ValueError> = text.into_deserializer();
    T::deserialize(deserializer).ok()
}

/// The index of the first `"`, `\\` or control character in `bytes`.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    first_flagged(
        bytes,
        |word| {
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20)
        },
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
}

/// The index of the first `"` in `bytes`.
fn quote(bytes: &[u8]) -> Option<usize> {
    first_flagged(bytes, |word| below(word ^ (ONES * u64::from(b'"')), 1), |b| b == b'"')
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// The high bit of each byte of the result is set where `word`'s byte is below `n`
/// (n ≤ 0x80); bytes above the first such byte may be flagged falsely, so only the
/// lowest flag counts.
fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH
}

/// The index of the first byte of `bytes` that `flags` (eight at a time, as [`below`]
/// flags them) or `is` (one at a time, for the tail) picks: the strings are short, so
/// memchr's setup costs more than it saves.
fn first_flagged(bytes: &[u8], flags: impl Fn(u64) -> u64, is: impl Fn(u8) -> bool) -> Option<usize> {
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let found = flags(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| is(b)).map(|i| at + i)
}

/// Whether `text` starts with `word`, compared eight bytes at a time where `word` has
/// eight or more: the keys are 7–22 bytes, and a `memcmp` call per key was a visible
/// part of decoding.
fn starts_with(text: &[u8], word: &[u8]) -> bool {
    let n = word.len();
    if text.len() < n {
        return false;
    }
    if n < 8 {
        return text[..n] == *word;
    }
    let word_at = |bytes: &[u8], at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let mut at = 0;
    while at + 8 < n {
        if word_at(text, at) != word_at(word, at) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping those compared when `n` is not a multiple of 8.
    word_at(text, n - 8) == word_at(word, n - 8)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = starts_with(&self.text.as_bytes()[self.at..], word.as_bytes());
        if found {
            self.at += word.len();
        }
        found
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let end = start + special_byte(&bytes[start..])?;
        if bytes[end] != b'"' {
            return None; // an escape or a control character
        }
        self.at = end + 1;
        // Both ends are ASCII quotes, so these are character boundaries.
        Some(&self.text[start..end])
    }

    /// A string read up to its closing quote without looking for escapes: for values
    /// whose parsers take only characters that are never escaped (ids, timestamps,
    /// enum names), which therefore refuse whatever an escape or a control character
    /// makes of it — and serde_json decides.
    fn token(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let end = start + quote(&self.text.as_bytes()[start..])?;
        self.at = end + 1;
        // Both ends are ASCII quotes, so these are character boundaries.
        Some(&self.text[start..end])
    }

    /// A UUID string. The hyphenated form, which producers write, is 36 characters of
    /// hex digits and hyphens: when the 37th is the closing quote and the 36 parse,
    /// they are the whole string (a quote would not parse), read without scanning for
    /// the quote. Otherwise the string goes through uuid's own `Deserialize`, as serde_json
    /// hands it over.
    fn uuid(&mut self) -> Option<uuid::Uuid> {
        let start = self.at + 1;
        let bytes = self.text.as_bytes();
        if bytes.get(self.at) == Some(&b'"') && bytes.get(start + 36) == Some(&b'"') {
            if let Ok(id) = uuid::Uuid::try_parse_ascii(&bytes[start..start + 36]) {
                self.at = start + 37;
                return Some(id);
            }
        }
        from_str(self.token()?)
    }

    /// `-?(0|[1-9][0-9]*)` that fits an i64 and is not `-0` (serde_json reads that as
    /// a float), followed by something that cannot continue a number.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek()? == b'-';
        if negative {
            self.at += 1;
        }
        let first = self.next()?;
        let mut magnitude = match first {
            b'0' if negative => return None,
            b'0' => 0i64,
            b'1'..=b'9' => i64::from(first - b'0'),
            _ => return None,
        };
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if first == b'0' {
                return None;
            }
            magnitude = magnitude.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.at += 1;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(if negative { -magnitude } else { magnitude })
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use eventpipe_common::events::TransactionEvent;

    /// serde_json's verdict on `text`, for comparison.
    fn slow(text: &str) -> Option<TransactionView<'_>> {
        serde_json::from_str(text).ok()
    }

    fn same(a: &TransactionView<'_>, b: &TransactionView<'_>) -> bool {
        (a.event_id, a.event_time, a.schema_version, &a.customer_id, &a.account_id, a.kind)
            == (b.event_id, b.event_time, b.schema_version, &b.customer_id, &b.account_id, b.kind)
            && (a.amount_minor, &a.currency, a.balance_after_minor, a.merchant_category, a.channel)
                == (b.amount_minor, &b.currency, b.balance_after_minor, b.merchant_category, b.channel)
    }

    /// Where the fast path says something, it says what serde_json says.
    fn check(text: &str) -> bool {
        match decode(text) {
            None => false,
            Some(fast) => {
                let slow = slow(text).unwrap_or_else(|| panic!("fast path accepted what serde_json refuses: {text}"));
                assert!(same(&fast, &slow), "different values for {text}");
                true
            }
        }
    }

    fn simulated() -> Vec<String> {
        let events = crate::window::testing::simulated(40, 5, 20);
        events.iter().map(|t| serde_json::to_string(t).unwrap()).collect()
    }

    #[test]
    fn starts_with_agrees_with_the_slice_method() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
        for _ in 0..20_000 {
            let word: Vec<u8> = (0..rng.random_range(0..30)).map(|_| rng.random_range(b'a'..=b'c')).collect();
            let mut text = word.clone();
            text.truncate(rng.random_range(0..=word.len()));
            if rng.random_bool(0.5) && !text.is_empty() {
                let at = rng.random_range(0..text.len());
                text[at] = rng.random_range(b'a'..=b'c');
            }
            text.extend((0..rng.random_range(0..10)).map(|_| rng.random_range(b'a'..=b'c')));
            assert_eq!(starts_with(&text, &word), text.starts_with(&word), "{text:?} {word:?}");
        }
    }

    #[test]
    fn special_byte_finds_the_first_quote_backslash_or_control_character() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
        let alphabet = [b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff];
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| if rng.random_bool(0.9) { b'x' } else { alphabet[rng.random_range(0..alphabet.len())] })
                .collect();
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            assert_eq!(special_byte(&bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn takes_every_record_the_producer_writes() {
        let records = simulated();
        assert!(records.len() > 1000);
        for text in &records {
            assert!(check(text), "fast path left a producer record to serde_json: {text}");
        }
        // Pretty-printed, and with fields in another order, too.
        let event: TransactionEvent = serde_json::from_str(&records[0]).unwrap();
        assert!(check(&serde_json::to_string_pretty(&event).unwrap()));
        let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&records[0]).unwrap();
        value.sort_keys();
        assert!(check(&serde_json::to_string(&value).unwrap()));
    }

    #[test]
    fn leaves_the_unusual_to_serde_json() {
        let base = r#"{"event_id":"5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81","event_time":"2026-01-01T10:00:00Z","schema_version":1,"customer_id":"C1","account_id":"A","kind":"card_purchase","amount_minor":-100,"currency":"GBP","balance_after_minor":0,"merchant_category":"groceries","channel":"card_present"}"#;
        assert!(check(base));
        let variants = [
            base.replace(r#""C1""#, r#""C\u0031""#),                 // escape
            base.replace("card_purchase", r"card\u005fpurchase"),    // escape in an enum name
            base.replace("5e1f0a3c-8d2b", r"5e1f0a3c\u002d8d2b"),    // in an id
            base.replace("T10:00", r"\u005410:00"),                  // in a timestamp
            base.replace("card_present", "card_present\t"),          // a control character
            base.replace(r#","channel""#, r#","note":1,"channel""#), // unknown field
            base.replace(r#""currency":"GBP""#, r#""currency":"GBP","currency":"EUR""#), // repeated
            base.replace("-100", "-100.0"),
            base.replace("-100", "-1e2"),
            base.replace(":0,", ":-0,"),
            base.replace(":0,", ":01,"),
            base.replace("-100", "-9223372036854775809"),
            base.replace(r#""schema_version":1"#, r#""schema_version":4294967296"#),
            base.replace(r#""schema_version":1"#, r#""schema_version":-1"#),
            base.replace(r#""card_purchase""#, r#""crypto""#),
            base.replace(r#""groceries""#, "null"),
            base.replace(r#","merchant_category":"groceries""#, ""),
            base.replace(r#""A""#, "null"),
            base.replace("2026-01-01T10:00:00Z", "2026-01-01T10:00:00+01:00"),
            base.replace("5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81", "5E1F0A3C8D2B4C7E9A610F3B2D4E6A81"),
            base.replace("5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81", "not-a-uuid"),
            format!("{base} x"),
            format!(" {base}\n"),
            base.replace(r#","channel":"card_present""#, ""),
            "{}".to_owned(),
            "[]".to_owned(),
        ];
        // Each either goes to serde_json or is decoded exactly as serde_json decodes it.
        let taken: Vec<bool> = variants.iter().map(|v| check(v)).collect();
        // Escapes, unknown and repeated fields, floats, -0 and overflows are never taken.
        assert_eq!(&taken[..14], &[false; 14]);
        // null and missing categories, offsets and other UUID forms are values serde
        // would accept: they are taken (and checked equal above) where handled.
        assert!(taken[15] && taken[16] && taken[18] && taken[19] && taken[22]);
    }

    #[test]
    fn agrees_with_serde_json_on_mutated_records() {
        let records = simulated();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        let pieces: [&[u8]; 14] =
            [b"\\", b"\"", b",", b"}", b"{", b"-", b"0", b"1", b".", b"e", b" ", b"null", b"\\u0041", b"\x01"];
        let (mut taken, mut tried) = (0, 0);
        for round in 0..60_000 {
            let mut bytes = records[round % records.len()].clone().into_bytes();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..4) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes[at] = rng.random_range(0x20..0x7f),
                    2 => {
                        let piece = pieces[rng.random_range(0..pieces.len())];
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    _ => {
                        let to = (at + rng.random_range(1..20)).min(bytes.len());
                        bytes.drain(at..to);
                    }
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                tried += 1;
                if check(text) {
                    taken += 1;
                }
            }
        }
        // Most mutations break the record; some leave a valid one, which is taken.

        assert!(tried > 50_000 && taken > 1_000, "{taken} of {tried}");
    }
}
