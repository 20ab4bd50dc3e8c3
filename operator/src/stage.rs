//! The pipeline's stages as the operator knows them: their names (as in group ids,
//! stats and the pipeline file), the binary and verb a Deployment runs, and the topics
//! a stage consumes.

use std::fmt;

/// One stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Producer,
    FeatureProcessor,
    Intervention,
    Dashboard,
}

impl Stage {
    /// Every stage, in pipeline order (the order Deployments are applied in).
    pub const ALL: [Stage; 4] = [Stage::Producer, Stage::FeatureProcessor, Stage::Intervention, Stage::Dashboard];

    /// The stage's name: `feature-processor`; also its binary's name.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Producer => "producer",
            Stage::FeatureProcessor => "feature-processor",
            Stage::Intervention => "intervention",
            Stage::Dashboard => "dashboard",
        }
    }

    /// The stage's field under `spec.stages`.
    pub const fn spec_field(self) -> &'static str {
        match self {
            Stage::Producer => "producer",
            Stage::FeatureProcessor => "featureProcessor",
            Stage::Intervention => "intervention",
            Stage::Dashboard => "dashboard",
        }
    }

    /// The container command: the binary and its verb.
    pub fn command(self) -> Vec<String> {
        let verb = match self {
            Stage::Producer => "live",
            _ => "run",
        };
        vec![self.name().to_owned(), verb.to_owned()]
    }

    /// Parses a stage name.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
