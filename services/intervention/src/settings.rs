//! The intervention stage's section of the pipeline file (`stages.intervention`): rules,
//! extra action names, daily capacities and the processing knobs.
//!
//! Unknown fields and bad conditions fail while the file is parsed, with the key path,
//! line and column; cross-field checks (unique rule names, known actions) fail in
//! [`InterventionSettings::validate`] with the key path.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use eventpipe_common::config::ConfigError;
use eventpipe_common::stream::{Guarantee, StreamConfig};
use eventpipe_common::topics::Topic;

use crate::rules::{Condition, InterventionRule, BUILT_IN_ACTIONS};

/// `stages.intervention` in the pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterventionSettings {
    /// Ordered rules; when several match a score, the highest priority wins (ties: the
    /// earlier rule).
    pub rules: Vec<InterventionRule>,
    /// Action names this pipeline adds to the built-in ones.
    pub actions: Vec<String>,
    /// Most actions of each kind per event-time day, for the whole pipeline. Actions not
    /// listed are unlimited.
    pub capacity: BTreeMap<String, u32>,
    /// `exactly_once` (Kafka transactions) or `at_least_once`.
    pub processing_guarantee: Guarantee,
    /// Commit interval in milliseconds; also the window in which the highest scores get
    /// the capacity first.
    pub commit_interval_ms: u64,
    /// Commit after this many input records at most.
    pub max_batch: usize,
}

impl Default for InterventionSettings {
    fn default() -> Self {
        InterventionSettings {
            rules: default_rules(),
            actions: Vec::new(),
            capacity: BTreeMap::from([("agent_call".to_owned(), 200), ("hardship_review".to_owned(), 100)]),
            processing_guarantee: Guarantee::ExactlyOnce,
            commit_interval_ms: 100,
            max_batch: 10_000,
        }
    }
}

/// The rules a pipeline gets when it configures none.
pub fn default_rules() -> Vec<InterventionRule> {
    let rule = |name: &str, when: &str, action: &str, priority: i32, days: u64| InterventionRule {
        name: name.to_owned(),
        when: Condition::parse(when).expect("built-in rule parses"),
        action: action.to_owned(),
        priority,
        cooldown: Duration::from_secs(days * 86_400),
    };
    vec![
        rule("critical-agent-call", "band >= critical", "agent_call", 100, 14),
        rule(
            "missed-repayment-hardship",
            "band >= high and factor missed_repayments_90d > 0",
            "hardship_review",
            90,
            30,
        ),
        rule("failed-debit-holiday", "band >= high and factor failed_debits_30d > 0", "payment_holiday_offer", 80, 30),
        rule("high-risk-budgeting", "band >= high", "budgeting_tool_invite", 50, 14),
        rule("medium-risk-nudge", "band >= medium", "sms_nudge", 10, 7),
    ]
}

const KEY: &str = "stages.intervention";

impl InterventionSettings {
    /// Checks what the parser cannot: names, actions, ranges. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let known = |action: &str| BUILT_IN_ACTIONS.contains(&action) || self.actions.iter().any(|a| a == action);
        for (i, action) in self.actions.iter().enumerate() {
            if !is_name(action) {
                return Err(ConfigError::new(
                    format!("{KEY}.actions[{i}]"),
                    format!("`{action}` is not a valid action name (lowercase letters, digits, `_`)"),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("{KEY}.rules[{i}]");
            if rule.name.trim().is_empty() {
                return Err(ConfigError::new(format!("{key}.name"), "must not be empty"));
            }
            if let Some(first) = self.rules[..i].iter().position(|r| r.name == rule.name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("`{}` is already the name of rules[{first}]", rule.name),
                ));
            }
            if !known(&rule.action) {
                return Err(ConfigError::new(
                    format!("{key}.action"),
                    format!(
                        "unknown action `{}` (built in: {}; define others under {KEY}.actions)",
                        rule.action,
                        BUILT_IN_ACTIONS.join(", ")
                    ),
                ));
            }
        }
        for action in self.capacity.keys() {
            if !known(action) {
                return Err(ConfigError::new(format!("{KEY}.capacity.{action}"), "unknown action"));
            }
        }
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::new(format!("{KEY}.commit_interval_ms"), "must be at least 1"));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::new(format!("{KEY}.max_batch"), "must be at least 1"));
        }
        Ok(())
    }

    /// The loop's configuration.
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            guarantee: self.processing_guarantee,
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            max_batch: self.max_batch,
            input: Topic::RiskScores,
            changelog: Topic::InterventionState,
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventpipe_common::config::{PipelineFile, RuntimeArgs, Settings};
    use rstest::rstest;

    fn load(section: &str) -> Result<InterventionSettings, ConfigError> {
        let text = format!("name: demo\nkafka:\n  bootstrap_servers: b:9092\nstages:\n  intervention:\n{section}");
        let file = PipelineFile::parse(&text)?;
        let settings = Settings::resolve("intervention", file, &RuntimeArgs::default(), [])?;
        let parsed: InterventionSettings = settings.stage_settings()?;
        parsed.validate()?;
        Ok(parsed)
    }

    #[test]
    fn rules_parse_in_order_with_cooldowns() {
        let s = load(
            "    capacity: {agent_call: 5}\n    rules:\n      - name: calls\n        when: band >= critical\n        action: agent_call\n        priority: 9\n        cooldown: 7d\n      - name: nudge\n        when: score >= 0.05\n        action: sms_nudge\n",
        )
        .unwrap();
        assert_eq!(s.rules.len(), 2);
        assert_eq!((s.rules[0].name.as_str(), s.rules[0].priority), ("calls", 9));
        assert_eq!(s.rules[0].cooldown, Duration::from_secs(7 * 86_400));
        assert_eq!((s.rules[1].priority, s.rules[1].cooldown), (0, Duration::ZERO));
        assert_eq!(s.capacity["agent_call"], 5);
    }

    #[test]
    fn default_rules_are_valid() {
        InterventionSettings::default().validate().unwrap();
    }

    #[rstest]
    // Rejected by the parser: the key path, the line and column (of the rule, for errors
    // found inside a value), and the reason.
    #[case::unknown_field(
        "    rules:\n      - name: a\n        when: band >= high\n        action: sms_nudge\n        colour: red\n",
        "stages.intervention.rules[0].colour",
        &["unknown field `colour`", "line 10 column 9"]
    )]
    #[case::unknown_operator(
        "    rules:\n      - name: a\n        when: band => high\n        action: sms_nudge\n",
        "stages.intervention.rules[0].when",
        &["unknown operator `=>`", "line 7 column 9"]
    )]
    #[case::unknown_feature(
        "    rules:\n      - name: a\n        action: sms_nudge\n        when: factor shoe_size > 1\n",
        "stages.intervention.rules[0].when",
        &["unknown feature `shoe_size`", "line 7"]
    )]
    #[case::bad_cooldown(
        "    rules:\n      - {name: a, when: score > 0.1, action: sms_nudge, cooldown: soon}\n",
        "stages.intervention.rules[0].cooldown",
        &["cooldown `soon` is not a duration", "line 7"]
    )]
    #[case::unknown_section_field("    rulez: []\n", "stages.intervention.rulez", &["unknown field `rulez`", "line 6"])]
    // Rejected by validate: the key path and the reason.
    #[case::unknown_action(
        "    rules:\n      - {name: a, when: score > 0.1, action: send_flowers}\n",
        "stages.intervention.rules[0].action",
        &["unknown action `send_flowers`"]
    )]
    #[case::duplicate_name(
        "    rules:\n      - {name: a, when: score > 0.1, action: sms_nudge}\n      - {name: a, when: score > 0.2, action: agent_call}\n",
        "stages.intervention.rules[1].name",
        &["already the name of rules[0]"]
    )]
    #[case::capacity_of_unknown_action("    capacity: {teleport: 3}\n", "stages.intervention.capacity.teleport", &["unknown action"])]
    fn bad_rules_are_rejected_with_key_line_and_reason(
        #[case] section: &str,
        #[case] key: &str,
        #[case] fragments: &[&str],
    ) {
        let err = load(section).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        for f in fragments {
            assert!(err.message.contains(f), "`{f}` not in: {err}");
        }
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(!err.message.starts_with("stages."), "the key is said once: {err}");
    }

    #[test]
    fn custom_actions_can_be_defined() {
        let s = load(
            "    actions: [send_letter]\n    capacity: {send_letter: 10}\n    rules:\n      - {name: letter, when: band >= high, action: send_letter}\n",
        )
        .unwrap();
        assert_eq!(s.rules[0].action, "send_letter");
    }
}
