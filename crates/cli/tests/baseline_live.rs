//! `metaids baseline --interface lo`: a learning window captured live from traffic the test sends
//! itself on loopback (UDP from 20 addresses of 127.0.0.0/8 to a port nothing listens on, a BPF
//! filter on that port), stopped by --duration. Needs the `live` feature, libpcap and root or
//! CAP_NET_RAW: `cargo test -p metaids --features live --test baseline_live`.
#![cfg(feature = "live")]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
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
}
