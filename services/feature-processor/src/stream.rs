//! The feature-processor as a [`StatefulProcessor`]: [`Core`] plus the model handle,
//! driven by the shared exactly-once loop in `eventpipe_common::stream`. Input is
//! `transactions`, outputs are RiskScores, the changelog is `customer-features` (one
//! record per customer and changed day, see [`crate::changelog`]).

use eventpipe_common::stream::{
    self, Input, OutputRef, Outputs, Rejected, StageHandles, StatefulProcessor, StreamConfig,
};
use eventpipe_common::topics::Topic;

use crate::model_watch::ModelHandle;
use crate::processor::{encode_score, Core, CoreConfig};

pub use eventpipe_common::stream::{Guarantee, StreamError};

/// The feature-processor's state and model, as the shared loop drives them.
pub struct FeatureStage {
    core: Core,
    model: ModelHandle,
    model_generation: u64,
    /// The RiskScore being written (reused).
    buffer: Vec<u8>,
}

impl FeatureStage {
    /// A stage with empty state, scoring with `model` (and its reloads).
    pub fn new(config: CoreConfig, model: ModelHandle) -> Self {
        FeatureStage {
            core: Core::new(config, model.get()),
            model_generation: model.generation(),
            model,
            buffer: Vec::with_capacity(512),
        }
    }
}

impl StatefulProcessor for FeatureStage {
    fn process(&mut self, input: &Input<'_>, out: &mut Outputs<'_>) -> Result<(), Rejected> {
        if self.model.generation() != self.model_generation {
            self.model_generation = self.model.generation();
            self.core.set_model(self.model.get());
        }
        let processed = self.core.process(input.partition, input.key, input.payload)?;
        if let Some(score) = processed.score {
            self.buffer.clear();
            encode_score(&mut self.buffer, &score);
            out.send(OutputRef {
                topic: Topic::RiskScores,
                partition: input.partition,
                key: &score.customer_id,
                payload: Some(&self.buffer),
                timestamp_ms: score.event_time.timestamp_millis(),
                headers: input.trace,
            });
        }
        Ok(())
    }

    fn end_batch(&mut self, out: &mut Outputs<'_>) {
        self.core.take_changelog(|record| {
            out.send(OutputRef {
                topic: Topic::CustomerFeatures,
                partition: record.partition,
                key: record.key,
                payload: record.payload,
                timestamp_ms: record.timestamp_ms,
                headers: &[],
            })
        });
    }

    fn abort_batch(&mut self) {
        self.core.discard_changelog();
    }

    fn restore(&mut self, partition: i32, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), String> {
        self.core.restore_record(partition, key, payload)
    }

    fn drop_partition(&mut self, partition: i32) {
        self.core.drop_partition(partition);
    }

    fn entries_in(&self, partition: i32) -> usize {
        self.core.customers_in(partition)
    }
}

/// Runs the feature-processor until `stage.shutdown` (blocking; own thread).
pub fn run(stage: StageHandles, config: StreamConfig, core: CoreConfig, model: ModelHandle) -> Result<(), StreamError> {
    stream::run(stage, config, FeatureStage::new(core, model))
}
