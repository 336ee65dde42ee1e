//! API load generator for `metaids serve` (not a test): an open-loop load at a fixed request rate
//! over keep-alive connections, each request's latency measured from the time it was due (so a
//! slow server is not hidden by the generator waiting for it), reporting p50/p99/max and the rate
//! achieved. Loopback only: it refuses any other address.
//!
//! `cargo bench -p metaids-serve --bench api_load -- URL TOKEN RATE SECONDS [PATH…]`
//! (default paths: /api/v1/ready, /api/v1/alerts?since=0&limit=10, /api/v1/threats, /metrics).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn request(
    reader: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    token: &str,
) -> std::io::Result<u16> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n");
    reader.get_mut().write_all(req.as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") {
            return Err(std::io::Error::other(
                "chunked response: not supported here",
            ));
        }
    }
    let n = length.ok_or_else(|| std::io::Error::other("no content-length"))?;
    let mut body = vec![0u8; n];
    reader.read_exact(&mut body)?;
    Ok(status)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.len() < 4 {
        eprintln!("usage: api_load URL TOKEN RATE SECONDS [PATH…]");
        std::process::exit(2);
    }
    let url = args[0].trim_start_matches("http://").trim_end_matches('/');
    let addr: SocketAddr = url.parse().expect("URL: http://127.0.0.1:PORT");
    assert!(addr.ip().is_loopback(), "loopback addresses only");
    let token = args[1].clone();
    let rate: f64 = args[2].parse().expect("RATE: requests per second");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    assert!(rate > 0.0 && rate <= 100_000.0 && seconds > 0.0 && seconds <= 600.0);
    let mut paths: Vec<String> = args[4..].to_vec();
    if paths.is_empty() {
        paths = [
            "/api/v1/ready",
            "/api/v1/alerts?since=0&limit=10",
            "/api/v1/threats",
            "/metrics",
        ]
        .map(String::from)
        .to_vec();
    }
    let connections = 8usize;
    let per_conn = rate / connections as f64;
    let total_per_conn = (per_conn * seconds).round() as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let paths = paths.clone();
            let token = token.clone();
            let host = url.to_string();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut reader = BufReader::new(stream);
                let mut lat = Vec::with_capacity(total_per_conn);
                let mut errors = 0usize;
                let mut by_status = std::collections::BTreeMap::new();
                let offset = c as f64 / connections as f64 / per_conn;
                for i in 0..total_per_conn {
                    let due = start + Duration::from_secs_f64(offset + i as f64 / per_conn);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let path = &paths[(i + c) % paths.len()];
                    match request(&mut reader, &host, path, &token) {
                        Ok(s) => *by_status.entry(s).or_insert(0usize) += 1,
                        Err(_) => errors += 1,
                    }
                    lat.push(due.elapsed().as_secs_f64() * 1e3);
                }
                (lat, errors, by_status)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut statuses = std::collections::BTreeMap::new();
    for h in handles {
        let (l, e, s) = h.join().expect("thread");
        all.extend(l);
        errors += e;
        for (k, v) in s {
            *statuses.entry(k).or_insert(0usize) += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    println!(
        "requests {} in {:.2} s ({:.0}/s achieved, {:.0}/s asked), errors {errors}, statuses {statuses:?}",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        rate
    );
    println!(
        "latency from due time: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(f64::NAN)
    );
}
