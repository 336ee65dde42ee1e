//! `metaids detect`: loads the model and the armed threats, builds the sinks the options ask for,
//! streams flows from captures, flow CSVs or an interface through `metaids-detect`'s pipeline, and
//! prints the summary counters.
//!
//! No detection logic lives here: verdicts, alerts and responses are all `metaids-detect`'s.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use metaids_capture::LiveConfig;
use metaids_core::schema::DatasetKind;
use metaids_detect::{
    Detector, DetectorOptions, EveSink, NftConfig, NftablesSink, Pipeline, PipelineOptions,
    RateLimit, Sink, VerdictSink, WebhookConfig, WebhookSink,
};
use metaids_flow::SourceReport;
use metaids_ingest::ReadOptions;

use crate::args::{DetectArgs, Respond};
use crate::web::RequestRows;

/// Counts bytes read into a progress bar.
struct Counting<R> {
    inner: R,
    bar: Progress,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn bar(quiet: bool, total: u64, template: &str) -> Progress {
    Progress::new(quiet, total, template, "detect")
}

fn sinks(a: &DetectArgs) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(
        EveSink::create(&a.alerts, a.eve_flows)
            .with_context(|| format!("cannot write alerts to {}", a.alerts.display()))?,
    )];
    if let Some(v) = &a.verdicts {
        sinks.push(Box::new(VerdictSink::create(v)?));
    }
    if a.respond.contains(&Respond::Nftables) {
        let config = NftConfig {
            family: a.nft_family.clone(),
            table: a.nft_table.clone(),
            set4: a.nft_set.clone(),
            set6: a.nft_set6.clone(),
            timeout_s: a.nft_timeout,
            include_unknown: a.respond_unknown,
            apply: a.apply_nftables,
            nft: "nft".into(),
            allow: a.nft_allow.clone(),
            drop_rule: a.nft_drop_rule,
        };
        let script = a.nft_script.clone().unwrap_or_else(|| {
            let mut p = a.alerts.clone().into_os_string();
            p.push(".nft");
            PathBuf::from(p)
        });
        if a.apply_nftables {
            eprintln!("nftables: {}", config.describe());
        } else {
            eprintln!(
                "nftables: dry run, writing {} (apply with --apply-nftables)",
                script.display()
            );
        }
        sinks.push(Box::new(NftablesSink::create(&script, config)?));
    }
    if let Some(url) = &a.webhook {
        let config = WebhookConfig {
            header: a.webhook_header.clone(),
            ca_file: a.webhook_ca.clone(),
            ..WebhookConfig::new(url)
        };
        sinks.push(Box::new(WebhookSink::start(config)?));
        eprintln!("webhook: POSTing alerts to {url} (background, bounded queue)");
    }
    Ok(sinks)
}

/// Runs the command.
pub fn run(a: DetectArgs) -> Result<()> {
    if !(a.drift_window.is_finite() && a.drift_window >= 1.0 && a.drift_window <= 1e7) {
        bail!(
            "--drift-window must be a number of seconds from 1 to 1e7, got {}",
            a.drift_window
        );
    }
    let started = Instant::now();
    let model = Arc::new(
        metaids_model::load(&a.model)
            .with_context(|| format!("cannot load model {}", a.model.display()))?,
    );
    let web = crate::web::is_web_model(&a.model, &model, &a.requests)?;
    if web && (!a.flows.is_empty() || a.interface.is_some()) {
        bail!(
            "model {} was trained on web-request payloads (http-requests): it scores the HTTP requests of --pcap captures, --access-log and --request-file, not flows (use a model trained with --dataset cic for --flows or --interface)",
            a.model.display()
        );
    }
    if !web && model.normaliser.kind != DatasetKind::Cic {
        bail!(
            "model {} was trained on {} data; detect scores CIC-layout flows (captures, flow CSVs) and web requests: use a model trained with --dataset cic or http-requests",
            a.model.display(),
            model.normaliser.kind
        );
    }
    // A threat library (its current version) or a document `metaids threat export` wrote, either
    // refused unless it belongs to this model.
    let flow_config = crate::extract::flow_config(&a.flow)?;
    let set = metaids_detect::ArmedThreats::load(&a.library, &model)
        .with_context(|| format!("cannot load threats from {}", a.library.display()))?;
    if set.threats.is_empty() {
        eprintln!(
            "note: {} arms no threat: flows are benign or unknown anomalies only",
            a.library.display()
        );
    }
    let options = DetectorOptions {
        unknown: !a.no_unknown,
        unknown_budget: a.unknown_budget,
        // Alerts name the model as the threat library does: a prefix of its identity.
        model_version: Some(metaids_detect::model_version(&model)?),
        ..DetectorOptions::default()
    };
    let n_threats = set.threats.len();
    // The site profile, when the library has one, is the benign reference every verdict uses.
    let site_line = match &set.profile {
        Some(p) => format!(
            "site profile: {} calibration rows of the site's benign traffic ({} flows kept), budget {} (threats and unknown rule together), adaptation: {}",
            p.calibration_rows(),
            p.flows_kept,
            p.budget,
            if p.adaptation.is_some() { "normaliser refit on the baseline" } else { "none" }
        ),
        None => format!(
            "site profile: none — thresholds are calibrated on the model's training data ({} benign rows), not on this network's traffic; expect more false positives until `metaids baseline --model {} --library {} --pcap BENIGN.pcap` learns the site",
            model.reference.calibration_rows(),
            a.model.display(),
            a.library.display()
        ),
    };
    if set.profile.is_none() {
        eprintln!("warning: {site_line}");
    }
    let detector = Detector::from_armed(Arc::clone(&model), set, options)?;
    let run_id = a.run_id.clone().unwrap_or_else(|| {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{us:x}")
    });
    let popts = PipelineOptions {
        batch_size: a.batch,
        rate_limit: RateLimit {
            window_s: a.dedup_window,
            max_per_window: a.dedup_max,
            ..RateLimit::default()
        },
        alert_unknown: !a.no_unknown && !a.no_unknown_alerts,
        run_id,
        drift: metaids_detect::DriftConfig {
            window_s: a.drift_window,
            ..metaids_detect::DriftConfig::default()
        },
        ..PipelineOptions::default()
    };
    let mut pipeline = Pipeline::new(detector, sinks(&a)?, popts)?;
    eprintln!(
        "model {} ({}), {n_threats} armed threat(s), library version {}, unknown threshold {}",
        a.model.display(),
        pipeline.detector().model_version(),
        pipeline.detector().library_version(),
        pipeline.detector().unknown_threshold()
    );
    let mut warnings = Vec::new();
    let mut sources: Vec<SourceReport> = Vec::new();
    let mut web_counts = None;
    if web {
        web_counts = Some(requests(&a, &mut pipeline)?);
    } else if !a.pcap.is_empty() {
        let total: u64 = a
            .pcap
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let pb = bar(
            a.quiet,
            total,
            "{spinner} detect [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, eta {eta}",
        );
        for path in &a.pcap {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            // The bar counts the file's bytes; `.gz` captures are decompressed after them.
            let input = BufReader::with_capacity(
                1 << 20,
                metaids_ingest::decompressing(
                    path,
                    Counting {
                        inner: file,
                        bar: pb.clone(),
                    },
                ),
            );
            let name = path.display().to_string();
            let s = pipeline.push_capture(input, &name, flow_config)?;
            for w in s.warnings() {
                warnings.push(format!("{name}: {w}"));
            }
            tracing::info!(packets = s.packets(), flows = s.flows(), "{name}");
            sources.push(s);
        }
        pb.finish_and_clear();
    }
    if !a.flows.is_empty() {
        // Streamed in chunks of rows: memory is bounded by the chunk, not the file.
        let opts = ReadOptions {
            dataset: Some(DatasetKind::Cic),
            ..ReadOptions::default()
        };
        let pb = bar(a.quiet, 0, "{spinner} detect {pos} flows, {per_sec}");
        let chunk = a.batch.max(1).saturating_mul(16);
        let mut skips = metaids_ingest::SkipLog::default();
        for path in &a.flows {
            let mut frame = metaids_core::FlowFrame::new(DatasetKind::Cic.layout());
            metaids_ingest::stream_file(
                &mut frame,
                path,
                &opts,
                &mut skips,
                chunk,
                &mut |f: &mut metaids_core::FlowFrame| -> Result<()> {
                    pipeline.push_frame(f, &mut |n| pb.inc(n as u64))?;
                    Ok(())
                },
            )?;
        }
        pb.finish_and_clear();
    }
    if let Some(interface) = &a.interface {
        let s = live(&a, interface, &mut pipeline)?;
        for w in s.warnings() {
            warnings.push(format!("{}: {w}", s.name));
        }
        sources.push(s);
    }
    let summary = pipeline.finish()?;
    if !a.quiet {
        for s in &sources {
            eprintln!("{}:", s.name);
            for line in s.counters().lines() {
                eprintln!("  {line}");
            }
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    for w in &summary.drift_messages {
        eprintln!("warning: {w}");
    }
    if summary.drift.warnings as usize > summary.drift_messages.len() {
        eprintln!(
            "warning: {} more drift windows (see drift_warnings in the summary)",
            summary.drift.warnings as usize - summary.drift_messages.len()
        );
    }
    for s in &summary.sinks {
        for n in &s.notes {
            eprintln!("{n}");
        }
    }
    print!("{summary}");
    if let Some((without, dropped)) = web_counts {
        println!("requests_without_values {without}");
        println!("values_not_scored {dropped}");
    }
    println!("{site_line}");
    eprintln!("{:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Scores the HTTP requests of the captures, access logs and request files (a web-request model):
/// each request is one verdict, decided on its values. Returns the requests without a value and
/// the values past the per-request cap.
fn requests(a: &DetectArgs, pipeline: &mut Pipeline) -> Result<(u64, u64)> {
    let pb = bar(a.quiet, 0, "{spinner} detect {pos} requests, {per_sec}");
    let mut rows = RequestRows::new();
    let batch = a.batch.max(1);
    crate::requests_cmd::read_requests(&a.pcap, &a.requests, &mut |seen| {
        if rows.push(seen, "request") && rows.len() >= batch {
            pb.inc(rows.len() as u64);
            rows.score(pipeline)?;
        }
        Ok(())
    })?;
    pb.inc(rows.len() as u64);
    rows.score(pipeline)?;
    pb.finish_and_clear();
    Ok((rows.without_values, rows.values_dropped))
}

/// Detects on a live interface until Ctrl-C or --duration (the pipeline runs a batch at least once
/// a second); returns the source's counters.
fn live(a: &DetectArgs, interface: &str, pipeline: &mut Pipeline) -> Result<SourceReport> {
    let mut cfg = LiveConfig::new(interface);
    cfg.filter = a.bpf.clone();
    let mut source = crate::extract::open_live(cfg, a.duration, &a.flow)?;
    eprintln!("detecting on {interface} (Ctrl-C to stop)");
    Ok(pipeline.push_source(&mut source)?)
}
