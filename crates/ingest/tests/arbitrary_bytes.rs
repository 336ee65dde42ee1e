//! Arbitrary bytes never make the readers panic: every format, every malformed-row policy.

use metaids_core::schema::{cic_improved_header, FileFormat};
use metaids_core::FlowFrame;
use metaids_ingest::{read_from, BadRowPolicy, SkipLog};
use proptest::prelude::*;

fn read_all(bytes: &[u8]) {
    for format in FileFormat::ALL {
        for policy in [BadRowPolicy::Error, BadRowPolicy::Skip] {
            let mut frame = FlowFrame::new(format.kind().layout());
            let mut skips = SkipLog::default();
            let result = read_from(&mut frame, bytes, "fuzz", format, policy, &mut skips);
            if let Ok((rows, skipped)) = result {
                assert_eq!(rows, frame.len());
                assert_eq!(skipped, skips.skipped);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        read_all(&bytes);
    }

    #[test]
    fn mutated_valid_cic_file(cut in 0usize..3000, flips in proptest::collection::vec((0usize..3000, any::<u8>()), 0..8)) {
        let header = cic_improved_header().join(",");
        let row: Vec<String> = (0..91).map(|i| if i == 89 { "BENIGN".to_string() } else { i.to_string() }).collect();
        let mut bytes = format!("{header}\n{}\n{}\n", row.join(","), row.join(",")).into_bytes();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        bytes.truncate(cut.min(bytes.len()));
        read_all(&bytes);
    }
}
