//! Invariants of the request readers: what a server would write (a log line, a request on the
//! wire) reads back as it was; any cut of a request is "incomplete", never another request; any
//! bytes at all give an entry, a request or an error, never a panic, and never claim more bytes
//! than they were given; a request file read in pieces gives what the whole bytes give.

use metaids_core::time::civil_from_days;
use metaids_http::access_log::{parse_line, AccessLogReader, MONTHS};
use metaids_http::raw::{parse_request, requests, Limits, RawError};
use metaids_http::request_file::RequestFileReader;
use proptest::prelude::*;

/// A quoted log field as nginx escapes it: `"` and `\` and bytes outside printable ASCII as \xHH.
fn escape(s: &[u8]) -> String {
    let mut out = String::new();
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Seconds since the epoch → `dd/Mon/yyyy:hh:mm:ss +0000` (the inverse of the reader's parse).
fn log_time(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let secs = t.rem_euclid(86_400);
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn token() -> impl Strategy<Value = String> {
    "[A-Z]{1,8}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_logged_request_reads_back(
        remote in "[0-9a-f:.]{1,39}",
        user in proptest::option::of("[a-z]{1,8}"),
        time in 0i64..4_102_444_800,
        method in token(),
        target in proptest::collection::vec(0u8..0x7f, 1..200),
        minor in 0u8..2,
        status in 100u16..600,
        bytes in proptest::option::of(0u64..u64::MAX),
        referer in proptest::option::of(proptest::collection::vec(0x20u8..0x7f, 1..80)),
        agent in proptest::option::of(proptest::collection::vec(0u8..0x7f, 1..120)),
    ) {
        prop_assume!(target.first() != Some(&b' ') && target != b"-");
        prop_assume!(referer.as_deref() != Some(b"-") && agent.as_deref() != Some(b"-"));
        let dash = |v: &Option<Vec<u8>>| v.as_deref().map_or("-".to_string(), escape);
        let line = format!(
            "{remote} - {} [{}] \"{method} {} HTTP/1.{minor}\" {status} {} \"{}\" \"{}\"",
            user.as_deref().unwrap_or("-"),
            log_time(time),
            escape(&target),
            bytes.map_or("-".to_string(), |b| b.to_string()),
            dash(&referer),
            dash(&agent),
        );
        let e = parse_line(line.as_bytes()).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
        prop_assert_eq!(e.remote, remote);
        prop_assert_eq!(e.user, user);
        prop_assert_eq!(e.time, time);
        prop_assert_eq!(e.method, method);
        prop_assert_eq!(e.target.as_bytes(), target.as_slice());
        prop_assert_eq!(e.protocol, format!("HTTP/1.{minor}"));
        prop_assert_eq!((e.status, e.bytes), (status, bytes));
        prop_assert_eq!(e.referer.map(String::into_bytes), referer);
        prop_assert_eq!(e.user_agent.map(String::into_bytes), agent);
    }

    #[test]
    fn any_line_is_an_entry_or_a_named_error(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_line(&line) {
            prop_assert!(!e.field.is_empty() && !e.message.is_empty());
        }
    }

    #[test]
    fn a_skipping_reader_takes_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        max_line in 1usize..300,
    ) {
        let mut r = AccessLogReader::new(bytes.as_slice(), "fuzz.log", true).with_max_line(max_line);
        let entries = r.by_ref().filter(Result::is_ok).count() as u64;
        let lines = bytes.split(|&b| b == b'\n').count() as u64;
        prop_assert!(r.lines() <= lines);
        prop_assert!(entries + r.skips().total() <= r.lines());
    }

    #[test]
    fn a_request_reads_back_and_every_cut_is_incomplete(
        method in token(),
        target in "/[!-~]{0,80}",
        headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        chunks in proptest::collection::vec(1usize..64, 0..10),
        chunked in any::<bool>(),
    ) {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("transfer-encoding")
            })
            .map(|(n, v)| (n, v.trim().to_string()))
            .collect();
        let mut msg = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        for (n, v) in &headers {
            msg.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if chunked {
            msg.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body.as_slice();
            let mut sizes = chunks.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&17)).min(rest.len());
                msg.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                msg.extend_from_slice(&rest[..n]);
                msg.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            msg.extend_from_slice(b"0\r\n\r\n");
        } else {
            msg.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            msg.extend_from_slice(&body);
        }
        let limits = Limits::default();
        let (r, n) = parse_request(&msg, &limits).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(n, msg.len());
        prop_assert_eq!(&r.method, &method);
        prop_assert_eq!(&r.target, &target);
        prop_assert_eq!(&r.body, &body);
        prop_assert!(!r.body_truncated);
        for (n, v) in &headers {
            prop_assert!(r.headers.iter().any(|(h, x)| h == n && x == v.as_bytes()));
        }
        for cut in (0..msg.len()).step_by(7) {
            let got = parse_request(&msg[..cut], &limits);
            prop_assert!(matches!(got, Err(RawError::Incomplete { .. })), "cut {}: {:?}", cut, got);
        }
    }

    #[test]
    fn any_bytes_are_requests_or_an_error_within_bounds(
        bytes in proptest::collection::vec(any::<u8>(), 0..1000),
        max_body in 0usize..64,
    ) {
        let limits = Limits { max_body, ..Limits::default() };
        let mut end = 0;
        for got in requests(&bytes, &limits) {
            match got {
                Ok((r, range)) => {
                    prop_assert!(range.start >= end && range.end <= bytes.len() && range.start < range.end);
                    prop_assert!(r.body.len() <= max_body);
                    end = range.end;
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn the_file_reader_reads_what_the_in_memory_parser_reads(
        bytes in proptest::collection::vec(prop_oneof![
            Just(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
            Just(b"POST /p HTTP/1.1\nContent-Length: 3\n\nabc\n\n".to_vec()),
            Just(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n".to_vec()),
            Just(b"\n\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ], 0..12).prop_map(|parts| parts.concat()),
        capacity in 1usize..40,
        max_body in 0usize..8,
    ) {
        let limits = Limits { max_body, ..Limits::default() };
        let mut memory = Vec::new();
        let mut memory_failed = false;
        for got in requests(&bytes, &limits) {
            match got {
                Ok((r, range)) => memory.push((r, range.start as u64)),
                Err(_) => memory_failed = true,
            }
        }
        let source = std::io::BufReader::with_capacity(capacity, bytes.as_slice());
        let mut file = Vec::new();
        let mut file_failed = false;
        for got in RequestFileReader::new(source, "p", limits, false) {
            match got {
                Ok(r) => file.push((r.request, r.offset)),
                Err(_) => file_failed = true,
            }
        }
        prop_assert_eq!(file, memory);
        prop_assert_eq!(file_failed, memory_failed);
    }

    #[test]
    fn a_skipping_file_reader_takes_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        capacity in 1usize..64,
    ) {
        let limits = Limits { max_head: 64, max_headers: 8, max_body: 16 };
        let source = std::io::BufReader::with_capacity(capacity, bytes.as_slice());
        let mut reader = RequestFileReader::new(source, "p", limits, true);
        let mut last = None;
        for got in reader.by_ref() {
            let r = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(last.is_none_or(|o| r.offset > o));
            prop_assert!(r.request.body.len() <= 16);
            last = Some(r.offset);
        }
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        prop_assert!(reader.skips().lines_dropped <= lines);
    }
}
