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
use metaids_detect::RequestRows;

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

/// A model with its armed threats, ready to make a pipeline.
struct Armed {
    detector: Detector,
    /// The site profile in use, or the warning that there is none.
    site_line: String,
}

/// Loads `library` for `model` (a threat library's current version, or a document `metaids
/// threat export` wrote — either refused unless it belongs to the model) and builds its detector.
fn arm(
    a: &DetectArgs,
    model_path: &std::path::Path,
    model: Arc<metaids_model::ThreatModel>,
    library: &std::path::Path,
) -> Result<Armed> {
    let set = metaids_detect::ArmedThreats::load(library, &model)
        .with_context(|| format!("cannot load threats from {}", library.display()))?;
    if set.threats.is_empty() {
        eprintln!(
            "note: {} arms no threat: verdicts are benign or unknown anomalies only",
            library.display()
        );
    }
    let options = DetectorOptions {
        unknown: !a.no_unknown,
        unknown_budget: a.unknown_budget,
        // Alerts name the model as the threat library does: a prefix of its identity.
        model_version: Some(metaids_detect::model_version(&model)?),
        ..DetectorOptions::default()
    };
    // The site profile, when the library has one, is the benign reference every verdict uses.
    let site_line = match &set.profile {
        Some(p) => format!(
            "site profile: {} calibration rows of the site's benign traffic ({} flows kept), budget {} (threats and unknown rule together; calibrated at {:.5}), adaptation: {}, threats named by {}",
            p.calibration_rows(),
            p.flows_kept,
            p.asked_budget(),
            p.budget,
            if p.adaptation.is_some() { "normaliser refit on the baseline" } else { "none" },
            match p.threat_rule {
                metaids_decide::ThreatRule::Forest => "the site forest",
                metaids_decide::ThreatRule::Prototypes => "their prototypes",
            }
        ),
        None => format!(
            "site profile: none — thresholds are calibrated on the model's training data ({} benign rows), not on this network's traffic; expect more false positives until `metaids baseline --model {} --library {} ...` learns the site",
            model.reference.calibration_rows(),
            model_path.display(),
            library.display()
        ),
    };
    if set.profile.is_none() {
        eprintln!("warning: {site_line}");
    }
    let n_threats = set.threats.len();
    let detector = Detector::from_armed(model, set, options)?;
    eprintln!(
        "model {} ({}), {n_threats} armed threat(s), library {} version {}, unknown threshold {}",
        model_path.display(),
        detector.model_version(),
        library.display(),
        detector.library_version(),
        detector.unknown_threshold()
    );
    Ok(Armed {
        detector,
        site_line,
    })
}

fn load_model(path: &std::path::Path) -> Result<Arc<metaids_model::ThreatModel>> {
    Ok(Arc::new(metaids_model::load(path).with_context(|| {
        format!("cannot load model {}", path.display())
    })?))
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
    let model = load_model(&a.model)?;
    let web_model = match (&a.web_model, &a.web_library) {
        (Some(path), Some(library)) => {
            let m = load_model(path)?;
            if m.normaliser.kind != DatasetKind::HttpRequests {
                bail!(
                    "--web-model {} was trained on {} data; it must be a model trained with --dataset http-requests",
                    path.display(),
                    m.normaliser.kind
                );
            }
            if model.normaliser.kind != DatasetKind::Cic {
                bail!(
                    "with --web-model, --model must be a flow model trained with --dataset cic; {} was trained on {} data",
                    a.model.display(),
                    model.normaliser.kind
                );
            }
            Some((path.clone(), m, library.clone()))
        }
        _ => None,
    };
    let web = web_model.is_none() && crate::web::is_web_model(&a.model, &model, &a.requests)?;
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
    let flow_config = crate::extract::flow_config(&a.flow)?;
    let first = arm(&a, &a.model, model, &a.library)?;
    let second = match web_model {
        Some((path, m, library)) => Some(arm(&a, &path, m, &library)?),
        None => None,
    };
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
    let mut pipeline = Pipeline::new(first.detector, sinks(&a)?, popts.clone())?;
    let mut warnings = Vec::new();
    let mut sources: Vec<SourceReport> = Vec::new();
    // Each section of the summary: its lines and its site-profile line.
    let mut sections = Vec::new();
    let summary = if web {
        let counts = requests(&a, &mut pipeline)?;
        let summary = pipeline.finish()?;
        sections.push((summary.lines("requests", "http_"), first.site_line));
        sections.push((request_counts(counts), String::new()));
        summary
    } else {
        flows(&a, &mut pipeline, flow_config, &mut sources, &mut warnings)?;
        match second {
            None => {
                let summary = pipeline.finish()?;
                sections.push((summary.lines("flows", ""), first.site_line));
                summary
            }
            Some(web) => {
                // The same sinks go on to score the requests: one alert file, one verdict file.
                let (flow_summary, relay) = pipeline.relay()?;
                sections.push((flow_summary.lines("flows", ""), first.site_line));
                warn_drift(&flow_summary);
                let mut pipeline = Pipeline::after(web.detector, relay, popts)?;
                let counts = requests(&a, &mut pipeline)?;
                let summary = pipeline.finish()?;
                sections.push((summary.lines("requests", "http_"), web.site_line));
                sections.push((request_counts(counts), String::new()));
                summary
            }
        }
    };
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
    warn_drift(&summary);
    for s in &summary.sinks {
        for n in &s.notes {
            eprintln!("{n}");
        }
    }
    for (lines, site_line) in &sections {
        print!("{lines}");
        if !site_line.is_empty() {
            println!("{site_line}");
        }
    }
    eprintln!("{:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn warn_drift(summary: &metaids_detect::Summary) {
    for w in &summary.drift_messages {
        eprintln!("warning: {w}");
    }
    if summary.drift.warnings as usize > summary.drift_messages.len() {
        eprintln!(
            "warning: {} more drift windows (see drift_warnings in the summary)",
            summary.drift.warnings as usize - summary.drift_messages.len()
        );
    }
}

/// The request reader's counts as summary lines.
fn request_counts((without, dropped): (u64, u64)) -> String {
    format!("http_requests_without_values {without}\nhttp_values_not_scored {dropped}\n")
}

/// Scores the flows of the captures, flow files and live interface.
fn flows(
    a: &DetectArgs,
    pipeline: &mut Pipeline,
    flow_config: metaids_flow::FlowConfig,
    sources: &mut Vec<SourceReport>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if !a.pcap.is_empty() {
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
        let s = live(a, interface, pipeline)?;
        for w in s.warnings() {
            warnings.push(format!("{}: {w}", s.name));
        }
        sources.push(s);
    }
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
