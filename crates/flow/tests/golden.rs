//! Golden tests: small hand-built captures with hand-computed features.

mod common;

use common::*;
use metaids_flow::{
    CaptureReader, CsvWriter, EndReason, FlowConfig, FlowEngine, FlowRecord, LinkType, ReaderConfig,
};

fn run(frames: &[(i64, Vec<u8>)], config: FlowConfig) -> (Vec<FlowRecord>, FlowEngine) {
    let mut engine = FlowEngine::new(config).expect("config");
    let mut out = Vec::new();
    for (ts, f) in frames {
        out.extend(engine.push_packet(LinkType::ETHERNET, *ts, f));
    }
    out.extend(engine.finish());
    (out, engine)
}

fn f(r: &FlowRecord, name: &str) -> f64 {
    r.feature(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn check(r: &FlowRecord, expected: &[(&str, f64)]) {
    for (name, want) in expected {
        let got = f(r, name);
        assert!(close(got, *want), "{name}: got {got}, want {want}");
    }
}

fn handshake_teardown() -> Vec<(i64, Vec<u8>)> {
    vec![
        (0, tcp(C, S, 40000, 80, "S", 8192, &[])),
        (100, tcp(S, C, 80, 40000, "SA", 29200, &[])),
        (200, tcp(C, S, 40000, 80, "A", 8000, &[])),
        (1000, tcp(C, S, 40000, 80, "PA", 8000, &[7u8; 100])),
        (1500, tcp(S, C, 80, 40000, "PA", 501, &[9u8; 300])),
        (2000, tcp(C, S, 40000, 80, "FA", 8000, &[])),
        (2100, tcp(S, C, 80, 40000, "FA", 502, &[])),
        (2200, tcp(C, S, 40000, 80, "A", 8000, &[])),
    ]
}

#[test]
fn tcp_handshake_and_teardown() {
    let mut frames = handshake_teardown();
    // A new connection on the same ports: the torn-down flow ends.
    frames.push((3000, tcp(C, S, 40000, 80, "S", 8192, &[])));
    let (flows, engine) = run(&frames, FlowConfig::default());
    assert_eq!(flows.len(), 2);
    let r = &flows[0];
    assert_eq!(r.end_reason, EndReason::TcpTermination);
    assert_eq!(r.flow_id(), "10.0.0.1-10.0.0.2-40000-80-6");
    assert_eq!(r.src_port, 40000);
    check(
        r,
        &[
            ("Flow Duration", 2200.0),
            ("Total Fwd Packet", 5.0),
            ("Total Bwd packets", 3.0),
            ("Total Length of Fwd Packet", 100.0),
            ("Total Length of Bwd Packet", 300.0),
            ("Fwd Packet Length Max", 100.0),
            ("Fwd Packet Length Min", 0.0),
            ("Fwd Packet Length Mean", 20.0),
            ("Fwd Packet Length Std", 2000f64.sqrt()),
            ("Bwd Packet Length Max", 300.0),
            ("Bwd Packet Length Mean", 100.0),
            ("Bwd Packet Length Std", 30000f64.sqrt()),
            ("Flow Bytes/s", 400.0 / 0.0022),
            ("Flow Packets/s", 8.0 / 0.0022),
            ("Flow IAT Mean", 2200.0 / 7.0),
            ("Flow IAT Max", 800.0),
            ("Flow IAT Min", 100.0),
            ("Fwd IAT Total", 2200.0),
            ("Fwd IAT Mean", 550.0),
            ("Fwd IAT Max", 1000.0),
            ("Fwd IAT Min", 200.0),
            ("Bwd IAT Total", 2000.0),
            ("Bwd IAT Mean", 1000.0),
            ("Bwd IAT Max", 1400.0),
            ("Bwd IAT Min", 600.0),
            ("Fwd PSH Flags", 1.0),
            ("Bwd PSH Flags", 1.0),
            ("Fwd RST Flags", 0.0),
            ("Fwd Header Length", 100.0),
            ("Bwd Header Length", 60.0),
            ("Fwd Packets/s", 5.0 / 0.0022),
            ("Bwd Packets/s", 3.0 / 0.0022),
            ("Packet Length Min", 0.0),
            ("Packet Length Max", 300.0),
            ("Packet Length Mean", 50.0),
            ("FIN Flag Count", 2.0),
            ("SYN Flag Count", 2.0),
            ("RST Flag Count", 0.0),
            ("PSH Flag Count", 2.0),
            ("ACK Flag Count", 7.0),
            ("Down/Up Ratio", 0.6),
            ("Average Packet Size", 50.0),
            ("Fwd Segment Size Avg", 20.0),
            ("Bwd Segment Size Avg", 100.0),
            ("Fwd Bytes/Bulk Avg", 0.0),
            ("Subflow Fwd Packets", 5.0 / 8.0),
            ("Subflow Fwd Bytes", 12.5),
            ("Subflow Bwd Bytes", 37.5),
            ("FWD Init Win Bytes", 8192.0),
            ("Bwd Init Win Bytes", 502.0),
            ("Fwd Act Data Pkts", 1.0),
            ("Fwd Seg Size Min", 20.0),
            ("Active Mean", 0.0),
            ("Idle Mean", 0.0),
            ("ICMP Code", -1.0),
            ("ICMP Type", -1.0),
            ("Total TCP Flow Time", 2200.0),
        ],
    );
    // Packet length variance of [0,0,0,100,300,0,0,0]: mean 50, Σd² = 6·2500 + 2500 + 62500.
    check(r, &[("Packet Length Variance", 80000.0 / 7.0)]);
    assert_eq!(flows[1].end_reason, EndReason::EndOfCapture);
    assert_eq!(engine.stats().flows_emitted, 2);
    assert_eq!(engine.stats().skipped_total(), 0);

    // CSV row: 91 columns, integer columns truncated.
    let mut csv = CsvWriter::new(Vec::new(), None).expect("header");
    csv.write(r).expect("row");
    let text = String::from_utf8(csv.finish().expect("flush")).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        metaids_core::schema::cic_improved_header().join(",")
    );
    let cols: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(cols.len(), 91);
    assert_eq!(cols[1], "10.0.0.1-10.0.0.2-40000-80-6");
    assert_eq!(cols[7], "1970-01-01 00:00:00.000000");
    assert_eq!(cols[8], "2200");
    assert_eq!(cols[15], "20.0");
    assert_eq!(cols[71], "12"); // Subflow Fwd Bytes
    assert_eq!(cols[89], "unlabelled");
    assert_eq!(cols[90], "-1");
}

#[test]
fn directions_follow_first_packet_even_when_server_speaks_first() {
    let frames = vec![
        (10, udp(S, C, 53, 5353, &[1u8; 40])),
        (20, udp(C, S, 5353, 53, &[1u8; 10])),
    ];
    let (flows, _) = run(&frames, FlowConfig::default());
    assert_eq!(flows.len(), 1);
    let r = &flows[0];
    assert_eq!(r.src_port, 53);
    check(
        r,
        &[
            ("Total Fwd Packet", 1.0),
            ("Total Bwd packets", 1.0),
            ("Total Length of Fwd Packet", 40.0),
            ("Total Length of Bwd Packet", 10.0),
            ("Fwd Header Length", 8.0),
            ("Bwd Header Length", 8.0),
            ("Total TCP Flow Time", 0.0),
            ("Flow Duration", 10.0),
        ],
    );
}

#[test]
fn rst_ends_the_connection_at_the_next_syn() {
    let frames = vec![
        (0, tcp(C, S, 40001, 23, "S", 1024, &[])),
        (50, tcp(S, C, 23, 40001, "RA", 0, &[])),
        (1_000_000, tcp(C, S, 40001, 23, "S", 1024, &[])),
    ];
    let (flows, _) = run(&frames, FlowConfig::default());
    assert_eq!(flows.len(), 2);
    let r = &flows[0];
    assert_eq!(r.end_reason, EndReason::TcpTermination);
    check(
        r,
        &[
            ("Total Fwd Packet", 1.0),
            ("Total Bwd packets", 1.0),
            ("Bwd RST Flags", 1.0),
            ("Fwd RST Flags", 0.0),
            ("RST Flag Count", 1.0),
            ("Flow Duration", 50.0),
            ("Total TCP Flow Time", 50.0),
        ],
    );
    // The SYN retry starts a fresh flow from the client.
    assert_eq!(flows[1].src_port, 40001);
    check(
        &flows[1],
        &[("Total Fwd Packet", 1.0), ("Flow Bytes/s", -1.0)],
    );
}

#[test]
fn udp_active_idle_and_flow_timeout() {
    let a = [192, 168, 1, 1];
    let b = [192, 168, 1, 2];
    let frames = vec![
        (0, udp(a, b, 1000, 2000, &[0u8; 10])),
        (1_000_000, udp(b, a, 2000, 1000, &[0u8; 20])),
        (7_000_000, udp(a, b, 1000, 2000, &[0u8; 30])),
        (130_000_000, udp(b, a, 2000, 1000, &[0u8; 40])),
    ];
    let (flows, _) = run(&frames, FlowConfig::default());
    assert_eq!(flows.len(), 2);
    let r = &flows[0];
    assert_eq!(r.end_reason, EndReason::ActiveTimeout);
    check(
        r,
        &[
            ("Flow Duration", 7_000_000.0),
            ("Active Mean", 1_000_000.0),
            ("Active Max", 1_000_000.0),
            ("Idle Mean", 6_000_000.0),
            ("Idle Min", 6_000_000.0),
            ("Total Fwd Packet", 2.0),
        ],
    );
    // Non-TCP: the next flow starts fresh, from the packet's sender.
    assert_eq!(flows[1].src_port, 2000);
    assert_eq!(flows[1].end_reason, EndReason::EndOfCapture);
}

#[test]
fn tcp_flow_timeout_keeps_direction_and_total_time() {
    let frames = vec![
        (0, tcp(C, S, 40002, 443, "S", 1000, &[])),
        (1000, tcp(S, C, 443, 40002, "SA", 2000, &[])),
        (121_000_000, tcp(S, C, 443, 40002, "PA", 2000, &[1u8; 5])),
        (121_000_500, tcp(C, S, 40002, 443, "A", 1000, &[])),
    ];
    let (flows, _) = run(&frames, FlowConfig::default());
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[0].end_reason, EndReason::ActiveTimeout);
    check(&flows[0], &[("Total TCP Flow Time", 1000.0)]);
    let r = &flows[1];
    assert_eq!(
        r.src_port, 40002,
        "continuation keeps the client as forward"
    );
    check(
        r,
        &[
            ("Total Fwd Packet", 1.0),
            ("Total Bwd packets", 1.0),
            ("Flow Duration", 500.0),
            ("Total TCP Flow Time", 121_000_500.0),
            ("FWD Init Win Bytes", 0.0),
            ("Fwd Seg Size Min", 0.0),
        ],
    );
}

#[test]
fn idle_timeout_and_eviction() {
    let a = [192, 168, 1, 1];
    let b = [192, 168, 1, 2];
    let config = FlowConfig {
        idle_timeout_us: 10_000_000,
        max_flows: 2,
        ..FlowConfig::default()
    };
    let frames = vec![
        (0, udp(a, b, 1, 2, &[])),
        (1, udp(a, b, 3, 4, &[])),
        (2, udp(a, b, 5, 6, &[])),          // evicts port 1
        (20_000_000, udp(a, b, 7, 8, &[])), // idles out 3 and 5
    ];
    let (flows, engine) = run(&frames, config);
    let reasons: Vec<(u16, EndReason)> = flows.iter().map(|r| (r.src_port, r.end_reason)).collect();
    assert_eq!(
        reasons,
        vec![
            (1, EndReason::Evicted),
            (3, EndReason::IdleTimeout),
            (5, EndReason::IdleTimeout),
            (7, EndReason::EndOfCapture)
        ]
    );
    assert_eq!(engine.stats().evictions(), 1);
    assert_eq!(engine.stats().peak_live_flows, 2);
}

#[test]
fn icmp_code_and_type() {
    let a = [172, 16, 0, 1];
    let b = [192, 168, 10, 50];
    let frames = vec![
        (0, icmp(a, b, 8, 0)),
        (10, icmp(b, a, 0, 0)), // same code: same flow
        (20, icmp(b, a, 3, 3)), // code and type differ: new flow
    ];
    let (flows, _) = run(&frames, FlowConfig::default());
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[0].end_reason, EndReason::IcmpChange);
    assert_eq!(flows[0].flow_id(), "172.16.0.1-192.168.10.50-0-0-1");
    check(
        &flows[0],
        &[
            ("ICMP Type", 8.0),
            ("ICMP Code", 0.0),
            ("Total Fwd Packet", 1.0),
            ("Total Bwd packets", 1.0),
            ("Total Length of Fwd Packet", 0.0),
            ("Fwd Header Length", 0.0),
            ("Total TCP Flow Time", 0.0),
        ],
    );
    check(&flows[1], &[("ICMP Type", 3.0), ("ICMP Code", 3.0)]);
}

#[test]
fn bulk_needs_four_data_packets_within_a_second() {
    let mut frames = vec![(0, tcp(C, S, 40003, 80, "S", 1, &[]))];
    for i in 0..5 {
        frames.push((1000 + i * 1000, tcp(C, S, 40003, 80, "PA", 1, &[0u8; 100])));
    }
    let (flows, _) = run(&frames, FlowConfig::default());
    // Bulk: packets 1..=4 start it (400 bytes over 3000 µs), the 5th extends it.
    check(
        &flows[0],
        &[
            ("Fwd Bytes/Bulk Avg", 500.0),
            ("Fwd Packet/Bulk Avg", 5.0),
            ("Fwd Bulk Rate Avg", 500.0 / 0.004),
            ("Bwd Bytes/Bulk Avg", 0.0),
        ],
    );
}

#[test]
fn every_capture_format_gives_the_same_flows() {
    let frames = handshake_teardown();
    let (expected, _) = run(&frames, FlowConfig::default());
    let as_ng: Vec<(u32, i64, Vec<u8>)> = frames
        .iter()
        .map(|(t, f)| (0, *t + 1_500_000_000_000_000, f.clone()))
        .collect();
    let shifted: Vec<(i64, Vec<u8>)> = frames
        .iter()
        .map(|(t, f)| (*t + 1_500_000_000_000_000, f.clone()))
        .collect();
    let captures = [
        pcap(&shifted, 1, false, false),
        pcap(&shifted, 1, true, false),
        pcap(&shifted, 1, false, true),
        pcap(&shifted, 1, true, true),
        pcapng(&[(1, 6)], &as_ng),
        pcapng(&[(1, 9)], &as_ng),
    ];
    for (i, cap) in captures.iter().enumerate() {
        let mut reader = CaptureReader::new(&cap[..], ReaderConfig::default()).expect("header");
        let mut engine = FlowEngine::new(FlowConfig::default()).expect("config");
        let mut got = Vec::new();
        while let Some(p) = reader.next_packet().expect("packet") {
            assert_eq!(p.link_type, LinkType::ETHERNET);
            got.extend(engine.push_packet(p.link_type, p.ts_us, p.data));
        }
        got.extend(engine.finish());
        assert_eq!(got.len(), 1, "capture {i}");
        assert_eq!(got[0].features, expected[0].features, "capture {i}");
        assert_eq!(got[0].start_us, 1_500_000_000_000_000, "capture {i}");
    }
}

#[test]
fn pcapng_interfaces_have_their_own_link_type_and_resolution() {
    // Interface 0: Ethernet, microseconds. Interface 1: raw IP, nanoseconds.
    let eth = udp(C, S, 1, 2, &[0u8; 4]);
    let raw = eth[14..].to_vec();
    let cap = pcapng(
        &[(1, 6), (101, 9)],
        &[(0, 5_000_001, eth), (1, 7_000_002, raw)],
    );
    let mut reader = CaptureReader::new(&cap[..], ReaderConfig::default()).expect("header");
    let p = reader.next_packet().expect("ok").expect("packet");
    assert_eq!(
        (p.link_type, p.ts_us, p.interface),
        (LinkType::ETHERNET, 5_000_001, 0)
    );
    let p = reader.next_packet().expect("ok").expect("packet");
    assert_eq!(
        (p.link_type, p.ts_us, p.interface),
        (LinkType::RAW, 7_000_002, 1)
    );
    let mut engine = FlowEngine::new(FlowConfig::default()).expect("config");
    assert_eq!(engine.push_packet(p.link_type, p.ts_us, p.data).count(), 0);
    assert_eq!(engine.stats().decoded, 1);
    assert!(reader.next_packet().expect("eof").is_none());
}
