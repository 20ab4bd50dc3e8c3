//! Services: the dashboard's (type and port from the spec) and one for every stage's
//! metrics, which a Prometheus ServiceMonitor or scrape config can select.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::HTTP_PORT;
use super::labels::{object_meta, selector, stage_selector};
use crate::crd::{ServiceExposure, ServiceType};
use crate::stage::Stage;
use crate::validate::Pipeline;

/// The dashboard Service's name: `P-dashboard`.
pub fn dashboard_name(pipeline: &Pipeline) -> String {
    format!("{}-dashboard", pipeline.name)
}

/// The metrics Service's name: `P-metrics`.
pub fn metrics_name(pipeline: &Pipeline) -> String {
    format!("{}-metrics", pipeline.name)
}

/// Every Service of `pipeline`.
pub fn services(pipeline: &Pipeline) -> Vec<Service> {
    let mut out = Vec::new();
    if let Some(exposure) = &pipeline.dashboard_service {
        out.push(dashboard(pipeline, exposure));
    }
    if !pipeline.stages.is_empty() {
        out.push(metrics(pipeline));
    }
    out
}

fn dashboard(pipeline: &Pipeline, exposure: &ServiceExposure) -> Service {
    let node_port = match exposure.service_type {
        ServiceType::ClusterIP => None,
        ServiceType::NodePort | ServiceType::LoadBalancer => exposure.node_port,
    };
    Service {
        metadata: object_meta(pipeline, dashboard_name(pipeline), Stage::Dashboard.name()),
        spec: Some(ServiceSpec {
            type_: Some(exposure.service_type.as_str().into()),
            selector: Some(stage_selector(pipeline, Stage::Dashboard.name())),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: exposure.port,
                target_port: Some(IntOrString::String("http".into())),
                node_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn metrics(pipeline: &Pipeline) -> Service {
    Service {
        metadata: object_meta(pipeline, metrics_name(pipeline), "metrics"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            // Headless: Prometheus scrapes every pod, not one behind a virtual IP.
            cluster_ip: Some("None".into()),
            selector: Some(selector(pipeline)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}
