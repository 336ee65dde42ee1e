//! `metaids extract`: captures → flows → CSV or JSON lines, through `metaids-flow`.
//!
//! Owns only the file handling (opening captures, the atomic output) and the end-of-run counters;
//! decoding, flow tracking and features are the flow crate's.

use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use metaids_capture::{LiveCapture, LiveConfig, LiveSource};
use metaids_flow::{
    for_each_flow, CaptureSource, CsvWriter, FlowConfig, FlowEngine, FlowRecord, JsonLinesWriter,
    ReaderConfig, SourceReport,
};
use metaids_ingest::AtomicFile;

use crate::args::{ExtractArgs, FlowSettingsArgs};

enum Sink {
    Csv(CsvWriter<AtomicFile>),
    Json(JsonLinesWriter<AtomicFile>),
}

impl Sink {
    fn write(&mut self, r: &FlowRecord) -> Result<()> {
        match self {
            Sink::Csv(w) => w.write(r)?,
            Sink::Json(w) => w.write(r)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<(u64, AtomicFile)> {
        Ok(match self {
            Sink::Csv(w) => (w.rows(), w.finish()?),
            Sink::Json(w) => (w.rows(), w.finish()?),
        })
    }
}

/// The flow engine settings of `--flow-timeout`, `--activity-timeout`, `--idle-timeout` and
/// `--max-flows`, checked.
pub fn flow_config(a: &FlowSettingsArgs) -> Result<FlowConfig> {
    let flow_timeout_us = seconds_to_us("flow-timeout", a.flow_timeout)?;
    let config = FlowConfig {
        flow_timeout_us,
        activity_timeout_us: seconds_to_us("activity-timeout", a.activity_timeout)?,
        idle_timeout_us: match a.idle_timeout {
            Some(s) => seconds_to_us("idle-timeout", s)?,
            None => flow_timeout_us,
        },
        max_flows: a.max_flows,
        ..FlowConfig::default()
    };
    config.validate().context("flow settings")?;
    Ok(config)
}

fn seconds_to_us(name: &str, s: f64) -> Result<i64> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        bail!("--{name} must be a number of seconds above 0 and below 1e9, got {s}");
    }
    Ok((s * 1e6).round() as i64)
}

/// Runs the command.
pub fn run(a: ExtractArgs) -> Result<()> {
    let config = flow_config(&a.flow)?;
    let label = a.label.as_deref();
    let mut sink = match &a.out {
        Some(out) => {
            let file = AtomicFile::create(out)?;
            Some(if a.jsonl {
                Sink::Json(JsonLinesWriter::new(file, label))
            } else {
                Sink::Csv(CsvWriter::new(file, label)?)
            })
        }
        None => None,
    };
    let mut publisher = crate::kafka_cmd::Publisher::open(&a.kafka)?;
    let mut write = |flow: FlowRecord| -> Result<()> {
        if let Some(s) = &mut sink {
            s.write(&flow)?;
        }
        if let Some(p) = &mut publisher {
            p.publish(&flow)?;
        }
        Ok(())
    };
    let mut warnings = Vec::new();
    let mut report = |s: SourceReport| {
        for w in s.warnings() {
            warnings.push(format!("{}: {w}", s.name));
        }
        eprintln!("{}:", s.name);
        for line in s.counters().lines() {
            eprintln!("  {line}");
        }
    };
    if let Some(interface) = &a.interface {
        let mut live = LiveConfig::new(interface);
        live.filter = a.bpf.clone();
        live.promiscuous = !a.no_promiscuous;
        live.max_packets = a.packets;
        // Ctrl-C ends the capture cleanly: live flows are flushed and the output renamed into place.
        let mut source = open_live(live, a.duration, &a.flow)?;
        eprintln!("capturing on {interface} (Ctrl-C to stop)");
        report(for_each_flow(&mut source, &mut write)?);
        eprintln!("{interface}: {:?}", source.stats().stop);
    }
    for path in &a.pcap {
        // Flows do not span files: each capture gets its own engine, flushed at its end.
        let mut source = open_capture(path, config)?;
        report(for_each_flow(&mut source, &mut write)?);
    }
    if let Some(p) = publisher {
        let (n, topic) = p.finish()?;
        eprintln!("published {n} flows to {topic}");
    }
    if let (Some(sink), Some(out)) = (sink, &a.out) {
        let (rows, file) = sink.finish()?;
        file.commit()?;
        eprintln!("wrote {rows} flows to {}", out.display());
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Opens capture `path` (plain or gzip-compressed, `.gz`) as a flow source named by its path.
pub(crate) fn open_capture(
    path: &Path,
    config: FlowConfig,
) -> Result<CaptureSource<impl std::io::Read>> {
    let name = path.display().to_string();
    let file = metaids_ingest::open(path).with_context(|| format!("cannot open {name}"))?;
    CaptureSource::new(
        BufReader::with_capacity(1 << 20, file),
        name.clone(),
        ReaderConfig::default(),
        config,
    )
    .with_context(|| format!("{name}: not a readable pcap or pcapng capture"))
}

/// Opens the live capture `live` with the flow settings `flow`, stopping after `duration` seconds
/// when given, with a Ctrl-C handler that stops it: the one live setup of `extract`, `detect` and
/// `baseline` on an interface.
pub(crate) fn open_live(
    mut live: LiveConfig,
    duration: Option<f64>,
    flow: &FlowSettingsArgs,
) -> Result<LiveSource> {
    let config = flow_config(flow)?;
    if let Some(s) = duration {
        if !(s.is_finite() && s > 0.0) {
            bail!("--duration must be a positive number of seconds, got {s}");
        }
        live.max_duration = Some(Duration::from_secs_f64(s));
    }
    let interface = live.interface.clone();
    let capture =
        LiveCapture::open(&live).with_context(|| format!("cannot capture on {interface}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    Ok(LiveSource::new(capture, FlowEngine::new(config)?, stop))
}
