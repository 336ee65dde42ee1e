//! Web requests as the detector's units, for a model trained on `http-requests`: each request's
//! values (query and form pairs, other bodies whole: `metaids_http::params`) become feature rows of
//! one request ([`RequestRows`], decided by [`Pipeline::push_requests`]), with what its source says
//! about it ([`Seen`]); and the requests of a capture, reassembled ([`CaptureRequests`]). Shared by
//! the CLI (`detect`, `threat add`, `baseline`, `requests`) and `metaids serve`.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;

use metaids_core::frame::RowSource;
use metaids_core::schema::DatasetKind;
use metaids_core::FlowFrame;
use metaids_flow::{CaptureReader, ReaderConfig};
use metaids_http::features::RowWriter;
use metaids_http::params;
use metaids_http::raw::Limits;
use metaids_http::stream::{AssembledRequest, RequestAssembler, StreamConfig, StreamStats};
use metaids_http::HttpRequest;

use crate::error::{DetectError, Result};
use crate::eve::{EveHttp, FlowMeta, HttpFacts, MatchedValue, Origin};
use crate::pipeline::Pipeline;

/// One request as read, with what its source says about it.
#[derive(Debug)]
pub struct Seen<'a> {
    /// The input's name (its path as given).
    pub source: &'a str,
    /// The request.
    pub request: &'a HttpRequest,
    /// When it was sent (µs since the epoch): a capture's packet time, a log's time (whole
    /// seconds: `log_time`); `None` for a request file.
    pub ts_us: Option<i64>,
    /// The time is a log's, to the second.
    pub log_time: bool,
    /// Client address and port (a log knows the address only: port 0).
    pub client: Option<(IpAddr, u16)>,
    /// The log's client field when it is not an address (a host name).
    pub client_text: Option<&'a str>,
    /// Server address and port (captures).
    pub server: Option<(IpAddr, u16)>,
    /// The line it starts on (logs and request files).
    pub line: Option<u64>,
    /// The response status and length (logs).
    pub status: Option<u16>,
    /// The response length in bytes (logs).
    pub length: Option<u64>,
    /// The request's number within its source (1-based).
    pub index: u64,
}

impl<'a> Seen<'a> {
    /// Request number `index` (1-based) of the capture `source`, as reassembled: its packet time
    /// and its connection's addresses and ports.
    pub fn captured(source: &'a str, r: &'a AssembledRequest, index: u64) -> Self {
        Seen {
            source,
            request: &r.request,
            ts_us: Some(r.ts_us),
            log_time: false,
            client: Some(r.client),
            client_text: None,
            server: Some(r.server),
            line: None,
            status: None,
            length: None,
            index,
        }
    }

    /// Where the request is in its source: its line, else its number.
    pub fn locator(&self) -> u64 {
        self.line.unwrap_or(self.index)
    }
}

/// Suricata's EVE `http` object of a request, with a log's status and length.
fn eve_http(r: &HttpRequest, seen: &Seen<'_>) -> EveHttp {
    let text = |name: &str| {
        r.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    EveHttp {
        hostname: r.host(),
        url: r.target.clone(),
        http_method: r.method.clone(),
        protocol: r.minor_version.map(|v| format!("HTTP/1.{v}")),
        http_user_agent: r.user_agent(),
        http_refer: text("referer"),
        http_content_type: text("content-type"),
        status: seen.status,
        length: seen.length,
    }
}

/// Requests gathered as feature rows of the `http-requests` layout: rows of one request follow
/// one another (`counts`), with one [`FlowMeta`] per request.
pub struct RequestRows {
    /// The value rows.
    pub frame: FlowFrame,
    /// Rows per request.
    pub counts: Vec<usize>,
    /// Each request's facts.
    pub metas: Vec<FlowMeta>,
    files: HashMap<String, u32>,
    names: HashMap<String, Arc<str>>,
    writer: RowWriter,
    /// Requests with no value to score (no query, no body): not decided.
    pub without_values: u64,
    /// Values past the per-request cap, not scored.
    pub values_dropped: u64,
    /// What each request's origin index counts: `line` (logs, request files) or `request`
    /// (captures).
    pub unit: Vec<&'static str>,
}

impl Default for RequestRows {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestRows {
    /// None gathered yet.
    pub fn new() -> Self {
        RequestRows {
            frame: FlowFrame::new(DatasetKind::HttpRequests.layout()),
            counts: Vec::new(),
            metas: Vec::new(),
            files: HashMap::new(),
            names: HashMap::new(),
            writer: RowWriter::new(),
            without_values: 0,
            values_dropped: 0,
            unit: Vec::new(),
        }
    }

    /// Requests gathered.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether none is gathered.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Adds a request's values as rows labelled `label`; returns false (and counts it) when it
    /// has none.
    pub fn push(&mut self, seen: &Seen<'_>, label: &str) -> bool {
        let values = params::values(seen.request);
        self.values_dropped += values.dropped as u64;
        if values.values.is_empty() {
            self.without_values += 1;
            return false;
        }
        let file = match self.files.get(seen.source) {
            Some(&f) => f,
            None => {
                let f = RowWriter::add_file(&mut self.frame, seen.source);
                self.files.insert(seen.source.to_string(), f);
                f
            }
        };
        let at = RowSource {
            file,
            line: seen.locator(),
        };
        let mut matched = Vec::with_capacity(values.values.len());
        for v in &values.values {
            let field = v.field();
            self.writer
                .push(&mut self.frame, at, label, &field, v.text.as_bytes());
            matched.push(MatchedValue::new(field, &v.text, v.truncated));
        }
        self.counts.push(values.values.len());
        self.unit.push(if seen.line.is_some() {
            "line"
        } else {
            "request"
        });
        let source = match self.names.get(seen.source) {
            Some(n) => Arc::clone(n),
            None => {
                let n: Arc<str> = Arc::from(seen.source);
                self.names.insert(seen.source.to_string(), Arc::clone(&n));
                n
            }
        };
        self.metas.push(FlowMeta::request(
            Origin {
                source,
                index: seen.locator(),
            },
            seen.client,
            seen.server,
            seen.ts_us,
            HttpFacts {
                http: eve_http(seen.request, seen),
                values: matched,
            },
        ));
        true
    }

    /// Decides the gathered requests with `pipeline`, then drops them, keeping the frame's
    /// buffers for the next batch.
    pub fn score(&mut self, pipeline: &mut Pipeline) -> Result<()> {
        let metas = std::mem::take(&mut self.metas);
        pipeline.push_requests(&self.frame, &self.counts, metas)?;
        self.frame.clear_rows();
        self.counts.clear();
        self.unit.clear();
        Ok(())
    }

    /// The gathered rows, counts and facts, leaving this empty (counters kept).
    pub fn take(&mut self) -> (FlowFrame, Vec<usize>, Vec<FlowMeta>) {
        self.files.clear();
        self.unit.clear();
        (
            std::mem::replace(
                &mut self.frame,
                FlowFrame::new(DatasetKind::HttpRequests.layout()),
            ),
            std::mem::take(&mut self.counts),
            std::mem::take(&mut self.metas),
        )
    }
}

/// The HTTP requests of one capture, reassembled from its TCP segments as its packets are read.
pub struct CaptureRequests<R: Read> {
    name: String,
    reader: CaptureReader<R>,
    assembler: RequestAssembler,
    requests: u64,
}

impl<R: Read> CaptureRequests<R> {
    /// Opens the capture `input` named `name`; a body that is not pcap or pcapng is an error
    /// naming it.
    pub fn new(input: R, name: &str, limits: Limits) -> Result<Self> {
        let reader = CaptureReader::new(input, ReaderConfig::default()).map_err(|source| {
            DetectError::Capture {
                name: name.to_string(),
                source,
            }
        })?;
        Ok(CaptureRequests {
            name: name.to_string(),
            reader,
            assembler: RequestAssembler::new(StreamConfig {
                limits,
                ..StreamConfig::default()
            }),
            requests: 0,
        })
    }

    /// Reads packets until at least one request is complete or the capture ends, appending the
    /// requests to `out`; false once the capture has ended.
    pub fn next_requests(&mut self, out: &mut Vec<AssembledRequest>) -> Result<bool> {
        let before = out.len();
        while out.len() == before {
            let pkt = self
                .reader
                .next_packet()
                .map_err(|source| DetectError::Capture {
                    name: self.name.clone(),
                    source,
                })?;
            let Some(pkt) = pkt else {
                return Ok(false);
            };
            self.assembler.push(&pkt, out);
        }
        self.requests += (out.len() - before) as u64;
        Ok(true)
    }

    /// Requests read so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.reader.stats().packets
    }

    /// The reassembly's counters (connections given up, and why).
    pub fn finish(self) -> StreamStats {
        self.assembler.finish()
    }
}
