//! The page in a real browser: headless Chromium loads the dashboard while events flow,
//! the counters must move on their own, and a customer typed into the search must open
//! with their score and factors. Saves `target/dashboard-screenshot.png` (with the
//! drill-down open) and `target/dashboard-overview.png`.
//!
//! Without a Chromium binary (`EVENTPIPE_TEST_CHROMIUM`, or /usr/bin/chromium) the test
//! prints "SKIPPED: no chromium" and passes, unless `EVENTPIPE_REQUIRE_BROWSER=1`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use eventpipe_common::broker::TestBroker;
use eventpipe_common::events::Outcome;
use support::cdp::{find_chromium, Browser, Cdp, Page, REQUIRE_ENV};
use support::*;

const CUSTOMER: &str = "C0000042";

/// Keeps the pipeline busy: every 200 ms a score for one of 40 customers and a second
/// of stage stats; now and then an intervention or an outcome.
async fn keep_producing(feed: Feeder, stop: CancellationToken) {
    let mut tick: i64 = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    while !stop.is_cancelled() {
        ticker.tick().await;
        let customer = format!("B{:07}", tick % 40);
        let at = day(0) + TimeDelta::hours(tick);
        let s = ((tick * 37) % 100) as f64 / 100.0;
        feed.score(&score(&customer, at, s)).await;
        if tick % 3 == 0 && s >= 0.2 {
            feed.intervention(&intervention(&customer, at, if s >= 0.5 { "agent_call" } else { "sms_nudge" }, s)).await;
        }
        if tick % 17 == 0 {
            feed.outcome(&outcome(&customer, at + TimeDelta::days(3), Outcome::Defaulted)).await;
        }
        if tick % 5 == 0 {
            let end = Utc::now();
            feed.stats(&stage_stats("producer", "producer-0", end, 0, 900 + (tick % 7) as u64 * 20, 0)).await;
            feed.stats(&stage_stats("feature-processor", "fp-0", end, 850 + (tick % 5) as u64 * 30, 300, 40)).await;
            feed.stats(&stage_stats("intervention", "int-0", end, 280, 25, 3 + (tick % 4) as u64)).await;
        }
        tick += 1;
    }
}

fn number(v: &Value) -> u64 {
    v.as_str().unwrap_or_default().chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_updates_live_and_opens_a_customer_drill_down() {
    let Some(chromium) = find_chromium() else {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("no chromium binary, and {REQUIRE_ENV}=1");
        }
        println!("SKIPPED: no chromium");
        return;
    };

    let broker = TestBroker::start("dash-browser").await;
    let feed = Feeder::new(&broker);
    let mut known = score(CUSTOMER, day(2), 0.873);
    known.top_factors[0].contribution = 1.9;
    feed.score(&known).await;
    feed.intervention(&intervention(CUSTOMER, day(2), "agent_call", 0.873)).await;

    let dashboard = start(&broker, "{top_n: 10}").await;
    let addr = dashboard.http_addr();
    wait_ready(addr, Duration::from_secs(30)).await;
    let stop = CancellationToken::new();
    let producing = tokio::spawn(keep_producing(Feeder::new(&broker), stop.clone()));

    let browser = Browser::launch(&chromium);
    let cdp = Cdp::connect(&browser.ws_url).await;
    let page = Page::open(&cdp).await;
    page.call("Runtime.enable", json!({})).await;
    page.call("Network.enable", json!({})).await;
    page.call("Page.enable", json!({})).await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    let origin = format!("http://127.0.0.1:{}", addr.port());
    page.call("Page.navigate", json!({ "url": format!("{origin}/") })).await;

    let wait = Duration::from_secs(30);
    page.wait_for("the live status", wait, "document.getElementById('status').textContent === 'Live'").await;

    // The counters move while events flow, without a reload.
    let first =
        number(&page.wait_for("a score count", wait, "parseInt(document.getElementById('kpi-scores').textContent) > 0 && document.getElementById('kpi-scores').textContent").await);
    let later = number(
        &page
            .wait_for(
                "the score count to grow",
                wait,
                &format!("(() => {{ const t = document.getElementById('kpi-scores').textContent; return Number(t.replace(/\\D/g, '')) > {first} && t; }})()"),
            )
            .await,
    );
    assert!(later > first, "{first} -> {later}");
    let interventions = page.eval("document.getElementById('kpi-interventions').textContent").await;
    assert!(number(&interventions) >= 1, "{interventions}");
    page.wait_for("the rate chart", wait, "document.querySelectorAll('#chart-rates path.series').length >= 3").await;
    page.wait_for("the lag chart", wait, "document.querySelectorAll('#chart-lag path.series').length >= 3").await;
    page.wait_for("top-risk rows", wait, "document.querySelectorAll('#top-risk tbody tr').length === 10").await;
    page.wait_for("the interventions feed", wait, "document.querySelectorAll('#feed li').length >= 2").await;
    page.wait_for("the band bars", wait, "document.getElementById('band-count-critical').textContent.length > 0").await;
    let top_score = page.eval("document.querySelector('#top-risk tbody tr td:nth-child(2)').textContent").await;
    assert!(top_score.as_str().unwrap().starts_with("0.9"), "highest score first: {top_score}");

    let overview = page.screenshot().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard-overview.png"), &overview).unwrap();

    // An unknown customer says so.
    page.eval("document.getElementById('search-input').focus()").await;
    page.type_text("NOBODY-1").await;
    page.press_enter().await;
    page.wait_for("the not-found message", wait, "!document.getElementById('drill-error').hidden && document.getElementById('drill-error').textContent.includes('NOBODY-1')").await;

    // Type the known customer's id into the search: the drill-down shows their score and factors.
    page.eval("const i = document.getElementById('search-input'); i.value = ''; i.focus()").await;
    page.type_text(CUSTOMER).await;
    page.press_enter().await;
    page.wait_for(
        "the drill-down",
        wait,
        &format!("!document.getElementById('drill').hidden && document.getElementById('drill-customer').textContent === '{CUSTOMER}' && !document.getElementById('drill-body').hidden"),
    )
    .await;
    assert_eq!(page.eval("document.getElementById('drill-score').textContent").await, "0.873");
    assert_eq!(page.eval("document.getElementById('drill-band').textContent").await, "critical");
    let factors = page.eval("[...document.querySelectorAll('#drill-factors .factor')].map(e => e.textContent)").await;
    assert_eq!(factors, json!(FACTORS));
    let contributions = page.eval("document.getElementById('drill-factors').textContent").await;
    assert!(contributions.as_str().unwrap().contains("+1.90"), "{contributions}");
    let drill_interventions = page.eval("document.getElementById('drill-interventions').textContent").await;
    assert!(drill_interventions.as_str().unwrap().contains("agent_call"), "{drill_interventions}");

    // Everything came from the dashboard itself, and no script error happened.
    let requests: Vec<String> = cdp
        .events("Network.requestWillBeSent")
        .iter()
        .map(|e| e["params"]["request"]["url"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(requests.iter().any(|u| u.ends_with("/api/stream")), "{requests:?}");
    for url in &requests {
        assert!(url.starts_with(&origin) || url.starts_with("data:"), "request to elsewhere: {url}");
    }
    let exceptions = cdp.events("Runtime.exceptionThrown");
    assert!(exceptions.is_empty(), "script errors: {exceptions:?}");
    let errors: Vec<Value> =
        cdp.events("Runtime.consoleAPICalled").into_iter().filter(|e| e["params"]["type"] == "error").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let png = page.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
    let path = dir.join("dashboard-screenshot.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());

    stop.cancel();
    producing.await.unwrap();
    drop(browser);
    dashboard.stop().await.unwrap();
}
