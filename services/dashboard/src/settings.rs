//! The dashboard's section of the pipeline file (`stages.dashboard`): sizes of what it
//! keeps in memory, how much history it reads at start, and the stream's pace.

use std::time::Duration;

use chrono::TimeDelta;
use serde::Deserialize;

use eventpipe_common::config::ConfigError;

use crate::state::StateConfig;

/// `stages.dashboard` in the pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// Rows of the top-risk table.
    pub top_n: usize,
    /// At start, read at most this many of the latest records of every partition.
    pub catch_up_records: i64,
    /// Give up waiting for the catch-up after this many seconds (then report ready anyway).
    pub catch_up_timeout_secs: u64,
    /// Interventions kept for the feed.
    pub recent_interventions: usize,
    /// A flag counts as right when a default follows within this many days.
    pub quality_horizon_days: u32,
    /// Customers kept in memory at most (least recently updated ones are forgotten). A
    /// customer takes at most about 3 KB (latest score, recent scores, interventions,
    /// quality history), typically a few hundred bytes.
    pub max_customers: usize,
    /// Recent scores kept per customer.
    pub recent_scores_per_customer: usize,
    /// Length of the rates and lag window, in seconds.
    pub rate_window_secs: u64,
    /// How often `/api/stream` pushes a snapshot, in milliseconds.
    pub stream_interval_ms: u64,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            top_n: 20,
            catch_up_records: 20_000,
            catch_up_timeout_secs: 120,
            recent_interventions: 500,
            quality_horizon_days: 30,
            max_customers: 100_000,
            recent_scores_per_customer: 10,
            rate_window_secs: 900,
            stream_interval_ms: 1000,
        }
    }
}

const KEY: &str = "stages.dashboard";

/// Interventions kept per customer for the drill-down.
pub const INTERVENTIONS_PER_CUSTOMER: usize = 5;

fn check(ok: bool, field: &str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(format!("{KEY}.{field}"), message))
    }
}

impl DashboardSettings {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check((1..=1000).contains(&self.top_n), "top_n", "must be between 1 and 1000")?;
        check(self.catch_up_records >= 0, "catch_up_records", "must be 0 or more")?;
        check(self.catch_up_timeout_secs >= 1, "catch_up_timeout_secs", "must be at least 1")?;
        check(
            (1..=100_000).contains(&self.recent_interventions),
            "recent_interventions",
            "must be between 1 and 100000",
        )?;
        check((1..=365).contains(&self.quality_horizon_days), "quality_horizon_days", "must be between 1 and 365")?;
        check(self.max_customers >= 1, "max_customers", "must be at least 1")?;
        check(
            (1..=1000).contains(&self.recent_scores_per_customer),
            "recent_scores_per_customer",
            "must be between 1 and 1000",
        )?;
        check((60..=86_400).contains(&self.rate_window_secs), "rate_window_secs", "must be between 60 and 86400")?;
        // The page promises at least one update a second.
        check((50..=1000).contains(&self.stream_interval_ms), "stream_interval_ms", "must be between 50 and 1000")?;
        Ok(())
    }

    /// The state's configuration.
    pub fn state_config(&self) -> StateConfig {
        StateConfig {
            top_n: self.top_n,
            recent_interventions: self.recent_interventions,
            max_customers: self.max_customers,
            scores_per_customer: self.recent_scores_per_customer,
            interventions_per_customer: INTERVENTIONS_PER_CUSTOMER,
            quality_horizon: TimeDelta::days(i64::from(self.quality_horizon_days)),
            rate_window_secs: self.rate_window_secs,
        }
    }

    /// How often the stream pushes.
    pub fn stream_interval(&self) -> Duration {
        Duration::from_millis(self.stream_interval_ms)
    }

    /// How long to wait for the catch-up.
    pub fn catch_up_timeout(&self) -> Duration {
        Duration::from_secs(self.catch_up_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventpipe_common::config::{PipelineFile, RuntimeArgs, Settings};
    use rstest::rstest;

    fn load(section: &str) -> Result<DashboardSettings, ConfigError> {
        let args = RuntimeArgs {
            pipeline_name: Some("demo".into()),
            bootstrap_servers: Some("b:9092".into()),
            ..Default::default()
        };
        let file = PipelineFile::parse(&format!("stages:\n  dashboard: {section}\n")).unwrap();
        let settings = Settings::resolve("dashboard", file, &args, []).unwrap();
        let parsed: DashboardSettings = settings.stage_settings()?;
        parsed.validate()?;
        Ok(parsed)
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(load("{}").unwrap(), DashboardSettings::default());
        let s = load("{top_n: 5, catch_up_records: 0, quality_horizon_days: 7}").unwrap();
        assert_eq!((s.top_n, s.catch_up_records, s.quality_horizon_days), (5, 0, 7));
        assert_eq!(s.state_config().quality_horizon, TimeDelta::days(7));
    }

    #[rstest]
    #[case::unknown_field("{top_m: 5}", "stages.dashboard.top_m")]
    #[case::wrong_type("{top_n: many}", "stages.dashboard.top_n")]
    #[case::zero_top_n("{top_n: 0}", "stages.dashboard.top_n")]
    #[case::negative_catch_up("{catch_up_records: -1}", "stages.dashboard.catch_up_records")]
    #[case::zero_ring("{recent_interventions: 0}", "stages.dashboard.recent_interventions")]
    #[case::zero_horizon("{quality_horizon_days: 0}", "stages.dashboard.quality_horizon_days")]
    #[case::slow_stream("{stream_interval_ms: 5000}", "stages.dashboard.stream_interval_ms")]
    fn errors_name_the_key(#[case] section: &str, #[case] key: &str) {
        let err = load(section).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        if section.contains("top_m") {
            assert!(err.message.contains("top_m"), "{err}");
        }
    }
}
