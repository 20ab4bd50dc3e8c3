//! `eventpipe-common`: what every eventpipe service shares.
//!
//! - [`events`]: the event types (the wire contract) and their JSON Schemas.
//! - [`config`]: pipeline YAML + env + flags, with errors that name the key.
//! - [`topics`]: topic names (`P.<logical>`), defaults and overrides.
//! - [`kafka`]: the one place Kafka clients are configured.
//! - [`dead_letter`]: the dead-letter record and writer.
//! - [`telemetry`]: tracing, OpenTelemetry export and `traceparent` in Kafka headers.
//! - [`http`], [`stats`], [`runtime`]: health, metrics, StageStats and the stage shell.
//! - [`stream`]: the exactly-once consume–transform–produce loop of the stateful stages.
//! - [`broker`], [`testing`]: the embedded broker, the integration tests' broker and
//!   helpers for running stage binaries in tests.

pub mod broker;
pub mod config;
pub mod dead_letter;
pub mod events;
pub mod http;
pub mod kafka;
pub mod runtime;
pub mod stats;
pub mod stream;
pub mod telemetry;
pub mod testing;
pub mod topics;
