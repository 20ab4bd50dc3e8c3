//! Feature formulas on hand-built customer histories, with hand-computed values.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rstest::rstest;
use uuid::Uuid;

use eventpipe_common::events::{Channel, MerchantCategory, TransactionEvent, TransactionKind as K, SCHEMA_VERSION};
use feature_processor::window::{Applied, CustomerWindow, RING_DAYS};

const LATENESS: TimeDelta = TimeDelta::days(1);

fn at(day: i64, hour: i64) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc()
        + TimeDelta::days(day)
        + TimeDelta::hours(hour)
}

/// A posting on day `day` (0 = 2026-01-01) at `hour`, amounts in pounds.
fn tx(day: i64, hour: i64, kind: K, amount: f64, balance: f64, category: Option<MerchantCategory>) -> TransactionEvent {
    TransactionEvent {
        event_id: Uuid::from_u128((day * 100 + hour) as u128),
        event_time: at(day, hour),
        schema_version: SCHEMA_VERSION,
        customer_id: "C0000001".into(),
        account_id: "A1".into(),
        kind,
        amount_minor: (amount * 100.0).round() as i64,
        currency: "GBP".into(),
        balance_after_minor: (balance * 100.0).round() as i64,
        merchant_category: category,
        channel: Channel::Internal,
    }
}

fn window(events: &[TransactionEvent]) -> CustomerWindow {
    let mut w = CustomerWindow::default();
    for e in events {
        assert!(matches!(w.apply(e, LATENESS), Applied::Applied { .. }), "{e:?}");
    }
    w
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn salary_lateness_and_drop() {
    // Salaries on Jan 1 (£2000) and Jan 31 (£1500); latest event Mar 5 (day 63).
    // Mar 5 − Jan 31 = 33 days → 33 − 31 = 2 days late; drop = 1 − 1500/2000 = 0.25.
    let w = window(&[
        tx(0, 6, K::SalaryCredit, 2000.0, 2000.0, None),
        tx(30, 6, K::SalaryCredit, 1500.0, 3500.0, None),
        tx(63, 12, K::CardPurchase, -10.0, 3490.0, Some(MerchantCategory::Groceries)),
    ]);
    let f = w.features();
    assert_eq!(f.salary_days_late, 2.0);
    assert!(close(f.salary_drop_ratio, 0.25));
}

#[test]
fn no_salary_counts_days_of_history_past_a_cycle() {
    // First activity day 0, latest day 39: 40 days of history − 31 = 9.
    let w = window(&[tx(0, 9, K::TransferIn, 50.0, 50.0, None), tx(39, 9, K::TransferIn, 50.0, 100.0, None)]);
    assert_eq!(w.features().salary_days_late, 9.0);
    assert_eq!(w.features().salary_drop_ratio, 0.0);
}

#[test]
fn balance_minimum_uses_intraday_lows_and_carried_balances() {
    // Day 5 dips to −200 and closes at 100; as of day 10 the 7-day window is days 4..=10.
    let w = window(&[
        tx(1, 9, K::TransferIn, 500.0, 500.0, None),
        tx(5, 9, K::DirectDebit, -700.0, -200.0, Some(MerchantCategory::Housing)),
        tx(5, 15, K::TransferIn, 300.0, 100.0, None),
        tx(10, 9, K::TransferIn, 1.0, 101.0, None),
    ]);
    assert!(close(w.features().balance_min_7d, -200.0));
    // As of day 13 (window 7..=13) the dip is gone: the lowest is the carried 100.
    let mut w = w;
    w.apply(&tx(13, 9, K::TransferIn, 1.0, 102.0, None), LATENESS);
    assert!(close(w.features().balance_min_7d, 100.0));
}

#[test]
fn balance_trend_is_the_slope_of_daily_closing_balances() {
    // Closing balance falls £10 a day for 30 days: slope −10 £/day.
    let events: Vec<_> = (0..30).map(|d| tx(d, 12, K::CardPurchase, -10.0, 1000.0 - 10.0 * d as f64, None)).collect();
    assert!(close(window(&events).features().balance_trend_30d, -10.0));
    // Two points 29 days apart, 100 then 129, quiet days carried at 100: the OLS slope
    // over 30 points is (29 − 14.5) · 29 / 2247.5 = 420.5 / 2247.5.
    let w = window(&[tx(0, 12, K::TransferIn, 100.0, 100.0, None), tx(29, 12, K::TransferIn, 29.0, 129.0, None)]);
    assert!(close(w.features().balance_trend_30d, 420.5 / 2247.5));
}

#[test]
fn overdrawn_days_carry_the_closing_balance() {
    // Closes at −50 on day 20, back to +10 on day 25; as of day 29: days 20..=24 → 5.
    let w = window(&[
        tx(0, 9, K::TransferIn, 100.0, 100.0, None),
        tx(20, 9, K::CardPurchase, -150.0, -50.0, Some(MerchantCategory::Groceries)),
        tx(25, 9, K::TransferIn, 60.0, 10.0, None),
        tx(29, 9, K::TransferIn, 1.0, 11.0, None),
    ]);
    assert_eq!(w.features().days_overdrawn_30d, 5.0);
}

#[rstest]
// (days ago as of day 100, kind) → expected (failed_debits_30d, missed_repayments_90d, overdraft_fees_30d, bnpl_count_30d)
#[case(&[(1, K::DirectDebitFailed), (29, K::DirectDebitFailed), (30, K::DirectDebitFailed)], (2.0, 0.0, 0.0, 0.0))]
#[case(&[(10, K::LoanRepaymentMissed), (89, K::LoanRepaymentMissed), (95, K::LoanRepaymentMissed)], (0.0, 2.0, 0.0, 0.0))]
#[case(&[(0, K::OverdraftFee), (3, K::OverdraftFee), (45, K::OverdraftFee)], (0.0, 0.0, 2.0, 0.0))]
#[case(&[(0, K::BnplPurchase), (31, K::BnplPurchase)], (0.0, 0.0, 0.0, 1.0))]
fn counts_fall_out_of_their_windows(#[case] history: &[(i64, K)], #[case] expected: (f64, f64, f64, f64)) {
    let mut events: Vec<_> = history
        .iter()
        .map(|(ago, kind)| {
            let amount = if matches!(kind, K::OverdraftFee | K::BnplPurchase) { -6.0 } else { 0.0 };
            tx(100 - ago, 8, *kind, amount, 0.0, None)
        })
        .collect();
    events.sort_by_key(|e| e.event_time);
    events.push(tx(100, 23, K::TransferIn, 1.0, 1.0, None));
    let f = window(&events).features();
    assert_eq!((f.failed_debits_30d, f.missed_repayments_90d, f.overdraft_fees_30d, f.bnpl_count_30d), expected);
}

#[test]
fn shares_ratios_and_flows() {
    // Last 30 days: in £1000; out ATM 100 + gambling 50 + restaurants 350 = 500.
    // 31–60 days ago: restaurants £200. Discretionary now 350 + 50 = 400.
    let w = window(&[
        tx(0, 9, K::CardPurchase, -200.0, 800.0, Some(MerchantCategory::Restaurants)),
        tx(40, 9, K::SalaryCredit, 1000.0, 1800.0, None),
        tx(41, 9, K::AtmWithdrawal, -100.0, 1700.0, Some(MerchantCategory::Cash)),
        tx(42, 9, K::Gambling, -50.0, 1650.0, Some(MerchantCategory::Gambling)),
        tx(43, 9, K::CardPurchase, -350.0, 1300.0, Some(MerchantCategory::Restaurants)),
        tx(45, 9, K::CardPurchase, 0.0, 1300.0, Some(MerchantCategory::Groceries)),
    ]);
    let f = w.features();
    assert!(close(f.inflow_30d, 1000.0));
    assert!(close(f.outflow_30d, 500.0));
    assert!(close(f.atm_cash_share_30d, 0.2));
    assert!(close(f.gambling_share_30d, 0.1));
    assert!(close(f.spend_to_income_30d, 0.5));
    // (400 − 200) / 200 = 1.0
    assert!(close(f.discretionary_spend_change, 1.0));
    // Days 39..=45 hold 5 postings.
    assert_eq!(f.txn_count_7d, 5.0);
}

#[test]
fn late_events_within_the_allowed_lateness_land_in_their_day() {
    let mut w = window(&[tx(10, 20, K::TransferIn, 100.0, 100.0, None), tx(11, 10, K::TransferIn, 1.0, 101.0, None)]);
    // 14 hours behind the latest event: applied to day 10, and it is that day's last
    // posting, so it sets day 10's closing balance.
    let late = tx(10, 20, K::CardPurchase, -30.0, 70.0, Some(MerchantCategory::Groceries));
    let late = TransactionEvent { event_time: at(10, 20) + TimeDelta::minutes(30), ..late };
    assert_eq!(w.apply(&late, LATENESS), Applied::Applied { new_day: false });
    let day10 = w.days().find(|b| b.day == NaiveDate::from_ymd_opt(2026, 1, 11).unwrap()).unwrap();
    assert_eq!((day10.txn_count, day10.closing_balance_minor, day10.outflow_minor), (2, 7_000, 3_000));
    // 2 days behind: late, not applied.
    let too_late = tx(9, 9, K::CardPurchase, -5.0, 95.0, None);
    assert!(matches!(w.apply(&too_late, LATENESS), Applied::Late { behind } if behind > TimeDelta::days(1)));
    assert_eq!(w.days().count(), 2);
    assert_eq!(w.apply(&tx(12, 1, K::TransferIn, 1.0, 102.0, None), LATENESS), Applied::Applied { new_day: true });
}

#[test]
fn buckets_roll_over_after_ninety_days() {
    let mut w = window(&[tx(0, 9, K::LoanRepaymentMissed, 0.0, 0.0, None), tx(1, 9, K::TransferIn, 5.0, 5.0, None)]);
    w.apply(&tx(RING_DAYS - 1, 9, K::TransferIn, 5.0, 10.0, None), LATENESS);
    assert_eq!(w.days().count(), 3);
    assert_eq!(w.features().missed_repayments_90d, 1.0);
    w.apply(&tx(RING_DAYS, 9, K::TransferIn, 5.0, 15.0, None), LATENESS);
    assert_eq!(w.days().count(), 3, "day 0 fell out of the ring");
    assert_eq!(w.features().missed_repayments_90d, 0.0);
}

#[test]
fn changelog_record_restores_the_same_window() {
    let w = window(&[
        tx(0, 6, K::SalaryCredit, 2000.0, 2000.0, None),
        tx(3, 9, K::DirectDebitFailed, 0.0, 2000.0, None),
        tx(30, 6, K::SalaryCredit, 1500.0, 3500.0, None),
        tx(33, 12, K::Gambling, -40.0, 3460.0, Some(MerchantCategory::Gambling)),
    ]);
    let record = w.to_record("C0000001", Uuid::nil()).unwrap();
    let json = serde_json::to_vec(&record).unwrap();
    let restored = CustomerWindow::from_record(&serde_json::from_slice(&json).unwrap());
    assert_eq!(restored, w);
    assert_eq!(restored.features(), record.features);
}
