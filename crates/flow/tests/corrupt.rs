//! A generated corpus of corrupt captures: each must give an error or counted skips, never a
//! panic or an unbounded allocation.

mod common;

use common::*;
use metaids_flow::{
    extract_csv, CaptureReader, FlowConfig, FlowEngine, FlowError, LinkType, ReaderConfig,
    SkipReason,
};

fn frames() -> Vec<(i64, Vec<u8>)> {
    vec![
        (1_000_000, tcp(C, S, 40000, 80, "S", 8192, &[])),
        (1_000_100, tcp(S, C, 80, 40000, "SA", 29200, &[])),
        (1_000_200, tcp(C, S, 40000, 80, "PA", 8000, &[1u8; 300])),
        (1_000_300, udp(C, S, 5, 6, &[2u8; 50])),
    ]
}

/// Reads everything; returns (packets, error).
fn drain(bytes: &[u8]) -> (u64, Option<FlowError>) {
    let mut reader = match CaptureReader::new(bytes, ReaderConfig::default()) {
        Ok(r) => r,
        Err(e) => return (0, Some(e)),
    };
    let mut engine = FlowEngine::new(FlowConfig::default()).expect("config");
    let mut n = 0;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                n += 1;
                engine
                    .push_packet(p.link_type, p.ts_us, p.data)
                    .for_each(drop);
            }
            Ok(None) => return (n, None),
            Err(e) => return (n, Some(e)),
        }
    }
}

#[test]
fn every_cut_point_is_an_error_or_a_clean_prefix() {
    for cap in [
        pcap(&frames(), 1, false, false),
        pcapng(
            &[(1, 6)],
            &frames()
                .into_iter()
                .map(|(t, f)| (0, t, f))
                .collect::<Vec<_>>(),
        ),
    ] {
        for cut in 0..cap.len() {
            let (n, err) = drain(&cap[..cut]);
            assert!(n <= 4);
            if let Some(e) = err {
                assert!(
                    matches!(
                        e,
                        FlowError::Truncated { .. }
                            | FlowError::TooShort { .. }
                            | FlowError::Malformed { .. }
                    ),
                    "cut {cut}: {e}"
                );
            }
        }
        let (n, err) = drain(&cap);
        assert!(n == 4 && err.is_none(), "{n} {err:?}");
    }
}

#[test]
fn bad_magic() {
    let mut cap = pcap(&frames(), 1, false, false);
    cap[0] = 0x00;
    assert!(matches!(drain(&cap).1, Some(FlowError::BadMagic { .. })));
    assert!(matches!(
        drain(b"GET / HTTP/1.1\r\n").1,
        Some(FlowError::BadMagic { .. })
    ));
    assert!(matches!(drain(b"").1, Some(FlowError::TooShort { .. })));
}

#[test]
fn absurd_record_lengths_are_errors_not_allocations() {
    let mut cap = pcap(&frames(), 1, false, false);
    // caplen of the first record (offset 24 + 8).
    cap[32..36].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let (n, err) = drain(&cap);
    assert_eq!(n, 0);
    assert!(
        matches!(err, Some(FlowError::RecordTooLarge { len, .. }) if len > 1 << 31),
        "{err:?}"
    );

    let ng = pcapng(&[(1, 6)], &[(0, 1, frames()[0].1.clone())]);
    let mut bad = ng.clone();
    let epb = 28 + 32; // after the 28-byte SHB and the 32-byte IDB
    bad[epb + 4..epb + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let (_, err) = drain(&bad);
    assert!(
        matches!(
            err,
            Some(FlowError::RecordTooLarge { .. } | FlowError::Malformed { .. })
        ),
        "{err:?}"
    );

    // A large but allowed record (200 KiB) grows the buffer and is read.
    let big = vec![(5, vec![0u8; 200 * 1024])];
    let (n, err) = drain(&pcap(&big, 1, false, false));
    assert!(n == 1 && err.is_none(), "{n} {err:?}");
}

#[test]
fn unknown_link_type_is_a_counted_skip() {
    let cap = pcap(&frames(), 9999, false, false);
    let report = extract_csv(
        &cap[..],
        Vec::new(),
        ReaderConfig::default(),
        FlowConfig::default(),
        None,
    )
    .expect("ok");
    assert_eq!(report.rows, 0);
    assert_eq!(
        report.engine.skipped_for(SkipReason::UnsupportedLinkType),
        4
    );
}

#[test]
fn garbage_frames_are_counted_skips() {
    let mut engine = FlowEngine::new(FlowConfig::default()).expect("config");
    for len in 0..80 {
        let frame: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        for link in [
            LinkType::ETHERNET,
            LinkType::RAW,
            LinkType::LINUX_SLL,
            LinkType::LINUX_SLL2,
            LinkType::NULL,
        ] {
            engine.push_packet(link, len as i64, &frame).for_each(drop);
        }
    }
    let s = engine.stats();
    assert_eq!(s.packets, 400);
    assert_eq!(s.decoded + s.skipped_total(), 400);
}

#[test]
fn random_mutations_never_panic() {
    let bases = [
        pcap(&frames(), 1, false, false),
        pcap(&frames(), 1, true, true),
        pcapng(
            &[(1, 6), (101, 9)],
            &frames()
                .into_iter()
                .map(|(t, f)| (0, t, f))
                .collect::<Vec<_>>(),
        ),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for base in &bases {
        for _ in 0..700 {
            let mut cap = base.clone();
            for _ in 0..(1 + rnd() % 4) {
                let i = (rnd() as usize) % cap.len();
                cap[i] = rnd() as u8;
            }
            if rnd() % 4 == 0 {
                let cut = (rnd() as usize) % cap.len();
                cap.truncate(cut);
            }
            let _ = drain(&cap);
        }
    }
}

/// Offset of the first interface's `if_tsresol` byte in a [`pcapng`] capture: a 28-byte section
/// header, then the interface block's 8-byte header, 8 bytes of link type, reserved and snap
/// length, and the option's 4-byte code and length.
const FIRST_TSRESOL: usize = 28 + 8 + 8 + 4;

/// Timestamps and reader counters of every packet.
fn timestamps(bytes: &[u8]) -> (Vec<i64>, metaids_flow::ReaderStats) {
    let mut reader = CaptureReader::new(bytes, ReaderConfig::default()).expect("header");
    let mut ts = Vec::new();
    while let Some(p) = reader.next_packet().expect("packet") {
        ts.push(p.ts_us);
    }
    (ts, reader.stats())
}

#[test]
fn an_invalid_tsresol_is_counted_and_read_as_microseconds_not_wrapped() {
    let ts_us = 1_499_435_976_267_908i64; // 2017-07-07
    let mut ng = pcapng(&[(1, 6)], &[(0, ts_us, frames()[0].1.clone())]);
    assert_eq!(ng[FIRST_TSRESOL], 6);
    // 10^-127 s per unit: outside 1 s .. 1 ns, and 10^127 overflows 64 bits.
    ng[FIRST_TSRESOL] = 127;
    let (ts, stats) = timestamps(&ng);
    assert_eq!(ts, vec![ts_us]);
    assert_eq!(stats.bad_tsresol, 1);
    assert!(stats.warnings().iter().any(|w| w.contains("if_tsresol")));
}

#[test]
fn a_binary_tsresol_is_decoded() {
    let raw = 3_000_000u64 << 20; // 3,000,000 s at 2^-20 s per unit
    let mut ng = pcapng(&[(1, 6)], &[(0, raw as i64, frames()[0].1.clone())]);
    ng[FIRST_TSRESOL] = 0x80 | 20;
    let (ts, stats) = timestamps(&ng);
    assert_eq!(ts, vec![3_000_000 * 1_000_000]);
    assert_eq!(stats.bad_tsresol, 0);
    assert_eq!(
        metaids_flow::capture::units_per_second(0x80 | 20),
        Some(1 << 20)
    );
    assert_eq!(metaids_flow::capture::units_per_second(0x80 | 31), None);
    assert_eq!(
        metaids_flow::capture::units_per_second(9),
        Some(1_000_000_000)
    );
    assert_eq!(metaids_flow::capture::units_per_second(10), None);
}

#[test]
fn timestamps_past_year_9999_are_clamped_and_counted() {
    let late = metaids_flow::capture::MAX_TIMESTAMP_US + 1_000_000;
    let ng = pcapng(
        &[(1, 6)],
        &[
            (0, 1_000_000, frames()[0].1.clone()),
            (0, late, frames()[1].1.clone()),
        ],
    );
    let (ts, stats) = timestamps(&ng);
    assert_eq!(ts, vec![1_000_000, metaids_flow::capture::MAX_TIMESTAMP_US]);
    assert_eq!(stats.timestamp_out_of_range, 1);
}

#[test]
fn a_packet_of_a_missing_interface_is_counted_and_every_counter_printed() {
    // The packet names interface 1; only interface 0 is described.
    let mut ng = pcapng(&[(1, 6)], &[(0, 1_000_000, frames()[0].1.clone())]);
    let extra = pcapng(&[(1, 6), (1, 6)], &[(1, 2_000_000, frames()[1].1.clone())]);
    // Append the second capture's packet block only (its last block).
    let epb_len = 12 + 20 + frames()[1].1.len().div_ceil(4) * 4;
    ng.extend_from_slice(&extra[extra.len() - epb_len..]);
    let (ts, stats) = timestamps(&ng);
    assert_eq!(ts, vec![1_000_000]);
    assert_eq!(stats.unknown_interface, 1);
    let s = metaids_flow::output::capture_summary(&Default::default(), &stats);
    for name in [
        "reader_unknown_interface 1",
        "reader_bad_tsresol 0",
        "reader_other_blocks 0",
        "reader_timestamp_out_of_range 0",
    ] {
        assert!(s.lines().any(|l| l == name), "{name} not in\n{s}");
    }
}

#[test]
fn a_parse_error_names_the_block_without_dumping_its_bytes() {
    let mut ng = pcapng(&[(1, 6)], &[(0, 1_000_000, vec![0x41; 60_000])]);
    // Break the packet block's trailing length so the block does not parse.
    let n = ng.len();
    ng[n - 4..].copy_from_slice(&7u32.to_le_bytes());
    let (_, err) = drain(&ng);
    let msg = err.expect("an error").to_string();
    assert!(
        msg.len() < 300,
        "{} bytes: {}",
        msg.len(),
        &msg[..300.min(msg.len())]
    );
    assert!(!msg.contains("4141"), "{msg}");
}
