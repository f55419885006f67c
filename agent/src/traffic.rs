//! The agent's side of the ingress table: the session's `Traffic` stream brings the listeners
//! and the drained tasks; the agent answers every update with the version its proxies now use,
//! and reports its open connections per task as they change.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::{TrafficReport, TrafficUpdate};
use shoal_types::traffic::{Listener, ListenerKey};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::ingress::Ingress;

/// Connection counts that change within this long go in one report.
const REPORT_COALESCE: Duration = Duration::from_millis(20);

/// Serves one session's traffic stream; returns why it ended. An agent without an ingress proxy
/// never opens one.
pub(crate) async fn serve(
    ingress: Option<Arc<Ingress>>,
    mut client: DispatcherClient<Channel>,
    node_id: String,
    session_id: String,
) -> String {
    let Some(ingress) = ingress else { return std::future::pending().await };
    let (tx, rx) = mpsc::channel(16);
    // Version 0 until this leader's first table is applied: the versions of an earlier leader's
    // tables mean nothing to this one.
    let mut applied: u64 = 0;
    let report = |applied: u64| {
        let (_, connections) = ingress.report();
        TrafficReport { node_id: node_id.clone(), session_id: session_id.clone(), version: applied, connections }
    };
    if tx.send(report(applied)).await.is_err() {
        return "the traffic stream closed".into();
    }
    let mut inbound = match client.traffic(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            tracing::warn!("the leader does not serve the ingress table; this node's ingress ports stay closed");
            return std::future::pending().await;
        }
        Err(status) => return format!("traffic stream: {}", status.message()),
    };
    loop {
        tokio::select! {
            update = inbound.message() => match update {
                Ok(Some(update)) => {
                    applied = update.version;
                    apply(&ingress, update);
                    if tx.send(report(applied)).await.is_err() {
                        return "the traffic stream closed".into();
                    }
                }
                Ok(None) => return "the leader closed the traffic stream".into(),
                Err(status) => return format!("traffic stream: {}", status.message()),
            },
            _ = ingress.counts_changed.notified() => {
                tokio::time::sleep(REPORT_COALESCE).await;
                if tx.send(report(applied)).await.is_err() {
                    return "the traffic stream closed".into();
                }
            }
        }
    }
}

fn apply(ingress: &Arc<Ingress>, update: TrafficUpdate) {
    let mut listeners = Vec::with_capacity(update.listeners_json.len());
    for json in update.listeners_json.iter().chain(&update.vip_listeners_json) {
        match serde_json::from_str::<Listener>(json) {
            Ok(listener) => listeners.push(listener),
            Err(e) => tracing::error!(error = %e, "unreadable ingress listener; skipped"),
        }
    }
    let mut closed: Vec<ListenerKey> =
        update.closed_ports.iter().filter_map(|p| u16::try_from(*p).ok()).map(ListenerKey::published).collect();
    for json in &update.closed_json {
        match serde_json::from_str::<ListenerKey>(json) {
            Ok(key) => closed.push(key),
            Err(e) => tracing::error!(error = %e, "unreadable closed listener; skipped"),
        }
    }
    let vip_pool = shoal_types::vip_pool_range(&update.vip_pool).ok();
    ingress.apply(update.version, update.complete, listeners, &closed, update.drained, vip_pool);
}
