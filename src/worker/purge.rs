//! The periodic purge (`purge.interval`, `0s` disables it): deletes groups not updated for
//! `purge.older_than`, in batches of `purge.batch` with `purge.pause` between them, never
//! one with an unsent trigger or a pending timer.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::context::Ctx;
use crate::service::TaskResult;
use crate::store::PurgePace;

pub async fn run(ctx: Ctx, stop: CancellationToken) -> TaskResult {
    let p = &ctx.config.purge;
    if p.interval.is_zero() {
        stop.cancelled().await;
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(p.interval) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let pace = PurgePace {
            older_than: p.older_than,
            batch: p.batch,
            pause: p.pause,
        };
        match ctx.store.purge(pace).await {
            Ok(n) => info!(groups = n, "purge"),
            Err(e) => warn!(error = %e, "purge failed; will retry"),
        }
    }
}
