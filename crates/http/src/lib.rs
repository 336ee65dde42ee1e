//! Web requests, metaids' second modality (issue 16): the typed request every reader produces and
//! the readers of untrusted bytes that make it.
//!
//! - [`raw`]: HTTP/1.x requests from their bytes (a request file of a public dataset, or a TCP
//!   stream once reassembled), parsed by `httparse`, the body framed by `Content-Length` or chunked
//!   transfer coding and capped.
//! - [`access_log`]: web-server access logs in the combined (or common) format that nginx and
//!   Apache write, read line by line with bounded memory; each line an [`access_log::AccessLogEntry`]
//!   that converts to an [`HttpRequest`] without a body.
//!
//! - [`features`]: payloads as feature rows of the `http-requests` layout (shape counts and hashed
//!   character n-grams), so the few-shot protocol and the model take them as they take flows.
//! - [`params`]: the values of a request the payload model scores (query and form pairs decoded,
//!   other bodies whole), bounded per request and per value.
//! - [`payloads`]: the labelled payload families of `data/http/payloads.csv.gz` (benign parameter
//!   values and attack strings by family), read from any `Read`.
//! - [`request_file`]: files of raw requests one after another, as public request datasets ship
//!   them (CSIC 2010), read with bounded memory; a bad request named by line or skipped and counted.
//! - [`signature`]: libinjection's SQLi and XSS signatures (a Rust port), the signature baseline.
//! - [`stream`]: requests reassembled from the client side of TCP connections in a capture
//!   (retransmissions, overlaps and reordering handled, memory bounded, skips counted).
//!
//! Nothing here reads files or sockets: callers hand in bytes or a `BufRead`, so the parsers are
//! what the fuzz targets (`fuzz/fuzz_targets/http_raw_request.rs`, `http_access_log.rs`) exercise.

pub mod access_log;
pub mod features;
pub mod params;
pub mod payloads;
pub mod raw;
pub mod request_file;
pub mod signature;
pub mod stream;

/// One HTTP request as the detectors see it: the request line, the headers in order and the body
/// (empty for a log line, which has none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// Method token as sent (`GET`, `POST`, …).
    pub method: String,
    /// Request target as sent (path and query, or an absolute URL to a proxy), not decoded.
    pub target: String,
    /// `HTTP/1.x` minor version (0 or 1); `None` when the source does not say (an HTTP/0.9 line or
    /// a log's protocol field that is not HTTP/1.x).
    pub minor_version: Option<u8>,
    /// Header fields in arrival order, names as sent; values as bytes (they need not be UTF-8).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body after transfer decoding, at most the reader's cap.
    pub body: Vec<u8>,
    /// The body was longer than the cap and was cut.
    pub body_truncated: bool,
}

impl HttpRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The `Host` header, lossily as text.
    pub fn host(&self) -> Option<String> {
        self.header("host")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The `User-Agent` header, lossily as text.
    pub fn user_agent(&self) -> Option<String> {
        self.header("user-agent")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_whatever_their_case() {
        let r = HttpRequest {
            headers: vec![
                ("HOST".into(), b"example.test".to_vec()),
                ("user-agent".into(), b"curl/8".to_vec()),
            ],
            ..HttpRequest::default()
        };
        assert_eq!(r.host().as_deref(), Some("example.test"));
        assert_eq!(r.user_agent().as_deref(), Some("curl/8"));
        assert_eq!(r.header("Referer"), None);
    }
}
