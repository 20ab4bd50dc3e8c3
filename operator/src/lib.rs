//! `eventpipe-operator`: the `EventPipeline` custom resource and everything that turns
//! one into a running pipeline.
//!
//! - [`crd`]: the resource's types (the CRD is generated from them).
//! - [`validate`]: the spec checked and resolved into a [`validate::Pipeline`] (pure).
//! - [`build`]: pure builders from a `Pipeline` to Kubernetes objects, shared by
//!   `render`, `local` and the reconciler.
//! - [`controller`]: the reconciler (`run`): apply, prune, status, events, finalizer.
//! - [`local`]: the same objects run as local processes on an embedded broker.

pub mod build;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod stage;
pub mod strimzi;
pub mod validate;
