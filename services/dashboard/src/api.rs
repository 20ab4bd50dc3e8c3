//! The JSON API and the live stream, read from the shared [`DashboardState`]:
//!
//! - `GET /api/stats`: the overview ([`StatsView`]).
//! - `GET /api/customers/{id}`: one customer ([`CustomerView`]); 404 with a JSON error
//!   for a customer the dashboard does not hold.
//! - `GET /api/interventions?limit=N`: the latest interventions, newest first.
//! - `GET /api/stream`: Server-Sent Events; one `snapshot` event right away and then one
//!   every `stream_interval_ms` (at most a second), each `{"stats": …, "interventions": […]}`.
//!
//! Snapshots for the stream are made once per tick by [`publish_snapshots`] and shared
//! by every open stream; streams end when the stage shuts down, so the HTTP server's
//! graceful shutdown is not held up by them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use eventpipe_common::events::Intervention;

use crate::consumer::{lock, SharedState};
use crate::metrics::DashboardMetrics;
use crate::state::view::StatsView;

#[cfg(doc)]
use crate::state::{view::CustomerView, DashboardState};

/// Interventions sent with each stream snapshot.
pub const STREAM_INTERVENTIONS: usize = 20;

/// Default `limit` of `/api/interventions`.
pub const DEFAULT_LIMIT: usize = 50;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The dashboard's state.
    pub state: SharedState,
    /// The latest stream snapshot (JSON), replaced every tick.
    pub snapshots: Arc<watch::Sender<Arc<str>>>,
    /// Cancelled when the stage shuts down: ends the open streams.
    pub stop: CancellationToken,
    /// The dashboard's metrics.
    pub metrics: Arc<DashboardMetrics>,
}

impl ApiState {
    /// New handler state around `state`.
    pub fn new(state: SharedState, metrics: Arc<DashboardMetrics>, stop: CancellationToken) -> Self {
        let (snapshots, _) = watch::channel(Arc::<str>::from(""));
        ApiState { state, snapshots: Arc::new(snapshots), stop, metrics }
    }
}

/// One stream event's payload.
#[derive(Serialize)]
struct Snapshot {
    stats: StatsView,
    interventions: Vec<Intervention>,
}

/// The current snapshot as JSON (the views are built under the lock, serialized after).
pub fn snapshot_json(state: &SharedState) -> Arc<str> {
    let snapshot = {
        let s = lock(state);
        Snapshot { stats: s.stats(Utc::now()), interventions: s.interventions(STREAM_INTERVENTIONS) }
    };
    Arc::from(serde_json::to_string(&snapshot).expect("snapshot serializes"))
}

/// Makes a snapshot every `interval` while any stream is open, until `stop`.
pub async fn publish_snapshots(api: ApiState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = api.stop.cancelled() => return,
        }
        if api.snapshots.receiver_count() > 0 {
            let json = snapshot_json(&api.state);
            api.snapshots.send_replace(json);
        }
    }
}

/// The API routes.
pub fn router(api: ApiState) -> Router {
    Router::new()
        .route("/api/stats", get(stats))
        .route("/api/customers/{id}", get(customer))
        .route("/api/interventions", get(interventions))
        .route("/api/stream", get(stream))
        .with_state(api)
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(status: StatusCode, message: String, extra: Option<(&str, &str)>) -> Response {
    let mut body = serde_json::json!({ "error": message });
    if let Some((k, v)) = extra {
        body[k] = v.into();
    }
    no_store((status, Json(body)).into_response())
}

async fn stats(State(api): State<ApiState>) -> Response {
    let view = lock(&api.state).stats(Utc::now());
    no_store(Json(view).into_response())
}

async fn customer(State(api): State<ApiState>, Path(id): Path<String>) -> Response {
    let view = lock(&api.state).customer(&id);
    match view {
        Some(v) => no_store(Json(v).into_response()),
        None => error(StatusCode::NOT_FOUND, "unknown customer".into(), Some(("customer_id", &id))),
    }
}

/// Query of `/api/interventions`.
#[derive(Deserialize)]
struct Limit {
    limit: Option<String>,
}

async fn interventions(State(api): State<ApiState>, Query(q): Query<Limit>) -> Response {
    let (feed, capacity) = {
        let s = lock(&api.state);
        let capacity = s.interventions_capacity();
        let limit = match q.limit.as_deref().map(str::parse::<usize>) {
            None => DEFAULT_LIMIT.min(capacity),
            Some(Ok(n)) if n >= 1 => n.min(capacity),
            Some(_) => {
                drop(s);
                let message = format!("limit must be a whole number from 1 (at most {capacity} are kept)");
                return error(StatusCode::BAD_REQUEST, message, None);
            }
        };
        (s.interventions(limit), capacity)
    };
    no_store(Json(serde_json::json!({ "interventions": feed, "kept": capacity })).into_response())
}

/// Decrements the open-stream gauge when a stream ends.
struct StreamGuard(Arc<DashboardMetrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.stream_clients.dec();
    }
}

fn event(json: &str) -> Result<Event, Infallible> {
    Ok(Event::default().event("snapshot").data(json))
}

async fn stream(State(api): State<ApiState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    api.metrics.stream_clients.inc();
    let guard = StreamGuard(api.metrics.clone());
    let first = snapshot_json(&api.state);
    let rx = api.snapshots.subscribe();
    let stop = api.stop.clone();
    let events = futures::stream::unfold((Some(first), rx, stop, guard), |(first, mut rx, stop, guard)| async move {
        if let Some(json) = first {
            return Some((event(&json), (None, rx, stop, guard)));
        }
        tokio::select! {
            _ = stop.cancelled() => None,
            changed = rx.changed() => {
                changed.ok()?;
                let json = rx.borrow_and_update().clone();
                Some((event(&json), (None, rx, stop, guard)))
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
