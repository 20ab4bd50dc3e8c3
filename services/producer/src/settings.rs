//! The producer's section of the pipeline file (`stages.producer`) and its flags.

use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;

use eventpipe_common::config::ConfigError;

use crate::simulator::SimConfig;

/// `stages.producer` in the pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerSettings {
    /// Number of simulated customers.
    pub customers: u32,
    /// Random seed: the same seed gives the same event stream.
    pub seed: u64,
    /// Days of history to send before going live.
    pub backfill_days: u32,
    /// Live rate, events per second.
    pub rate: f64,
    /// First simulated day (default: today minus the backfill days).
    pub start: Option<NaiveDate>,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings { customers: 10_000, seed: 42, backfill_days: 30, rate: 200.0, start: None }
    }
}

/// Simulation flags shared by both modes (override the file).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimArgs {
    /// Number of simulated customers [file: stages.producer.customers, default 10000].
    #[arg(long)]
    pub customers: Option<u32>,
    /// Random seed [file: stages.producer.seed, default 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// First simulated day, YYYY-MM-DD [default: today minus the backfill days].
    #[arg(long)]
    pub start: Option<NaiveDate>,
}

impl ProducerSettings {
    /// Applies flags over the file's values and checks the result.
    pub fn merge(mut self, sim: &SimArgs, backfill_days: Option<u32>, rate: Option<f64>) -> Result<Self, ConfigError> {
        self.customers = sim.customers.unwrap_or(self.customers);
        self.seed = sim.seed.unwrap_or(self.seed);
        self.start = sim.start.or(self.start);
        self.backfill_days = backfill_days.unwrap_or(self.backfill_days);
        self.rate = rate.unwrap_or(self.rate);
        if self.customers == 0 {
            return Err(ConfigError::new("stages.producer.customers", "must be at least 1"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(ConfigError::new(
                "stages.producer.rate",
                format!("must be a positive number of events per second, got {}", self.rate),
            ));
        }
        Ok(self)
    }

    /// The simulation these settings describe; the start defaults to today minus the
    /// backfill days, so the backfill ends at today's midnight (UTC).
    pub fn sim_config(&self, backfill_days: u32) -> SimConfig {
        let start = self.start.unwrap_or_else(|| Utc::now().date_naive() - Days::new(u64::from(backfill_days)));
        SimConfig { customers: self.customers, seed: self.seed, start }
    }
}
