//! Reassembly throughput (not a test, no criterion): frames per second through
//! `RequestAssembler::push` (frame decoding, the connection table, sequence ordering, request
//! parsing) on one core, in Gbit/s of frames on the wire and of client (request) bytes.
//!
//! ```text
//! reassembly synthetic [CONNECTIONS] [REQUESTS_PER_CONNECTION]   # built in memory, see below
//! reassembly FILE.pcap                                           # a capture of your own
//! ```
//! Under `cargo bench -p metaids-http --bench reassembly -- ARGS` (cargo adds `--bench`).
//!
//! The synthetic traffic: keep-alive HTTP/1.1 connections, each a handshake, then requests whose
//! target carries a payload of `data/http/payloads.csv.gz` (benign and attack, in file order) with
//! browser-like headers, every fourth a POST with a form body, segmented at an MSS of 1,448
//! bytes; each answered by a 200 response with a body of 2–16 KiB; 1% of client segments sent
//! twice (a retransmission) and 1% swapped with the next (reordering); FIN at the end.
//! Connections are interleaved eight at a time, as on a busy link.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use metaids_flow::{CaptureReader, LinkType, Packet, ReaderConfig};
use metaids_http::payloads::read_payloads;
use metaids_http::stream::{RequestAssembler, StreamConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Frame {
    ts_us: i64,
    data: Vec<u8>,
}

const MSS: usize = 1448;

/// A tiny deterministic generator (xorshift), so every run builds the same traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn frame(client: bool, conn: u32, seq: u32, ack: u32, flags: &str, payload: &[u8]) -> Res<Vec<u8>> {
    let c = [10, 1, (conn >> 8) as u8, conn as u8];
    let s = [10, 2, 0, 80];
    let cport = 20_000 + (conn % 40_000) as u16;
    let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]);
    let b = if client {
        b.ipv4(c, s, 64).tcp(cport, 80, seq, 64_240)
    } else {
        b.ipv4(s, c, 64).tcp(80, cport, seq, 64_240)
    };
    let mut b = b.ack(ack);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('F') {
        b = b.fin();
    }
    let mut out = Vec::with_capacity(64 + payload.len());
    b.write(&mut out, payload)?;
    Ok(out)
}

/// One connection's frames, in the order they were sent.
fn connection(conn: u32, requests: &[Vec<u8>], rng: &mut Rng) -> Res<Vec<Vec<u8>>> {
    let (mut cseq, mut sseq) = (1_000u32.wrapping_mul(conn), 7_000u32.wrapping_mul(conn));
    let mut out = vec![frame(true, conn, cseq, 0, "S", &[])?];
    out.push(frame(false, conn, sseq, cseq.wrapping_add(1), "S", &[])?);
    cseq = cseq.wrapping_add(1);
    sseq = sseq.wrapping_add(1);
    out.push(frame(true, conn, cseq, sseq, "", &[])?);
    for req in requests {
        let mut segs = Vec::new();
        for chunk in req.chunks(MSS) {
            segs.push(frame(true, conn, cseq, sseq, "", chunk)?);
            cseq = cseq.wrapping_add(chunk.len() as u32);
        }
        for (i, seg) in segs.iter().enumerate() {
            if rng.next().is_multiple_of(100) {
                out.push(seg.clone());
            }
            if rng.next().is_multiple_of(100) && i + 1 < segs.len() {
                out.push(segs[i + 1].clone());
            }
            out.push(seg.clone());
        }
        let body_len = 2048 + (rng.next() % (14 * 1024)) as usize;
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {body_len}\r\n\r\n"
        )
        .into_bytes();
        resp.resize(resp.len() + body_len, b'x');
        for chunk in resp.chunks(MSS) {
            out.push(frame(false, conn, sseq, cseq, "", chunk)?);
            sseq = sseq.wrapping_add(chunk.len() as u32);
        }
        out.push(frame(true, conn, cseq, sseq, "", &[])?);
    }
    out.push(frame(true, conn, cseq, sseq, "F", &[])?);
    out.push(frame(false, conn, sseq, cseq.wrapping_add(1), "F", &[])?);
    Ok(out)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn synthetic(conns: u32, per_conn: usize) -> Res<(Vec<Frame>, usize)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/http/payloads.csv.gz");
    let payloads = read_payloads(flate2::read::GzDecoder::new(File::open(&root)?), "payloads")?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut p = payloads.iter().cycle();
    let mut streams = Vec::new();
    let mut n_requests = 0;
    for c in 0..conns {
        let mut reqs = Vec::new();
        for i in 0..per_conn {
            let value = percent_encode(&p.next().ok_or("no payloads")?.payload);
            let head = "Host: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nCookie: JSESSIONID=81761ACA043B0E6014CA42A4BCD06AB5\r\nConnection: keep-alive\r\n";
            let req = if i % 4 == 3 {
                let body = format!("id=3&nombre=Vino+Rioja&cantidad={value}&B1=Pasar+por+caja");
                format!("POST /tienda1/publico/anadir.jsp HTTP/1.1\r\n{head}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            } else {
                format!("GET /tienda1/publico/caracteristicas.jsp?id={value}&lang=es HTTP/1.1\r\n{head}\r\n")
            };
            reqs.push(req.into_bytes());
            n_requests += 1;
        }
        streams.push(connection(c, &reqs, &mut rng)?);
    }
    // Interleave eight connections at a time, frame by frame.
    let mut frames = Vec::new();
    let mut ts = 1_700_000_000_000_000i64;
    for group in streams.chunks_mut(8) {
        let mut iters: Vec<_> = group
            .iter_mut()
            .map(|s| std::mem::take(s).into_iter())
            .collect();
        loop {
            let mut any = false;
            for it in iters.iter_mut() {
                if let Some(data) = it.next() {
                    ts += 20;
                    frames.push(Frame { ts_us: ts, data });
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
    }
    Ok((frames, n_requests))
}

fn from_file(path: &str) -> Res<(Vec<Frame>, usize)> {
    let mut reader =
        CaptureReader::new(BufReader::new(File::open(path)?), ReaderConfig::default())?;
    let mut frames = Vec::new();
    while let Some(p) = reader.next_packet()? {
        if p.link_type == LinkType::ETHERNET {
            frames.push(Frame {
                ts_us: p.ts_us,
                data: p.data.to_vec(),
            });
        }
    }
    Ok((frames, 0))
}

/// Client payload bytes of the frames (TCP payload of packets to port 80), for the request rate.
fn client_bytes(frames: &[Frame]) -> u64 {
    frames
        .iter()
        .filter_map(|f| metaids_flow::decode_segment(LinkType::ETHERNET, &f.data).ok())
        .filter_map(|(info, seg)| {
            seg.filter(|_| info.dst_port == 80)
                .map(|s| s.payload.len() as u64)
        })
        .sum()
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (frames, built) = match args.first().map(String::as_str) {
        None | Some("synthetic") => {
            let conns = args.get(1).map_or(Ok(2_000), |s| s.parse())?;
            let per = args.get(2).map_or(Ok(20), |s| s.parse())?;
            synthetic(conns, per)?
        }
        Some(path) => from_file(path)?,
    };
    let wire: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
    let client = client_bytes(&frames);
    let mut rates = Vec::new();
    let mut requests = 0;
    for _ in 0..5 {
        let mut a = RequestAssembler::new(StreamConfig::default());
        let mut out = Vec::new();
        requests = 0;
        let t = Instant::now();
        for f in &frames {
            let p = Packet {
                link_type: LinkType::ETHERNET,
                ts_us: f.ts_us,
                data: &f.data,
                orig_len: f.data.len() as u32,
                interface: 0,
            };
            a.push(&p, &mut out);
            requests += out.len();
            out.clear();
        }
        let stats = a.finish();
        rates.push(t.elapsed().as_secs_f64());
        std::hint::black_box(stats);
    }
    rates.sort_by(f64::total_cmp);
    // The floor: decoding every frame (what the flow engine does too), nothing else.
    let mut decode = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0usize;
        for f in &frames {
            if let Ok((_, Some(seg))) = metaids_flow::decode_segment(LinkType::ETHERNET, &f.data) {
                n += seg.payload.len();
            }
        }
        std::hint::black_box(n);
        decode.push(t.elapsed().as_secs_f64());
    }
    decode.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "frames={} wire_bytes={} client_payload_bytes={} requests={} (built {})",
        frames.len(),
        wire,
        client,
        requests,
        built
    );
    println!(
        "median of 5 runs: {:.3} s; {:.2} Gbit/s of frames, {:.2} Gbit/s of client payload, {:.0} requests/s, {:.2} M frames/s (min {:.3} s, max {:.3} s)",
        median,
        wire as f64 * 8.0 / median / 1e9,
        client as f64 * 8.0 / median / 1e9,
        requests as f64 / median,
        frames.len() as f64 / median / 1e6,
        rates[0],
        rates[rates.len() - 1]
    );
    println!(
        "of which decoding the frames alone: {:.3} s (median of 5)",
        decode[decode.len() / 2]
    );
    Ok(())
}
