//! `metaids extract`: captures → flows → CSV or JSON lines, through `metaids-flow`.
//!
//! Owns only the file handling (opening captures, the atomic output) and the end-of-run counters;
//! decoding, flow tracking and features are the flow crate's.

use std::fs::File;
use std::io::BufReader;

use anyhow::{bail, Context, Result};
use metaids_flow::{
    CaptureReader, CsvWriter, FlowConfig, FlowEngine, FlowRecord, JsonLinesWriter, ReaderConfig,
};
use metaids_ingest::AtomicFile;

use crate::args::ExtractArgs;

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

fn seconds_to_us(name: &str, s: f64) -> Result<i64> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        bail!("--{name} must be a positive number of seconds, got {s}");
    }
    Ok((s * 1e6).round() as i64)
}

/// Runs the command.
pub fn run(a: ExtractArgs) -> Result<()> {
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
    let out = AtomicFile::create(&a.out)?;
    let label = a.label.as_deref();
    let mut sink = if a.jsonl {
        Sink::Json(JsonLinesWriter::new(out, label))
    } else {
        Sink::Csv(CsvWriter::new(out, label)?)
    };
    let mut warnings = Vec::new();
    for path in &a.pcap {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
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
                    for flow in engine.push_packet(pkt.link_type, pkt.ts_us, pkt.data) {
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
        eprintln!("{}:", path.display());
        for line in metaids_flow::output::summary(engine.stats()).lines() {
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
