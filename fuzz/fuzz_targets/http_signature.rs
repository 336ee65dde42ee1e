//! Fuzz target: arbitrary bytes through libinjection's SQLi and XSS signatures
//! (`metaids_http::signature`, a Rust port run on untrusted payload text). The port must answer
//! every input without panicking: a caught panic (`failed`) is a finding here.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = metaids_http::signature::libinjection(data);
    assert!(!s.failed, "libinjection panicked");
});
