//! (being written)

use tokio_util::sync::CancellationToken;

use crate::Context;

/// Runs until `stop`.
pub async fn run(_ctx: Context, stop: CancellationToken) {
    stop.cancelled().await;
}
