//! Live capture on `lo` of real UDP and TCP traffic that the test generates itself (std::net
//! sockets on 127.0.0.1, a BPF filter on the test's ports), checked flow by flow. Needs the
//! `live` feature, libpcap and the right to capture (root or CAP_NET_RAW):
//! `cargo test -p metaids-capture --features live --locked`.
#![cfg(feature = "live")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metaids_capture::{LiveCapture, LiveConfig, LiveSource, StopReason};
use metaids_flow::{
    for_each_flow, EndReason, FlowConfig, FlowEngine, FlowError, FlowRecord, FlowSource, LinkType,
};

fn feature(f: &FlowRecord, name: &str) -> u64 {
    f.feature(name).expect("column") as u64
}

#[test]
fn captures_udp_and_tcp_on_loopback_and_expires_idle_flows_by_wall_clock() {
    let udp_server = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let udp_port = udp_server.local_addr().expect("addr").port();
    let tcp_server = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let tcp_port = tcp_server.local_addr().expect("addr").port();

    let config = LiveConfig {
        filter: Some(format!("udp port {udp_port} or tcp port {tcp_port}")),
        read_timeout: Duration::from_millis(50),
        tick_interval: Duration::from_millis(100),
        max_duration: Some(Duration::from_secs(30)),
        ..LiveConfig::new("lo")
    };
    let capture = LiveCapture::open(&config).expect("open lo (root or CAP_NET_RAW needed)");
    assert_eq!(capture.link_type(), LinkType::ETHERNET);
    // Idle flows end 300 ms after their last packet; only the wall-clock tick can end them,
    // since no packet follows.
    let engine = FlowEngine::new(FlowConfig {
        idle_timeout_us: 300_000,
        ..FlowConfig::default()
    })
    .expect("engine");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut source = LiveSource::new(capture, engine, stop);
            let report = for_each_flow::<FlowError, _>(&mut source, |flow| {
                let _ = tx.send(flow);
                Ok(())
            });
            (report.map(|r| (source.stats(), r)), source.is_live())
        })
    };

    // UDP: 5 datagrams of 10 bytes from the client, 3 replies of 20 bytes.
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    let client_port = client.local_addr().expect("addr").port();
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        client
            .send_to(&[1u8; 10], ("127.0.0.1", udp_port))
            .expect("send");
        udp_server.recv_from(&mut buf).expect("recv");
    }
    for _ in 0..3 {
        udp_server
            .send_to(&[2u8; 20], ("127.0.0.1", client_port))
            .expect("reply");
        client.recv_from(&mut buf).expect("recv reply");
    }

    // TCP: connect, 100 bytes up, 50 bytes down, close.
    let mut conn = TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
    let tcp_client_port = conn.local_addr().expect("addr").port();
    let (mut accepted, _) = tcp_server.accept().expect("accept");
    conn.write_all(&[3u8; 100]).expect("write");
    let mut got = [0u8; 100];
    accepted.read_exact(&mut got).expect("read");
    accepted.write_all(&[4u8; 50]).expect("write back");
    let mut back = [0u8; 50];
    conn.read_exact(&mut back).expect("read back");
    drop(conn);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).expect("eof");
    drop(accepted);

    // Both flows must come out while the capture is still running (idle expiry by the tick).
    let mut flows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while flows.len() < 2 && Instant::now() < deadline {
        if let Ok(f) = rx.recv_timeout(Duration::from_millis(100)) {
            flows.push(f);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ran, live) = worker.join().expect("capture thread");
    let (stats, report) = ran.expect("capture ran");
    assert!(live);
    let engine_stats = report.engine;
    assert!(
        report.kernel.is_some(),
        "libpcap's counters are read at the end"
    );
    assert_eq!(report.name, "live:lo");
    flows.extend(rx.try_iter());
    assert_eq!(stats.stop, StopReason::Requested);
    assert!(stats.ticks > 0);
    // (`stats.dropped` is not checked: libpcap may count frames of other lo traffic that
    // arrived before the filter was installed.)
    assert_eq!(engine_stats.skipped_total(), 0, "{engine_stats:?}");

    assert_eq!(flows.len(), 2, "{flows:#?}");
    let udp = flows.iter().find(|f| f.protocol == 17).expect("a UDP flow");
    assert_eq!(udp.end_reason, EndReason::IdleTimeout);
    assert_eq!((udp.src_port, udp.dst_port), (client_port, udp_port));
    assert_eq!(feature(udp, "Total Fwd Packet"), 5);
    assert_eq!(feature(udp, "Total Bwd packets"), 3);
    assert_eq!(feature(udp, "Total Length of Fwd Packet"), 50);
    assert_eq!(feature(udp, "Total Length of Bwd Packet"), 60);
    // Ethernet (14) + IPv4 (20) + UDP (8) + payload.
    assert_eq!(udp.fwd_frame_bytes, 5 * (42 + 10));
    assert_eq!(udp.bwd_frame_bytes, 3 * (42 + 20));

    let tcp = flows.iter().find(|f| f.protocol == 6).expect("a TCP flow");
    assert_eq!(tcp.end_reason, EndReason::IdleTimeout);
    assert_eq!((tcp.src_port, tcp.dst_port), (tcp_client_port, tcp_port));
    assert_eq!(feature(tcp, "Total Length of Fwd Packet"), 100);
    assert_eq!(feature(tcp, "Total Length of Bwd Packet"), 50);
    assert_eq!(feature(tcp, "SYN Flag Count"), 2);
    let packets = feature(tcp, "Total Fwd Packet") + feature(tcp, "Total Bwd packets");
    // SYN, SYN-ACK, ACK, 2 data segments, FINs and ACKs: at least 7, at most a few more ACKs.
    assert!((7..=12).contains(&packets), "{packets} TCP packets");
    assert_eq!(stats.packets, 8 + packets);
    assert_eq!(stats.flows, 2);
}

#[test]
fn a_bad_filter_or_interface_is_a_pcap_error() {
    let bad = LiveConfig {
        filter: Some("this is not bpf".into()),
        ..LiveConfig::new("lo")
    };
    let e = LiveCapture::open(&bad).expect_err("bad filter");
    assert!(e.to_string().contains("BPF filter"), "{e}");
    let e = LiveCapture::open(&LiveConfig::new("no-such-if0")).expect_err("bad interface");
    assert!(
        matches!(e, metaids_capture::CaptureError::Pcap { .. }),
        "{e}"
    );
}

#[test]
fn packet_limit_stops_the_capture() {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let config = LiveConfig {
        filter: Some(format!("udp port {port}")),
        max_packets: Some(3),
        max_duration: Some(Duration::from_secs(20)),
        ..LiveConfig::new("lo")
    };
    let capture = LiveCapture::open(&config).expect("open lo");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..5 {
        client.send_to(b"x", ("127.0.0.1", port)).expect("send");
    }
    let engine = FlowEngine::new(FlowConfig::default()).expect("engine");
    let mut flows = Vec::new();
    let mut source = LiveSource::new(capture, engine, Arc::new(AtomicBool::new(false)));
    for_each_flow::<FlowError, _>(&mut source, |f| {
        flows.push(f);
        Ok(())
    })
    .expect("run");
    let stats = source.stats();
    assert_eq!(stats.stop, StopReason::PacketLimit);
    assert_eq!(stats.packets, 3);
    assert_eq!(flows.len(), 1);
    assert_eq!(feature(&flows[0], "Total Fwd Packet"), 3);
    assert_eq!(flows[0].end_reason, EndReason::EndOfCapture);
}
