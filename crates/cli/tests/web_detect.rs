//! Web requests through the product (issue 16): a model trained on the payload families of
//! `data/http`, a threat enrolled from five attack requests of an access log, the site's baseline
//! learnt from a request file of benign requests, and `detect --access-log` deciding each request
//! on its values, with alerts carrying Suricata's `http` object and the matched value.
//!
//! The requests are built from the vendored payloads: benign values are CSIC 2010 parameter
//! values (real traffic), the attack values PayloadsAllTheThings' template-injection strings — a
//! family the split holds out of training. Benign values used for the baseline, the enrolment and
//! the test are disjoint; so are the attack strings of the enrolment and of the test.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use metaids_http::params::encode;

mod common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn metaids(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metaids"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("run metaids")
}

fn ok(args: &[&str]) -> String {
    let out = metaids(args);
    assert!(
        out.status.success(),
        "metaids {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn payloads(family: &str) -> Vec<String> {
    let path = repo().join("data/http/payloads.csv.gz");
    let input = metaids_ingest::open(&path).expect("open payloads");
    let mut seen = HashSet::new();
    metaids_http::payloads::read_payloads(input, "payloads.csv.gz")
        .expect("read payloads")
        .into_iter()
        .filter(|p| p.family == family && !p.payload.trim().is_empty())
        .map(|p| p.payload)
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// A combined-format access-log line of `client` asking `target`.
fn log_line(client: &str, second: usize, target: &str, agent: &str) -> String {
    format!(
        "{client} - - [07/Dec/2026:05:{:02}:{:02} +0000] \"GET {target} HTTP/1.1\" 200 512 \"-\" \"{agent}\"\n",
        (second / 60) % 60,
        second % 60
    )
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write");
    path.display().to_string()
}

fn eve(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("alerts")
        .lines()
        .map(|l| serde_json::from_str(l).expect("EVE line"))
        .collect()
}

#[test]
fn requests_are_enrolled_baselined_and_detected_with_their_http_object() {
    let dir = tempfile::tempdir().expect("tmp");
    let benign = payloads("benign");
    let ssti = payloads("ssti");
    assert!(
        benign.len() > 4_000 && ssti.len() > 60,
        "{} {}",
        benign.len(),
        ssti.len()
    );
    let (base, rest) = benign.split_at(3_000);
    let (enrol_benign, test_benign) = rest.split_at(5);
    let (enrol_ssti, test_ssti) = ssti.split_at(5);

    // The site's benign requests: a raw request file (two values each), no client addresses.
    let mut file = String::new();
    for pair in base.chunks(2) {
        let query: Vec<String> = ["nombre", "ciudad"]
            .iter()
            .zip(pair)
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        file.push_str(&format!(
            "GET /tienda1/publico/registro.jsp?{} HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
            query.join("&")
        ));
    }
    let baseline = write(&dir.path().join("baseline.txt"), &file);

    // Five attack requests: an ordinary `id` beside the injected `q`.
    let mut enrol = String::new();
    for (i, (b, s)) in enrol_benign.iter().zip(enrol_ssti).enumerate() {
        let target = format!("/search.jsp?id={}&q={}", encode(b), encode(s));
        enrol.push_str(&log_line("10.0.0.66", i, &target, "attack-tool/1.0"));
    }
    let enrol = write(&dir.path().join("enrol.log"), &enrol);

    // The test log: held-out benign requests, then held-out attack requests; one request with
    // no value (nothing to score).
    let n_benign = 600.min(test_benign.len());
    let mut test = String::new();
    for (i, b) in test_benign[..n_benign].iter().enumerate() {
        let target = format!("/tienda1/publico/registro.jsp?nombre={}", encode(b));
        test.push_str(&log_line(
            &format!("10.0.1.{}", i % 200 + 1),
            i,
            &target,
            "Mozilla/5.0",
        ));
    }
    for (i, s) in test_ssti.iter().enumerate() {
        let target = format!("/search.jsp?id=7&q={}", encode(s));
        test.push_str(&log_line("10.0.0.66", i, &target, "attack-tool/1.0"));
    }
    test.push_str(&log_line("10.0.1.9", 1, "/index.jsp", "Mozilla/5.0"));
    let test = write(&dir.path().join("test.log"), &test);

    let model = dir.path().join("http.model").display().to_string();
    ok(&[
        "train",
        "--dataset",
        "http-requests",
        "--data",
        "data/http",
        "--out",
        &model,
        "--steps",
        "1500",
        "--seed",
        "7",
        "--quiet",
    ]);
    let library = dir.path().join("web.lib").display().to_string();

    // Enrolment from requests: each request counts once, by its least benign value — the
    // injected `q`, not the ordinary `id`.
    let out = ok(&[
        "threat",
        "add",
        "--model",
        &model,
        "--library",
        &library,
        "--name",
        "ssti",
        "--category",
        "web-application-attack",
        "--access-log",
        &enrol,
    ]);
    assert_eq!(out.matches(" query:q\n").count(), 5, "{out}");
    assert!(out.contains("enrolled \"ssti\""), "{out}");

    let out = ok(&[
        "baseline",
        "--model",
        &model,
        "--library",
        &library,
        "--request-file",
        &baseline,
    ]);
    assert!(out.contains("baseline: 3000 flows offered"), "{out}");
    // The budget is per request: two values a request, so half of it per value.
    assert!(
        out.contains("budget 0.01 per request, 0.005000 per value"),
        "{out}"
    );

    // With a confidence the budget is calibrated lower, so that it holds with that probability.
    let held = ok(&[
        "baseline",
        "--model",
        &model,
        "--library",
        &library,
        "--request-file",
        &baseline,
        "--confidence",
        "0.95",
        "--update",
        "--dry-run",
    ]);
    let calibrated: f64 = held
        .lines()
        .find_map(|l| l.strip_prefix("confidence 0.95: budget 0.005 calibrated at "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{held}"));
    assert!(calibrated > 0.0 && calibrated < 0.005, "{held}");

    // A web-request model scores requests, not flows.
    let wrong = metaids(&[
        "detect",
        "--model",
        &model,
        "--library",
        &library,
        "--flows",
        &baseline,
        "--alerts",
        &dir.path().join("x.eve").display().to_string(),
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("web-request payloads"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    let alerts = dir.path().join("alerts.eve");
    let verdicts = dir.path().join("verdicts.jsonl");
    let out = ok(&[
        "detect",
        "--model",
        &model,
        "--library",
        &library,
        "--access-log",
        &test,
        "--alerts",
        &alerts.display().to_string(),
        "--verdicts",
        &verdicts.display().to_string(),
        "--dedup-max",
        "1000000",
        "--quiet",
    ]);
    let n_test = n_benign + test_ssti.len();
    assert!(out.contains(&format!("http_requests {n_test}\n")), "{out}");
    assert!(out.contains("http_requests_without_values 1\n"), "{out}");
    let verdict_lines = std::fs::read_to_string(&verdicts).expect("verdicts");
    assert_eq!(verdict_lines.lines().count(), n_test);

    let alerts = eve(&alerts);
    let first_attack_line = n_benign as u64 + 1;
    let line_of = |a: &serde_json::Value| -> u64 {
        let origin = a["alert"]["context"]["metaids"]["origin"]
            .as_str()
            .expect("origin");
        origin
            .rsplit(':')
            .next()
            .expect("line")
            .parse()
            .expect("number")
    };
    let benign_flagged = alerts
        .iter()
        .filter(|a| line_of(a) < first_attack_line)
        .count();
    let attacks: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| line_of(a) >= first_attack_line)
        .collect();
    let as_ssti = attacks
        .iter()
        .filter(|a| a["alert"]["signature"] == "metaids ssti")
        .count();
    eprintln!(
        "benign requests flagged {benign_flagged}/{n_benign}; attack requests flagged {}/{} ({as_ssti} as ssti)",
        attacks.len(),
        test_ssti.len()
    );
    // Held-out template injections are flagged, most as the enrolled threat; the site's benign
    // requests rarely (the baseline holds 1% per request).
    assert!(
        attacks.len() * 10 >= test_ssti.len() * 8,
        "{} of {}",
        attacks.len(),
        test_ssti.len()
    );
    assert!(
        as_ssti * 2 >= attacks.len(),
        "{as_ssti} of {}",
        attacks.len()
    );
    assert!(
        benign_flagged * 100 <= n_benign * 4,
        "{benign_flagged} of {n_benign}"
    );

    // Requests reassembled from a capture keep their connection's addresses and ports.
    let pcap = repo().join("../shared/data/pcaps/suricata-verify-attack-tests/bug-28/input.pcap");
    assert!(pcap.exists(), "shared data missing at {}", pcap.display());
    let from_pcap = dir.path().join("pcap.eve");
    let out = ok(&[
        "detect",
        "--model",
        &model,
        "--library",
        &library,
        "--pcap",
        &pcap.display().to_string(),
        "--alerts",
        &from_pcap.display().to_string(),
        "--eve-flows",
        "--quiet",
    ]);
    assert!(out.contains("http_requests 1\n"), "{out}");
    let records = eve(&from_pcap);
    assert_eq!(
        records.iter().filter(|r| r["event_type"] == "http").count(),
        1,
        "--eve-flows: one http record per request (and an alert if it is flagged): {records:?}"
    );
    for r in &records {
        assert_eq!(
            (&r["src_ip"], &r["src_port"], &r["dest_ip"], &r["dest_port"]),
            (
                &"192.168.2.7".into(),
                &1041.into(),
                &"208.75.250.50".into(),
                &80.into()
            ),
            "{r}"
        );
        assert!(
            r["community_id"].is_string() && r["app_proto"] == "http",
            "{r}"
        );
        assert!(
            r["http"]["url"].as_str().is_some_and(|u| u.contains('?')),
            "{r}"
        );
    }

    both_modalities_in_one_run(dir.path(), &model, &library, &pcap, &test, n_test);
    served_by_metaids_serve(
        dir.path(),
        &model,
        &library,
        &test_benign[n_benign..n_benign + 20],
        &test_ssti[..10],
    );

    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("crates/detect/tests/data/suricata-eve-schema.json"))
            .expect("schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .expect("schema compiles");
    for a in &attacks {
        let errors: Vec<String> = validator.iter_errors(a).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{a}");
        assert_eq!(a["app_proto"], "http");
        assert_eq!(a["src_ip"], "10.0.0.66");
        assert!(
            a.get("src_port").is_none() && a.get("flow").is_none(),
            "{a}"
        );
        let http = &a["http"];
        assert_eq!(http["http_method"], "GET");
        assert_eq!(http["protocol"], "HTTP/1.1");
        assert_eq!(http["status"], 200);
        assert_eq!(http["http_user_agent"], "attack-tool/1.0");
        let url = http["url"].as_str().expect("url");
        assert!(url.starts_with("/search.jsp?id=7&q="), "{url}");
        let m = &a["alert"]["context"]["metaids"]["matched"];
        if a["alert"]["signature"] == "metaids ssti" {
            assert_eq!(m["field"], "query:q", "{a}");
            let line = line_of(a) as usize - n_benign - 1;
            let (excerpt, cut) = metaids_detect::excerpt(&test_ssti[line]);
            assert_eq!(m["excerpt"], excerpt.as_str());
            assert_eq!(m["truncated"], cut);
        }
    }
}

/// `detect --model FLOWS --web-model REQUESTS`: a capture's flows and the HTTP requests inside
/// the captures (and an access log) scored in one run, into one alert file and one verdict file,
/// with flow numbers and alert ids that never repeat.
fn both_modalities_in_one_run(
    dir: &Path,
    web_model: &str,
    web_library: &str,
    http_pcap: &Path,
    log: &str,
    log_requests: usize,
) {
    let cic = dir.join("cic.model");
    common::train_small_model(&cic);
    let cic = cic.display().to_string();
    let flow_library = dir.join("flows.lib").display().to_string();
    let ssh = common::shared("pcaps/zeek-traces/ssh/sshguess.pcap");
    let ssh = ssh.display().to_string();
    ok(&[
        "threat",
        "add",
        "--model",
        &cic,
        "--library",
        &flow_library,
        "--name",
        "SSH guessing",
        "--category",
        "brute-force",
        "--pcap",
        &ssh,
        "--select",
        "dport 22",
        "--force",
    ]);
    // A web model's library is refused as the flow model's, and the other way round.
    let swapped = metaids(&[
        "detect",
        "--model",
        web_model,
        "--library",
        web_library,
        "--web-model",
        &cic,
        "--web-library",
        &flow_library,
        "--pcap",
        &ssh,
        "--alerts",
        &dir.join("swapped.eve").display().to_string(),
    ]);
    assert!(!swapped.status.success());
    assert!(
        String::from_utf8_lossy(&swapped.stderr).contains("--dataset http-requests"),
        "{}",
        String::from_utf8_lossy(&swapped.stderr)
    );

    let alerts = dir.join("both.eve");
    let verdicts = dir.join("both.jsonl");
    let http_pcap = http_pcap.display().to_string();
    let out = ok(&[
        "detect",
        "--model",
        &cic,
        "--library",
        &flow_library,
        "--web-model",
        web_model,
        "--web-library",
        web_library,
        "--pcap",
        &ssh,
        &http_pcap,
        "--access-log",
        log,
        "--alerts",
        &alerts.display().to_string(),
        "--verdicts",
        &verdicts.display().to_string(),
        "--dedup-max",
        "1000000",
        "--run-id",
        "both",
        "--quiet",
    ]);
    let counter = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let flows = counter("flows");
    // The access log's requests and the one request of the HTTP capture.
    let requests = log_requests as u64 + 1;
    assert!(flows > 10, "{out}");
    assert_eq!(counter("http_requests"), requests, "{out}");
    assert!(counter("threat[SSH guessing]") >= 1, "{out}");
    assert!(counter("http_threat[ssti]") >= 1, "{out}");
    assert_eq!(
        counter("alerts_written"),
        counter("alerts") + counter("http_alerts"),
        "{out}"
    );
    assert!(!dir.join("both.eve.partial").exists());

    // One verdict line per flow and per request, numbered 1.. without a repeat.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&verdicts)
        .expect("verdicts")
        .lines()
        .map(|l| serde_json::from_str(l).expect("verdict line"))
        .collect();
    assert_eq!(lines.len() as u64, flows + requests);
    let mut seqs: Vec<u64> = lines
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=flows + requests).collect::<Vec<_>>());
    // A request's line says so (it carries its connection's addresses and flow id).
    let http_lines = lines.iter().filter(|l| l["app_proto"] == "http").count() as u64;
    assert_eq!(http_lines, requests);

    // Flow alerts and request alerts in the same file, every id once.
    let records = eve(&alerts);
    assert_eq!(records.len() as u64, counter("alerts_written"));
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| {
            r["alert"]["context"]["metaids"]["alert_id"]
                .as_str()
                .expect("alert id")
        })
        .collect();
    assert_eq!(ids.len(), records.len(), "alert ids repeat");
    assert!(records
        .iter()
        .any(|r| r["alert"]["signature"] == "metaids SSH guessing" && r["dest_port"] == 22));
    assert!(records
        .iter()
        .any(|r| r["alert"]["signature"] == "metaids ssti" && r["app_proto"] == "http"));
}

/// A classic pcap of one TCP connection per request (handshake, the request in one segment, FIN)
/// from 10.0.2.(1..) to 10.0.0.1:8080, a millisecond apart.
fn http_capture(requests: &[String]) -> Vec<u8> {
    // The global header: magic, version 2.4, zone 0, accuracy 0, snap length, Ethernet.
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65_535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut t_us: u64 = 1_796_600_000_000_000;
    let mut record = |out: &mut Vec<u8>, frame: &[u8]| {
        t_us += 1_000;
        out.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    };
    for (i, req) in requests.iter().enumerate() {
        let client = [10, 0, 2, (i % 250 + 1) as u8];
        let server = [10, 0, 0, 1];
        let port = 40_000 + i as u16;
        let segment = |from_client: bool, seq: u32, ack: u32, flags: &str, payload: &[u8]| {
            let (src, dst, sp, dp) = if from_client {
                (client, server, port, 8080)
            } else {
                (server, client, 8080, port)
            };
            let mut b =
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(src, dst, 64)
                    .tcp(sp, dp, seq, 65_535);
            for f in flags.chars() {
                b = match f {
                    'S' => b.syn(),
                    'A' => b.ack(ack),
                    'P' => b.psh(),
                    'F' => b.fin(),
                    _ => b,
                };
            }
            let mut frame = Vec::new();
            b.write(&mut frame, payload).expect("frame");
            frame
        };
        let bytes = req.as_bytes();
        let n = bytes.len() as u32;
        for frame in [
            segment(true, 100, 0, "S", &[]),
            segment(false, 500, 101, "SA", &[]),
            segment(true, 101, 501, "A", &[]),
            segment(true, 101, 501, "PA", bytes),
            segment(false, 501, 101 + n, "A", &[]),
            segment(true, 101 + n, 501, "FA", &[]),
            segment(false, 501, 102 + n, "FA", &[]),
            segment(true, 102 + n, 502, "A", &[]),
        ] {
            record(&mut out, &frame);
        }
    }
    out
}

/// `metaids serve` with a web-request model: a capture dropped into the watched directory is
/// scored by its HTTP requests (the injected ones alert, with their `http` object), the metrics
/// count requests, not flows, and what needs flows — an uploaded enrolment, a flow directory —
/// is refused with the way to do it.
fn served_by_metaids_serve(
    dir: &Path,
    model: &str,
    library: &str,
    benign: &[String],
    ssti: &[String],
) {
    let request = |target: String| {
        format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0\r\n\r\n")
    };
    let mut requests: Vec<String> = benign
        .iter()
        .map(|b| {
            request(format!(
                "/tienda1/publico/registro.jsp?nombre={}",
                encode(b)
            ))
        })
        .collect();
    requests.extend(
        ssti.iter()
            .map(|s| request(format!("/search.jsp?id=7&q={}", encode(s)))),
    );
    let capture = http_capture(&requests);

    // What gives flows is refused before the service starts, naming the setting.
    let refused = metaids(&[
        "serve",
        "--model",
        model,
        "--library",
        library,
        "--flow-dir",
        &dir.display().to_string(),
        "--eve",
        &dir.join("refused.eve").display().to_string(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("flow_dir"),
        "{err}"
    );

    let pcaps = dir.join("served-pcaps");
    std::fs::create_dir_all(&pcaps).expect("pcap dir");
    let token = "web-test-write-token-0123456789";
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("tester write {token}\n")).expect("tokens");
    let eve_path = dir.join("served.eve");
    let mut child = Command::new(env!("CARGO_BIN_EXE_metaids"))
        .current_dir(repo())
        .args([
            "serve",
            "--model",
            model,
            "--library",
            library,
            "--pcap-dir",
        ])
        .arg(&pcaps)
        .arg("--eve")
        .arg(&eve_path)
        .arg("--tokens")
        .arg(&tokens)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--poll-ms",
            "50",
            "--settle-ms",
            "0",
            "--stats-interval",
            "0",
            "--max-runtime",
            "120",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("first line");
    let url = line
        .trim()
        .strip_prefix("metaids serve: listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    let get = |path: &str| -> String {
        ureq::get(format!("{url}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect(path)
            .body_mut()
            .read_to_string()
            .expect("body")
    };
    // Written beside the directory, then moved in: the service never sees half a capture.
    let staged = dir.join("shop.pcap");
    std::fs::write(&staged, &capture).expect("capture");
    std::fs::rename(&staged, pcaps.join("shop.pcap")).expect("move in");
    let start = std::time::Instant::now();
    while !get("/api/v1/ready").contains("\"files_done\":1") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the capture was not scored"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let metrics = get("/metrics");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(value("metaids_http_requests_total"), requests.len() as u64);
    assert_eq!(value("metaids_flows_total"), 0);
    // An upload to enrol from is flows: refused, naming the command that does it.
    let refused = ureq::post(format!("{url}/api/v1/threats?name=more"))
        .header("Content-Type", "application/vnd.tcpdump.pcap")
        .header("Authorization", format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send(&capture[..])
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 400);
    let body = refused.into_body().read_to_string().expect("body");
    assert!(body.contains("metaids threat add"), "{body}");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    assert!(child.wait().expect("wait").success());

    let records = eve(&eve_path);
    let ssti_alerts: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event_type"] == "alert" && r["alert"]["signature"] == "metaids ssti")
        .collect();
    assert!(ssti_alerts.len() >= ssti.len() / 2, "{records:?}");
    for a in &ssti_alerts {
        assert_eq!(a["app_proto"], "http", "{a}");
        assert_eq!(a["dest_port"], 8080, "{a}");
        assert_eq!(a["http"]["hostname"], "shop.example", "{a}");
        assert!(
            a["http"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("/search.jsp?id=7&q=")),
            "{a}"
        );
        assert_eq!(
            a["alert"]["context"]["metaids"]["matched"]["field"],
            "query:q"
        );
    }
    // The benign requests of the capture are not flagged as the threat.
    assert!(records
        .iter()
        .all(|r| !(r["alert"]["signature"] == "metaids ssti"
            && r["http"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("/tienda1")))));
}
