//! The loop every agent runs: a cycle, then a pause, until shutdown; each
//! cycle's log lines carry the agent's name (`component`).

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument as _;

/// Run `cycle` every `every` until `shutdown` turns true.
pub async fn run_loop<F, Fut>(
    name: &'static str,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut cycle: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let span = tracing::info_span!("agent", component = name);
    async move {
        loop {
            cycle().await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
    .instrument(span)
    .await;
}
