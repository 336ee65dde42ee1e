//! Fuzz target: arbitrary bytes as a payload-family CSV (`data/http/payloads.csv.gz` decompressed):
//! rows or an error naming a line, never a panic; every row has a family.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_http::payloads::read_payloads;

fuzz_target!(|data: &[u8]| {
    if let Ok(rows) = read_payloads(data, "fuzz") {
        assert!(rows.iter().all(|p| !p.family.is_empty()));
    }
});
