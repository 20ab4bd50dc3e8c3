//! The feature-processor: per-customer rolling features in event time ([`window`]), an
//! explainable risk model ([`model`], trained by [`train`]), the processing core
//! ([`processor`]), its per-day changelog ([`changelog`], written by a fixed-shape JSON writer) and the exactly-once Kafka
//! loop around it ([`stream`]).

pub mod changelog;
mod fast_decode;
mod json;
pub mod model;
pub mod model_watch;
pub mod processor;
pub mod rfc3339;
pub mod settings;
pub mod stream;
pub mod train;
pub mod window;
