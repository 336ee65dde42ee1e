//! metaids-serve: metaids as a long-running sensor. A scoring worker ([`worker`]) scores every new
//! capture of a watched directory through the detection pipeline and appends Suricata EVE alerts
//! and `stats` records to a file reopened on SIGHUP ([`eve_log`]); the threat library is reloaded
//! between micro-batches whenever it changes; an HTTP API ([`api`], axum on tokio) serves threats,
//! history, alerts, the site baseline, readiness and Prometheus metrics ([`state`]), with bearer
//! tokens and roles ([`auth`]); SIGTERM or Ctrl-C stops it gracefully (the flows held are decided,
//! outputs synced). Settings: [`config`].

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod enrol;
pub mod error;
pub mod eve_log;
pub mod state;
pub mod tls;
pub mod watch;
pub mod worker;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Checked, ServeConfig};
pub use error::{Result, ServeError};
use metaids_core::schema::DatasetKind;
pub use metaids_detect::Summary;

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: what.into(),
        source,
    }
}

/// Runs the service until SIGTERM, Ctrl-C or the maximum run time; returns the scoring counters.
/// Prints `metaids serve: listening on http://ADDR` on standard output once the API accepts
/// connections (ADDR is the bound address: port 0 in the settings picks a free one).
pub fn run(config: ServeConfig) -> Result<Summary> {
    let cfg = config.check()?;
    let tokens = match &cfg.config.tokens {
        Some(p) => auth::Tokens::load(p)?,
        None => auth::Tokens::none(),
    };
    let model = Arc::new(
        metaids_model::load(&cfg.model).map_err(|source| ServeError::Model {
            path: cfg.model.clone(),
            source: Box::new(source),
        })?,
    );
    match model.normaliser.kind {
        DatasetKind::Cic => {}
        // A web-request model scores the HTTP requests of the watched captures; live capture and
        // flow files are flows.
        DatasetKind::HttpRequests => {
            let flows_only = [
                ("interface", cfg.config.interface.is_some()),
                ("flow_dir", cfg.config.flow_dir.is_some()),
            ];
            if let Some((field, _)) = flows_only.iter().find(|(_, set)| *set) {
                return Err(ServeError::Config {
                    field: (*field).into(),
                    message: format!(
                        "{} was trained on web-request payloads: it scores the HTTP requests of the captures in pcap_dir; {field} gives flows (run a second service with a flow model for them)",
                        cfg.model.display()
                    ),
                });
            }
        }
        other => {
            return Err(ServeError::Config {
                field: "model".into(),
                message: format!(
                    "{} was trained on {other} data; serve scores captures: use a model trained with --dataset cic (flows) or --dataset http-requests (their HTTP requests)",
                    cfg.model.display()
                ),
            });
        }
    }
    let shared = state::Shared::new(cfg.config.recent_alerts);
    let model_cell = state::ModelCell::new(Arc::clone(&model));
    let worker = worker::Worker::new(
        &cfg,
        Arc::clone(&model),
        Arc::clone(&model_cell),
        Arc::clone(&shared),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("the async runtime"))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(cfg.config.listen))
        .map_err(|source| ServeError::Io {
            path: cfg.config.listen.to_string().into(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(io_err("the listening socket"))?;
    let api = api::Api {
        shared: Arc::clone(&shared),
        tokens: Arc::new(tokens),
        library: cfg.library.clone(),
        eve: cfg.eve.clone(),
        model: model_cell,
    };
    let app = api::router(api, cfg.config.max_body_bytes);
    let scoring = std::thread::Builder::new()
        .name("metaids-score".into())
        .spawn(move || worker.run())
        .map_err(io_err("the scoring thread"))?;
    let tls = match (&cfg.config.tls_cert, &cfg.config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("metaids serve: listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
    let served = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
        let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
        let sig_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => sig_shared.request_reopen(),
                    _ = term.recv() => sig_shared.request_stop(),
                    _ = int.recv() => sig_shared.request_stop(),
                }
            }
        });
        let stop = Arc::clone(&shared);
        let stopped = async move {
            while !stop.stopping() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tls {
            None => axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
                .map_err(io_err("the API server")),
            Some(tls) => {
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    stopped.await;
                    h.graceful_shutdown(Some(Duration::from_secs(5)));
                });
                let std_listener = listener
                    .into_std()
                    .map_err(io_err("the listening socket"))?;
                axum_server::from_tcp_rustls(std_listener, tls)
                    .map_err(io_err("the listening socket"))?
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await
                    .map_err(io_err("the API server"))
            }
        }
    });
    // The API stopped (a stop was asked, or it failed): the worker stops too.
    shared.request_stop();
    let scored = scoring.join().map_err(|_| ServeError::Config {
        field: "scoring thread".into(),
        message: "panicked".into(),
    })?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    served?;
    scored
}
