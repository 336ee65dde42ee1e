//! Scale-out over Kafka, end to end against a real Kafka-protocol broker (Tansu, started and
//! stopped here; `scripts/kafka-broker.sh install` puts it at target/tools/tansu, or set
//! METAIDS_TANSU): a sensor (`extract --kafka-brokers`) publishes the lab captures' flows, three
//! workers of one group score them, one is killed with SIGKILL mid-stream, and every flow still
//! gets exactly one verdict after dedup by key, the same verdict single-process `detect` gives;
//! every source's flows sit in one partition (the sensor keys them by source).
//! Then a poison record goes to the dead-letter topic, a new library version reaches every worker
//! between batches, a worker started with an older library file catches up before scoring, and
//! after a broker outage (the broker stopped with SIGSTOP past the session timeout while a sensor
//! publishes, then resumed) the same worker processes rejoin and score the sensor's flows.
//!
//! A second test restarts the broker (SIGKILL, then a new process on the same port and storage)
//! while a sensor publishes: that broker keeps its topics in an S3 store (moto's S3 server, also
//! installed by `scripts/kafka-broker.sh install`), as a production broker keeps its log on disk.
//! The two tests take turns: both time outages, and the machine has two cores.
//!
//! Not tested: a broker that restarts *empty* (the memory-only broker loses its topics, and
//! recreates them with new topic ids): librdkafka 2.12.1 crashes on that metadata
//! (confluentinc/librdkafka#4964). Needs `--features kafka`:
//! `cargo test -p metaids --features kafka --test kafka`.
#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{metaids, ok};
use metaids_kafka::control::{read_topic, TopicRecord};
use metaids_kafka::KafkaSettings;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The broker binary: METAIDS_TANSU, else target/tools/tansu (asserted to exist).
fn tansu() -> PathBuf {
    let p = std::env::var_os("METAIDS_TANSU")
        .map_or_else(|| repo().join("target/tools/tansu"), PathBuf::from);
    assert!(
        p.is_file(),
        "no Kafka broker at {}: run scripts/kafka-broker.sh install (or set METAIDS_TANSU)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One test at a time (see the module's note).
fn serial() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until something listens on 127.0.0.1:`port` (at most 20 s).
fn wait_listening(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An S3 server on a free loopback port holding one bucket, `tansu` (moto's server from
/// target/tools/s3store, or METAIDS_S3STORE), killed on drop.
struct S3Store {
    _process: Running,
    endpoint: String,
}

impl S3Store {
    fn start(log: &Path) -> S3Store {
        let lib = std::env::var_os("METAIDS_S3STORE")
            .map_or_else(|| repo().join("target/tools/s3store"), PathBuf::from);
        assert!(
            lib.join("moto").is_dir(),
            "no S3 store at {}: run scripts/kafka-broker.sh install (or set METAIDS_S3STORE)",
            lib.display()
        );
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONPATH", &lib)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("start the S3 store");
        let store = S3Store {
            _process: Running(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        wait_listening(port, "the S3 store");
        ureq::put(&format!("{}/tansu", store.endpoint))
            .send_empty()
            .expect("create the bucket");
        store
    }
}

/// A broker on 127.0.0.1:`port`, killed on drop; its topics in memory, or in `store`.
struct Broker {
    process: Running,
}

impl Broker {
    fn start(port: u16, store: Option<&S3Store>) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut c = Command::new(tansu());
        c.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ]);
        if let Some(s) = store {
            c.args(["--storage-engine", "s3://tansu/"])
                .env("AWS_ENDPOINT", &s.endpoint)
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "metaids-test")
                .env("AWS_SECRET_ACCESS_KEY", "metaids-test")
                .env("AWS_DEFAULT_REGION", "us-east-1");
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        wait_listening(port, "the broker");
        Broker {
            process: Running(child),
        }
    }
}

/// A worker process with its metrics address, killed on drop.
struct Worker {
    process: Running,
    metrics: SocketAddr,
}

fn spawn_worker(brokers: &str, model: &Path, library: Option<&Path>, log: &Path) -> Worker {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut c = metaids();
    c.args(["worker", "--kafka-brokers", brokers, "--group", "g"])
        .args(["--flows-topic", "flows", "--alerts-topic", "alerts"])
        .args(["--verdicts-topic", "verdicts", "--control-topic", "ctl"])
        .args(["--batch-size", "256", "--batch-wait-ms", "100", "--model"])
        .arg(model)
        .arg("--metrics")
        .arg(metrics.to_string());
    if let Some(l) = library {
        c.arg("--library").arg(l);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("worker");
    Worker {
        process: Running(child),
        metrics,
    }
}

/// A worker's metric (`metaids_worker_NAME`, counters with `_total`), `None` until it serves.
fn metric(w: &Worker, name: &str) -> Option<f64> {
    let body = ureq::get(&format!("http://{}/metrics", w.metrics))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    body.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == format!("metaids_worker_{name}")).then(|| v.parse().ok())?
    })
}

/// Waits (at most `limit`) until `cond` holds, polling every 200 ms; panics with `what` and the
/// tails of the worker logs in `logs` otherwise.
fn wait_for(logs: &Path, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        if started.elapsed() > limit {
            let mut tails = String::new();
            for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("worker-") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(8).collect();
                    tails.push_str(&format!("== {name}\n{}\n", tail.join("\n")));
                }
            }
            panic!("timed out after {limit:?}: {what}\n{tails}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn publish_flows(brokers: &str, captures: &[PathBuf]) -> u64 {
    publish_flows_paced(brokers, captures, None)
}

/// Publishes the captures' flows, at most `rate` a second when given; the count published.
fn publish_flows_paced(brokers: &str, captures: &[PathBuf], rate: Option<u32>) -> u64 {
    let mut c = metaids();
    c.arg("extract").arg("--pcap").args(captures).args([
        "--kafka-brokers",
        brokers,
        "--flows-topic",
        "flows",
    ]);
    if let Some(r) = rate {
        c.args(["--kafka-rate", &r.to_string()]);
    }
    let out = c.output().expect("extract");
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| {
            l.strip_prefix("published ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no published count in:\n{err}"))
}

fn publish_library(brokers: &str, library: &Path) {
    ok(&metaids()
        .args(["threat", "publish", "--library"])
        .arg(library)
        .args(["--kafka-brokers", brokers, "--control-topic", "ctl"])
        .output()
        .expect("threat publish"));
}

/// The verdict topic's records by key (repeats kept: the caller counts them).
fn verdicts(settings: &KafkaSettings) -> Vec<TopicRecord> {
    read_topic(settings, "verdicts", Duration::from_secs(60)).unwrap_or_default()
}

fn distinct_keys(records: &[TopicRecord]) -> BTreeSet<Vec<u8>> {
    records.iter().map(|r| r.key.clone()).collect()
}

/// How many flows (by the verdicts' `flow_id`) have a verdict.
fn distinct_flows(records: &[TopicRecord]) -> u64 {
    let ids: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
            v["flow_id"].as_u64()
        })
        .collect();
    ids.len() as u64
}

/// `(flow_id, verdict, threat)` of each verdict line, as a multiset.
fn decisions<'a>(lines: impl Iterator<Item = &'a [u8]>) -> BTreeMap<(u64, String, String), u32> {
    let mut out = BTreeMap::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_slice(l).expect("verdict JSON");
        let key = (
            v["flow_id"].as_u64().expect("flow_id"),
            v["verdict"].as_str().expect("verdict").to_string(),
            v["threat"].as_str().unwrap_or("").to_string(),
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// The lab captures `data/lab/NAME.pcap.gz`.
fn lab(names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| repo().join("data/lab").join(format!("{n}.pcap.gz")))
        .collect()
}

/// Each key's first verdict line, after checking that every repeat of a key is the same decision:
/// the same line but for `seq`, the worker's own count.
fn first_verdicts(got: &[TopicRecord]) -> BTreeMap<&[u8], &[u8]> {
    let mut first: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
    let without_seq = |l: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(l).expect("verdict JSON");
        v.as_object_mut().map(|o| o.remove("seq"));
        v
    };
    for r in got {
        let line = first.entry(&r.key).or_insert(&r.payload);
        assert_eq!(
            without_seq(line),
            without_seq(&r.payload),
            "a redelivered flow got another verdict"
        );
    }
    first
}

fn enrol(model: &Path, library: &Path, name: &str, pcap: &str, select: &str) {
    ok(&metaids()
        .args(["threat", "add", "--model"])
        .arg(model)
        .arg("--library")
        .arg(library)
        .args(["--name", name, "--pcap", pcap, "--select", select])
        .args(["--enrol-shots", "5", "--force"])
        .output()
        .expect("threat add"));
}

/// The small test model and a library with one threat enrolled (SSH password guessing), in `dir`.
fn model_and_ssh_library(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("cic.model");
    common::train_small_model(&model);
    let library = dir.join("lib.redb");
    enrol(
        &model,
        &library,
        "ssh",
        "data/pcaps/sshguess.pcap",
        "dport 22",
    );
    (model, library)
}

#[test]
fn a_worker_group_scores_every_flow_once_through_a_kill_a_library_change_and_an_outage() {
    let _turn = serial();
    let broker_bin = tansu();
    assert!(broker_bin.is_file());
    let dir = tempfile::tempdir().expect("tmp");
    let (model, library) = model_and_ssh_library(dir.path());
    let old_library = dir.path().join("old.redb");
    std::fs::copy(&library, &old_library).expect("copy the library");

    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let settings = KafkaSettings::new(&brokers, &[]).expect("settings");
    let broker = Broker::start(port, None);
    publish_library(&brokers, &library);

    let log = |n: &str| dir.path().join(format!("worker-{n}.log"));
    let mut a = spawn_worker(&brokers, &model, None, &log("a"));
    let b = spawn_worker(&brokers, &model, None, &log("b"));
    let c = spawn_worker(&brokers, &model, None, &log("c"));
    wait_for(
        dir.path(),
        Duration::from_secs(90),
        "three workers share the 12 partitions",
        || {
            let parts: Vec<f64> = [&a, &b, &c]
                .iter()
                .filter_map(|w| metric(w, "partitions"))
                .collect();
            parts.len() == 3 && parts.iter().all(|&p| p > 0.0) && parts.iter().sum::<f64>() == 12.0
        },
    );

    // Part 1: the lab's captures but the two largest; worker a is killed once it has scored some.
    let part1 = lab(&[
        "attack-hydra-ssh",
        "attack-nmap-syn",
        "attack-nmap-connect",
        "attack-hping-synflood",
        "attack-sqli",
        "benign-web",
        "benign-dns",
        "benign-api",
        "benign-tls",
        "benign-smtp",
    ]);
    let n1 = publish_flows(&brokers, &part1);
    assert!(n1 > 3000, "{n1} flows in part 1");
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "worker a scores some flows",
        || metric(&a, "flows_total").is_some_and(|f| f > 0.0),
    );
    let a_scored = metric(&a, "flows_total").unwrap_or(0.0);
    a.process.0.kill().expect("kill -9 worker a");
    a.process.0.wait().expect("reap worker a");
    eprintln!("killed worker a after {a_scored} flows");
    wait_for(
        dir.path(),
        Duration::from_secs(120),
        "every part-1 flow has a verdict",
        || distinct_keys(&verdicts(&settings)).len() as u64 >= n1,
    );
    let got = verdicts(&settings);
    let keys = distinct_keys(&got);
    assert_eq!(keys.len() as u64, n1, "one verdict per flow after dedup");
    eprintln!(
        "part 1: {n1} flows, {} verdict messages ({} repeats after the kill)",
        got.len(),
        got.len() - keys.len()
    );
    let first = first_verdicts(&got);
    // The sensor keys flows by source (`extract --kafka-key source`, the default): every source's
    // flows are in one partition, so one worker counts its source context over all of them.
    let flows = read_topic(&settings, "flows", Duration::from_secs(60)).expect("flows topic");
    assert_eq!(flows.len() as u64, n1);
    let mut partitions_of: BTreeMap<std::net::IpAddr, BTreeSet<i32>> = BTreeMap::new();
    for f in &flows {
        let record = metaids_flow::wire::decode(&f.payload).expect("a wire record");
        partitions_of
            .entry(record.src)
            .or_default()
            .insert(f.partition);
    }
    let used: BTreeSet<i32> = partitions_of.values().flatten().copied().collect();
    assert!(
        partitions_of.len() > 3 && used.len() > 1,
        "{} sources over {used:?}",
        partitions_of.len()
    );
    let split: Vec<_> = partitions_of.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        split.is_empty(),
        "sources spread over partitions: {split:?}"
    );
    // The same decisions single-process `detect` makes on the same captures and library.
    let detect_verdicts = dir.path().join("detect-verdicts.jsonl");
    ok(&metaids()
        .args(["detect", "--model"])
        .arg(&model)
        .arg("--library")
        .arg(&library)
        .arg("--pcap")
        .args(&part1)
        .arg("--alerts")
        .arg(dir.path().join("detect-eve.json"))
        .arg("--verdicts")
        .arg(&detect_verdicts)
        .output()
        .expect("detect"));
    let local = std::fs::read(&detect_verdicts).expect("detect verdicts");
    let local = decisions(local.split(|&b| b == b'\n').filter(|l| !l.is_empty()));
    let remote = decisions(first.values().copied());
    let odd: Vec<_> = remote
        .iter()
        .filter(|(k, n)| local.get(k) != Some(n))
        .take(5)
        .collect();
    assert!(
        odd.is_empty() && remote.len() == local.len(),
        "the workers decide otherwise than detect: {} vs {} decisions; first differences {odd:?}",
        remote.len(),
        local.len()
    );
    // Every threat or unknown verdict has its alert, under the id its key implies.
    let alerts = read_topic(&settings, "alerts", Duration::from_secs(60)).expect("alerts");
    let alert_ids: BTreeSet<String> = alerts
        .iter()
        .map(|r| String::from_utf8_lossy(&r.key).into_owned())
        .collect();
    let flagged: BTreeSet<String> = first
        .iter()
        .filter(|(_, l)| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("verdict JSON");
            v["verdict"] != "benign"
        })
        .map(|(k, _)| String::from_utf8_lossy(k).replace(':', "-"))
        .collect();
    assert!(!flagged.is_empty());
    let odd: Vec<&String> = alert_ids.symmetric_difference(&flagged).take(5).collect();
    assert!(
        odd.is_empty(),
        "{} alert ids, {} flagged flows; first differences {odd:?}",
        alert_ids.len(),
        flagged.len()
    );

    // A poison record goes to the dead-letter topic with its reason; the workers keep going.
    let mut outbox =
        metaids_kafka::sensor::Outbox::new(&settings, &[], "test").expect("test producer");
    outbox
        .send("flows", b"k", b"{\"not\": \"a flow record\"}", None)
        .expect("send");
    outbox.flush().expect("acknowledged");
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "the poison record is dead-lettered",
        || read_topic(&settings, "flows.dlq", Duration::from_secs(10)).is_ok_and(|d| d.len() == 1),
    );
    let dead = read_topic(&settings, "flows.dlq", Duration::from_secs(10)).expect("dlq");
    let reason = dead[0]
        .headers
        .iter()
        .find(|(k, _)| k == metaids_kafka::REASON_HEADER)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .expect("a reason header");
    assert!(reason.contains("not a metaids flow record"), "{reason}");

    // A new library version reaches every worker between batches; one started on the old file
    // catches up before it scores anything.
    let old_version = metric(&b, "library_version").expect("b's version");
    enrol(
        &model,
        &library,
        "ftp",
        "data/pcaps/ftp-bruteforce.pcap",
        "dport 21",
    );
    publish_library(&brokers, &library);
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "both workers swap to the new version",
        || {
            [&b, &c]
                .iter()
                .all(|w| metric(w, "library_version").is_some_and(|v| v > old_version))
        },
    );
    let new_version = metric(&b, "library_version").expect("version");
    let d = spawn_worker(&brokers, &model, Some(&old_library), &log("d"));
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "the late worker arms a library",
        || metric(&d, "library_version").is_some_and(|v| v > 0.0),
    );
    assert_eq!(metric(&d, "library_version"), Some(new_version));
    let ready = std::fs::read_to_string(log("d")).expect("d's log");
    assert!(
        ready.contains(&format!("(library version {new_version})")),
        "the late worker started scoring on another version:\n{ready}"
    );

    // Part 2, scored by b, c and d.
    let part2 = lab(&["benign-ssh", "benign-ftp", "attack-hydra-ftp"]);
    let n2 = publish_flows(&brokers, &part2);
    wait_for(
        dir.path(),
        Duration::from_secs(120),
        "every part-2 flow has a verdict",
        || distinct_keys(&verdicts(&settings)).len() as u64 >= n1 + n2,
    );
    assert_eq!(distinct_keys(&verdicts(&settings)).len() as u64, n1 + n2);

    // A broker outage: the broker stops answering (SIGSTOP) for longer than the group's session
    // timeout while a sensor publishes; when it answers again (SIGCONT) the sensor's queued flows
    // are delivered and the same worker processes rejoin and score them.
    let pid = broker.process.0.id().to_string();
    let signal = |sig: &str| {
        let s = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(s.success(), "kill {sig} {pid}");
    };
    let before = distinct_keys(&verdicts(&settings)).len() as u64;
    signal("-STOP");
    let sensor = {
        let brokers = brokers.clone();
        let part3 = lab(&["attack-nmap-version", "benign-dns"]);
        std::thread::spawn(move || publish_flows(&brokers, &part3))
    };
    std::thread::sleep(Duration::from_secs(12));
    signal("-CONT");
    let n3 = sensor.join().expect("the sensor thread");
    wait_for(
        dir.path(),
        Duration::from_secs(150),
        "workers resume after the outage",
        || distinct_keys(&verdicts(&settings)).len() as u64 >= before + n3,
    );
    assert_eq!(
        distinct_keys(&verdicts(&settings)).len() as u64,
        n1 + n2 + n3
    );
    for (name, w) in [("b", &b), ("c", &c), ("d", &d)] {
        assert!(
            metric(w, "flows_total").is_some(),
            "worker {name} stopped during the outage: {}",
            std::fs::read_to_string(log(name)).unwrap_or_default()
        );
    }
    drop(broker);
}

#[test]
fn workers_and_a_sensor_ride_out_a_broker_restart() {
    let _turn = serial();
    let dir = tempfile::tempdir().expect("tmp");
    let store = S3Store::start(&dir.path().join("s3store.log"));
    let (model, library) = model_and_ssh_library(dir.path());
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let settings = KafkaSettings::new(&brokers, &[]).expect("settings");
    let mut broker = Broker::start(port, Some(&store));
    publish_library(&brokers, &library);

    let log = |n: &str| dir.path().join(format!("worker-{n}.log"));
    let mut workers = [
        spawn_worker(&brokers, &model, None, &log("a")),
        spawn_worker(&brokers, &model, None, &log("b")),
    ];
    wait_for(
        dir.path(),
        Duration::from_secs(90),
        "two workers share the 12 partitions",
        || {
            let parts: Vec<f64> = workers
                .iter()
                .filter_map(|w| metric(w, "partitions"))
                .collect();
            parts.len() == 2 && parts.iter().all(|&p| p > 0.0) && parts.iter().sum::<f64>() == 12.0
        },
    );
    let n1 = publish_flows(&brokers, &lab(&["attack-hydra-ssh", "benign-dns"]));
    wait_for(
        dir.path(),
        Duration::from_secs(120),
        "every flow before the restart has a verdict",
        || distinct_flows(&verdicts(&settings)) >= n1,
    );

    // The broker is killed while a sensor publishes (1,000 flows paced at 50 a second: the S3
    // store behind this broker is slow with small batches) and the workers score, and comes back
    // 5 s later on the same port and storage.
    let scored = |ws: &[Worker]| -> f64 {
        ws.iter()
            .filter_map(|w| metric(w, "flows_total"))
            .sum::<f64>()
    };
    let base = scored(&workers);
    let sensor = {
        let brokers = brokers.clone();
        std::thread::spawn(move || {
            publish_flows_paced(&brokers, &lab(&["attack-nmap-syn"]), Some(50))
        })
    };
    wait_for(
        dir.path(),
        Duration::from_secs(60),
        "the workers score some of the sensor's flows",
        || scored(&workers) >= base + 100.0,
    );
    let before_restart = scored(&workers) - base;
    drop(broker);
    assert!(
        !sensor.is_finished(),
        "the sensor finished before the broker went down"
    );
    std::thread::sleep(Duration::from_secs(5));
    broker = Broker::start(port, Some(&store));
    let n2 = sensor.join().expect("the sensor thread");
    eprintln!("broker restarted mid-stream: {before_restart} of {n2} flows scored before");
    wait_for(
        dir.path(),
        Duration::from_secs(180),
        "every flow published across the restart has a verdict",
        || distinct_flows(&verdicts(&settings)) >= n1 + n2,
    );
    // After the restart: a third capture, scored by the same worker processes.
    let n3 = publish_flows(&brokers, &lab(&["attack-nmap-version"]));
    wait_for(
        dir.path(),
        Duration::from_secs(120),
        "every flow published after the restart has a verdict",
        || distinct_flows(&verdicts(&settings)) >= n1 + n2 + n3,
    );
    // A worker's redelivered batch repeats a key; a sensor's request retried across the restart
    // (the producer is not idempotent) can put a flow on the topic twice, under two keys: the
    // flow's own id (`flow_id`, from its endpoints and start) counts flows.
    let got = verdicts(&settings);
    let first = first_verdicts(&got);
    let flows: BTreeMap<u64, &[u8]> = first
        .values()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("verdict JSON");
            (v["flow_id"].as_u64().expect("flow_id"), *l)
        })
        .collect();
    assert_eq!(
        flows.len() as u64,
        n1 + n2 + n3,
        "one verdict per flow after dedup"
    );
    eprintln!(
        "{} flows, {} verdict messages under {} keys",
        n1 + n2 + n3,
        got.len(),
        first.len()
    );
    for (name, w) in ["a", "b"].iter().zip(workers.iter_mut()) {
        assert!(
            w.process.0.try_wait().expect("worker status").is_none(),
            "worker {name} exited across the restart: {}",
            std::fs::read_to_string(log(name)).unwrap_or_default()
        );
        assert!(metric(w, "flows_total").is_some_and(|f| f > 0.0));
    }
    drop(broker);
}
