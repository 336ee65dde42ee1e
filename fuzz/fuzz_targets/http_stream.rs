//! Fuzz target: arbitrary bytes as a capture whose TCP segments are reassembled into HTTP
//! requests (small bounds): whatever the segments' order, overlaps or sequence numbers, nothing
//! panics, the connection table stays within its cap, and each request's body within its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_flow::{CaptureReader, ReaderConfig};
use metaids_http::raw::Limits;
use metaids_http::stream::{RequestAssembler, StreamConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(data, ReaderConfig::default()) else {
        return;
    };
    let config = StreamConfig {
        limits: Limits {
            max_head: 2048,
            max_headers: 16,
            max_body: 128,
        },
        max_buffer: 4096,
        max_pending: 4096,
        max_connections: 8,
        ..StreamConfig::default()
    };
    let mut assembler = RequestAssembler::new(config);
    let mut out = Vec::new();
    while let Ok(Some(pkt)) = reader.next_packet() {
        assembler.push(&pkt, &mut out);
        assert!(assembler.connections() <= 8);
    }
    assert!(out.iter().all(|r| r.request.body.len() <= 128));
    let _ = assembler.finish();
});
