//! Wires the dashboard together: the state, the Kafka loop, the snapshot publisher and
//! the HTTP routes inside a [`StageRuntime`]. `main` and the integration tests start
//! the same [`Dashboard`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use eventpipe_common::config::Settings;
use eventpipe_common::runtime::StageRuntime;

use crate::api::{self, ApiState};
use crate::consumer::{self, CatchUp, ConsumerError, SharedState, Sinks};
use crate::metrics::DashboardMetrics;
use crate::settings::DashboardSettings;
use crate::state::DashboardState;
use crate::ui;

/// A running dashboard.
pub struct Dashboard {
    /// The stage shell (HTTP server, shutdown token, readiness, metrics).
    pub runtime: StageRuntime,
    /// The state the page shows.
    pub state: SharedState,
    consumer: JoinHandle<Result<(), ConsumerError>>,
    publisher: JoinHandle<()>,
    /// Dropping the dashboard without `wait`/`stop` (a failed test) still stops the
    /// Kafka thread, which the tokio runtime would otherwise wait for forever.
    _stop_on_drop: DropGuard,
}

impl Dashboard {
    /// Starts the HTTP server and the Kafka loop. Fails only when the port cannot be bound.
    pub async fn start(settings: Settings, section: DashboardSettings) -> std::io::Result<Self> {
        let state: SharedState = Arc::new(Mutex::new(DashboardState::new(section.state_config())));
        let metrics = DashboardMetrics::new();
        // The runtime makes its shutdown token only when it starts, after the routes;
        // `streams` follows it so open streams end on shutdown.
        let streams = CancellationToken::new();
        let api = ApiState::new(state.clone(), metrics.clone(), streams.clone());
        let routes = api::router(api.clone()).merge(ui::router());
        let mut runtime = StageRuntime::start(settings.clone(), Some(routes)).await?;
        metrics.register(&mut runtime.registry.lock().unwrap_or_else(|e| e.into_inner()));
        let shutdown = runtime.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            streams.cancel();
        });

        match settings.kafka.idempotent_producer(&format!("{}-stats", settings.instance)) {
            Ok(p) => runtime.spawn_stats_publisher(p),
            Err(e) => tracing::warn!(error = %e, "no stage stats: cannot create their producer"),
        }
        let publisher = tokio::spawn(api::publish_snapshots(api, section.stream_interval()));
        let sinks = Sinks {
            state: state.clone(),
            metrics,
            stage: runtime.metrics.clone(),
            readiness: runtime.readiness.clone(),
        };
        let catch_up = CatchUp { records: section.catch_up_records, timeout: section.catch_up_timeout() };
        let shutdown = runtime.shutdown.clone();
        let consumer = tokio::task::spawn_blocking(move || consumer::run(&settings, catch_up, sinks, shutdown));
        let _stop_on_drop = runtime.shutdown.clone().drop_guard();
        Ok(Dashboard { runtime, state, consumer, publisher, _stop_on_drop })
    }

    /// Where the HTTP server listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.runtime.http_addr
    }

    /// Runs until shutdown (SIGTERM, or the Kafka loop failing), then stops everything.
    pub async fn wait(self) -> Result<(), ConsumerError> {
        let result = match self.consumer.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the Kafka loop panicked");
                Ok(())
            }
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "the Kafka loop stopped");
        }
        self.runtime.shutdown.cancel();
        let _ = self.publisher.await;
        self.runtime.finish().await;
        result
    }

    /// Shuts down and waits for everything to stop.
    pub async fn stop(self) -> Result<(), ConsumerError> {
        self.runtime.shutdown.cancel();
        self.wait().await
    }
}
