//! What every stage does around its processing loop: telemetry, the health and metrics
//! server, readiness, stage metrics, the stats publisher and shutdown on SIGTERM/SIGINT.
//! A service's `main` loads [`Settings`], calls [`StageRuntime::start`] and runs its loop
//! until [`StageRuntime::shutdown`] is cancelled.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use prometheus_client::registry::Registry;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::{self, HealthState, Readiness};
use crate::stats::{publish_stats, StageMetrics};
use crate::stream::{StageHandles, StreamError};
use crate::telemetry::{self, TelemetryGuard};
use crate::topics::Topic;

/// The running shell of a stage.
pub struct StageRuntime {
    /// The stage's settings.
    pub settings: Settings,
    /// Cancelled on SIGTERM/SIGINT (or by the stage itself).
    pub shutdown: CancellationToken,
    /// Drives `/readyz`.
    pub readiness: Readiness,
    /// Metrics registry behind `/metrics`; stages may register more.
    pub registry: Arc<Mutex<Registry>>,
    /// The stage's counters.
    pub metrics: Arc<StageMetrics>,
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    http: JoinHandle<std::io::Result<()>>,
    _telemetry: TelemetryGuard,
}

impl StageRuntime {
    /// Initialises telemetry and starts the HTTP server (plus `routes`, if any).
    pub async fn start(settings: Settings, routes: Option<Router>) -> std::io::Result<Self> {
        let guard = telemetry::init(&settings.stage, settings.log_format);
        let mut registry = Registry::default();
        let metrics = StageMetrics::new(&mut registry, &settings.stage, &settings.instance);
        let registry = Arc::new(Mutex::new(registry));
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        http::cancel_on_signal(shutdown.clone());
        let mut router = http::router(HealthState { readiness: readiness.clone(), registry: registry.clone() });
        if let Some(extra) = routes {
            router = router.merge(extra);
        }
        let (http_addr, http) = http::serve(settings.http_port, router, shutdown.clone()).await?;
        tracing::info!(
            stage = %settings.stage,
            instance = %settings.instance,
            pipeline = %settings.pipeline,
            bootstrap = %settings.kafka.bootstrap_servers,
            %http_addr,
            "stage starting"
        );
        Ok(StageRuntime {
            settings,
            shutdown,
            readiness,
            registry,
            metrics,
            http_addr,
            tasks: Vec::new(),
            http,
            _telemetry: guard,
        })
    }

    /// Starts publishing StageStats to `P.pipeline-stats` every second through `producer`.
    pub fn spawn_stats_publisher(&mut self, producer: FutureProducer) {
        let topic = self.settings.topic_name(Topic::PipelineStats).to_owned();
        let task = tokio::spawn(publish_stats(
            self.metrics.clone(),
            producer,
            topic,
            Duration::from_secs(1),
            self.shutdown.clone(),
        ));
        self.tasks.push(task);
    }

    /// What the shared stream loop needs from this runtime.
    pub fn stream_handles(&self) -> StageHandles {
        StageHandles {
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Runs a stateful stage's blocking loop on a thread of its own until it returns
    /// (after SIGTERM, or on a fatal error), then shuts the runtime down. The exit code
    /// says whether the loop ended cleanly.
    pub async fn run_stream(
        self,
        stream: impl FnOnce(StageHandles) -> Result<(), StreamError> + Send + 'static,
    ) -> std::process::ExitCode {
        let stage = self.stream_handles();
        let name = self.settings.stage.clone();
        let code = match tokio::task::spawn_blocking(move || stream(stage)).await {
            Ok(Ok(())) => std::process::ExitCode::SUCCESS,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "{name} stopped");
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                tracing::error!(error = %e, "processing thread panicked");
                std::process::ExitCode::FAILURE
            }
        };
        self.finish().await;
        code
    }

    /// Cancels everything still running and waits for the background tasks (the last
    /// stats record, the HTTP server) to finish.
    pub async fn finish(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        match self.http.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("stage stopped");
    }
}
