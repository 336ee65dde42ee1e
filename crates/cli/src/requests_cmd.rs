//! `metaids requests`: HTTP requests from captures, access logs and raw request files, as JSON
//! lines, through `metaids-http`.
//!
//! Owns only the file handling (opening, the atomic output), the JSON shape and the end-of-run
//! counters; parsing and reassembly are the http crate's. A line's `http` object uses the field
//! names of Suricata's EVE `http` object (`hostname`, `url`, `http_method`, `protocol`,
//! `http_user_agent`, `http_refer`, `status`, `length`), so what a detector later alerts on reads
//! the same as what this command shows.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use metaids_core::time;
use metaids_flow::{CaptureReader, ReaderConfig};
use metaids_http::access_log::AccessLogReader;
use metaids_http::raw::Limits;
use metaids_http::request_file::RequestFileReader;
use metaids_http::stream::{RequestAssembler, StreamConfig};
use metaids_http::HttpRequest;
use metaids_ingest::AtomicFile;
use serde_json::{json, Map, Value};

use crate::args::RequestsArgs;

/// Where the JSON lines go: the output file, or nowhere (counts only).
struct Out {
    sink: Option<BufWriter<AtomicFile>>,
    written: u64,
}

impl Out {
    /// Counts the request and, with an output, writes its line: `at` gives where it came from and
    /// the source's own `http` fields (a log's status and length), built only when written.
    fn write(
        &mut self,
        source: &str,
        r: &HttpRequest,
        at: impl FnOnce() -> (Map<String, Value>, Map<String, Value>),
    ) -> Result<()> {
        self.written += 1;
        let Some(w) = &mut self.sink else {
            return Ok(());
        };
        let (mut line, extra) = at();
        line.insert("source".into(), source.into());
        let mut http = http_object(r);
        http.extend(extra);
        line.insert("http".into(), Value::Object(http));
        line.insert(
            "headers".into(),
            r.headers
                .iter()
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect(),
        );
        line.insert("body".into(), String::from_utf8_lossy(&r.body).into());
        line.insert("body_truncated".into(), r.body_truncated.into());
        serde_json::to_writer(&mut *w, &line)?;
        w.write_all(b"\n")?;
        Ok(())
    }
}

/// The request's EVE-style `http` object (fields the request does not carry are left out).
fn http_object(r: &HttpRequest) -> Map<String, Value> {
    let mut h = Map::new();
    if let Some(host) = r.host() {
        h.insert("hostname".into(), host.into());
    }
    h.insert("url".into(), r.target.clone().into());
    h.insert("http_method".into(), r.method.clone().into());
    if let Some(v) = r.minor_version {
        h.insert("protocol".into(), format!("HTTP/1.{v}").into());
    }
    if let Some(ua) = r.user_agent() {
        h.insert("http_user_agent".into(), ua.into());
    }
    if let Some(referer) = r.header("referer") {
        h.insert(
            "http_refer".into(),
            String::from_utf8_lossy(referer).into_owned().into(),
        );
    }
    h
}

/// Runs the command.
pub fn run(a: RequestsArgs) -> Result<()> {
    if a.pcap.is_empty() && a.access_log.is_empty() && a.request_file.is_empty() {
        anyhow::bail!("give at least one --pcap, --access-log or --request-file");
    }
    let limits = Limits {
        max_body: a.max_body,
        ..Limits::default()
    };
    let mut out = Out {
        sink: match &a.out {
            Some(p) => Some(BufWriter::new(AtomicFile::create(p)?)),
            None => None,
        },
        written: 0,
    };
    for path in &a.pcap {
        from_capture(path, limits, &mut out)?;
    }
    for path in &a.access_log {
        from_access_log(path, a.skip_bad, &mut out)?;
    }
    for path in &a.request_file {
        from_request_file(path, limits, a.skip_bad, &mut out)?;
    }
    if let (Some(w), Some(p)) = (out.sink, &a.out) {
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", p.display()))?;
        file.commit()?;
        eprintln!("wrote {} requests to {}", out.written, p.display());
    }
    Ok(())
}

/// `path` opened (decompressed when `.gz`), with its name for messages.
pub(crate) fn open_named(path: &Path) -> Result<(String, Box<dyn Read>)> {
    let name = path.display().to_string();
    let file = metaids_ingest::open(path).with_context(|| format!("cannot open {name}"))?;
    Ok((name, file))
}

fn from_capture(path: &Path, limits: Limits, out: &mut Out) -> Result<()> {
    let (name, file) = open_named(path)?;
    let mut reader = CaptureReader::new(
        BufReader::with_capacity(1 << 20, file),
        ReaderConfig::default(),
    )
    .with_context(|| format!("{name}: not a readable pcap or pcapng capture"))?;
    let mut assembler = RequestAssembler::new(StreamConfig {
        limits,
        ..StreamConfig::default()
    });
    let mut got = Vec::new();
    let before = out.written;
    while let Some(pkt) = reader
        .next_packet()
        .with_context(|| format!("{name}: reading the capture"))?
    {
        assembler.push(&pkt, &mut got);
        for r in got.drain(..) {
            out.write(&name, &r.request, || {
                let mut at = Map::new();
                let mut ts = String::with_capacity(26);
                time::push_timestamp_us(&mut ts, r.ts_us, 'T');
                at.insert("timestamp".into(), ts.into());
                at.insert("src_ip".into(), r.client.0.to_string().into());
                at.insert("src_port".into(), r.client.1.into());
                at.insert("dest_ip".into(), r.server.0.to_string().into());
                at.insert("dest_port".into(), r.server.1.into());
                (at, Map::new())
            })?;
        }
    }
    let s = assembler.finish();
    eprintln!("{name}:");
    eprintln!(
        "  requests={} client_segments={} retransmitted_bytes={}",
        out.written - before,
        s.segments,
        s.retransmitted_bytes
    );
    eprintln!(
        "  connections given up: not_http={} over_limit={} truncated_by_snaplen={} incomplete={} idle={} table_full={}",
        s.not_http, s.over_limit, s.truncated, s.incomplete, s.idle, s.table_full
    );
    Ok(())
}

fn from_access_log(path: &Path, skip_bad: bool, out: &mut Out) -> Result<()> {
    let (name, file) = open_named(path)?;
    let mut reader = AccessLogReader::new(BufReader::new(file), name.clone(), skip_bad);
    let before = out.written;
    while let Some(entry) = reader.next() {
        let e = entry?;
        let line = reader.lines();
        out.write(&name, &e.to_request(), || {
            let mut at = Map::new();
            at.insert("line".into(), line.into());
            at.insert("timestamp".into(), time::rfc3339(e.time).into());
            at.insert("src_ip".into(), e.remote.clone().into());
            let mut http = Map::new();
            http.insert("status".into(), e.status.into());
            if let Some(n) = e.bytes {
                http.insert("length".into(), n.into());
            }
            (at, http)
        })?;
    }
    let skips = reader.skips();
    eprintln!("{name}:");
    eprintln!(
        "  requests={} lines={} skipped={}",
        out.written - before,
        reader.lines(),
        skips.total()
    );
    if let Some((line, e)) = &skips.first {
        let by: Vec<String> = skips
            .by_field
            .iter()
            .map(|(f, n)| format!("{f}={n}"))
            .collect();
        eprintln!(
            "  skipped by field: {} (first: line {line}: {e})",
            by.join(" ")
        );
    }
    Ok(())
}

fn from_request_file(path: &Path, limits: Limits, skip_bad: bool, out: &mut Out) -> Result<()> {
    let (name, file) = open_named(path)?;
    let mut reader = RequestFileReader::new(BufReader::new(file), name.clone(), limits, skip_bad);
    let before = out.written;
    for got in reader.by_ref() {
        let r = got?;
        out.write(&name, &r.request, || {
            (Map::from_iter([("line".into(), r.line.into())]), Map::new())
        })?;
    }
    let s = reader.skips();
    eprintln!("{name}:");
    eprintln!(
        "  requests={} skipped={} (malformed={} too_long={} cut_short={}, lines dropped={})",
        out.written - before,
        s.requests(),
        s.malformed,
        s.too_long,
        s.cut_short,
        s.lines_dropped
    );
    if let Some((line, e)) = &s.first {
        eprintln!("  first skipped: line {line}: {e}");
    }
    Ok(())
}
