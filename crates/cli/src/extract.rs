//! `metaids extract`: captures → flows → CSV or JSON lines, through `metaids-flow`.
//!
//! Owns only the file handling (opening captures, the atomic output) and the end-of-run counters;
//! decoding, flow tracking and features are the flow crate's.

use std::io::BufReader;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use metaids_capture::{LiveCapture, LiveConfig};
use metaids_flow::{
    CaptureReader, CsvWriter, FlowConfig, FlowEngine, FlowRecord, JsonLinesWriter, ReaderConfig,
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
    let out = AtomicFile::create(&a.out)?;
    let label = a.label.as_deref();
    let mut sink = if a.jsonl {
        Sink::Json(JsonLinesWriter::new(out, label))
    } else {
        Sink::Csv(CsvWriter::new(out, label)?)
    };
    let mut warnings = Vec::new();
    if let Some(interface) = &a.interface {
        capture_live(&a, interface, config, &mut sink)?;
    }
    for path in &a.pcap {
        // Plain or gzip-compressed (`.gz`).
        let file = metaids_ingest::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = CaptureReader::new(
            BufReader::with_capacity(1 << 20, file),
            ReaderConfig::default(),
        )
        .with_context(|| format!("{}: not a readable pcap or pcapng capture", path.display()))?;
        // Flows do not span files: each capture gets its own engine, flushed at its end.
        let mut engine = FlowEngine::new(config)?;
        loop {
            match reader.next_packet() {
                Ok(Some(pkt)) => {
                    for flow in engine.push(&pkt) {
                        sink.write(&flow)?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warnings.push(format!(
                        "{}: capture ended early ({e}); flows up to there were kept",
                        path.display()
                    ));
                    break;
                }
            }
        }
        for flow in engine.finish() {
            sink.write(&flow)?;
        }
        for w in reader.stats().warnings() {
            warnings.push(format!("{}: {w}", path.display()));
        }
        eprintln!("{}:", path.display());
        for line in metaids_flow::output::capture_summary(engine.stats(), &reader.stats()).lines() {
            eprintln!("  {line}");
        }
    }
    let (rows, file) = sink.finish()?;
    file.commit()?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    eprintln!("wrote {rows} flows to {}", a.out.display());
    Ok(())
}

/// Opens the live capture `live` stopping after `duration` seconds when given, with a Ctrl-C
/// handler that sets the returned stop flag: the one setup of `extract`, `detect` and `baseline`
/// on an interface.
pub(crate) fn open_live(
    mut live: LiveConfig,
    duration: Option<f64>,
) -> Result<(LiveCapture, Arc<AtomicBool>)> {
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
    Ok((capture, stop))
}

/// Captures from an interface into `sink` until Ctrl-C or a limit.
fn capture_live(
    a: &ExtractArgs,
    interface: &str,
    config: FlowConfig,
    sink: &mut Sink,
) -> Result<()> {
    let mut live = LiveConfig::new(interface);
    live.filter = a.bpf.clone();
    live.promiscuous = !a.no_promiscuous;
    live.max_packets = a.packets;
    // Ctrl-C ends the capture cleanly: live flows are flushed and the output renamed into place.
    let (mut capture, stop) = open_live(live, a.duration)?;
    let mut engine = FlowEngine::new(config)?;
    eprintln!("capturing on {interface} (Ctrl-C to stop)");
    let mut write_error = None;
    let stats = capture.run(&mut engine, &stop, |flow| {
        if write_error.is_none() {
            if let Err(e) = sink.write(&flow) {
                write_error = Some(e);
            }
        }
        Ok(())
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    eprintln!("{interface}: {stats:?}");
    for line in metaids_flow::output::summary(engine.stats()).lines() {
        eprintln!("  {line}");
    }
    Ok(())
}
