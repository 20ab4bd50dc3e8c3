//! eventpipe's dashboard: a live, read-only view of the pipeline for bank operations.
//!
//! It reads risk-scores, interventions, customer-outcomes and pipeline-stats
//! ([`consumer`]), keeps a bounded in-memory picture of them ([`state`]: stage rates
//! and lag, risk bands, the riskiest customers, recent interventions, live model
//! quality) and serves it as JSON, as a Server-Sent Events stream ([`api`]) and as one
//! self-contained web page ([`ui`]). [`app`] wires it together for `main` and the tests.

pub mod api;
pub mod app;
pub mod consumer;
pub mod metrics;
pub mod record;
pub mod settings;
pub mod state;
pub mod ui;
