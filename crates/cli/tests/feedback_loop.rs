//! The analyst loop end to end with the real binary: a threat enrolled into a redb library from 5 flows
//! of a capture, `metaids detect --library` on that library, `metaids feedback --reject` on one of its
//! alerts (that flow is no longer flagged on the next run, the others still are), `--confirm` on
//! another (one more support flow), and `threat rollback` (the rejected flow is flagged again).

use std::path::Path;

mod common;
use common::{metaids, ok, shared};

/// Verdict per flow id, and the EVE alerts, of one `detect` run over the SSH and FTP captures.
fn detect(
    dir: &Path,
    model: &Path,
    library: &Path,
    run: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let alerts = dir.join(format!("{run}.eve.json"));
    let verdicts = dir.join(format!("{run}.verdicts.jsonl"));
    ok(&metaids()
        .args(["detect", "--model"])
        .arg(model)
        .arg("--library")
        .arg(library)
        .arg("--pcap")
        .arg(shared("pcaps/zeek-traces/ssh/sshguess.pcap"))
        .arg(shared("pcaps/zeek-traces/ftp/bruteforce.pcap"))
        .arg("--alerts")
        .arg(&alerts)
        .arg("--verdicts")
        .arg(&verdicts)
        // One alert per flow, so every flagged flow can be given feedback.
        .args(["--dedup-max", "1000000", "--run-id", run, "--quiet"])
        .output()
        .expect("detect"));
    let parse = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    (parse(&verdicts), parse(&alerts))
}

/// Run-wide numbers (`seq`: 1–11 the SSH capture, 12–41 the FTP one) of the flows flagged as SSH
/// guessing.
fn flagged_ssh(verdicts: &[serde_json::Value]) -> Vec<u64> {
    flagged(verdicts, "seq")
}

/// `field` of the flows flagged as SSH guessing.
fn flagged(verdicts: &[serde_json::Value], field: &str) -> Vec<u64> {
    verdicts
        .iter()
        .filter(|v| v["verdict"] == "threat" && v["threat"] == "ssh guessing")
        .map(|v| v[field].as_u64().expect("a number"))
        .collect()
}

#[test]
fn feedback_on_alerts_refits_the_threat_and_rollback_restores_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("cic.model");
    common::train_small_model(&model);
    let library = dir.path().join("threats.redb");
    let added = ok(&metaids()
        .args(["threat", "add", "--library"])
        .arg(&library)
        .arg("--model")
        .arg(&model)
        .args(["--name", "ssh guessing", "--pcap"])
        .arg(shared("pcaps/zeek-traces/ssh/sshguess.pcap"))
        .args([
            "--select",
            "port 22",
            "--enrol-shots",
            "5",
            "--author",
            "tester",
        ])
        .output()
        .expect("threat add"));
    assert!(added.contains("accepted"), "{added}");

    // The threat catches the SSH capture's flows: all 11 (5 of them its support).
    let (verdicts, alerts) = detect(dir.path(), &model, &library, "first");
    assert_eq!(
        verdicts.len(),
        11 + 30,
        "one verdict per flow of both captures"
    );
    let first = flagged_ssh(&verdicts);
    assert!(
        first.iter().filter(|&&f| f <= 11).count() >= 10,
        "ssh flows flagged: {first:?}"
    );
    // The small test model confuses at most a few FTP brute-force flows (ids 12–41) with it.
    assert!(
        first.iter().filter(|&&f| f > 11).count() <= 3,
        "FTP flows called SSH guessing: {first:?}"
    );
    let ssh_alerts: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["alert"]["signature"] == "metaids ssh guessing")
        .collect();
    assert_eq!(ssh_alerts.len(), first.len(), "one alert per flagged flow");
    // Reject the alert whose flow is most like the threat's support (the hardest one to unlearn),
    // among the flows that are not support flows themselves (enrolment and detection embed alike,
    // so rejecting a support flow is the contradiction the library refuses).
    let exported = common::export(&library, &dir.path().join("threats.json"), &[]);
    let locators: Vec<String> = exported["threats"][0]["support"]
        .as_array()
        .expect("support")
        .iter()
        .map(|f| f["locator"].as_str().expect("locator").to_string())
        .collect();
    assert_eq!(locators.len(), 5);
    let is_support = |a: &serde_json::Value| {
        let key = format!(
            "{}-{}-{}-{}-",
            a["src_ip"].as_str().expect("src"),
            a["dest_ip"].as_str().expect("dest"),
            a["src_port"],
            a["dest_port"]
        );
        locators.iter().any(|l| l.contains(&key))
    };
    assert_eq!(
        ssh_alerts.iter().filter(|a| is_support(a)).count(),
        5,
        "every support flow is among the alerts: {locators:?}"
    );
    let rejected = ssh_alerts
        .iter()
        .filter(|a| !is_support(a))
        .max_by(|a, b| {
            let s = |x: &serde_json::Value| {
                x["alert"]["context"]["metaids"]["score"]
                    .as_f64()
                    .expect("score")
            };
            s(a).total_cmp(&s(b))
        })
        .expect("an ssh alert");
    let rejected_id = rejected["alert"]["context"]["metaids"]["alert_id"]
        .as_str()
        .expect("id")
        .to_string();
    let rejected_flow = rejected["flow_id"].as_u64().expect("flow id");
    let out = ok(&metaids()
        .args(["feedback", "--alerts"])
        .arg(dir.path().join("first.eve.json"))
        .args(["--alert", &rejected_id, "--reject", "--library"])
        .arg(&library)
        .arg("--model")
        .arg(&model)
        .args(["--author", "analyst"])
        .output()
        .expect("feedback"));
    assert!(
        out.contains("rejected alert") && out.contains("1 negative"),
        "{out}"
    );
    // Issue 11: the same verdict twice changes nothing; the opposite verdict on the same flow is
    // refused as a contradiction.
    let feedback = |verdict: &str| {
        metaids()
            .args(["feedback", "--alerts"])
            .arg(dir.path().join("first.eve.json"))
            .args(["--alert", &rejected_id, verdict, "--force", "--library"])
            .arg(&library)
            .arg("--model")
            .arg(&model)
            .output()
            .expect("feedback")
    };
    let again = ok(&feedback("--reject"));
    assert!(again.contains("already recorded"), "{again}");
    let contra = feedback("--confirm");
    assert!(!contra.status.success());
    let err = String::from_utf8_lossy(&contra.stderr);
    assert!(
        err.contains("was rejected") && err.contains("rollback"),
        "{err}"
    );

    let (verdicts, _) = detect(dir.path(), &model, &library, "second");
    let second = flagged(&verdicts, "flow_id");
    // Flow ids are stable across runs: the rejected flow is still there, now benign.
    assert!(
        verdicts
            .iter()
            .any(|v| v["flow_id"].as_u64() == Some(rejected_flow) && v["verdict"] != "threat"),
        "flow {rejected_flow} not found, or still a threat"
    );
    assert!(
        !second.contains(&rejected_flow),
        "the rejected flow {rejected_flow} is still flagged: {second:?}"
    );

    // Confirming another alert adds a support flow (a new version, 6 support flows).
    let confirmed = ssh_alerts
        .iter()
        .find(|a| a["flow_id"].as_u64() != Some(rejected_flow) && !is_support(a))
        .expect("another ssh alert");
    let out = ok(&metaids()
        .args(["feedback", "--alerts"])
        .arg(dir.path().join("first.eve.json"))
        .args([
            "--alert",
            confirmed["alert"]["context"]["metaids"]["alert_id"]
                .as_str()
                .expect("id"),
            "--confirm",
            "--force",
            "--library",
        ])
        .arg(&library)
        .arg("--model")
        .arg(&model)
        .output()
        .expect("feedback"));
    assert!(
        out.contains("confirmed alert") && out.contains("6 support"),
        "{out}"
    );

    // An unknown alert id and a wrong model are refused with the file named.
    let out = metaids()
        .args(["feedback", "--alerts"])
        .arg(dir.path().join("first.eve.json"))
        .args(["--alert", "first-999999", "--reject", "--library"])
        .arg(&library)
        .arg("--model")
        .arg(&model)
        .output()
        .expect("feedback");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no alert with metaids.alert_id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An alert of this library is refused by another library of the same model, even for a
    // threat of the same name: the alert names the library that raised it.
    let library_id = rejected["alert"]["context"]["metaids"]["library"]
        .as_str()
        .expect("library id");
    assert_eq!(library_id.len(), 16, "{library_id}");
    assert_eq!(rejected["alert"]["metadata"]["library_id"][0], library_id);
    let other = dir.path().join("other.redb");
    ok(&metaids()
        .args(["threat", "add", "--library"])
        .arg(&other)
        .arg("--model")
        .arg(&model)
        .args(["--name", "ssh guessing", "--pcap"])
        .arg(shared("pcaps/zeek-traces/ssh/sshguess.pcap"))
        .args([
            "--select",
            "port 22",
            "--enrol-shots",
            "5",
            "--author",
            "tester",
        ])
        .output()
        .expect("threat add"));
    let history = |lib: &std::path::Path| {
        ok(&metaids()
            .args(["threat", "history", "--library"])
            .arg(lib)
            .output()
            .expect("history"))
    };
    let before = history(&other);
    let out = metaids()
        .args(["feedback", "--alerts"])
        .arg(dir.path().join("first.eve.json"))
        .args(["--alert", &rejected_id, "--confirm", "--force", "--library"])
        .arg(&other)
        .arg("--model")
        .arg(&model)
        .output()
        .expect("feedback");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(library_id) && err.contains("the library that raised the alert"),
        "{err}"
    );
    assert_eq!(history(&other), before, "the other library changed");

    // Rolling back to the version before the feedback flags the rejected flow again.
    let history = ok(&metaids()
        .args(["threat", "history", "--library"])
        .arg(&library)
        .output()
        .expect("history"));
    assert!(
        history.contains("reject") && history.contains("confirm"),
        "{history}"
    );
    ok(&metaids()
        .args(["threat", "rollback", "--library"])
        .arg(&library)
        .arg("2")
        .output()
        .expect("rollback"));
    let (verdicts, _) = detect(dir.path(), &model, &library, "third");
    let third = flagged_ssh(&verdicts);
    assert_eq!(
        third, first,
        "rollback restores the enrolled threat exactly"
    );
}
