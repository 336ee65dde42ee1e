//! `metaids requests`: HTTP requests from captures, access logs and raw request files, as JSON
//! lines, through `metaids-http`; and the one reading loop over those inputs that `detect` and
//! `threat add` use with a web-request model ([`read_requests`]).
//!
//! Owns only the file handling (opening, the atomic output), the JSON shape and the end-of-run
//! counters; parsing and reassembly are the http crate's. A line's `http` object uses the field
//! names of Suricata's EVE `http` object (`hostname`, `url`, `http_method`, `protocol`,
//! `http_user_agent`, `http_refer`, `status`, `length`), so what a detector later alerts on reads
//! the same as what this command shows.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use metaids_core::time;
use metaids_detect::{CaptureRequests, Seen};
use metaids_http::access_log::AccessLogReader;
use metaids_http::raw::Limits;
use metaids_http::request_file::RequestFileReader;
use metaids_http::HttpRequest;
use metaids_ingest::AtomicFile;
use serde_json::{json, Map, Value};

use crate::args::{RequestSourceArgs, RequestsArgs};

/// Reads every request of the captures `pcaps` and of the logs and request files of `inputs`, in
/// that order, handing each to `each`; prints each source's counts (read, skipped, given up) on
/// stderr. A bad input is an error naming it, unless `inputs.skip_bad` counts the skip.
pub(crate) fn read_requests(
    pcaps: &[PathBuf],
    inputs: &RequestSourceArgs,
    each: &mut dyn FnMut(&Seen<'_>) -> Result<()>,
) -> Result<()> {
    let limits = Limits {
        max_body: inputs.max_body,
        ..Limits::default()
    };
    for path in pcaps {
        from_capture(path, limits, each)?;
    }
    for path in &inputs.access_log {
        from_access_log(path, inputs.skip_bad, each)?;
    }
    for path in &inputs.request_file {
        from_request_file(path, limits, inputs.skip_bad, each)?;
    }
    Ok(())
}

/// Where the JSON lines go: the output file, or nowhere (counts only).
struct Out {
    sink: Option<BufWriter<AtomicFile>>,
    written: u64,
}

impl Out {
    /// Counts the request and, with an output, writes its line.
    fn write(&mut self, seen: &Seen<'_>) -> Result<()> {
        self.written += 1;
        let Some(w) = &mut self.sink else {
            return Ok(());
        };
        let r = seen.request;
        let mut line = Map::new();
        if let Some(n) = seen.line {
            line.insert("line".into(), n.into());
        }
        if let Some(us) = seen.ts_us {
            let ts = if seen.log_time {
                time::rfc3339(us.div_euclid(1_000_000))
            } else {
                let mut ts = String::with_capacity(27);
                time::push_timestamp_us(&mut ts, us, 'T');
                ts.push('Z');
                ts
            };
            line.insert("timestamp".into(), ts.into());
        }
        match (seen.client, seen.client_text) {
            (Some((ip, port)), _) => {
                line.insert("src_ip".into(), ip.to_string().into());
                if seen.server.is_some() {
                    line.insert("src_port".into(), port.into());
                }
            }
            (None, Some(text)) => {
                line.insert("src_ip".into(), text.into());
            }
            (None, None) => {}
        }
        if let Some((ip, port)) = seen.server {
            line.insert("dest_ip".into(), ip.to_string().into());
            line.insert("dest_port".into(), port.into());
        }
        line.insert("source".into(), seen.source.into());
        let mut http = http_object(r);
        if let Some(status) = seen.status {
            http.insert("status".into(), status.into());
        }
        if let Some(n) = seen.length {
            http.insert("length".into(), n.into());
        }
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
    if a.pcap.is_empty() && a.input.access_log.is_empty() && a.input.request_file.is_empty() {
        anyhow::bail!("give at least one --pcap, --access-log or --request-file");
    }
    let mut out = Out {
        sink: match &a.out {
            Some(p) => Some(BufWriter::new(AtomicFile::create(p)?)),
            None => None,
        },
        written: 0,
    };
    read_requests(&a.pcap, &a.input, &mut |seen| out.write(seen))?;
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

fn from_capture(
    path: &Path,
    limits: Limits,
    each: &mut dyn FnMut(&Seen<'_>) -> Result<()>,
) -> Result<()> {
    let (name, file) = open_named(path)?;
    let mut capture = CaptureRequests::new(BufReader::with_capacity(1 << 20, file), &name, limits)?;
    let mut got = Vec::new();
    while capture.next_requests(&mut got)? {
        let first = capture.requests() - got.len() as u64;
        for (k, r) in got.drain(..).enumerate() {
            each(&Seen::captured(&name, &r, first + k as u64 + 1))?;
        }
    }
    let n = capture.requests();
    let s = capture.finish();
    eprintln!("{name}:");
    eprintln!(
        "  requests={n} client_segments={} retransmitted_bytes={}",
        s.segments, s.retransmitted_bytes
    );
    eprintln!(
        "  connections given up: not_http={} over_limit={} truncated_by_snaplen={} incomplete={} idle={} table_full={}",
        s.not_http, s.over_limit, s.truncated, s.incomplete, s.idle, s.table_full
    );
    Ok(())
}

fn from_access_log(
    path: &Path,
    skip_bad: bool,
    each: &mut dyn FnMut(&Seen<'_>) -> Result<()>,
) -> Result<()> {
    let (name, file) = open_named(path)?;
    let mut reader = AccessLogReader::new(BufReader::new(file), name.clone(), skip_bad);
    let mut n = 0;
    while let Some(entry) = reader.next() {
        let e = entry?;
        n += 1;
        let client: Option<IpAddr> = e.remote.parse().ok();
        each(&Seen {
            source: &name,
            request: &e.to_request(),
            ts_us: Some(e.time.saturating_mul(1_000_000)),
            log_time: true,
            client: client.map(|ip| (ip, 0)),
            client_text: client.is_none().then_some(e.remote.as_str()),
            server: None,
            line: Some(reader.lines()),
            status: Some(e.status),
            length: e.bytes,
            index: n,
        })?;
    }
    let skips = reader.skips();
    eprintln!("{name}:");
    eprintln!(
        "  requests={n} lines={} skipped={}",
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

fn from_request_file(
    path: &Path,
    limits: Limits,
    skip_bad: bool,
    each: &mut dyn FnMut(&Seen<'_>) -> Result<()>,
) -> Result<()> {
    let (name, file) = open_named(path)?;
    let mut reader = RequestFileReader::new(BufReader::new(file), name.clone(), limits, skip_bad);
    let mut n = 0;
    for got in reader.by_ref() {
        let r = got?;
        n += 1;
        each(&Seen {
            source: &name,
            request: &r.request,
            ts_us: None,
            log_time: false,
            client: None,
            client_text: None,
            server: None,
            line: Some(r.line),
            status: None,
            length: None,
            index: n,
        })?;
    }
    let s = reader.skips();
    eprintln!("{name}:");
    eprintln!(
        "  requests={n} skipped={} (malformed={} too_long={} cut_short={}, lines dropped={})",
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
