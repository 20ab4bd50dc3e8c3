//! Hot reload of the model file: a ConfigMap update replaces the mounted file (through a
//! symlink swap), so the file is re-read when its content changes, checked, and
//! published to the processing loop. A bad file is logged and the old model kept.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{ModelError, RiskModel};

/// The current model and a generation counter that changes on every reload.
#[derive(Clone)]
pub struct ModelHandle {
    current: Arc<RwLock<Arc<RiskModel>>>,
    generation: Arc<AtomicU64>,
}

impl ModelHandle {
    /// A handle holding `model`.
    pub fn new(model: RiskModel) -> Self {
        ModelHandle { current: Arc::new(RwLock::new(Arc::new(model))), generation: Arc::new(AtomicU64::new(0)) }
    }

    /// The current model.
    pub fn get(&self) -> Arc<RiskModel> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes on every replacement; cheap to poll from the hot loop.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces the model.
    pub fn replace(&self, model: RiskModel) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(model);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Re-reads `path` every `interval` and publishes a changed, valid model until `shutdown`.
pub async fn watch(path: PathBuf, handle: ModelHandle, interval: Duration, shutdown: CancellationToken) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        if last.as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        last = Some(bytes);
        match RiskModel::load(&path) {
            Ok(model) => {
                let old = handle.get().version.clone();
                tracing::info!(from = %old, to = %model.version, path = %path.display(), "model reloaded");
                handle.replace(model);
            }
            Err(e @ (ModelError::Read { .. } | ModelError::Parse { .. } | ModelError::Invalid { .. })) => {
                tracing::error!(error = %e, "model file changed but cannot be used; keeping the current model");
            }
        }
    }
}
