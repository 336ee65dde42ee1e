//! Fuzz target: arbitrary bytes as a pcap/pcapng file, every packet read through the flow
//! engine and every flow written as CSV. It does not exercise live capture.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_flow::{CaptureReader, CsvWriter, FlowConfig, FlowEngine, ReaderConfig};

fuzz_target!(|data: &[u8]| {
    // Small limits so that growth paths and the record cap are reached with small inputs.
    let reader_config = ReaderConfig {
        buffer_size: 4096,
        max_record_len: 16 * 1024,
    };
    let Ok(mut reader) = CaptureReader::new(data, reader_config) else {
        return;
    };
    let flow_config = FlowConfig {
        max_flows: 8,
        flow_timeout_us: 1_000_000,
        activity_timeout_us: 10_000,
        idle_timeout_us: 500_000,
        min_packets: 1,
    };
    let Ok(mut engine) = FlowEngine::new(flow_config) else {
        return;
    };
    let Ok(mut csv) = CsvWriter::new(std::io::sink(), None) else {
        return;
    };
    while let Ok(Some(pkt)) = reader.next_packet() {
        for flow in engine.push(&pkt) {
            let _ = csv.write(&flow);
        }
    }
    for flow in engine.finish() {
        let _ = csv.write(&flow);
    }
    let _ = csv.finish();
});
