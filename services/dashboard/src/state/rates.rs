//! Per-stage rates and lag over a sliding wall-clock window (15 minutes by default),
//! from the StageStats records every stage instance publishes about once a second.
//!
//! Storage is one bucket per wall-clock second per stage. A record's counts are spread
//! over the seconds its window `[event_time - window_ms, event_time)` overlaps, in
//! proportion to the overlap, so a bucket holds events per second whatever the
//! instances' publishing phase, and instances of a stage add up. Lag is a gauge: each
//! instance's latest value in a second is kept, carried forward for at most
//! [`LAG_CARRY`] (so an instance that reports a little late does not make the stage's
//! lag dip), and the stage's lag is the sum over its instances.
//!
//! The last [`SETTLE`] seconds before "now" are left out of the series: an instance's
//! record for them may not have arrived yet.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use eventpipe_common::events::StageStats;

/// How long an instance's last lag value stands in for missing reports.
pub const LAG_CARRY: i64 = 10;

/// Seconds at the end of the window not yet shown (records may still be on their way).
pub const SETTLE: i64 = 3;

/// Seconds averaged for a stage's "current" rates.
const CURRENT_SECS: i64 = 5;

/// Event counts in one second of one stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    consumed: f64,
    produced: f64,
    dead_lettered: f64,
}

/// One stage's buckets.
#[derive(Debug, Clone, Default)]
struct StageSeries {
    /// Unix second → counts.
    counts: BTreeMap<i64, Counts>,
    /// Instance → unix second → lag reported in that second.
    lag: BTreeMap<String, BTreeMap<i64, u64>>,
}

/// The sliding window of every stage's rates and lag.
#[derive(Debug, Clone)]
pub struct StageRates {
    window_secs: i64,
    stages: BTreeMap<String, StageSeries>,
}

/// One stage's time series, one value per second from `start` (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageView {
    /// Stage name.
    pub stage: String,
    /// Instances that reported within the window.
    pub instances: Vec<String>,
    /// Average consumed/s over the last 5 shown seconds.
    pub consumed_per_s: f64,
    /// Average produced/s over the last 5 shown seconds.
    pub produced_per_s: f64,
    /// Average dead-lettered/s over the last 5 shown seconds.
    pub dead_lettered_per_s: f64,
    /// Lag in the last shown second (null when no instance reported recently).
    pub lag: Option<u64>,
    /// The per-second series.
    pub series: Series,
}

/// Per-second values of one stage; every array has one entry per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Unix time (seconds) of the first entry.
    pub start: i64,
    /// Seconds between entries (always 1).
    pub step_s: i64,
    /// Records consumed per second, summed over instances.
    pub consumed: Vec<f64>,
    /// Records produced per second, summed over instances.
    pub produced: Vec<f64>,
    /// Records dead-lettered per second, summed over instances.
    pub dead_lettered: Vec<f64>,
    /// Lag summed over instances (null where no instance had reported recently).
    pub lag: Vec<Option<u64>>,
}

fn second(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis().div_euclid(1000)
}

/// Rounds to 3 decimals, so the JSON stays short.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl StageRates {
    /// An empty window of `window_secs` seconds.
    pub fn new(window_secs: u64) -> Self {
        StageRates { window_secs: window_secs.max(1) as i64, stages: BTreeMap::new() }
    }

    /// The oldest second kept at `now`.
    fn oldest(&self, now: DateTime<Utc>) -> i64 {
        second(now) - self.window_secs - SETTLE
    }

    /// Adds one StageStats record; returns false when it is older than the window (ignored).
    pub fn record(&mut self, stats: &StageStats, now: DateTime<Utc>) -> bool {
        let oldest = self.oldest(now);
        let end_ms = stats.event_time.timestamp_millis();
        if end_ms.div_euclid(1000) < oldest {
            return false;
        }
        let series = self.stages.entry(stats.stage.clone()).or_default();
        let start_ms = (end_ms - stats.window_ms as i64).max(oldest * 1000);
        let counts = Counts {
            consumed: stats.consumed as f64,
            produced: stats.produced as f64,
            dead_lettered: stats.dead_lettered as f64,
        };
        if counts != Counts::default() {
            if end_ms <= start_ms {
                add(series.counts.entry(end_ms.div_euclid(1000)).or_default(), counts, 1.0);
            } else {
                let len = (end_ms - start_ms) as f64;
                let mut s = start_ms.div_euclid(1000);
                while s * 1000 < end_ms {
                    let overlap = (end_ms.min((s + 1) * 1000) - start_ms.max(s * 1000)) as f64;
                    add(series.counts.entry(s).or_default(), counts, overlap / len);
                    s += 1;
                }
            }
        }
        series.lag.entry(stats.instance.clone()).or_default().insert(second(stats.event_time), stats.lag);
        true
    }

    /// Drops everything older than the window.
    pub fn evict(&mut self, now: DateTime<Utc>) {
        let oldest = self.oldest(now);
        for series in self.stages.values_mut() {
            series.counts = series.counts.split_off(&oldest);
            // Keep lag values a little older than the window: they carry into it.
            for lags in series.lag.values_mut() {
                *lags = lags.split_off(&(oldest - LAG_CARRY));
            }
            series.lag.retain(|_, lags| !lags.is_empty());
        }
        self.stages.retain(|_, s| !s.counts.is_empty() || !s.lag.is_empty());
    }

    /// Number of buckets held (for tests of the eviction).
    pub fn buckets(&self) -> usize {
        self.stages.values().map(|s| s.counts.len() + s.lag.values().map(BTreeMap::len).sum::<usize>()).sum()
    }

    /// Every stage's series at `now`, by stage name. All series share one time axis: from
    /// the oldest data in the window (at most the window length ago) to `now - SETTLE`.
    pub fn view(&self, now: DateTime<Utc>) -> Vec<StageView> {
        let end = second(now) - SETTLE;
        let earliest = self
            .stages
            .values()
            .flat_map(|s| s.counts.keys().next().into_iter().chain(s.lag.values().filter_map(|l| l.keys().next())))
            .min()
            .copied();
        let start = earliest.unwrap_or(end).max(end - self.window_secs + 1).min(end);
        self.stages.iter().map(|(name, s)| stage_view(name, s, start, end)).collect()
    }
}

fn add(into: &mut Counts, c: Counts, share: f64) {
    into.consumed += c.consumed * share;
    into.produced += c.produced * share;
    into.dead_lettered += c.dead_lettered * share;
}

fn stage_view(name: &str, s: &StageSeries, start: i64, end: i64) -> StageView {
    let len = (end - start + 1) as usize;
    let mut series = Series {
        start,
        step_s: 1,
        consumed: Vec::with_capacity(len),
        produced: Vec::with_capacity(len),
        dead_lettered: Vec::with_capacity(len),
        lag: Vec::with_capacity(len),
    };
    for sec in start..=end {
        let c = s.counts.get(&sec).copied().unwrap_or_default();
        series.consumed.push(round3(c.consumed));
        series.produced.push(round3(c.produced));
        series.dead_lettered.push(round3(c.dead_lettered));
        let mut total = None;
        for lags in s.lag.values() {
            if let Some((_, lag)) = lags.range(sec - LAG_CARRY..=sec).next_back() {
                total = Some(total.unwrap_or(0) + lag);
            }
        }
        series.lag.push(total);
    }
    let tail = (CURRENT_SECS as usize).min(len);
    let avg = |v: &[f64]| round3(v[len - tail..].iter().sum::<f64>() / tail.max(1) as f64);
    let instances = s.lag.iter().filter(|(_, l)| l.range(start - LAG_CARRY..).next().is_some()).map(|(i, _)| i.clone());
    StageView {
        stage: name.to_owned(),
        instances: instances.collect(),
        consumed_per_s: avg(&series.consumed),
        produced_per_s: avg(&series.produced),
        dead_lettered_per_s: avg(&series.dead_lettered),
        lag: series.lag.last().copied().flatten(),
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use eventpipe_common::events::{LatencyPercentiles, SCHEMA_VERSION};
    use rstest::rstest;
    use uuid::Uuid;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn stats(stage: &str, instance: &str, end: DateTime<Utc>, window_ms: u64, consumed: u64, lag: u64) -> StageStats {
        StageStats {
            event_id: Uuid::new_v4(),
            event_time: end,
            schema_version: SCHEMA_VERSION,
            stage: stage.into(),
            instance: instance.into(),
            window_start: end - TimeDelta::milliseconds(window_ms as i64),
            window_ms,
            consumed,
            produced: consumed / 2,
            dead_lettered: 0,
            lag,
            latency: LatencyPercentiles::default(),
        }
    }

    #[test]
    fn instances_add_up_per_second() {
        let mut r = StageRates::new(900);
        let now = t(100);
        for s in 80..90 {
            assert!(r.record(&stats("feature-processor", "fp-0", t(s + 1), 1000, 100, 10), now));
            assert!(r.record(&stats("feature-processor", "fp-1", t(s + 1), 1000, 50, 5), now));
        }
        let views = r.view(now);
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!(v.instances, ["fp-0", "fp-1"]);
        assert_eq!(v.series.start, 80);
        assert_eq!(v.series.consumed.len(), (100 - SETTLE - 80 + 1) as usize);
        assert_eq!(&v.series.consumed[..10], &[150.0; 10]);
        assert_eq!(&v.series.produced[..10], &[75.0; 10]);
        assert!(v.series.consumed[10..].iter().all(|c| *c == 0.0));
        // Lag is reported at the window ends (81..=90) and carried for LAG_CARRY seconds.
        assert_eq!(v.series.lag[0], None);
        assert_eq!(v.series.lag[1], Some(15));
        assert_eq!(v.lag, Some(15), "the last report (second 90) still stands at second 97");
    }

    #[rstest]
    // A 1 s window straddling two seconds is split by its overlap.
    #[case::straddling(1000, 500, &[(-1, 50.0), (0, 50.0)])]
    // A 4 s window is spread evenly.
    #[case::long_window(4000, 0, &[(-4, 25.0), (-3, 25.0), (-2, 25.0), (-1, 25.0)])]
    // No window length: everything lands in the second of the event time.
    #[case::instant(0, 250, &[(0, 100.0)])]
    fn counts_are_spread_over_the_window(
        #[case] window_ms: u64,
        #[case] end_offset_ms: i64,
        #[case] expected: &[(i64, f64)],
    ) {
        let mut r = StageRates::new(900);
        let end = t(50) + TimeDelta::milliseconds(end_offset_ms);
        r.record(&stats("producer", "p-0", end, window_ms, 100, 0), t(60));
        let v = &r.view(t(60))[0];
        for &(offset, value) in expected {
            let i = (50 + offset - v.series.start) as usize;
            assert!((v.series.consumed[i] - value).abs() < 1e-9, "second {offset}: {:?}", v.series.consumed);
        }
        let total: f64 = v.series.consumed.iter().sum();
        assert!((total - 100.0).abs() < 1e-9);
    }

    #[test]
    fn window_evicts_what_is_older_than_fifteen_minutes() {
        let mut r = StageRates::new(900);
        let now = t(10_000);
        assert!(!r.record(&stats("producer", "p-0", now - TimeDelta::minutes(16), 1000, 5, 1), now), "too old");
        for s in 0..1200 {
            r.record(&stats("producer", "p-0", t(8_800 + s), 1000, 5, 1), t(8_800 + s));
        }
        r.record(&stats("intervention", "i-0", t(8_900), 1000, 5, 1), t(8_900));
        let before = r.buckets();
        r.evict(now);
        assert!(r.buckets() < before);
        let views = r.view(now);
        assert_eq!(views.len(), 1, "the intervention stage only had data older than the window: {views:?}");
        let v = &views[0];
        assert_eq!(v.series.start, 10_000 - SETTLE - 900 + 1);
        assert_eq!(v.series.consumed.len(), 900);
        assert!(v.series.consumed.iter().all(|c| (*c - 5.0).abs() < 1e-9));
        // Nothing more than the window (plus the lag carry) is held after eviction.
        assert!(r.buckets() <= 900 + SETTLE as usize + 1 + 900 + (SETTLE + LAG_CARRY) as usize + 1, "{}", r.buckets());

        r.evict(now + TimeDelta::hours(1));
        assert_eq!(r.buckets(), 0);
        assert!(r.view(now + TimeDelta::hours(1)).is_empty());
    }

    #[test]
    fn stale_instances_stop_counting_towards_lag() {
        let mut r = StageRates::new(900);
        r.record(&stats("intervention", "i-0", t(10), 1000, 0, 7), t(10));
        r.record(&stats("intervention", "i-1", t(10), 1000, 0, 3), t(10));
        r.record(&stats("intervention", "i-1", t(30), 1000, 0, 4), t(30));
        let v = &r.view(t(33))[0];
        let at = |s: i64| v.series.lag[(s - v.series.start) as usize];
        assert_eq!(at(10), Some(10));
        assert_eq!(at(20), Some(10));
        assert_eq!(at(21), None, "both reports are older than LAG_CARRY");
        assert_eq!(at(30), Some(4));
    }
}
