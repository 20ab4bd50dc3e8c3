//! Intervention rules: what the pipeline config says, parsed and checked at start.
//!
//! A rule's `when` is a small condition language over a RiskScore:
//!
//! ```text
//! condition  := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" condition ")" | comparison
//! comparison := "band" op BAND | "score" op NUMBER
//!             | "factor" FEATURE op NUMBER         (the factor's value)
//!             | "contribution" FEATURE op NUMBER   (its push on the log-odds)
//! op         := ">=" | ">" | "<=" | "<" | "==" | "!="
//! ```
//!
//! Bands compare in order (low < medium < high < critical). `factor X` and
//! `contribution X` look at the score's top factors: when X is not among them the
//! comparison is false. Parse errors name the offending token; inside the pipeline file
//! the YAML deserializer adds the line and column.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use eventpipe_common::events::{FeatureValues, RiskBand, RiskScore};

/// The actions every pipeline knows; a config may define more (`actions:`).
pub const BUILT_IN_ACTIONS: [&str; 5] =
    ["sms_nudge", "payment_holiday_offer", "budgeting_tool_invite", "agent_call", "hardship_review"];

/// One rule of `stages.intervention.rules`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterventionRule {
    /// Unique name; it appears in each Intervention's `rule` and in cooldown state.
    pub name: String,
    /// When the rule matches.
    pub when: Condition,
    /// The action to take.
    pub action: String,
    /// Higher goes first when several rules match.
    #[serde(default)]
    pub priority: i32,
    /// After the rule fires for a customer, it does not fire again for them for this
    /// long (event time), e.g. `7d`, `12h`.
    #[serde(default, deserialize_with = "cooldown")]
    pub cooldown: Duration,
}

fn cooldown<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim())
        .map_err(|e| serde::de::Error::custom(format!("cooldown `{text}` is not a duration like 7d or 12h: {e}")))
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Op {
    const ALL: [(&'static str, Op); 6] =
        [(">=", Op::Ge), (">", Op::Gt), ("<=", Op::Le), ("<", Op::Lt), ("==", Op::Eq), ("!=", Op::Ne)];

    fn symbol(self) -> &'static str {
        Op::ALL.iter().find(|(_, op)| *op == self).map(|(s, _)| *s).unwrap_or("?")
    }

    fn holds<T: PartialOrd>(self, left: T, right: T) -> bool {
        match self {
            Op::Ge => left >= right,
            Op::Gt => left > right,
            Op::Le => left <= right,
            Op::Lt => left < right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

/// What a comparison looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Band,
    Score,
    /// The value of a top factor.
    Factor(String),
    /// The contribution of a top factor.
    Contribution(String),
}

/// A parsed `when`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Band(Op, RiskBand),
    Compare(Subject, Op, f64),
    Not(Box<Condition>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Condition::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a condition does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("in `{text}`: {message}")]
pub struct ConditionError {
    pub text: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Number(f64),
    Op(Op),
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "`{w}`"),
            Token::Number(n) => write!(f, "`{n}`"),
            Token::Op(op) => write!(f, "`{}`", op.symbol()),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            tokens.push(if c == '(' { Token::Open } else { Token::Close });
            i += 1;
        } else if "<>=!~".contains(c) {
            let start = i;
            while i < chars.len() && "<>=!~".contains(chars[i]) {
                i += 1;
            }
            let symbol: String = chars[start..i].iter().collect();
            let op = Op::ALL.iter().find(|(s, _)| *s == symbol).map(|(_, op)| *op).ok_or_else(|| {
                let known: Vec<&str> = Op::ALL.iter().map(|(s, _)| *s).collect();
                format!("unknown operator `{symbol}` (expected one of {})", known.join(", "))
            })?;
            tokens.push(Token::Op(op));
        } else if c.is_ascii_digit() || c == '-' || c == '.' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let literal: String = chars[start..i].iter().collect();
            let n = literal.parse::<f64>().map_err(|_| format!("`{literal}` is not a number"))?;
            tokens.push(Token::Number(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self, expected: &str) -> Result<Token, String> {
        let token = self.tokens.get(self.at).cloned().ok_or_else(|| format!("expected {expected}, found the end"))?;
        self.at += 1;
        Ok(token)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Condition, String> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Condition::Or(parts) })
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut parts = vec![self.unary()?];
        while self.keyword("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Condition::And(parts) })
    }

    fn unary(&mut self) -> Result<Condition, String> {
        if self.keyword("not") {
            return Ok(Condition::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            return match self.next("`)`")? {
                Token::Close => Ok(inner),
                other => Err(format!("expected `)`, found {other}")),
            };
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Condition, String> {
        let subject = match self.next("band, score, factor or contribution")? {
            Token::Word(w) if w == "band" => None,
            Token::Word(w) if w == "score" => Some(Subject::Score),
            Token::Word(w) if w == "factor" || w == "contribution" => {
                let feature = match self.next("a feature name")? {
                    Token::Word(f) if FeatureValues::index_of(&f).is_some() => f,
                    Token::Word(f) => {
                        return Err(format!(
                            "unknown feature `{f}` (expected one of {})",
                            FeatureValues::NAMES.join(", ")
                        ))
                    }
                    other => return Err(format!("expected a feature name after `{w}`, found {other}")),
                };
                Some(if w == "factor" { Subject::Factor(feature) } else { Subject::Contribution(feature) })
            }
            other => return Err(format!("expected band, score, factor or contribution, found {other}")),
        };
        let op = match self.next("an operator")? {
            Token::Op(op) => op,
            other => return Err(format!("expected an operator (>=, >, <=, <, ==, !=), found {other}")),
        };
        match subject {
            None => match self.next("a band")? {
                Token::Word(b) => {
                    let band = serde_json::from_value::<RiskBand>(serde_json::Value::String(b.clone()))
                        .map_err(|_| format!("unknown band `{b}` (expected one of low, medium, high, critical)"))?;
                    Ok(Condition::Band(op, band))
                }
                other => Err(format!("expected a band (low, medium, high, critical), found {other}")),
            },
            Some(subject) => match self.next("a number")? {
                Token::Number(n) => Ok(Condition::Compare(subject, op, n)),
                other => Err(format!("expected a number, found {other}")),
            },
        }
    }
}

impl Condition {
    /// Parses the condition language (see the module docs).
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let error = |message: String| ConditionError { text: text.to_owned(), message };
        let tokens = tokenize(text).map_err(error)?;
        if tokens.is_empty() {
            return Err(error("the condition is empty".into()));
        }
        let mut parser = Parser { tokens, at: 0 };
        let condition = parser.or().map_err(error)?;
        if let Some(extra) = parser.peek() {
            return Err(error(format!("unexpected {extra} (conditions are joined with `and` / `or`)")));
        }
        Ok(condition)
    }

    /// Whether the condition holds for `score`.
    pub fn holds(&self, score: &RiskScore) -> bool {
        match self {
            Condition::Band(op, band) => op.holds(score.band, *band),
            Condition::Compare(Subject::Score, op, n) => op.holds(score.score, *n),
            Condition::Compare(Subject::Factor(f), op, n) => factor(score, f).is_some_and(|x| op.holds(x.value, *n)),
            Condition::Compare(Subject::Contribution(f), op, n) => {
                factor(score, f).is_some_and(|x| op.holds(x.contribution, *n))
            }
            Condition::Compare(Subject::Band, ..) => false,
            Condition::Not(inner) => !inner.holds(score),
            Condition::And(parts) => parts.iter().all(|c| c.holds(score)),
            Condition::Or(parts) => parts.iter().any(|c| c.holds(score)),
        }
    }

    /// The condition with the score's actual values, for an Intervention's reason:
    /// `band critical >= high and factor failed_debits_30d 2 > 0`.
    pub fn explain(&self, score: &RiskScore) -> String {
        match self {
            Condition::Band(op, band) => format!("band {} {} {}", band_name(score.band), op.symbol(), band_name(*band)),
            Condition::Compare(subject, op, n) => {
                let (name, value) = match subject {
                    Subject::Score => ("score".to_owned(), Some(score.score)),
                    Subject::Factor(f) => (format!("factor {f}"), factor(score, f).map(|x| x.value)),
                    Subject::Contribution(f) => (format!("contribution {f}"), factor(score, f).map(|x| x.contribution)),
                    Subject::Band => ("band".to_owned(), None),
                };
                match value {
                    Some(v) => format!("{name} {} {} {n}", round(v), op.symbol()),
                    None => format!("{name} (not a top factor) {} {n}", op.symbol()),
                }
            }
            Condition::Not(inner) => format!("not ({})", inner.explain(score)),
            Condition::And(parts) => join(parts, " and ", score),
            Condition::Or(parts) => join(parts, " or ", score),
        }
    }
}

/// The condition in the rule language, as it would be written.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nested = |c: &Condition| match c {
            Condition::And(_) | Condition::Or(_) => format!("({c})"),
            _ => c.to_string(),
        };
        match self {
            Condition::Band(op, band) => write!(f, "band {} {}", op.symbol(), band_name(*band)),
            Condition::Compare(subject, op, n) => {
                let subject = match subject {
                    Subject::Band => "band".to_owned(),
                    Subject::Score => "score".to_owned(),
                    Subject::Factor(x) => format!("factor {x}"),
                    Subject::Contribution(x) => format!("contribution {x}"),
                };
                write!(f, "{subject} {} {n}", op.symbol())
            }
            Condition::Not(inner) => write!(f, "not {}", nested(inner)),
            Condition::And(parts) => f.write_str(&parts.iter().map(nested).collect::<Vec<_>>().join(" and ")),
            Condition::Or(parts) => f.write_str(&parts.iter().map(nested).collect::<Vec<_>>().join(" or ")),
        }
    }
}

fn join(parts: &[Condition], sep: &str, score: &RiskScore) -> String {
    let shown: Vec<String> = parts
        .iter()
        .map(|c| match c {
            Condition::And(_) | Condition::Or(_) => format!("({})", c.explain(score)),
            _ => c.explain(score),
        })
        .collect();
    shown.join(sep)
}

fn factor<'a>(score: &'a RiskScore, feature: &str) -> Option<&'a eventpipe_common::events::RiskFactor> {
    score.top_factors.iter().find(|f| f.feature == feature)
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The band's wire name.
pub fn band_name(band: RiskBand) -> &'static str {
    match band {
        RiskBand::Low => "low",
        RiskBand::Medium => "medium",
        RiskBand::High => "high",
        RiskBand::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventpipe_common::events::RiskFactor;
    use rstest::rstest;

    fn score(band: RiskBand, value: f64, factors: &[(&str, f64, f64)]) -> RiskScore {
        RiskScore {
            event_id: uuid::Uuid::nil(),
            event_time: "2026-03-01T10:00:00Z".parse().unwrap(),
            schema_version: 1,
            customer_id: "C1".into(),
            score: value,
            band,
            model_version: "m1".into(),
            top_factors: factors
                .iter()
                .map(|(f, v, c)| RiskFactor { feature: (*f).into(), value: *v, contribution: *c })
                .collect(),
            trigger_event_id: uuid::Uuid::nil(),
        }
    }

    #[rstest]
    #[case("band >= high", RiskBand::High, 0.3, true)]
    #[case("band >= high", RiskBand::Critical, 0.7, true)]
    #[case("band >= high", RiskBand::Medium, 0.1, false)]
    #[case("band == medium", RiskBand::Medium, 0.1, true)]
    #[case("band != low", RiskBand::Low, 0.01, false)]
    #[case("band < high", RiskBand::Medium, 0.1, true)]
    #[case("score > 0.5", RiskBand::Critical, 0.51, true)]
    #[case("score > 0.5", RiskBand::Critical, 0.5, false)]
    #[case("score <= 0.5", RiskBand::Critical, 0.5, true)]
    #[case("band >= high and factor failed_debits_30d > 0", RiskBand::High, 0.3, true)]
    #[case("band >= high and factor failed_debits_30d > 2", RiskBand::High, 0.3, false)]
    #[case("band >= high and factor gambling_share_30d > 0", RiskBand::High, 0.3, false)]
    #[case("contribution failed_debits_30d >= 1.5", RiskBand::High, 0.3, true)]
    #[case("contribution salary_days_late > 0", RiskBand::High, 0.3, false)]
    #[case("band == critical or factor failed_debits_30d >= 2", RiskBand::High, 0.3, true)]
    #[case("not band >= high", RiskBand::High, 0.3, false)]
    #[case("band >= medium and (score > 0.9 or factor days_overdrawn_30d > 10)", RiskBand::High, 0.3, true)]
    #[case("band >= medium and (score > 0.9 or factor days_overdrawn_30d > 12)", RiskBand::High, 0.3, false)]
    fn conditions_evaluate(#[case] text: &str, #[case] band: RiskBand, #[case] value: f64, #[case] expected: bool) {
        let s = score(band, value, &[("failed_debits_30d", 2.0, 1.5), ("days_overdrawn_30d", 11.0, 0.8)]);
        assert_eq!(Condition::parse(text).unwrap().holds(&s), expected, "{text}");
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let c = Condition::parse("score > 0.9 or band >= high and score < 0.2").unwrap();
        assert!(matches!(&c, Condition::Or(parts) if parts.len() == 2 && matches!(parts[1], Condition::And(_))));
    }

    #[rstest]
    #[case("band => high", "unknown operator `=>` (expected one of >=, >, <=, <, ==, !=)")]
    #[case("band ~= high", "unknown operator `~=`")]
    #[case("band = high", "unknown operator `=`")]
    #[case("band >= severe", "unknown band `severe`")]
    #[case("factor shoe_size > 3", "unknown feature `shoe_size`")]
    #[case("balance > 3", "expected band, score, factor or contribution, found `balance`")]
    #[case("score > high", "expected a number, found `high`")]
    #[case("score >", "expected a number, found the end")]
    #[case("band >= high score > 0.1", "unexpected `score`")]
    #[case("(band >= high", "expected `)`, found the end")]
    #[case("", "the condition is empty")]
    #[case("band >= high; drop", "unexpected character `;`")]
    fn bad_conditions_say_why(#[case] text: &str, #[case] message: &str) {
        let err = Condition::parse(text).unwrap_err();
        assert!(err.to_string().contains(message), "{text}: {err}");
    }

    #[rstest]
    #[case("band >= high and factor failed_debits_30d > 0")]
    #[case("not (score > 0.5 or contribution gambling_share_30d <= -1.25) and band != low")]
    fn display_round_trips(#[case] text: &str) {
        let c = Condition::parse(text).unwrap();
        assert_eq!(c.to_string(), text);
        assert_eq!(Condition::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn explain_shows_the_actual_values() {
        let s = score(RiskBand::Critical, 0.61, &[("failed_debits_30d", 2.0, 1.5)]);
        let c = Condition::parse("band >= high and (factor failed_debits_30d > 0 or factor gambling_share_30d > 0.2)")
            .unwrap();
        assert_eq!(
            c.explain(&s),
            "band critical >= high and (factor failed_debits_30d 2 > 0 or factor gambling_share_30d (not a top factor) > 0.2)"
        );
    }
}
