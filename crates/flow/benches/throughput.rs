//! Throughput benchmark (not a test, no criterion): packets per second through capture
//! reading + decoding + the flow table + the 81 features, on one core, on a capture file. It
//! also builds the large benchmark capture from small ones. It does not compare results with
//! other tools (see `scripts/bench-flows.sh`).
//!
//! ```text
//! throughput make OUT.pcap COPIES IN.pcap...   # COPIES time-shifted, address-rewritten copies
//! throughput run FILE [--csv]                  # read FILE, print the figures
//! ```
//! Under `cargo bench -p metaids-flow --bench throughput -- ARGS` (cargo adds `--bench`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use metaids_flow::{
    for_each_flow, CaptureReader, CaptureSource, CsvWriter, FlowConfig, LinkType, ReaderConfig,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Frame {
    ts_us: i64,
    data: Vec<u8>,
    orig_len: u32,
}

/// Reads every Ethernet frame of the inputs, one file after the other on a common timeline
/// (each file starts 1 s after the previous one ended).
fn load(inputs: &[String]) -> Res<Vec<Frame>> {
    let mut frames = Vec::new();
    let mut offset = 0i64;
    for path in inputs {
        let mut reader =
            CaptureReader::new(BufReader::new(File::open(path)?), ReaderConfig::default())?;
        let (mut first, mut last) = (None, 0i64);
        while let Ok(Some(p)) = reader.next_packet() {
            if p.link_type != LinkType::ETHERNET {
                continue;
            }
            let t0 = *first.get_or_insert(p.ts_us);
            let ts = offset + (p.ts_us - t0).max(0);
            last = last.max(ts);
            frames.push(Frame {
                ts_us: ts,
                data: p.data.to_vec(),
                orig_len: p.orig_len,
            });
        }
        offset = last + 1_000_000;
    }
    frames.sort_by_key(|f| f.ts_us);
    Ok(frames)
}

/// XORs octets 1 and 2 of both IPv4 addresses with `k` (a bijection, so flows stay paired and
/// copies never collide) and fixes the header checksum.
fn rewrite(frame: &mut [u8], k: u16) {
    let mut off = 12;
    while frame.len() >= off + 2
        && matches!([frame[off], frame[off + 1]], [0x81, 0x00] | [0x88, 0xa8])
    {
        off += 4;
    }
    if frame.len() < off + 2 || [frame[off], frame[off + 1]] != [0x08, 0x00] {
        return;
    }
    let ip = off + 2;
    let Some(&vihl) = frame.get(ip) else { return };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || frame.len() < ip + ihl {
        return;
    }
    let [hi, lo] = k.to_be_bytes();
    for a in [ip + 12, ip + 16] {
        frame[a + 1] ^= hi;
        frame[a + 2] ^= lo;
    }
    frame[ip + 10] = 0;
    frame[ip + 11] = 0;
    let mut sum = 0u32;
    for w in frame[ip..ip + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let [c0, c1] = (!(sum as u16)).to_be_bytes();
    frame[ip + 10] = c0;
    frame[ip + 11] = c1;
}

fn make(out: &str, copies: u16, inputs: &[String]) -> Res<()> {
    let base = load(inputs)?;
    let span = base.last().map_or(0, |f| f.ts_us) + 1_000_000;
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    // Classic pcap, little-endian, microseconds, snaplen 262144, Ethernet.
    w.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0,
    ])?;
    let mut packets = 0u64;
    let mut buf = Vec::new();
    for k in 0..copies {
        for f in &base {
            buf.clear();
            buf.extend_from_slice(&f.data);
            rewrite(&mut buf, k);
            let ts = 1_500_000_000_000_000 + i64::from(k) * span + f.ts_us;
            w.write_all(&((ts / 1_000_000) as u32).to_le_bytes())?;
            w.write_all(&((ts % 1_000_000) as u32).to_le_bytes())?;
            w.write_all(&(buf.len() as u32).to_le_bytes())?;
            w.write_all(&f.orig_len.to_le_bytes())?;
            w.write_all(&buf)?;
            packets += 1;
        }
    }
    w.flush()?;
    println!(
        "wrote {out}: {packets} packets ({} per copy, {copies} copies)",
        base.len()
    );
    Ok(())
}

fn run(path: &str, csv: bool) -> Res<()> {
    let start = Instant::now();
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    // The same source and driving loop as `metaids extract`.
    let mut source =
        CaptureSource::new(file, path, ReaderConfig::default(), FlowConfig::default())?;
    let mut out = CsvWriter::new(std::io::sink(), None)?;
    let (mut flows, mut check) = (0u64, 0f64);
    let report = for_each_flow(&mut source, |f| -> Res<()> {
        flows += 1;
        check += f.features[0];
        if csv {
            out.write(&f)?;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let s = &report.engine;
    println!(
        "metaids: {} packets, {} flows, {:.3} s, {:.0} packets/s, {:.1} MB/s{} (checksum {check:e})",
        s.packets,
        flows,
        secs,
        s.packets as f64 / secs,
        s.bytes as f64 / secs / 1e6,
        if csv { ", CSV formatted" } else { "" },
    );
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("make") if args.len() >= 4 => make(&args[1], args[2].parse()?, &args[3..]),
        Some("run") if args.len() >= 2 => run(&args[1], args.iter().any(|a| a == "--csv")),
        _ => {
            eprintln!("usage: throughput make OUT COPIES IN...  |  throughput run FILE [--csv]");
            eprintln!("(nothing to measure without a capture; see scripts/bench-flows.sh)");
            Ok(())
        }
    }
}
