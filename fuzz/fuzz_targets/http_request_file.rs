//! Fuzz target: arbitrary bytes as a file of raw requests, read in small pieces by the skipping
//! reader (the first byte picks the read size). Offsets only go forward, bodies stay within the
//! cap, memory stays within the reader's bound, nothing panics; the failing reader stops at its
//! first error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_http::raw::Limits;
use metaids_http::request_file::RequestFileReader;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head: 512,
        max_headers: 16,
        max_body: 128,
    };
    for skip_bad in [true, false] {
        let source = std::io::BufReader::with_capacity(usize::from(first % 32) + 1, bytes);
        let mut last = None;
        let mut errors = 0;
        for got in RequestFileReader::new(source, "fuzz", limits, skip_bad) {
            match got {
                Ok(r) => {
                    assert!(last.is_none_or(|o| r.offset > o));
                    assert!(r.offset < bytes.len() as u64);
                    assert!(r.request.body.len() <= limits.max_body);
                    last = Some(r.offset);
                }
                Err(_) => errors += 1,
            }
        }
        assert!(errors <= usize::from(!skip_bad));
    }
});
