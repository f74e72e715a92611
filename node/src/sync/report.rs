//! Reporting latency upstream: every `report_interval_ms` the node drains its histograms into a
//! report and sends it to control. Reports that cannot be sent (control down) wait in a bounded
//! queue and go first next time; when the queue is full the oldest is dropped and counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use meridian_gossip::report::LatencyReport;

use super::control::ControlClient;
use crate::features::row::unix_ms;
use crate::node::NodeState;

/// Reports kept while control is unreachable (an hour at the default 10 s interval).
pub const MAX_QUEUED_REPORTS: usize = 360;

pub async fn report(state: Arc<NodeState>) {
    let Some(client) = ControlClient::of_node(&state) else { return };
    let every = Duration::from_millis(state.config.report_interval_ms);
    let mut queue: VecDeque<LatencyReport> = VecDeque::new();
    let mut start_ms = unix_ms();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = state.shutdown.cancelled() => true,
        };
        let end_ms = unix_ms();
        if let Some(r) = state.histograms.take(&state.config.id, &state.config.region, start_ms, end_ms) {
            queue.push_back(r);
            if queue.len() > MAX_QUEUED_REPORTS {
                queue.pop_front();
                state.metrics.reports_dropped.inc();
            }
        }
        start_ms = end_ms;
        while let Some(front) = queue.front() {
            match client.report(front).await {
                Ok(()) => {
                    queue.pop_front();
                }
                Err(e) => {
                    tracing::debug!(error = %e, queued = queue.len(), "latency report not delivered");
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
