//! (being written)

use tokio_util::sync::CancellationToken;
use trireme_api::events::Recorder;
use trireme_api::informer::Informer;
use trireme_api::registry::Registry;

/// The scheduler.
pub struct Scheduler {}

impl Scheduler {
    /// A scheduler binding pods from `pods` to nodes from `nodes`. Subscribes to both informers,
    /// so it must be created before they run.
    pub fn new(_registry: Registry, _pods: Informer, _nodes: Informer, _recorder: Recorder) -> Scheduler {
        Scheduler {}
    }

    /// Schedules until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        stop.cancelled().await;
    }
}
