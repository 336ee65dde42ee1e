//! `metaids requests` end to end: requests from a capture, an access log and a raw request file
//! as JSON lines; a bad line is an error naming the file and line (and no output is left), or a
//! counted skip with --skip-bad.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn metaids(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metaids"))
        .arg("requests")
        .args(args)
        .output()
        .expect("run metaids")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

const LOG: &str = "192.0.2.7 - - [07/Dec/2026:06:00:01 +0100] \"GET /item.php?id=1%27+OR+1=1-- HTTP/1.1\" 200 512 \"-\" \"sqlmap/1.8\"\n\
198.51.100.3 - alice [07/Dec/2026:06:00:02 +0000] \"POST /login HTTP/1.0\" 302 - \"https://shop.test/\" \"Mozilla/5.0\"\n\
203.0.113.9 - - [07/Dec/2026:06:00:03 +0000] \"\\x16\\x03\\x01\" 400 0 \"-\" \"-\"\n";

const RAW: &str = "GET http://localhost:8080/tienda1/index.jsp HTTP/1.1\n\
Host: localhost:8080\n\
\n\
POST http://localhost:8080/tienda1/publico/anadir.jsp HTTP/1.1\n\
Host: localhost:8080\n\
Content-Length: 9\n\
\n\
id=3&B1=x\n\
\n";

#[test]
fn requests_from_a_capture_a_log_and_a_raw_file_are_json_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let pcap = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/data/pcaps/suricata-verify-attack-tests/output-multi-eve/input.pcap",
    );
    assert!(pcap.exists(), "shared data missing at {}", pcap.display());
    let raw = dir.path().join("requests.txt");
    std::fs::write(&raw, RAW).expect("raw");
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        &LOG.as_bytes()[..LOG.find("203.0.113.9").expect("third line")],
    )
    .expect("log");
    let out = dir.path().join("requests.jsonl");
    let o = metaids(&[
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--access-log",
        log.to_str().expect("utf-8"),
        "--request-file",
        raw.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("wrote 7 requests"), "{stderr}");
    let got = lines(&out);
    assert_eq!(got.len(), 7);
    // The capture's three requests come first, with their addresses and capture time.
    for r in &got[..3] {
        assert!(r["src_ip"].is_string() && r["dest_port"].is_u64(), "{r}");
        assert!(
            r["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{r}"
        );
        assert!(
            r["http"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with('/')),
            "{r}"
        );
    }
    let sqlmap = &got[3];
    assert_eq!(
        sqlmap["http"]["url"], "/item.php?id=1%27+OR+1=1--",
        "as sent, not decoded"
    );
    assert_eq!(sqlmap["http"]["http_user_agent"], "sqlmap/1.8");
    assert_eq!(sqlmap["http"]["status"], 200);
    assert_eq!(sqlmap["http"]["length"], 512);
    assert_eq!(
        sqlmap["timestamp"], "2026-12-07T05:00:01Z",
        "the log's +0100 is taken off"
    );
    assert_eq!(sqlmap["line"], 1);
    assert_eq!(got[4]["http"]["http_refer"], "https://shop.test/");
    assert!(
        got[4]["http"].get("length").is_none(),
        "a `-` length is left out"
    );
    assert_eq!(
        got[5]["http"]["url"],
        "http://localhost:8080/tienda1/index.jsp"
    );
    assert_eq!(got[6]["http"]["http_method"], "POST");
    assert_eq!(got[6]["body"], "id=3&B1=x");
    assert_eq!(got[6]["line"], 4);
}

#[test]
fn a_bad_log_line_is_named_or_counted_and_no_half_output_is_left() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("access.log");
    std::fs::write(&log, LOG).expect("log");
    let out = dir.path().join("requests.jsonl");
    let args = [
        "--access-log",
        log.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    let o = metaids(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("access.log, line 3: field request"),
        "{stderr}"
    );
    assert!(!out.exists(), "no output after an error");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no temporary file left"
    );

    let o = metaids(&[&args[..], &["--skip-bad"]].concat());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("requests=2 lines=3 skipped=1"), "{stderr}");
    assert!(stderr.contains("request=1"), "{stderr}");
    assert_eq!(lines(&out).len(), 2);
}

#[test]
fn no_input_and_a_missing_file_are_clear_errors() {
    let o = metaids(&[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pcap, --access-log or --request-file"));
    let o = metaids(&["--request-file", "/nonexistent/requests.txt"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/requests.txt"));
}
