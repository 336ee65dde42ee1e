//! Fuzz target: arbitrary bytes as frames of every link type the decoder knows, decoded and
//! pushed through a flow engine. Input: a sequence of `[link selector, time step, length,
//! frame bytes...]` records. It does not exercise the capture reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_flow::{decode, FlowConfig, FlowEngine, LinkType};

const LINKS: [LinkType; 11] = [
    LinkType::NULL,
    LinkType::ETHERNET,
    LinkType::RAW_BSD12,
    LinkType::RAW_BSD14,
    LinkType::RAW,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL2,
    LinkType(147), // a user link type: unsupported
];

fuzz_target!(|data: &[u8]| {
    let config = FlowConfig {
        max_flows: 4,
        flow_timeout_us: 1_000_000,
        activity_timeout_us: 10_000,
        idle_timeout_us: 300_000,
        min_packets: 1,
    };
    let Ok(mut engine) = FlowEngine::new(config) else {
        return;
    };
    let mut rest = data;
    let mut ts: i64 = 1_600_000_000_000_000;
    while rest.len() >= 3 {
        let link = LINKS[usize::from(rest[0]) % LINKS.len()];
        // Steps of up to ~0.5 s, sometimes backwards (out-of-order timestamps).
        ts += (i64::from(rest[1]) - 16) * 4_000;
        let len = usize::from(rest[2]).min(rest.len() - 3);
        let frame = &rest[3..3 + len];
        let _ = decode(link, frame);
        for flow in engine.push_packet(link, ts, frame) {
            let _ = flow.flow_id();
        }
        rest = &rest[3 + len..];
    }
    // A whole input as one frame of each link type, too.
    for link in LINKS {
        let _ = decode(link, data);
    }
    for flow in engine.finish() {
        let _ = flow.timestamp();
    }
});
