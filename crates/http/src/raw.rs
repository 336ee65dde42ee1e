//! HTTP/1.x requests from their bytes: the head parsed by `httparse`, the body framed as RFC 9112
//! §6 says (chunked transfer coding, else `Content-Length`, else none) and kept up to a cap.
//!
//! A message must lie whole in the buffer handed in; [`RawError::Incomplete`] says more bytes are
//! needed (a stream reader keeps reading, bounded by its own limits). Every other error means the
//! bytes are not a request this parser accepts, and the framing of what follows is lost.

use crate::HttpRequest;

/// Bounds on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line plus headers, in bytes.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Body bytes kept; the rest is framed and dropped (`body_truncated`).
    pub max_body: usize,
}

impl Default for Limits {
    /// 64 KiB of head, 100 headers, 64 KiB of body.
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 100,
            max_body: 64 * 1024,
        }
    }
}

/// Why bytes are not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawError {
    /// The message is not whole yet.
    #[error("incomplete request: the {part} is cut short")]
    Incomplete {
        /// `head`, `body` or `chunked body`.
        part: &'static str,
    },
    /// The request line or a header does not parse.
    #[error("not an HTTP/1.x request head: {0}")]
    Head(String),
    /// The head is longer than [`Limits::max_head`].
    #[error("request head longer than {max} bytes")]
    HeadTooLong {
        /// The limit.
        max: usize,
    },
    /// More header fields than [`Limits::max_headers`].
    #[error("more than {max} header fields")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// A header name that is not UTF-8 (httparse accepts only tokens, so this is a guard).
    #[error("header name is not text")]
    HeaderName,
    /// The body's length cannot be known (RFC 9112 §6.3).
    #[error("body length: {0}")]
    Length(String),
    /// A chunk of a chunked body is malformed.
    #[error("chunked body: {0}")]
    Chunk(String),
}

/// Most header slots kept on the stack (the default bound, 100, fits).
const STACK_HEADERS: usize = 128;

/// Parses the request at the start of `buf`: the request and the bytes it took.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<(HttpRequest, usize), RawError> {
    // Header slots on the stack for the usual bound (one heap allocation per parse otherwise:
    // a stream reader parses again at every segment of a request that spans several).
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let n = limits.max_headers.max(1);
    let fields = if n <= STACK_HEADERS {
        &mut stack[..n]
    } else {
        heap.resize(n, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(if buf.len() > limits.max_head {
                RawError::HeadTooLong {
                    max: limits.max_head,
                }
            } else {
                RawError::Incomplete { part: "head" }
            })
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RawError::TooManyHeaders {
                max: limits.max_headers,
            })
        }
        Err(e) => return Err(RawError::Head(e.to_string())),
    };
    if head_len > limits.max_head {
        return Err(RawError::HeadTooLong {
            max: limits.max_head,
        });
    }
    let mut out = HttpRequest {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        minor_version: req.version,
        ..HttpRequest::default()
    };
    for h in req.headers.iter() {
        out.headers.push((h.name.to_string(), h.value.to_vec()));
    }
    let rest = &buf[head_len..];
    let body_len = match framing(&out)? {
        Framing::None => 0,
        Framing::Length(n) => {
            let n = usize::try_from(n)
                .map_err(|_| RawError::Length(format!("Content-Length {n} is too large")))?;
            let body = rest.get(..n).ok_or(RawError::Incomplete { part: "body" })?;
            keep(&mut out, body, limits.max_body);
            n
        }
        Framing::Chunked => dechunk(rest, &mut out, limits)?,
    };
    Ok((out, head_len + body_len))
}

/// How a request's body is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// RFC 9112 §6.3 for requests: Transfer-Encoding ending in chunked wins over Content-Length;
/// another transfer coding, or Content-Length values that disagree or are not digits, leave the
/// length unknown, which is an error.
fn framing(r: &HttpRequest) -> Result<Framing, RawError> {
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for (name, value) in &r.headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            let text = String::from_utf8_lossy(value);
            let last = text.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(|&b| b == b',') {
                let t = part.trim_ascii();
                if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
                    return Err(RawError::Length(format!(
                        "Content-Length {:?} is not a number",
                        String::from_utf8_lossy(value)
                    )));
                }
                let n = std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| RawError::Length("Content-Length is too large".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(RawError::Length(
                        "Content-Length values disagree".to_string(),
                    ));
                }
                length = Some(n);
            }
        }
    }
    match (chunked, length) {
        (Some(true), _) => Ok(Framing::Chunked),
        (Some(false), _) => Err(RawError::Length(
            "a transfer coding other than chunked ends the request's Transfer-Encoding".into(),
        )),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::None),
    }
}

/// Appends what fits under `max` of `bytes` to the body.
fn keep(r: &mut HttpRequest, bytes: &[u8], max: usize) {
    let room = max.saturating_sub(r.body.len());
    if bytes.len() > room {
        r.body_truncated = true;
    }
    r.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Decodes a chunked body at the start of `buf` into `r.body`; returns the bytes it took
/// (chunks, the last chunk and the trailer section).
fn dechunk(buf: &[u8], r: &mut HttpRequest, limits: &Limits) -> Result<usize, RawError> {
    let mut at = 0;
    loop {
        let (line, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => {
                return Err(RawError::Incomplete {
                    part: "chunked body",
                })
            }
            Err(_) => return Err(RawError::Chunk("a chunk size is not hexadecimal".into())),
        };
        at += line;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size)
            .map_err(|_| RawError::Chunk(format!("chunk of {size} bytes is too large")))?;
        let end = at
            .checked_add(size)
            .ok_or_else(|| RawError::Chunk("chunk size overflows".into()))?;
        let data = buf.get(at..end).ok_or(RawError::Incomplete {
            part: "chunked body",
        })?;
        keep(r, data, limits.max_body);
        at = end;
        match buf.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Err(RawError::Chunk("chunk data not followed by CRLF".into())),
            None => {
                return Err(RawError::Incomplete {
                    part: "chunked body",
                })
            }
        }
    }
    // The trailer section: fields up to an empty line, bounded like a head.
    let start = at;
    loop {
        let rest = &buf[at..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(if at - start > limits.max_head {
                RawError::HeadTooLong {
                    max: limits.max_head,
                }
            } else {
                RawError::Incomplete {
                    part: "chunked body",
                }
            });
        };
        let line = &rest[..nl];
        at += nl + 1;
        if at - start > limits.max_head {
            return Err(RawError::HeadTooLong {
                max: limits.max_head,
            });
        }
        if line.is_empty() || line == b"\r" {
            return Ok(at);
        }
    }
}

/// The requests one after another in `buf` (a request file, or a connection's client bytes): each
/// with the byte range it took. Blank lines between requests are skipped. After an error the
/// framing is lost, so the iterator yields that error and ends; a cut-short last request is
/// [`RawError::Incomplete`].
pub fn requests<'a>(buf: &'a [u8], limits: &'a Limits) -> Requests<'a> {
    Requests {
        buf,
        at: 0,
        limits,
        done: false,
    }
}

/// Iterator of [`requests`].
#[derive(Debug)]
pub struct Requests<'a> {
    buf: &'a [u8],
    at: usize,
    limits: &'a Limits,
    done: bool,
}

impl Iterator for Requests<'_> {
    type Item = Result<(HttpRequest, std::ops::Range<usize>), RawError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self
            .buf
            .get(self.at)
            .is_some_and(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        {
            self.at += 1;
        }
        if self.at >= self.buf.len() {
            self.done = true;
            return None;
        }
        match parse_request(&self.buf[self.at..], self.limits) {
            Ok((r, n)) => {
                let range = self.at..self.at + n;
                self.at += n;
                Some(Ok((r, range)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<(HttpRequest, usize), RawError> {
        parse_request(bytes, &Limits::default())
    }

    #[test]
    fn a_get_and_a_post_with_a_length() {
        let get = b"GET /index.php?id=1%27%20OR%201=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: sqlmap/1.8\r\n\r\n";
        let (r, n) = one(get).expect("get");
        assert_eq!(n, get.len());
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/index.php?id=1%27%20OR%201=1");
        assert_eq!(r.minor_version, Some(1));
        assert_eq!(r.host().as_deref(), Some("shop.test"));
        assert_eq!(r.user_agent().as_deref(), Some("sqlmap/1.8"));
        assert!(r.body.is_empty());

        let post = b"POST /login HTTP/1.0\r\nContent-Length: 11\r\n\r\nuser=a&pw=bEXTRA";
        let (r, n) = one(post).expect("post");
        assert_eq!(r.body, b"user=a&pw=b");
        assert_eq!(n, post.len() - 5, "the bytes after the body are not taken");
        assert_eq!(r.minor_version, Some(0));
    }

    #[test]
    fn a_chunked_body_is_decoded_and_its_trailers_taken() {
        let msg = b"POST /api HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nGET";
        let (r, n) = one(msg).expect("chunked");
        assert_eq!(r.body, b"Wikipedia");
        assert_eq!(&msg[n..], b"GET");
    }

    #[test]
    fn bodies_over_the_cap_are_cut_and_framed() {
        let limits = Limits {
            max_body: 4,
            ..Limits::default()
        };
        let msg = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
        let (r, n) = parse_request(msg, &limits).expect("post");
        assert_eq!(
            (r.body.as_slice(), r.body_truncated, n),
            (&b"0123"[..], true, msg.len())
        );
        let msg = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        let (r, n) = parse_request(msg, &limits).expect("chunked");
        assert_eq!(
            (r.body.as_slice(), r.body_truncated, n),
            (&b"abcd"[..], true, msg.len())
        );
    }

    #[test]
    fn cut_short_messages_are_incomplete_not_errors_of_form() {
        let msg = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde";
        for cut in 0..msg.len() {
            assert!(
                matches!(one(&msg[..cut]), Err(RawError::Incomplete { .. })),
                "cut at {cut}: {:?}",
                one(&msg[..cut])
            );
        }
        let msg = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 0..msg.len() {
            assert!(
                matches!(one(&msg[..cut]), Err(RawError::Incomplete { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn unknowable_lengths_and_bad_heads_are_errors() {
        let cases: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nabcdef",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for c in cases {
            let r = one(c);
            assert!(
                r.is_err() && !matches!(r, Err(RawError::Incomplete { .. })),
                "{:?}: {r:?}",
                String::from_utf8_lossy(c)
            );
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let msg = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            one(msg.as_bytes()).err(),
            Some(RawError::TooManyHeaders { max: 100 })
        );
        // Past the stack slots, the bound still holds both ways.
        for (max, ok) in [(STACK_HEADERS + 72, true), (STACK_HEADERS + 1, false)] {
            let many: String = (0..STACK_HEADERS + 50)
                .map(|i| format!("X-{i}: v\r\n"))
                .collect();
            let msg = format!("GET / HTTP/1.1\r\n{many}\r\n");
            let limits = Limits {
                max_headers: max,
                ..Limits::default()
            };
            let got = parse_request(msg.as_bytes(), &limits);
            if ok {
                assert_eq!(got.expect("fits").0.headers.len(), STACK_HEADERS + 50);
            } else {
                assert_eq!(got.err(), Some(RawError::TooManyHeaders { max }));
            }
        }
        let limits = Limits {
            max_head: 32,
            ..Limits::default()
        };
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(64));
        assert_eq!(
            parse_request(long.as_bytes(), &limits).err(),
            Some(RawError::HeadTooLong { max: 32 })
        );
    }

    #[test]
    fn a_file_of_requests_is_split_and_ends_at_its_first_error() {
        let limits = Limits::default();
        let file = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\r\n\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok\r\n\r\nGET /c HTT";
        let got: Vec<_> = requests(file, &limits).collect();
        assert_eq!(got.len(), 3);
        let (a, ra) = got[0].as_ref().expect("a");
        assert_eq!((a.target.as_str(), ra.start), ("/a", 0));
        let (b, rb) = got[1].as_ref().expect("b");
        assert_eq!((b.target.as_str(), b.body.as_slice()), ("/b", &b"ok"[..]));
        assert_eq!(&file[rb.clone()][..4], b"POST");
        assert!(matches!(got[2], Err(RawError::Incomplete { part: "head" })));
    }
}
