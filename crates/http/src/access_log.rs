//! Web-server access logs in the combined format nginx and Apache write by default
//! (`$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//! "$http_referer" "$http_user_agent"`), or the common format (without the last two fields).
//! Fields after the user agent (a custom format's extras) are ignored.
//!
//! Quoted fields are unescaped as both servers escape them (`\"`, `\\`, `\xHH`, and Apache's `\n`,
//! `\r`, `\t`), so the request target is the bytes the client sent. A line whose request field is
//! not `METHOD TARGET PROTOCOL` (a TLS handshake sent to the HTTP port, `"-"` for a connection
//! closed before a request) is an error naming that field: the reader can skip and count such
//! lines instead. Lines are read with bounded memory: one longer than the limit is an error (or a
//! counted skip) and its remainder is dropped unread into memory.

use std::io::BufRead;

use metaids_core::time;

use crate::HttpRequest;

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// Client address as logged (an IP address, or a host name when the server resolves them).
    pub remote: String,
    /// Authenticated user, `None` for `-`.
    pub user: Option<String>,
    /// Time of the request, seconds since the Unix epoch (UTC).
    pub time: i64,
    /// Method as logged.
    pub method: String,
    /// Request target, unescaped, lossily as text.
    pub target: String,
    /// Protocol field (`HTTP/1.1`).
    pub protocol: String,
    /// Response status.
    pub status: u16,
    /// Response body bytes, `None` for `-`.
    pub bytes: Option<u64>,
    /// Referer, `None` for `-` or in the common format.
    pub referer: Option<String>,
    /// User agent, `None` for `-` or in the common format.
    pub user_agent: Option<String>,
}

impl AccessLogEntry {
    /// The request as the detectors take it: method, target, version, and `Referer` and
    /// `User-Agent` headers where logged; no body (logs have none).
    pub fn to_request(&self) -> HttpRequest {
        let mut headers = Vec::new();
        if let Some(r) = &self.referer {
            headers.push(("Referer".to_string(), r.as_bytes().to_vec()));
        }
        if let Some(u) = &self.user_agent {
            headers.push(("User-Agent".to_string(), u.as_bytes().to_vec()));
        }
        HttpRequest {
            method: self.method.clone(),
            target: self.target.clone(),
            minor_version: match self.protocol.as_str() {
                "HTTP/1.0" => Some(0),
                "HTTP/1.1" => Some(1),
                _ => None,
            },
            headers,
            body: Vec::new(),
            body_truncated: false,
        }
    }
}

/// Why a line is not an access-log entry: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {message}")]
pub struct LineError {
    /// `remote`, `ident`, `user`, `time`, `request`, `status`, `bytes`, `referer`,
    /// `user_agent`, or `line` (the line as a whole).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> LineError {
    LineError {
        field,
        message: message.into(),
    }
}

/// Parses one line (without its line end).
pub fn parse_line(line: &[u8]) -> Result<AccessLogEntry, LineError> {
    let mut c = Cursor { s: line, at: 0 };
    let remote = c.token("remote")?;
    c.space("ident")?;
    let _ident = c.token("ident")?;
    c.space("user")?;
    let user = c.token("user")?;
    c.space("time")?;
    let time = c.bracketed("time")?;
    let time = parse_time(&time)?;
    c.space("request")?;
    let request = c.quoted("request")?;
    c.space("status")?;
    let status = c.token("status")?;
    let status: u16 = status
        .parse()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| err("status", format!("{status:?} is not a status code")))?;
    c.space("bytes")?;
    let bytes = c.token("bytes")?;
    let bytes = match bytes.as_str() {
        "-" => None,
        b => Some(
            b.parse::<u64>()
                .map_err(|_| err("bytes", format!("{b:?} is not a byte count")))?,
        ),
    };
    let (mut referer, mut user_agent) = (None, None);
    if c.more() {
        c.space("referer")?;
        referer = dash(lossy(&c.quoted("referer")?));
        if c.more() {
            c.space("user_agent")?;
            user_agent = dash(lossy(&c.quoted("user_agent")?));
        }
    }
    let (method, target, protocol) = split_request(&request)?;
    Ok(AccessLogEntry {
        remote,
        user: dash(user),
        time,
        method,
        target,
        protocol,
        status,
        bytes,
        referer,
        user_agent,
    })
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dash(s: String) -> Option<String> {
    (s != "-").then_some(s)
}

/// `METHOD TARGET PROTOCOL` (the target may hold spaces when a client sent them raw: the method
/// is the first word, the protocol the last).
fn split_request(r: &[u8]) -> Result<(String, String, String), LineError> {
    let text = lossy(r);
    let (method, rest) = text.split_once(' ').ok_or_else(|| {
        err(
            "request",
            format!("{:?} is not METHOD TARGET PROTOCOL", cut(&text)),
        )
    })?;
    let (target, protocol) = rest
        .rsplit_once(' ')
        .ok_or_else(|| err("request", format!("{:?} has no protocol", cut(&text))))?;
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(err(
            "request",
            format!("method {:?} is not a token", cut(method)),
        ));
    }
    if !protocol.starts_with("HTTP/") {
        return Err(err(
            "request",
            format!("protocol {:?} is not HTTP/x", cut(protocol)),
        ));
    }
    if target.is_empty() {
        return Err(err("request", "the target is empty"));
    }
    Ok((method.to_string(), target.to_string(), protocol.to_string()))
}

/// At most 64 characters of `s`, for messages.
fn cut(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn more(&self) -> bool {
        self.at < self.s.len()
    }

    fn space(&mut self, next: &'static str) -> Result<(), LineError> {
        match self.s.get(self.at) {
            Some(b' ') => {
                self.at += 1;
                Ok(())
            }
            Some(_) => Err(err(next, "expected a space before it")),
            None => Err(err(next, "missing: the line ends before it")),
        }
    }

    /// Bytes up to the next space or the end.
    fn token(&mut self, field: &'static str) -> Result<String, LineError> {
        let rest = &self.s[self.at..];
        let n = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        if n == 0 {
            return Err(err(field, "empty"));
        }
        self.at += n;
        Ok(lossy(&rest[..n]))
    }

    fn bracketed(&mut self, field: &'static str) -> Result<String, LineError> {
        if self.s.get(self.at) != Some(&b'[') {
            return Err(err(field, "expected ["));
        }
        let rest = &self.s[self.at + 1..];
        let n = rest
            .iter()
            .position(|&b| b == b']')
            .ok_or_else(|| err(field, "no closing ]"))?;
        self.at += n + 2;
        Ok(lossy(&rest[..n]))
    }

    /// A double-quoted field, unescaped.
    fn quoted(&mut self, field: &'static str) -> Result<Vec<u8>, LineError> {
        if self.s.get(self.at) != Some(&b'"') {
            return Err(err(field, "expected a double quote"));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.at) else {
                return Err(err(field, "no closing double quote"));
            };
            self.at += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = self.s.get(self.at) else {
                        return Err(err(field, "the line ends in an escape"));
                    };
                    self.at += 1;
                    match e {
                        b'x' | b'X' => {
                            let hex = self
                                .s
                                .get(self.at..self.at + 2)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u8::from_str_radix(h, 16).ok());
                            match hex {
                                Some(v) => {
                                    out.push(v);
                                    self.at += 2;
                                }
                                // Not an escape the servers write: keep it as it is.
                                None => out.extend_from_slice(&[b'\\', e]),
                            }
                        }
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'"' | b'\\' => out.push(e),
                        other => out.extend_from_slice(&[b'\\', other]),
                    }
                }
                other => out.push(other),
            }
        }
    }
}

/// `10/Oct/2000:13:55:36 -0700` → seconds since the epoch, UTC.
fn parse_time(t: &str) -> Result<i64, LineError> {
    let bad = || {
        err(
            "time",
            format!("{:?} is not dd/Mon/yyyy:hh:mm:ss ±hhmm", cut(t)),
        )
    };
    let b = t.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, LineError> {
        let s = t.get(r).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    let day = num(0..2)?;
    let month = MONTHS
        .iter()
        .position(|m| t.get(3..6) == Some(*m))
        .ok_or_else(bad)? as u32
        + 1;
    let year = num(7..11)?;
    let (h, m, s) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if b[14] != b':' || b[17] != b':' || h > 23 || m > 59 || s > 60 {
        return Err(bad());
    }
    // A date exists when it survives the round trip through a day count (31 Feb does not).
    let days = u32::try_from(day)
        .ok()
        .filter(|&d| d >= 1)
        .map(|d| (d, time::days_from_civil(year, month, d)))
        .filter(|&(d, n)| time::civil_from_days(n) == (year, month, d))
        .ok_or_else(bad)?
        .1;
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    let (oh, om) = (num(22..24)?, num(24..26)?);
    if oh > 23 || om > 59 {
        return Err(bad());
    }
    Ok(days * 86_400 + h * 3600 + m * 60 + s - sign * (oh * 3600 + om * 60))
}

/// English month abbreviations, as both servers log them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A line the reader could not take, with where it was.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The line does not parse.
    #[error("{source_name}, line {line}: {error}")]
    Line {
        /// The file (or stream) name given to the reader.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        error: LineError,
    },
    /// Reading failed.
    #[error("{source_name}: {error}")]
    Io {
        /// The file name given to the reader.
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Skipped lines by the field at fault (when the reader skips).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skips {
    /// `(field, count)` in first-seen order.
    pub by_field: Vec<(&'static str, u64)>,
    /// The first skipped line's number and error, to show the user one.
    pub first: Option<(u64, LineError)>,
}

impl Skips {
    /// All skipped lines.
    pub fn total(&self) -> u64 {
        self.by_field.iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, line: u64, e: LineError) {
        match self.by_field.iter_mut().find(|(f, _)| *f == e.field) {
            Some((_, n)) => *n += 1,
            None => self.by_field.push((e.field, 1)),
        }
        self.first.get_or_insert((line, e));
    }
}

/// Reads entries line by line: an error names the source and line, or with `skip_bad` the line
/// is counted in [`AccessLogReader::skips`] and reading goes on. Empty lines are ignored.
pub struct AccessLogReader<R> {
    inner: R,
    source_name: String,
    max_line: usize,
    skip_bad: bool,
    line: u64,
    buf: Vec<u8>,
    skips: Skips,
}

impl<R: BufRead> AccessLogReader<R> {
    /// Longest line read by default (64 KiB; nginx and Apache cap a request line at 8 KiB).
    pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

    /// A reader of `inner`, named `source_name` in errors.
    pub fn new(inner: R, source_name: impl Into<String>, skip_bad: bool) -> Self {
        AccessLogReader {
            inner,
            source_name: source_name.into(),
            max_line: Self::DEFAULT_MAX_LINE,
            skip_bad,
            line: 0,
            buf: Vec::new(),
            skips: Skips::default(),
        }
    }

    /// Sets the longest line (at least 1 byte).
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.max_line = max.max(1);
        self
    }

    /// Lines skipped so far.
    pub fn skips(&self) -> &Skips {
        &self.skips
    }

    /// Lines read so far (including skipped and empty ones).
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Reads one line into `buf` keeping at most `max_line` bytes: `Ok(None)` at the end,
    /// `Ok(Some(too_long))` otherwise.
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(any.then_some(too_long));
            }
            any = true;
            let (part, used, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            let room = (self.max_line + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            if self.buf.len() > self.max_line {
                too_long = true;
            }
            self.inner.consume(used);
            if end {
                return Ok(Some(too_long));
            }
        }
    }
}

impl<R: BufRead> Iterator for AccessLogReader<R> {
    type Item = Result<AccessLogEntry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let too_long = match self.read_line() {
                Ok(None) => return None,
                Ok(Some(t)) => t,
                Err(error) => {
                    return Some(Err(ReadError::Io {
                        source_name: self.source_name.clone(),
                        error,
                    }))
                }
            };
            self.line += 1;
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            let parsed = if too_long {
                Err(err("line", format!("longer than {} bytes", self.max_line)))
            } else if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            } else {
                parse_line(&self.buf)
            };
            match parsed {
                Ok(e) => return Some(Ok(e)),
                Err(e) if self.skip_bad => self.skips.add(self.line, e),
                Err(error) => {
                    return Some(Err(ReadError::Line {
                        source_name: self.source_name.clone(),
                        line: self.line,
                        error,
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &[u8] = br#"192.0.2.7 - - [03/Dec/2026:19:41:51 +0000] "GET /search?q=%27%20union%20select HTTP/1.1" 200 512 "-" "Mozilla/5.0 (X11; Linux x86_64)""#;

    #[test]
    fn a_combined_line() {
        let e = parse_line(NGINX).expect("line");
        assert_eq!(e.remote, "192.0.2.7");
        assert_eq!(e.user, None);
        assert_eq!(e.time, 1_796_326_911);
        assert_eq!(
            (e.method.as_str(), e.target.as_str(), e.protocol.as_str()),
            ("GET", "/search?q=%27%20union%20select", "HTTP/1.1")
        );
        assert_eq!((e.status, e.bytes), (200, Some(512)));
        assert_eq!(e.referer, None);
        assert_eq!(
            e.user_agent.as_deref(),
            Some("Mozilla/5.0 (X11; Linux x86_64)")
        );
        let r = e.to_request();
        assert_eq!(r.minor_version, Some(1));
        assert_eq!(
            r.user_agent().as_deref(),
            Some("Mozilla/5.0 (X11; Linux x86_64)")
        );
    }

    #[test]
    fn common_format_escapes_offsets_and_extra_fields() {
        let e = parse_line(
            br#"host.test - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 -"#,
        )
        .expect("common");
        assert_eq!(e.user.as_deref(), Some("frank"));
        assert_eq!(e.time, 971_211_336);
        assert_eq!((e.bytes, e.referer, e.user_agent), (None, None, None));
        let e = parse_line(
            br#"::1 - - [29/Feb/2024:00:00:00 +0130] "POST /a\x22b\\c?x=<script> HTTP/1.1" 403 17 "http://r.test/" "ua \"quoted\"" "10.0.0.1" rt=0.002"#,
        )
        .expect("escapes");
        assert_eq!(e.target, "/a\"b\\c?x=<script>");
        assert_eq!(e.user_agent.as_deref(), Some("ua \"quoted\""));
        assert_eq!(e.referer.as_deref(), Some("http://r.test/"));
        assert_eq!(e.time, 1_709_164_800 - 5400);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&[u8], &str); 9] = [
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51 +0000] "\x16\x03\x01\x02" 400 0 "-" "-""#,
                "request",
            ),
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51 +0000] "-" 408 0 "-" "-""#,
                "request",
            ),
            (
                br#"1.2.3.4 - - [31/Feb/2026:19:41:51 +0000] "GET / HTTP/1.1" 200 0"#,
                "time",
            ),
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51] "GET / HTTP/1.1" 200 0"#,
                "time",
            ),
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51 +0000] "GET / HTTP/1.1" 2x0 0"#,
                "status",
            ),
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51 +0000] "GET / HTTP/1.1" 200 -5"#,
                "bytes",
            ),
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51 +0000] "GET / HTTP/1.1" 200 5 "-" "open"#,
                "user_agent",
            ),
            (
                br#"1.2.3.4 - - [03/Dec/2026:19:41:51 +0000] "GET / HTTP/1.1"#,
                "request",
            ),
            (b"1.2.3.4", "ident"),
        ];
        for (line, field) in cases {
            let e = parse_line(line).expect_err(&String::from_utf8_lossy(line));
            assert_eq!(e.field, field, "{}: {e}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_reader_names_the_line_or_counts_skips_with_bounded_lines() {
        let mut text = Vec::new();
        text.extend_from_slice(NGINX);
        text.extend_from_slice(b"\r\n\n garbage line\n");
        text.extend_from_slice(&b"x".repeat(300));
        text.extend_from_slice(b"\n");
        text.extend_from_slice(NGINX);
        let strict: Vec<_> = AccessLogReader::new(text.as_slice(), "access.log", false).collect();
        let e = strict[1].as_ref().expect_err("line 3");
        assert!(
            e.to_string().starts_with("access.log, line 3: field"),
            "{e}"
        );

        let mut r = AccessLogReader::new(text.as_slice(), "access.log", true).with_max_line(200);
        let ok: Vec<_> = r.by_ref().collect::<Result<_, _>>().expect("skipping");
        assert_eq!(ok.len(), 2);
        assert_eq!(r.lines(), 5);
        assert_eq!(r.skips().total(), 2);
        assert!(r.skips().by_field.contains(&("line", 1)), "{:?}", r.skips());
        assert_eq!(r.skips().first.as_ref().map(|(l, _)| *l), Some(3));
    }
}
