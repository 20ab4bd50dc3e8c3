//! The feature-processor: per-customer rolling features in event time ([`window`]), an
//! explainable risk model ([`model`]) and its training ([`train`]).

pub mod model;
pub mod train;
pub mod window;
