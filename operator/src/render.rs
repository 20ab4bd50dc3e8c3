//! `crd` and `render`: the CRD as YAML, and every object an EventPipeline file turns
//! into, as a multi-document YAML stream.

use kube::CustomResourceExt;

use crate::build::desired;
use crate::crd::EventPipeline;
use crate::validate::{validate, InvalidSpec};

/// The CRD, as `eventpipe-operator crd` prints it (and the chart ships it).
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&EventPipeline::crd()).expect("the CRD serializes")
}

/// Why a file cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not an EventPipeline: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid EventPipeline: {0}")]
    Invalid(#[from] InvalidSpec),
}

/// Parses an EventPipeline from YAML text.
pub fn parse_pipeline(text: &str) -> Result<EventPipeline, RenderError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text)?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    if api_version != Some("eventpipe.dev/v1alpha1") || kind != Some("EventPipeline") {
        return Err(RenderError::Parse(serde::de::Error::custom(format!(
            "expected apiVersion eventpipe.dev/v1alpha1 and kind EventPipeline, got {} {}",
            api_version.unwrap_or("(none)"),
            kind.unwrap_or("(none)")
        ))));
    }
    Ok(serde_yaml::from_value(value)?)
}

/// Every object `pipeline` turns into, as YAML documents separated by `---`.
pub fn render(pipeline: &EventPipeline) -> Result<String, InvalidSpec> {
    let validated = validate(pipeline)?;
    let mut out = String::new();
    for object in desired(&validated).objects() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object).expect("objects serialize"));
    }
    Ok(out)
}
