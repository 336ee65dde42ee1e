//! Fuzz target: arbitrary bytes as a flow record message of the wire format (what a worker reads
//! from the flows topic). A message that decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_flow::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = wire::decode(data) {
        assert_eq!(wire::encode(&record), data);
    }
});
