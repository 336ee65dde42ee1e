//! `metaids baseline --interface lo`: a learning window captured live from traffic the test sends
//! itself on loopback (UDP from 20 addresses of 127.0.0.0/8 to a port nothing listens on, a BPF
//! filter on that port), stopped by --duration; then `metaids serve --interface lo` on that
//! library scores such traffic as it arrives until SIGTERM. Needs the `live` feature, libpcap and
//! root or CAP_NET_RAW: `cargo test -p metaids --features live --test baseline_live`.
#![cfg(feature = "live")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_live_window_is_learnt_with_its_sources_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = dir.path().join("cic.model");
    let out = Command::new(env!("CARGO_BIN_EXE_metaids"))
        .args(["train", "--dataset", "cic", "--data"])
        .arg(repo.join("data/cic-ids2017"))
        .args([
            "--steps",
            "60",
            "--hidden",
            "32",
            "--depth",
            "1",
            "--embedding",
            "16",
        ])
        .args(["--eval-every", "30", "--quiet", "--out"])
        .arg(&model)
        .output()
        .expect("train");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A port nothing listens on: the datagrams are captured, the ICMP replies filtered out.
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_metaids"))
        .args(["baseline", "--model"])
        .arg(&model)
        .arg("--library")
        .arg(dir.path().join("site.redb"))
        .args(["--interface", "lo", "--bpf"])
        .arg(format!("udp and dst port {port}"))
        .args(["--duration", "12", "--budget", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baseline");
    // Send once the capture is open (its stderr says so; at most 30 s of waiting).
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("learning from") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the capture did not open within 30 s");
    std::thread::sleep(Duration::from_millis(500));
    // 20 sources × 10 source ports (the sockets stay open, so no port is reused), one datagram
    // each, 5 ms apart.
    let mut sockets = Vec::new();
    for a in 2..22u8 {
        for _ in 0..10 {
            let s = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, a), 0)).expect("bind src");
            s.send_to(b"metaids baseline test", ("127.0.0.1", port))
                .expect("send");
            sockets.push(s);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = reader.join().expect("stderr reader");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // 200 flows from 20 addresses, none over the 10% cap: all kept.
    assert!(
        stdout.contains("baseline: 200 flows offered, 200 kept"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("learning from lo"), "{stderr}");

    // The service on the same interface: packets and flows counted as they arrive, the live flows
    // decided at SIGTERM.
    let eve = dir.path().join("eve.json");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_metaids"))
        .args(["serve", "--model"])
        .arg(&model)
        .arg("--library")
        .arg(dir.path().join("site.redb"))
        .args(["--interface", "lo", "--bpf"])
        .arg(format!("udp and dst port {port}"))
        .arg("--eve")
        .arg(&eve)
        .args(["--listen", "127.0.0.1:0", "--max-runtime", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut first = String::new();
    BufReader::new(serve.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    let addr = first
        .trim()
        .strip_prefix("metaids serve: listening on http://")
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let metric = |name: &str| -> u64 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    for a in 2..32u8 {
        let s = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, a), 0)).expect("bind src");
        s.send_to(b"metaids serve test", ("127.0.0.1", port))
            .expect("send");
        sockets.push(s);
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = std::time::Instant::now();
    while metric("metaids_packets_total") < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not count the 30 datagrams"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = serve.wait_with_output().expect("wait");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    let flows: u64 = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("flows "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no flow count in {summary}"));
    assert!(flows >= 30, "{summary}");
}
