//! Fuzz target: arbitrary bytes as HTTP/1.x requests one after another (a request file, a
//! connection's client bytes). Each request's range lies inside the input after the previous
//! one, its body within the cap; the values a detector scores (`params::values`) stay within
//! their bounds; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_http::params::{values, MAX_VALUES, MAX_VALUE_BYTES};
use metaids_http::raw::{requests, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 4096,
        max_headers: 32,
        max_body: 256,
    };
    let mut end = 0;
    for got in requests(data, &limits) {
        let Ok((r, range)) = got else { break };
        assert!(range.start >= end && range.start < range.end && range.end <= data.len());
        assert!(r.body.len() <= limits.max_body);
        let v = values(&r);
        assert!(v.values.len() <= MAX_VALUES);
        assert!(v.values.iter().all(|v| !v.text.is_empty() && v.text.len() <= MAX_VALUE_BYTES));
        end = range.end;
    }
});
