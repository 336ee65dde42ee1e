//! A worker's Prometheus metrics (prometheus-client), served on `GET /metrics` by a small axum
//! server on its own thread when the worker is given an address.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{KafkaError, Result};

/// The worker's counters and gauges.
pub struct WorkerMetrics {
    registry: Registry,
    /// Flow records decided.
    pub flows: Counter,
    /// Alerts produced.
    pub alerts: Counter,
    /// Records sent to the dead-letter topic.
    pub dead_letters: Counter,
    /// Batches whose offsets were committed.
    pub batches: Counter,
    /// Offset commits the broker refused (the batch is redelivered: alerts repeat with their ids).
    pub commit_failures: Counter,
    /// The library version the worker scores with.
    pub library_version: Gauge,
    /// Partitions of the flows topic assigned to this worker.
    pub partitions: Gauge,
}

impl WorkerMetrics {
    /// Fresh metrics, registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("metaids_worker");
        let m = WorkerMetrics {
            flows: Counter::default(),
            alerts: Counter::default(),
            dead_letters: Counter::default(),
            batches: Counter::default(),
            commit_failures: Counter::default(),
            library_version: Gauge::default(),
            partitions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("flows", "Flow records decided", m.flows.clone());
        registry.register("alerts", "Alerts produced", m.alerts.clone());
        registry.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        registry.register("batches", "Batches committed", m.batches.clone());
        registry.register(
            "commit_failures",
            "Offset commits refused by the broker",
            m.commit_failures.clone(),
        );
        registry.register(
            "library_version",
            "Threat library version in use",
            m.library_version.clone(),
        );
        registry.register(
            "partitions",
            "Flows-topic partitions assigned",
            m.partitions.clone(),
        );
        Arc::new(WorkerMetrics { registry, ..m })
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` from a background thread for the life of the process. Binding
/// happens before this returns, so a taken address is an error here.
pub fn serve(addr: SocketAddr, metrics: Arc<WorkerMetrics>) -> Result<SocketAddr> {
    let err = |e: std::io::Error| KafkaError::Config {
        field: "metrics address",
        message: format!("{addr}: {e}"),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(err)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let m = Arc::clone(&metrics);
                        async move { m.encode() }
                    }),
                );
                let _ = axum::serve(listener, app).await;
            });
        })
        .map_err(err)?;
    Ok(bound)
}
