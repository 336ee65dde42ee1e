//! libinjection's decisions on values, one per input line: reads lines of hex-encoded bytes on
//! standard input and prints `sqli xss` (each 0 or 1) per line, for a differential check of the
//! Rust port (`libinjectionrs`) against the C library on the same bytes:
//! `cargo run --release -p metaids-http --example signatures < values.hex`.

use std::io::{BufRead, Write};

fn unhex(line: &str) -> Option<Vec<u8>> {
    let digits = line.trim().as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        let Some(bytes) = unhex(&line) else {
            eprintln!("line {}: not hex-encoded bytes", n + 1);
            std::process::exit(1);
        };
        let s = metaids_http::signature::libinjection(&bytes);
        if s.failed {
            eprintln!("line {}: the detector panicked", n + 1);
        }
        writeln!(out, "{} {}", u8::from(s.sqli), u8::from(s.xss))?;
    }
    out.flush()
}
