//! Fuzz target: arbitrary bytes as a labelled-flow dataset file, read in every format and with both
//! malformed-row policies. It does not exercise gzip or the file system.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_core::schema::FileFormat;
use metaids_core::FlowFrame;
use metaids_ingest::{read_from, BadRowPolicy, SkipLog};

fuzz_target!(|data: &[u8]| {
    // The format the reader would detect, then every format forced.
    let detected = FileFormat::detect(data.split(|&b| b == b'\n').next().unwrap_or_default());
    for format in detected.into_iter().chain(FileFormat::ALL) {
        for policy in [BadRowPolicy::Error, BadRowPolicy::Skip] {
            let mut frame = FlowFrame::new(format.kind().layout());
            let mut skips = SkipLog::default();
            if let Ok((rows, _)) = read_from(&mut frame, data, "fuzz", format, policy, &mut skips) {
                assert_eq!(rows, frame.len());
                for r in 0..frame.len() {
                    let _ = frame.identifiers(r);
                    assert_eq!(frame.numeric_row(r).len(), frame.layout.numeric.len());
                }
            }
        }
    }
});
