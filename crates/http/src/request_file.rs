//! Files of raw HTTP requests one after another, as public request datasets ship them (the CSIC
//! 2010 HTTP dataset's `normalTrafficTraining.txt`, a proxy's dump): each request's head, its body
//! framed by `Content-Length` or chunked coding, blank lines between requests. Line ends may be
//! CRLF or bare LF.
//!
//! The file is read with bounded memory (at most [`RequestFileReader::max_request`] bytes held),
//! whatever its size. A request that does not parse is an error naming the source, the line it
//! starts on and the byte offset; with `skip_bad` it is counted by reason instead, and reading
//! resumes at the next line that reads as a request line (`METHOD target HTTP/1.x`).

use std::io::{BufRead, ErrorKind};

use crate::raw::{parse_request, Limits, RawError};
use crate::HttpRequest;

/// A request and where it starts in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    /// The request.
    pub request: HttpRequest,
    /// 1-based line of its request line.
    pub line: u64,
    /// Byte offset of its request line.
    pub offset: u64,
}

/// A request the reader could not take, with where it was.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The bytes at `line` are not a request (or one cut short at the end of the file).
    #[error("{source_name}, line {line} (byte {offset}): {error}")]
    Request {
        /// The name given to the reader.
        source_name: String,
        /// 1-based line where the request starts.
        line: u64,
        /// Byte offset where it starts.
        offset: u64,
        /// What is wrong.
        error: RawError,
    },
    /// A request longer than the reader holds.
    #[error("{source_name}, line {line} (byte {offset}): request longer than {max} bytes")]
    TooLong {
        /// The name given to the reader.
        source_name: String,
        /// 1-based line where the request starts.
        line: u64,
        /// Byte offset where it starts.
        offset: u64,
        /// The bound.
        max: usize,
    },
    /// Reading failed.
    #[error("{source_name}: {error}")]
    Io {
        /// The name given to the reader.
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Requests skipped (with `skip_bad`), by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSkips {
    /// Heads that do not parse, or bodies whose framing is broken.
    pub malformed: u64,
    /// Requests longer than the reader holds.
    pub too_long: u64,
    /// A last request cut short by the end of the file.
    pub cut_short: u64,
    /// Lines dropped while looking for the next request line.
    pub lines_dropped: u64,
    /// The first skip's line and message, to show the user one.
    pub first: Option<(u64, String)>,
}

impl FileSkips {
    /// Requests skipped.
    pub fn requests(&self) -> u64 {
        self.malformed + self.too_long + self.cut_short
    }
}

/// Reads requests one after another; see the module documentation.
pub struct RequestFileReader<R> {
    inner: R,
    source_name: String,
    limits: Limits,
    max_request: usize,
    skip_bad: bool,
    /// Bytes read; those from `pos` on are not yet taken, `buf[pos]` is at `offset`, on line
    /// `line`. Taken bytes are dropped when more are read, not at every request.
    buf: Vec<u8>,
    pos: usize,
    offset: u64,
    line: u64,
    eof: bool,
    done: bool,
    skips: FileSkips,
}

/// Bytes read from the source at a time.
const READ_CHUNK: usize = 64 * 1024;

impl<R: BufRead> RequestFileReader<R> {
    /// A reader of `inner`, named `source_name` in errors. A request may take the head and twice
    /// the body limit of `limits` (room for chunk framing); a body past `limits.max_body` is cut
    /// and marked, as [`parse_request`] does.
    pub fn new(inner: R, source_name: impl Into<String>, limits: Limits, skip_bad: bool) -> Self {
        RequestFileReader {
            inner,
            source_name: source_name.into(),
            max_request: limits
                .max_head
                .saturating_add(limits.max_body.saturating_mul(2))
                .max(1),
            limits,
            skip_bad,
            buf: Vec::new(),
            pos: 0,
            offset: 0,
            line: 1,
            eof: false,
            done: false,
            skips: FileSkips::default(),
        }
    }

    /// The most bytes one request may take.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// Requests skipped so far.
    pub fn skips(&self) -> &FileSkips {
        &self.skips
    }

    /// The bytes read and not yet taken.
    fn held(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads up to [`READ_CHUNK`] more bytes (dropping the taken ones first); sets `eof` at the end.
    fn fill(&mut self) -> Result<(), FileError> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        loop {
            match self.inner.fill_buf() {
                Ok([]) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(chunk) => {
                    let n = chunk.len().min(READ_CHUNK);
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.inner.consume(n);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(FileError::Io {
                        source_name: self.source_name.clone(),
                        error,
                    })
                }
            }
        }
    }

    /// Drops the first `n` held bytes, keeping the line and offset counts.
    fn take(&mut self, n: usize) {
        self.line += self.held()[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        self.offset += n as u64;
        self.pos += n;
    }

    /// Drops blank space before a request; false at the end of the file.
    fn skip_blank(&mut self) -> Result<bool, FileError> {
        loop {
            let n = self
                .held()
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
                .count();
            self.take(n);
            if !self.held().is_empty() {
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            self.fill()?;
        }
    }

    /// After a bad request: drops its first line, then every line that is not a request line.
    fn resync(&mut self) -> Result<(), FileError> {
        let mut first = true;
        loop {
            let nl = loop {
                match self.held().iter().position(|&b| b == b'\n') {
                    Some(i) => break Some(i),
                    None if self.eof => break None,
                    // A line longer than a head is not a request line: drop what is held.
                    None if self.held().len() > self.limits.max_head => {
                        self.offset += self.held().len() as u64;
                        self.pos = self.buf.len();
                        self.fill()?;
                    }
                    None => self.fill()?,
                }
            };
            let held = self.held();
            if !first && looks_like_request_line(&held[..nl.unwrap_or(held.len())]) {
                return Ok(());
            }
            first = false;
            self.skips.lines_dropped += 1;
            match nl {
                Some(i) => self.take(i + 1),
                None => {
                    let n = self.held().len();
                    self.take(n);
                    return Ok(());
                }
            }
        }
    }

    /// A bad request: the error, or (skipping) counted and the reader moved to the next request
    /// line.
    fn fail(&mut self, line: u64, error: FileError) -> Option<Result<FileRequest, FileError>> {
        if !self.skip_bad {
            self.done = true;
            return Some(Err(error));
        }
        match &error {
            FileError::TooLong { .. }
            | FileError::Request {
                error: RawError::HeadTooLong { .. },
                ..
            } => self.skips.too_long += 1,
            FileError::Request {
                error: RawError::Incomplete { .. },
                ..
            } => self.skips.cut_short += 1,
            _ => self.skips.malformed += 1,
        }
        self.skips.first.get_or_insert((line, error.to_string()));
        if let Err(e) = self.resync() {
            self.done = true;
            return Some(Err(e));
        }
        None
    }
}

impl<R: BufRead> Iterator for RequestFileReader<R> {
    type Item = Result<FileRequest, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.skip_blank() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let (line, offset) = (self.line, self.offset);
            match parse_request(self.held(), &self.limits) {
                Ok((request, n)) => {
                    self.take(n);
                    return Some(Ok(FileRequest {
                        request,
                        line,
                        offset,
                    }));
                }
                Err(RawError::Incomplete { .. })
                    if !self.eof && self.held().len() <= self.max_request =>
                {
                    if let Err(e) = self.fill() {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Err(RawError::Incomplete { .. }) if !self.eof => {
                    let e = FileError::TooLong {
                        source_name: self.source_name.clone(),
                        line,
                        offset,
                        max: self.max_request,
                    };
                    if let Some(out) = self.fail(line, e) {
                        return Some(out);
                    }
                }
                Err(error) => {
                    let e = FileError::Request {
                        source_name: self.source_name.clone(),
                        line,
                        offset,
                        error,
                    };
                    if let Some(out) = self.fail(line, e) {
                        return Some(out);
                    }
                }
            }
        }
        None
    }
}

/// `METHOD SP target SP HTTP/1.x` with a token method: where a request starts.
fn looks_like_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        && !target.is_empty()
        && matches!(version, b"HTTP/1.0" | b"HTTP/1.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(
        bytes: &[u8],
        limits: Limits,
        skip_bad: bool,
    ) -> (Vec<Result<FileRequest, FileError>>, FileSkips) {
        let mut r = RequestFileReader::new(bytes, "requests.txt", limits, skip_bad);
        let out: Vec<_> = r.by_ref().collect();
        (out, r.skips().clone())
    }

    /// Two requests in the CSIC 2010 layout: bare LF line ends, a POST body framed by its
    /// length, blank lines between.
    const CSIC_LIKE: &[u8] = b"GET http://localhost:8080/tienda1/index.jsp HTTP/1.1\n\
User-Agent: Mozilla/5.0 (compatible; Konqueror/3.5; Linux)\n\
Host: localhost:8080\n\
Connection: close\n\
\n\
\n\
\n\
POST http://localhost:8080/tienda1/publico/anadir.jsp HTTP/1.1\n\
Host: localhost:8080\n\
Content-Type: application/x-www-form-urlencoded\n\
Content-Length: 21\n\
\n\
id=3&cantidad=%27+OR\n\
\n";

    #[test]
    fn requests_in_the_csic_layout_are_read_with_their_lines() {
        let (out, skips) = read_all(CSIC_LIKE, Limits::default(), false);
        let out: Vec<FileRequest> = out.into_iter().map(|r| r.expect("request")).collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].request.method, "GET");
        assert_eq!(out[0].line, 1);
        assert_eq!(out[0].offset, 0);
        assert_eq!(out[1].request.method, "POST");
        assert_eq!(out[1].line, 8);
        assert_eq!(out[1].request.body, b"id=3&cantidad=%27+OR\n");
        assert_eq!(
            &CSIC_LIKE[out[1].offset as usize..][..4],
            b"POST",
            "the offset points at the request line"
        );
        assert_eq!(skips, FileSkips::default());
    }

    #[test]
    fn a_small_read_buffer_gives_the_same_requests() {
        let whole: Vec<_> = read_all(CSIC_LIKE, Limits::default(), false)
            .0
            .into_iter()
            .map(|r| r.expect("request"))
            .collect();
        let small = std::io::BufReader::with_capacity(3, CSIC_LIKE);
        let bits: Vec<_> = RequestFileReader::new(small, "x", Limits::default(), false)
            .map(|r| r.expect("request"))
            .collect();
        assert_eq!(whole, bits);
    }

    #[test]
    fn a_bad_request_names_its_line_or_is_skipped_to_the_next_request_line() {
        let mut bytes = b"GET /a HTTP/1.1\nHost: x\n\n".to_vec();
        bytes.extend_from_slice(b"GET /b HTTP/1.1\nbad header line\nmore junk\n\n");
        bytes.extend_from_slice(b"GET /c HTTP/1.1\nHost: x\n\n");
        let (out, _) = read_all(&bytes, Limits::default(), false);
        assert_eq!(out.len(), 2, "the error ends reading");
        let e = out[1].as_ref().expect_err("bad head").to_string();
        assert!(e.starts_with("requests.txt, line 4 (byte 25): "), "{e}");

        let (out, skips) = read_all(&bytes, Limits::default(), true);
        let targets: Vec<String> = out
            .into_iter()
            .map(|r| r.expect("skipped, not failed").request.target)
            .collect();
        assert_eq!(targets, ["/a", "/c"]);
        assert_eq!(skips.malformed, 1);
        assert_eq!(
            skips.lines_dropped, 4,
            "its request line, two bad lines, a blank"
        );
        assert_eq!(skips.first.as_ref().map(|f| f.0), Some(4));
    }

    #[test]
    fn a_request_past_the_bound_is_an_error_and_memory_stays_bounded() {
        let limits = Limits {
            max_head: 1024,
            max_headers: 100,
            max_body: 1024,
        };
        let mut bytes = b"POST /big HTTP/1.1\nContent-Length: 1000000\n\n".to_vec();
        bytes.resize(bytes.len() + 1_000_000, b'a');
        bytes.extend_from_slice(b"\nGET /after HTTP/1.1\n\n");
        let mut r = RequestFileReader::new(bytes.as_slice(), "big.txt", limits, false);
        let first = r.next().expect("an item");
        assert!(
            matches!(
                first,
                Err(FileError::TooLong {
                    line: 1,
                    max: 3072,
                    ..
                })
            ),
            "{first:?}"
        );
        assert!(r.buf.len() <= r.max_request() + READ_CHUNK);

        let (out, skips) = read_all(&bytes, limits, true);
        let targets: Vec<String> = out
            .into_iter()
            .map(|r| r.expect("ok").request.target)
            .collect();
        assert_eq!(targets, ["/after"]);
        assert_eq!(skips.too_long, 1);
    }

    #[test]
    fn a_request_cut_by_the_end_of_the_file_is_told() {
        let bytes = b"GET /a HTTP/1.1\n\nPOST /b HTTP/1.1\nContent-Length: 10\n\nabc";
        let (out, _) = read_all(bytes, Limits::default(), false);
        let e = out[1].as_ref().expect_err("cut").to_string();
        assert!(
            e.contains("line 3") && e.contains("body is cut short"),
            "{e}"
        );
        let (out, skips) = read_all(bytes, Limits::default(), true);
        assert_eq!(out.len(), 1);
        assert_eq!(skips.cut_short, 1);
    }

    #[test]
    fn request_lines_are_told_from_other_lines() {
        assert!(looks_like_request_line(
            b"GET http://localhost:8080/x?a=1 HTTP/1.1\r"
        ));
        assert!(looks_like_request_line(b"PROPFIND / HTTP/1.0"));
        assert!(!looks_like_request_line(b"Host: localhost"));
        assert!(!looks_like_request_line(b"GET / HTTP/2"));
        assert!(!looks_like_request_line(b"id=1 OR 1=1 HTTP/1.1 x"));
        assert!(!looks_like_request_line(b""));
    }
}
