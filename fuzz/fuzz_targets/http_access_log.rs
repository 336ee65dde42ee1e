//! Fuzz target: arbitrary bytes as a web-server access log, read with skips counted and a small
//! line limit. Every line is an entry, a skip or ignored (blank); nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_http::access_log::AccessLogReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = AccessLogReader::new(data, "fuzz.log", true).with_max_line(512);
    let entries = reader.by_ref().filter(Result::is_ok).count() as u64;
    assert!(entries + reader.skips().total() <= reader.lines());
});
