//! The detector on real data: a small model meta-trained in-test on the corrected CIC-IDS2017 files, a
//! threat armed from 5 flows of zeek's `ssh/sshguess.pcap`, then the whole capture and every other
//! shared capture run through the pipeline. Checks recall on the rest of the capture's guessing
//! flows, how flows of other captures are classified, the EVE records field by field, deduplication
//! counts, the verdicts file and the nftables script (`nft -c -f` when nft is installed).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use metaids_core::preprocess::PreprocessConfig;
use metaids_core::split::SplitSpec;
use metaids_detect::{
    ArmedThreats, Counter, Detector, DetectorOptions, EveSink, NftConfig, NftablesSink, Pipeline,
    PipelineOptions, RateLimit, Sink, Summary, Threat, ThreatOrigin, VerdictKind, VerdictSink,
    UNKNOWN_SIGNATURE_ID,
};
use metaids_flow::{CaptureReader, FlowConfig, FlowEngine, FlowRecord, FrameBuilder, ReaderConfig};
use metaids_ingest::{read_files, resolve_files, ReadOptions};
use metaids_library::{EnrolOptions, ThreatDraft, ThreatLibrary};
use metaids_model::{train, EncoderConfig, Provenance, ThreatModel, TrainConfig};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn shared(sub: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p
}

/// A small CIC model, trained once per test binary (seeded).
fn model() -> Arc<ThreatModel> {
    static MODEL: OnceLock<Arc<ThreatModel>> = OnceLock::new();
    Arc::clone(MODEL.get_or_init(|| {
        let text = std::fs::read_to_string(repo("splits/cic-ids2017.toml")).expect("split file");
        let spec = SplitSpec::from_toml(&text).expect("spec");
        let files = resolve_files(&shared("cic-ids2017-improved"), &spec.files).expect("files");
        let opts = ReadOptions {
            dataset: Some(spec.dataset),
            ..Default::default()
        };
        let (frame, _) = read_files(&files, &opts).expect("read");
        let split = spec.apply(&frame).expect("split");
        let enc = EncoderConfig {
            hidden: 64,
            depth: 1,
            embedding: 32,
            ..EncoderConfig::for_input(0)
        };
        let cfg = TrainConfig {
            seed: 11,
            steps: 300,
            eval_every: 50,
            patience: 0,
            validation_episodes: 10,
            ways: 5,
            queries: 10,
            ..TrainConfig::default()
        };
        let m = train(
            &frame,
            &split,
            PreprocessConfig::default(),
            enc,
            &cfg,
            Provenance::default(),
            &mut |_| {},
        )
        .expect("train");
        Arc::new(m)
    }))
}

fn flows_of(path: &Path) -> Vec<FlowRecord> {
    let mut reader = CaptureReader::new(
        BufReader::new(File::open(path).expect("open")),
        ReaderConfig::default(),
    )
    .expect("capture");
    let mut engine = FlowEngine::new(FlowConfig::default()).expect("engine");
    let mut flows = Vec::new();
    while let Ok(Some(p)) = reader.next_packet() {
        flows.extend(engine.push(&p));
    }
    flows.extend(engine.finish());
    flows
}

fn sshguess() -> PathBuf {
    shared("pcaps/zeek-traces/ssh/sshguess.pcap")
}

/// The capture's guessing flows: TCP to port 22 from the guesser (zeek's notice names 192.168.56.1).
fn is_guess(f: &FlowRecord) -> bool {
    f.protocol == 6 && f.dst_port == 22 && f.src.to_string() == "192.168.56.1"
}

/// The threat armed from the first 5 guessing flows (in emission order), with their flow ids.
fn ssh_threat(m: &ThreatModel) -> (Threat, Vec<u64>) {
    let flows = flows_of(&sshguess());
    let support: Vec<&FlowRecord> = flows.iter().filter(|f| is_guess(f)).take(5).collect();
    assert_eq!(
        support.len(),
        5,
        "sshguess.pcap has fewer than 5 guessing flows"
    );
    let mut b = FrameBuilder::new("support");
    for f in &support {
        b.push(f);
    }
    let emb = m
        .embed_rows(b.frame(), &(0..5).collect::<Vec<_>>())
        .expect("embed");
    (
        enrol(m, 1, "SSH password guessing", &emb),
        support.iter().map(|f| f.id).collect(),
    )
}

/// Threat `id` enrolled from support embeddings with the decision core's fit at the model's budget.
fn enrol(m: &ThreatModel, id: u32, name: &str, emb: &[f32]) -> Threat {
    let draft = ThreatDraft::from_embeddings(name, emb, m.dim(), "test", "test");
    Threat::enrol(
        &m.reference,
        id,
        &draft,
        m.reference.fpr_budget,
        String::new(),
    )
    .expect("enrol")
}

fn captures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![shared("pcaps")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Run {
    summary: Summary,
    eve: Vec<serde_json::Value>,
    verdicts: Vec<serde_json::Value>,
    nft: String,
    nft_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn run(inputs: &[PathBuf], rate: RateLimit, threats: Vec<Threat>) -> Run {
    let m = model();
    let dir = tempfile::tempdir().expect("tmp");
    let alerts = dir.path().join("eve.json");
    let verdicts = dir.path().join("verdicts.jsonl");
    let nft_path = dir.path().join("block.nft");
    let detector =
        Detector::new(Arc::clone(&m), threats, DetectorOptions::default(), 7).expect("detector");
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(NftablesSink::create(&nft_path, NftConfig::default()).expect("nft")),
        Box::new(EveSink::create(&alerts, true).expect("eve")),
        Box::new(VerdictSink::create(&verdicts).expect("verdicts")),
    ];
    let opts = PipelineOptions {
        batch_size: 64,
        rate_limit: rate,
        run_id: "test".into(),
        ..PipelineOptions::default()
    };
    let mut p = Pipeline::new(detector, sinks, opts).expect("pipeline");
    for path in inputs {
        let input = BufReader::new(File::open(path).expect("open"));
        let name = path.display().to_string();
        p.push_capture(input, &name, FlowConfig::default())
            .expect("capture");
    }
    let summary = p.finish().expect("finish");
    assert!(!dir.path().join("eve.json.partial").exists());
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };
    Run {
        summary,
        eve: lines(&alerts),
        verdicts: lines(&verdicts),
        nft: std::fs::read_to_string(&nft_path).expect("nft"),
        nft_path,
        _dir: dir,
    }
}

/// Suricata's own EVE schema (`etc/schema.json`, test data only: see tests/data/SOURCES.md).
fn suricata_schema() -> jsonschema::Validator {
    let path = repo("crates/detect/tests/data/suricata-eve-schema.json");
    let text = std::fs::read_to_string(&path).expect("schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .expect("Suricata's schema compiles")
}

/// The schema's complaints about `record`, one line each.
fn schema_errors(v: &jsonschema::Validator, record: &serde_json::Value) -> Vec<String> {
    v.iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn is_suricata_timestamp(s: &str) -> bool {
    // 2026-11-28T23:35:53.123456+0000
    let b = s.as_bytes();
    b.len() == 31
        && s[..4].bytes().all(|c| c.is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && s[20..26].bytes().all(|c| c.is_ascii_digit())
        && &s[26..] == "+0000"
}

/// Arms a threat from the first 5 flows of `pcap` that `attack` selects, scores every flow of the
/// capture, and then every other shared capture; returns (recall on the other attack flows, attack
/// flows besides the support, fraction of other captures' flows flagged).
fn case(pcap: &Path, name: &str, attack: fn(&FlowRecord) -> bool) -> (f64, usize, f64) {
    let m = model();
    let flows = flows_of(pcap);
    let support: Vec<&FlowRecord> = flows.iter().filter(|f| attack(f)).take(5).collect();
    assert_eq!(
        support.len(),
        5,
        "{} has fewer than 5 attack flows",
        pcap.display()
    );
    let support_ids: Vec<u64> = support.iter().map(|f| f.id).collect();
    let mut b = FrameBuilder::new("support");
    for f in &support {
        b.push(f);
    }
    let emb = m
        .embed_rows(b.frame(), &(0..5).collect::<Vec<_>>())
        .expect("embed");
    let threat = enrol(&m, 1, name, &emb);
    let detector = Detector::new(
        Arc::clone(&m),
        vec![threat.clone()],
        DetectorOptions::default(),
        1,
    )
    .expect("detector");
    let mut b = FrameBuilder::new("capture");
    for f in &flows {
        b.push(f);
    }
    let x = m
        .normaliser
        .transform(b.frame(), &(0..flows.len()).collect::<Vec<_>>())
        .expect("x");
    let emb = detector.embed(&x).expect("embed");
    let mut verdicts = Vec::new();
    detector.decide_batch(&emb, &x, &mut verdicts);
    let (mut hit, mut attacks, mut other_flagged, mut others) = (0, 0, 0, 0);
    for (f, v) in flows.iter().zip(&verdicts) {
        if support_ids.contains(&f.id) {
            continue;
        }
        if attack(f) {
            attacks += 1;
            hit += usize::from(v.kind == VerdictKind::Threat);
        } else {
            others += 1;
            other_flagged += usize::from(v.kind == VerdictKind::Threat);
        }
    }
    let recall = hit as f64 / attacks.max(1) as f64;
    let rest: Vec<PathBuf> = captures().into_iter().filter(|p| p != pcap).collect();
    let r = run(&rest, RateLimit::default(), vec![threat.clone()]);
    let s = &r.summary;
    let flagged = s.threat_total() as f64 / s.flows.max(1) as f64;
    println!(
        "{name}: {} flows in {}; {attacks} attack flows besides the 5 support flows: recall {recall:.3} ({hit}); \
         {other_flagged} of {others} non-attack flows of the capture flagged; threshold {}.\n  \
         other {} captures: {} flows: {} benign, {} unknown, {} flagged as {name} ({:.4})",
        flows.len(),
        pcap.display(),
        threat.threshold,
        rest.len(),
        s.flows,
        s.benign,
        s.unknown,
        s.threat_total(),
        flagged
    );
    assert!(s.flows > 1000, "{}", s.flows);
    (recall, attacks, flagged)
}

#[test]
fn threats_from_five_flows_detect_the_rest_of_their_capture() {
    // SSH password guessing (zeek's notice names 192.168.56.1 as the guesser).
    let (recall, n, flagged) = case(&sshguess(), "SSH password guessing", is_guess);
    assert!(n >= 5, "{n}");
    assert!(recall >= 0.8, "SSH recall {recall:.3} over {n} flows");
    assert!(
        flagged < 0.1,
        "{flagged:.4} of other captures' flows flagged as SSH guessing"
    );
    // FTP brute force (zeek's notice names 192.168.56.1 with 20 failed logins).
    let ftp = shared("pcaps/zeek-traces/ftp/bruteforce.pcap");
    let (recall, n, flagged) = case(&ftp, "FTP brute force", |f| {
        f.protocol == 6 && f.dst_port == 21 && f.src.to_string() == "192.168.56.1"
    });
    assert!(n >= 5, "{n}");
    assert!(recall >= 0.8, "FTP recall {recall:.3} over {n} flows");
    assert!(
        flagged < 0.1,
        "{flagged:.4} of other captures' flows flagged as FTP brute force"
    );
}

#[test]
fn eve_records_verdicts_dedup_and_nftables_script() {
    let m = model();
    let (threat, _) = ssh_threat(&m);
    let sig = threat.signature_id;
    let name = threat.name.clone();
    let inputs = vec![
        sshguess(),
        shared("pcaps/esnet-scanners/nmap/nmap_80_all.pcap"),
    ];
    let r = run(
        &inputs,
        RateLimit {
            window_s: 60,
            max_per_window: 2,
            ..RateLimit::default()
        },
        vec![threat.clone()],
    );
    let s = &r.summary;
    println!("{s}");
    // Every flow has exactly one verdict line, with the documented fields.
    assert_eq!(r.verdicts.len() as u64, s.flows);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (i, v) in r.verdicts.iter().enumerate() {
        assert_eq!(v["seq"].as_u64(), Some(i as u64 + 1));
        // Issue 10: the 5-tuple, start and origin, and a flow id stable across runs.
        assert!(v["flow_id"]
            .as_u64()
            .is_some_and(|id| id > 0 && id < 1 << 52));
        assert!(v["src_ip"].is_string() && v["dest_port"].is_u64() && v["proto"].is_u64());
        assert!(
            v["start"].as_str().is_some_and(|t| t.ends_with("+0000")),
            "{v}"
        );
        assert!(
            v["origin"].as_str().is_some_and(|o| o.contains(".pcap")),
            "{v}"
        );
        let k = v["verdict"].as_str().expect("verdict");
        *kinds.entry(k.into()).or_default() += 1;
        assert!(["benign", "threat", "unknown"].contains(&k));
        assert_eq!(v["threat"].as_str(), Some(name.as_str()));
        assert!(v["distance"].is_f64() && v["score"].is_f64() && v["confidence"].is_f64());
        let c = v["confidence"].as_f64().expect("c");
        assert!((0.0..=1.0).contains(&c));
        let score = v["score"].as_f64().expect("score");
        assert_eq!(score > 0.0, k != "benign", "{v}");
    }
    assert_eq!(kinds.get("benign").copied().unwrap_or(0), s.benign);
    assert_eq!(kinds.get("unknown").copied().unwrap_or(0), s.unknown);
    assert_eq!(kinds.get("threat").copied().unwrap_or(0), s.threat_total());
    // Deduplication: every threat/unknown verdict is an alert or suppressed.
    assert_eq!(s.alerts + s.suppressed, s.threat_total() + s.unknown);
    assert!(s.suppressed > 0, "the guesser alone repeats in a window");
    assert_eq!(s.counter(Counter::AlertsWritten), s.alerts);
    assert_eq!(s.counter(Counter::FlowRecordsWritten), s.flows);

    let alerts: Vec<&serde_json::Value> = r
        .eve
        .iter()
        .filter(|e| e["event_type"] == "alert")
        .collect();
    let flows: Vec<&serde_json::Value> =
        r.eve.iter().filter(|e| e["event_type"] == "flow").collect();
    assert_eq!(alerts.len() as u64, s.alerts);
    assert_eq!(flows.len() as u64, s.flows);
    assert!(!alerts.is_empty());
    let mut per_key: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut explained = 0;
    for e in &alerts {
        assert!(
            is_suricata_timestamp(e["timestamp"].as_str().expect("ts")),
            "{e}"
        );
        assert!(e["flow_id"].is_u64());
        for k in ["src_ip", "dest_ip"] {
            let ip = e[k].as_str().expect("ip");
            assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
        }
        let icmp = e["proto"].as_str().is_some_and(|p| p.contains("ICMP"));
        assert!(
            icmp || (e["src_port"].is_u64() && e["dest_port"].is_u64()),
            "{e}"
        );
        assert!(["TCP", "UDP", "ICMP", "IPv6-ICMP"].contains(&e["proto"].as_str().expect("proto")));
        let a = &e["alert"];
        assert_eq!(a["action"], "allowed");
        assert_eq!(a["gid"], 1);
        assert!(a["rev"].is_u64());
        let sid = a["signature_id"].as_u64().expect("sid");
        let sev = a["severity"].as_u64().expect("severity");
        assert!((1..=4).contains(&sev));
        let md = a["metadata"].as_object().expect("metadata map");
        for (_, v) in md {
            let list = v.as_array().expect("metadata values are lists");
            assert!(list.iter().all(serde_json::Value::is_string));
        }
        for key in [
            "verdict",
            "distance",
            "score",
            "confidence",
            "nearest_prototypes",
            "top_features",
            "model_version",
            "library_version",
        ] {
            assert!(md.contains_key(key), "metadata lacks {key}: {e}");
        }
        assert_eq!(md["library_version"][0], "7");
        let x = &e["alert"]["context"]["metaids"];
        let verdict = x["verdict"].as_str().expect("verdict");
        if sid == u64::from(UNKNOWN_SIGNATURE_ID) {
            assert_eq!(a["signature"], "metaids unknown anomaly");
            assert_eq!(a["category"], "Unknown anomaly");
            assert_eq!(verdict, "unknown");
        } else {
            assert_eq!(sid, u64::from(sig));
            assert_eq!(a["signature"], format!("metaids {name}"));
            assert_eq!(verdict, "threat");
            assert_eq!(x["threat"], name.as_str());
        }
        assert!(ids.insert(x["alert_id"].as_str().expect("alert id").to_string()));
        assert!(x["alert_id"].as_str().expect("id").starts_with("test-"));
        assert_eq!(x["embedding"].as_array().expect("embedding").len(), m.dim());
        assert!(!x["nearest"].as_array().expect("nearest").is_empty());
        let top = x["top_features"].as_array().cloned().unwrap_or_default();
        assert!(top.len() <= 5);
        explained += usize::from(!top.is_empty());
        for f in &top {
            assert!(f["name"].is_string() && f["z"].is_f64());
            assert!(f["effect"].as_f64().expect("effect") > 0.0, "{f}");
        }
        assert!(x["score"].as_f64().expect("score") > 0.0);
        assert!(x["model"].as_str().expect("model").len() == 16);
        *per_key
            .entry((e["src_ip"].as_str().expect("src").to_string(), sid))
            .or_default() += 1;
    }
    assert!(explained > 0, "no alert names a feature that moved it");
    // At most 2 alerts per (source, signature, 60 s window): these captures span a few minutes.
    let guesser = per_key
        .get(&("192.168.56.1".to_string(), u64::from(sig)))
        .copied()
        .unwrap_or(0);
    assert!(guesser >= 1, "{per_key:?}");
    // Issue 14: every alert is valid under Suricata's own schema; so is every flow record once its
    // `metaids` object (for which the schema has no open place) is set aside. ICMP flows carry
    // their type and code, not ports, and have a Community ID.
    let schema = suricata_schema();
    for e in &alerts {
        let errors = schema_errors(&schema, e);
        assert!(errors.is_empty(), "{errors:?}\n{e}");
        assert_eq!(
            e.get("metaids"),
            None,
            "alerts keep metaids under alert.context"
        );
    }
    let mut icmp = 0;
    for f in &flows {
        let mut plain = (*f).clone();
        let own = plain
            .as_object_mut()
            .expect("object")
            .remove("metaids")
            .expect("metaids");
        let errors = schema_errors(&schema, &plain);
        assert!(errors.is_empty(), "{errors:?}\n{f}");
        // metaids.threat only on threat verdicts; the nearest threat otherwise.
        if own["verdict"] == "threat" {
            assert_eq!(own["threat"], name.as_str(), "{f}");
        } else {
            assert!(own.get("threat").is_none(), "{f}");
            assert_eq!(own["nearest_threat"], name.as_str(), "{f}");
        }
        if f["proto"] == "ICMP" {
            icmp += 1;
            assert!(f["icmp_type"].is_u64() && f["icmp_code"].is_u64(), "{f}");
            assert!(
                f.get("src_port").is_none() && f.get("dest_port").is_none(),
                "{f}"
            );
            assert!(f["community_id"].is_string(), "{f}");
        }
    }
    assert!(icmp > 0, "nmap_80_all.pcap has ICMP flows");
    // A record the schema must refuse: the test is not vacuous.
    let mut bad = alerts[0].clone();
    bad["alert"]["severity"] = serde_json::json!("high");
    bad["unexpected"] = serde_json::json!(1);
    assert!(schema_errors(&schema, &bad).len() >= 2);
    for f in &flows {
        assert!(f["flow"]["pkts_toserver"].is_u64() && f["flow"]["age"].is_u64());
        assert!(is_suricata_timestamp(
            f["flow"]["end"].as_str().expect("end")
        ));
    }

    // The nftables script holds the guesser once, in the IPv4 set, and nft accepts it.
    assert_eq!(
        r.nft
            .lines()
            .filter(|l| l
                .starts_with("add element inet metaids blocklist { 192.168.56.1 timeout 3600s }"))
            .count(),
        1,
        "{}",
        r.nft
    );
    assert_eq!(
        s.counter(Counter::NftElements) as usize,
        r.nft.matches("add element").count()
    );
    match std::process::Command::new("nft")
        .args(["-c", "-f"])
        .arg(&r.nft_path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "nft -c -f refused the script: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            r.nft
        ),
        Err(e) => println!("skipping the nft -c -f check: nft is not available ({e})"),
    }
}

/// Issue 10: what `metaids threat export` writes drives detection with the very verdicts the library
/// gives; a document of another model is refused.
#[test]
fn exported_document_detects_exactly_as_the_library() {
    let m = model();
    let dir = tempfile::tempdir().expect("tmp");
    let lib_path = dir.path().join("threats.redb");
    let library = ThreatLibrary::create(&lib_path, &m).expect("create");
    let (threat, _) = ssh_threat(&m);
    let draft = ThreatDraft::from_embeddings(
        &threat.name,
        &threat
            .support
            .iter()
            .flat_map(|f| f.embedding.clone())
            .collect::<Vec<_>>(),
        m.dim(),
        "sshguess.pcap",
        "test",
    );
    library
        .add(&m, &draft, EnrolOptions::default())
        .expect("enrol");
    let doc_path = dir.path().join("threats.json");
    library.export_to(&doc_path).expect("export");
    drop(library);
    let from_library = ArmedThreats::load(&lib_path, &m).expect("library");
    let from_document = ArmedThreats::load(&doc_path, &m).expect("document");
    assert_eq!(from_library.origin, ThreatOrigin::Library);
    assert_eq!(from_document.origin, ThreatOrigin::Document);
    assert_eq!(from_library.threats, from_document.threats);
    assert_eq!(from_library.library_version, from_document.library_version);
    let a = run(&captures(), RateLimit::default(), from_library.threats);
    let b = run(
        &captures(),
        RateLimit::default(),
        from_document.threats.clone(),
    );
    assert_eq!(a.verdicts, b.verdicts);
    assert!(
        a.verdicts.iter().any(|v| v["verdict"] == "threat"),
        "the round trip compares runs that raise alerts"
    );
    // The same document under another model identity is refused, naming the document.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc_path).expect("read")).expect("json");
    doc["model"]["model"] = serde_json::Value::String("0".repeat(64));
    let other = dir.path().join("other.json");
    std::fs::write(&other, doc.to_string()).expect("write");
    let err = ArmedThreats::load(&other, &m).expect_err("another model");
    assert!(err.to_string().contains("other.json"), "{err}");
    assert!(
        err.to_string().contains("another") || err.to_string().contains("model"),
        "{err}"
    );

    let set = from_document;
    // A frame of another layout is refused with the model's schema named.
    let detector =
        Detector::new(Arc::clone(&m), set.threats, DetectorOptions::default(), 3).expect("d");
    let mut p = Pipeline::new(detector, Vec::new(), PipelineOptions::default()).expect("p");
    let nsl = metaids_core::FlowFrame::new(metaids_core::DatasetKind::NslKdd.layout());
    let err = p.push_frame(&nsl, &mut |_| {}).expect_err("schema");
    assert!(err.to_string().contains("nsl-kdd"), "{err}");
}

/// The source context the site forest reads is counted the same way from a frame (baseline,
/// enrolment, site-eval: `metaids_library::source_context` over identifiers and the `Dst Port`
/// column, keyed by the address's text) as the pipeline counts the flow records it scores (keyed by
/// the address itself, with their start and port), on real captures.
#[test]
fn source_context_from_a_frame_equals_the_pipelines() {
    let scanner = std::fs::read_dir(shared("pcaps/esnet-scanners/nmap"))
        .expect("scanners")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .min()
        .expect("a scanner capture");
    let mut ports_seen = 0.0f32;
    for pcap in [sshguess(), scanner] {
        let flows = flows_of(&pcap);
        let pcap = pcap.display();
        let mut b = FrameBuilder::with_identifiers("capture");
        for f in &flows {
            b.push(f);
        }
        let all: Vec<usize> = (0..flows.len()).collect();
        let from_frame = metaids_library::source_context(b.frame(), &all);
        // As the pipeline counts: keyed by the record's address, its start and port.
        let mut context =
            metaids_core::context::SourceContext::new(metaids_library::CONTEXT_SOURCES);
        let from_records: Vec<f32> = flows
            .iter()
            .flat_map(|f| {
                let key = metaids_core::context::SourceContext::key(&f.src);
                context.push_key(key, f.start_us, f.dst_port)
            })
            .collect();
        assert_eq!(from_frame, from_records, "{pcap}");
        // Not trivially equal: some source opens more than one flow, and (the scan) to other ports.
        assert!(from_frame.chunks_exact(3).any(|c| c[0] > 0.0), "{pcap}");
        ports_seen = ports_seen.max(from_frame.chunks_exact(3).map(|c| c[1]).fold(0.0, f32::max));
    }
    assert!(ports_seen >= 2.0, "the ports must be read: {ports_seen}");
}
