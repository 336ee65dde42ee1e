//! `metaids site-eval` end to end on the lab captures shipped in data/lab (a network no dataset here
//! comes from), with a small CIC-IDS2017 model trained in the test: every attack family is read and
//! scored, a budget the baseline cannot support is refused with what it needs, and the site
//! baseline brings the benign share flagged down from the model's own reference to near the budget.

mod common;

use std::path::PathBuf;

use common::{metaids, ok};

/// The repository root (the binary runs there; `data/` is beside it).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_site_protocol_on_the_lab_captures() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("cic.model");
    ok(&metaids()
        .args(["train", "--dataset", "cic", "--data"])
        .arg(repo().join("data/cic-ids2017"))
        .args([
            "--steps",
            "150",
            "--hidden",
            "64",
            "--depth",
            "1",
            "--embedding",
            "32",
        ])
        .args(["--eval-every", "50", "--seed", "5", "--quiet", "--out"])
        .arg(&model)
        .output()
        .expect("train"));
    let json = dir.path().join("site.json");
    let verdicts = dir.path().join("verdicts.csv");
    let table = ok(&metaids()
        .args(["site-eval", "--model"])
        .arg(&model)
        .arg("--captures")
        .arg(repo().join("data/lab"))
        .args(["--repeats", "2", "--site-forest", "--json"])
        .arg(&json)
        .arg("--verdicts-csv")
        .arg(&verdicts)
        .output()
        .expect("site-eval"));
    assert!(table.contains("| site baseline, 0.01 |"), "{table}");
    assert!(
        table.contains("| site baseline + normaliser refit + site forest, 0.01 |"),
        "{table}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let families: Vec<&str> = v["families"]
        .as_array()
        .expect("families")
        .iter()
        .map(|f| f["family"].as_str().expect("name"))
        .collect();
    assert_eq!(
        families,
        [
            "ftp-guessing",
            "http-flood",
            "portscan",
            "service-probe",
            "slow-body",
            "slowloris",
            "sql-injection",
            "ssh-guessing",
            "syn-flood"
        ]
    );
    assert!(v["benign_flows"].as_u64().expect("benign") > 3000);
    // The site forest is fitted with the timing jitter `baseline` arms it with, and says so.
    assert_eq!(v["protocol"]["timing_jitter"], true);
    assert!(table.contains("timing-jittered copies"), "{table}");
    // 0.01 is calibrated; 0.001 needs 10,000 calibration rows the window does not have.
    let b = &v["budgets"];
    assert!(b[0]["refused"].is_null(), "{}", b[0]);
    let refused = b[1]["refused"].as_str().expect("0.001 refused");
    assert!(refused.contains("10000 calibration rows"), "{refused}");
    // The same draws decided with the model's reference (no baseline) flag far more benign flows.
    let with = b[0]["benign_flagged_rate"]["mean"].as_f64().expect("with");
    let without = v["without_baseline"]["benign_flagged_rate"]["mean"]
        .as_f64()
        .expect("without");
    assert!(with < 0.03, "benign flagged with the site baseline: {with}");
    assert!(without > 2.0 * with, "without {without}, with {with}");
    // The site forest names the SQL injection requests, which the embedding puts among the lab's
    // own API requests, within the same benign budget.
    let forest = &v["site_forest"]["budgets"][0];
    let forest_rate = forest["benign_flagged_rate"]["mean"]
        .as_f64()
        .expect("forest rate");
    assert!(
        forest_rate < 0.03,
        "benign flagged with the site forest: {forest_rate}"
    );
    for r in forest["repeats"].as_array().expect("forest repeats") {
        let sqli = r["families"]
            .as_array()
            .expect("families")
            .iter()
            .find(|f| f["family"] == "sql-injection")
            .expect("sql-injection");
        let (named, scored) = (sqli["named"].as_u64(), sqli["scored"].as_u64());
        let (named, scored) = (named.expect("named"), scored.expect("scored"));
        assert!(
            named * 10 >= scored * 9,
            "site forest on SQL injection: {sqli}"
        );
    }
    // Every scored flow's verdict, located in its capture: the SQL injection flows the site
    // forest named in its first repeat are the JSON's count, each from the attacker to the web
    // server (nginx proxies the API inside the server).
    let csv = std::fs::read_to_string(&verdicts).expect("verdicts csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("rule,budget,repeat,role,flow,label,verdict,named,correct,capture,capture_flow,src_ip,src_port,dest_ip,dest_port,start")
    );
    let sqli: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| {
            c[0] == "site baseline + normaliser refit + site forest"
                && c[2] == "0"
                && c[3] == "scored"
                && c[5] == "sql-injection"
        })
        .collect();
    let first = forest["repeats"][0]["families"]
        .as_array()
        .expect("families")
        .iter()
        .find(|f| f["family"] == "sql-injection")
        .expect("sql-injection")
        .clone();
    assert_eq!(Some(sqli.len() as u64), first["scored"].as_u64());
    let named = sqli.iter().filter(|c| c[8] == "true").count() as u64;
    assert_eq!(Some(named), first["named"].as_u64());
    assert!(
        sqli.iter().all(|c| c[9].ends_with("attack-sqli.pcap.gz")
            && c[14] == "80"
            && c[11] == "10.77.0.66"),
        "{:?}",
        sqli.first()
    );
    for r in b[0]["repeats"].as_array().expect("repeats") {
        assert_eq!(r["baseline_offered"], 2000);
        let scored: u64 = r["families"]
            .as_array()
            .expect("families")
            .iter()
            .map(|f| f["scored"].as_u64().expect("scored"))
            .sum();
        // Every attack flow but the 5 enrolled per family is scored.
        assert_eq!(
            scored + 9 * 5,
            13641 - v["benign_flows"].as_u64().expect("b")
        );
    }

    // The same draws with the budget held at 95% confidence: calibrated lower, so no more benign
    // flows flagged than on average, and the protocol says so.
    let held = dir.path().join("held.json");
    let table = ok(&metaids()
        .args(["site-eval", "--model"])
        .arg(&model)
        .arg("--captures")
        .arg(repo().join("data/lab"))
        .args([
            "--repeats",
            "2",
            "--budgets",
            "0.01",
            "--confidence",
            "0.95",
            "--json",
        ])
        .arg(&held)
        .output()
        .expect("site-eval --confidence"));
    assert!(table.contains("confidence 0.95"), "{table}");
    let h: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&held).expect("json")).expect("parse");
    assert_eq!(h["protocol"]["confidence"], 0.95, "{}", h["protocol"]);
    let held_rate = h["budgets"][0]["benign_flagged_rate"]["mean"]
        .as_f64()
        .expect("held rate");
    assert!(held_rate <= with, "held {held_rate}, on average {with}");

    // The LayerNorm adaptation (fit on each repeat's baseline window) is reported beside the
    // plain baseline; a model whose file records no LayerNorm moments cannot adapt and says why.
    let adapted = dir.path().join("adapted.json");
    let table = ok(&metaids()
        .args(["site-eval", "--model"])
        .arg(&model)
        .arg("--captures")
        .arg(repo().join("data/lab"))
        .args(["--repeats", "1", "--adapt", "layernorm", "--json"])
        .arg(&adapted)
        .output()
        .expect("site-eval --adapt"));
    assert!(
        table.contains("| site baseline + LayerNorm adaptation, 0.01 |"),
        "{table}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&adapted).expect("json")).expect("parse");
    assert_eq!(v["adaptation"]["name"], "LayerNorm adaptation");
    let rate = v["adaptation"]["budgets"][0]["benign_flagged_rate"]["mean"]
        .as_f64()
        .expect("adapted rate");
    assert!(rate < 0.05, "benign flagged after adaptation: {rate}");
    let old = dir.path().join("old.model");
    std::fs::create_dir(&old).expect("mkdir");
    for f in ["weights.safetensors", "manifest.json"] {
        std::fs::copy(model.join(f), old.join(f)).expect("copy");
    }
    let manifest = old.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("read")).expect("json");
    m.as_object_mut()
        .expect("object")
        .remove("norm_statistics")
        .expect("the model records its LayerNorm moments");
    std::fs::write(&manifest, m.to_string()).expect("write");
    let out = metaids()
        .args(["site-eval", "--model"])
        .arg(&old)
        .arg("--captures")
        .arg(repo().join("data/lab"))
        .args(["--repeats", "1", "--adapt", "layernorm"])
        .output()
        .expect("site-eval old model");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no LayerNorm statistics"), "{err}");

    // `baseline --pcap` groups flows by their source address (a capture's flows carry their
    // identifiers): 501 flows (one a stray) from 20 client addresses, none over the 10% cap, all
    // kept.
    let out = ok(&metaids()
        .args(["baseline", "--model"])
        .arg(&model)
        .arg("--library")
        .arg(dir.path().join("site.redb"))
        .arg("--pcap")
        .arg(repo().join("data/lab/benign-web.pcap.gz"))
        .args(["--budget", "0.05"])
        .output()
        .expect("baseline"));
    assert!(
        out.contains("baseline: 501 flows offered, 501 kept") && !out.contains("capped source"),
        "{out}"
    );

    // Drift: the baseline's own traffic does not drift; adding SSH sessions the baseline never
    // saw moves the benign distances and the unknown share past the bounds, with a warning.
    let detect = |pcaps: &[&str], name: &str| {
        let mut c = metaids();
        c.args(["detect", "--model"])
            .arg(&model)
            .arg("--library")
            .arg(dir.path().join("site.redb"))
            .arg("--alerts")
            .arg(dir.path().join(name))
            .arg("--quiet")
            .arg("--pcap");
        for p in pcaps {
            c.arg(repo().join(p));
        }
        let out = c.output().expect("detect");
        let stdout = ok(&out);
        (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (same, err) = detect(&["data/lab/benign-web.pcap.gz"], "a.json");
    assert!(
        same.contains("drift_windows 1") && same.contains("drift_warnings 0"),
        "{same}\n{err}"
    );
    let (moved, err) = detect(
        &["data/lab/benign-web.pcap.gz", "data/lab/benign-ssh.pcap.gz"],
        "b.json",
    );
    assert!(moved.contains("drift_warnings 1"), "{moved}");
    assert!(
        err.contains("warning: drift in window") && err.contains("metaids baseline --update"),
        "{err}"
    );

    // The profile travels with an export: detect decides with it from the document, a library
    // with no baseline adopts it on an import that asks for it, a redacted document leaves it out.
    ok(&metaids()
        .args(["threat", "add", "--library"])
        .arg(dir.path().join("site.redb"))
        .arg("--model")
        .arg(&model)
        .args(["--name", "syn scan", "--force", "--pcap"])
        .arg(repo().join("data/lab/attack-nmap-syn.pcap.gz"))
        .output()
        .expect("threat add"));
    let doc = dir.path().join("doc.json");
    let d = common::export(&dir.path().join("site.redb"), &doc, &[]);
    assert_eq!(d["site"]["flows_kept"], 501, "{}", d["site"]);
    let out = metaids()
        .args(["detect", "--model"])
        .arg(&model)
        .arg("--library")
        .arg(&doc)
        .arg("--alerts")
        .arg(dir.path().join("c.json"))
        .args(["--quiet", "--pcap"])
        .arg(repo().join("data/lab/benign-web.pcap.gz"))
        .output()
        .expect("detect");
    assert!(
        ok(&out).contains("site profile: 376 calibration rows"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Not taken unless asked for: a profile decides what is benign.
    let plain = ok(&metaids()
        .args(["threat", "import", "--library"])
        .arg(dir.path().join("plain.redb"))
        .arg("--model")
        .arg(&model)
        .args(["--force"])
        .arg(&doc)
        .output()
        .expect("import"));
    assert!(plain.contains("pass --adopt-profile"), "{plain}");
    let imported = ok(&metaids()
        .args(["threat", "import", "--library"])
        .arg(dir.path().join("new.redb"))
        .arg("--model")
        .arg(&model)
        .args(["--force", "--adopt-profile"])
        .arg(&doc)
        .output()
        .expect("import"));
    assert!(
        imported.contains("site profile is now the library's"),
        "{imported}"
    );
    let e = common::export(
        &dir.path().join("new.redb"),
        &dir.path().join("again.json"),
        &[],
    );
    assert_eq!(
        e["site"], d["site"],
        "the adopted profile is the document's"
    );
    let p = common::export(
        &dir.path().join("plain.redb"),
        &dir.path().join("plain.json"),
        &[],
    );
    assert!(p.get("site").is_none(), "a plain import takes no profile");
    let r = common::export(
        &dir.path().join("site.redb"),
        &dir.path().join("shared.json"),
        &["--redact"],
    );
    assert!(
        r.get("site").is_none(),
        "a redacted document carries no site profile"
    );

    // The forest rule end to end (the baseline's default for a flow model): the profile keeps
    // the window's feature rows, the enrolment is guarded by the site forest (each support flow
    // left out of a fit in turn), and detect names the SQL injection requests by the forest
    // while the site's own web and API flows stay quiet.
    let forest_lib = dir.path().join("forest.redb");
    let out = ok(&metaids()
        .args(["baseline", "--model"])
        .arg(&model)
        .arg("--library")
        .arg(&forest_lib)
        .arg("--pcap")
        .arg(repo().join("data/lab/benign-web.pcap.gz"))
        .arg(repo().join("data/lab/benign-api.pcap.gz"))
        .args(["--budget", "0.02"])
        .output()
        .expect("baseline"));
    assert!(out.contains("threat rule: the site forest"), "{out}");
    let forest_add = |name: &str, pcap: &str| {
        metaids()
            .args(["threat", "add", "--library"])
            .arg(&forest_lib)
            .arg("--model")
            .arg(&model)
            .args(["--name", name, "--enrol-shots", "5", "--pcap"])
            .arg(repo().join(pcap))
            .output()
            .expect("threat add")
    };
    let add = ok(&forest_add("sqli", "data/lab/attack-sqli.pcap.gz"));
    assert!(
        add.contains("guard (site forest): names") && add.contains("accepted"),
        "{add}"
    );
    let count = |out: &str, key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    // Alerts to `name`, verdicts to `name` with `.jsonl`.
    let forest_detect = |pcaps: &[&str], name: &str| {
        let mut c = metaids();
        c.args(["detect", "--model"])
            .arg(&model)
            .arg("--library")
            .arg(&forest_lib)
            .arg("--alerts")
            .arg(dir.path().join(name))
            .arg("--verdicts")
            .arg(dir.path().join(name).with_extension("jsonl"))
            .arg("--pcap");
        for p in pcaps {
            c.arg(repo().join(p));
        }
        ok(&c.output().expect("detect"))
    };
    // Share of a capture's flows named as `threat`.
    let named_share = |pcap: &str, threat: &str| {
        let out = forest_detect(&[pcap], &format!("{threat}.json"));
        let (flows, named) = (
            count(&out, "flows "),
            count(&out, &format!("threat[{threat}] ")),
        );
        (named as f64 / flows.max(1) as f64, out)
    };
    // The site's own web and API flows stay quiet: at most 3% named a threat.
    let quiet = |name: &str| {
        let benign = forest_detect(
            &["data/lab/benign-web.pcap.gz", "data/lab/benign-api.pcap.gz"],
            name,
        );
        let (flows, flagged) = (count(&benign, "flows "), count(&benign, "threat "));
        assert!(
            flagged * 100 <= flows * 3,
            "{flagged} of {flows} benign flows named a threat:\n{benign}"
        );
    };
    let (share, attack) = named_share("data/lab/attack-sqli.pcap.gz", "sqli");
    assert!(
        attack.contains("threats named by the site forest"),
        "{attack}"
    );
    assert!(share >= 0.9, "{share} named sqli:\n{attack}");
    quiet("quiet.json");
    // The HTTP flood: single GETs of the site's own pages, told apart only by their source's rate
    // (the source context the forest reads by default).
    ok(&forest_add("flood", "data/lab/attack-http-flood.pcap.gz"));
    let (share, flood) = named_share("data/lab/attack-http-flood.pcap.gz", "flood");
    assert!(share >= 0.8, "{share} named flood:\n{flood}");
    quiet("quiet2.json");
    // Feedback under the forest: an alert carries its flow's raw values and source context, the
    // rejected flow keeps them as the threat's negative example (it vetoes the forest in feature
    // space), and it is not named again.
    let alerts = std::fs::read_to_string(dir.path().join("flood.json")).expect("flood alerts");
    let first = alerts
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("eve line"))
        .find(|e| e["alert"]["signature"] == "metaids flood")
        .expect("a flood alert");
    let info = &first["alert"]["context"]["metaids"];
    assert!(
        info["values"]["numeric"]
            .as_array()
            .is_some_and(|v| v.len() > 50),
        "{info}"
    );
    assert_eq!(
        info["source_context"].as_array().map(Vec::len),
        Some(3),
        "{info}"
    );
    let (alert_id, origin) = (
        info["alert_id"].as_str().expect("alert id").to_string(),
        info["origin"].as_str().expect("origin").to_string(),
    );
    ok(&metaids()
        .args(["feedback", "--alerts"])
        .arg(dir.path().join("flood.json"))
        .args(["--alert", &alert_id, "--reject", "--library"])
        .arg(&forest_lib)
        .arg("--model")
        .arg(&model)
        .output()
        .expect("feedback"));
    let doc = common::export(&forest_lib, &dir.path().join("forest-export.json"), &[]);
    let flood_threat = doc["threats"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "flood"))
        .expect("the flood threat");
    let negative = &flood_threat["negatives"][0];
    assert!(negative["values"]["numeric"].is_array(), "{negative}");
    assert_eq!(negative["context"].as_array().map(Vec::len), Some(3));
    forest_detect(&["data/lab/attack-http-flood.pcap.gz"], "after-reject.json");
    let again = std::fs::read_to_string(dir.path().join("after-reject.jsonl")).expect("verdicts");
    let rejected = again
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("verdict"))
        .find(|v| v["origin"] == origin.as_str())
        .expect("the rejected flow's verdict");
    assert!(
        rejected["verdict"] != "threat" || rejected["threat"] != "flood",
        "{rejected}"
    );
    // A support set of the site's own web flows is refused by the forest's guard: nothing tells
    // them from the baseline.
    let out = forest_add("not-an-attack", "data/lab/benign-web.pcap.gz");
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("REFUSED") || text.contains("refused"),
        "{text}"
    );

    // Bad input: not a directory; a directory without captures.
    let out = metaids()
        .args(["site-eval", "--model"])
        .arg(&model)
        .arg("--captures")
        .arg(repo().join("data/lab/LABELS.md"))
        .output()
        .expect("site-eval");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a directory"));
    let out = metaids()
        .args(["site-eval", "--model"])
        .arg(&model)
        .arg("--captures")
        .arg(dir.path())
        .output()
        .expect("site-eval");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no captures"));
}
