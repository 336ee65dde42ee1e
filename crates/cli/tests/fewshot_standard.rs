//! `metaids fewshot` and `metaids standard` end to end on real shared data: a CIC model trained briefly
//! on some files is applied to other files (benign rows it never saw, families it never saw), with and
//! without benign recalibration, and refuses bad inputs; the NSL-KDD standard split trains on
//! KDDTrain+ only and reports accuracy with and without enrolled flows.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Output;

mod common;
use common::{metaids, ok, shared};

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have failed");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Copies the header and data lines `from..to` of a CSV file.
fn copy_lines(src: &Path, dst: &Path, from: usize, to: usize) {
    let r = BufReader::new(std::fs::File::open(src).expect("open"));
    let mut w = std::fs::File::create(dst).expect("create");
    for (i, line) in r.lines().enumerate() {
        let line = line.expect("line");
        if i == 0 || (i > from && i <= to) {
            writeln!(w, "{line}").expect("write");
        }
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("json")).expect("parse")
}

#[test]
fn fewshot_on_files_the_model_never_saw() {
    let cic = shared("cic-ids2017-improved");
    let dir = tempfile::tempdir().expect("tmp");
    let train_dir = dir.path().join("train");
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&train_dir).expect("mkdir");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    // Training files: 3,000 benign rows and the seen and validation families of the CIC split.
    copy_lines(
        &cic.join("BENIGN_5000.csv"),
        &train_dir.join("BENIGN_a.csv"),
        0,
        3000,
    );
    for f in [
        "DDoS_5000.csv",
        "DoS_Hulk_5000.csv",
        "Portscan_5000.csv",
        "DoS_GoldenEye_5000.csv",
        "FTP-Patator_3972.csv",
        "DoS_Slowloris_3859.csv",
    ] {
        copy_lines(&cic.join(f), &train_dir.join(f), 0, 1500);
    }
    // New data: the other 2,000 benign rows and three families the model never saw.
    let benign_new = new_dir.join("BENIGN_b.csv");
    copy_lines(&cic.join("BENIGN_5000.csv"), &benign_new, 3000, 5000);
    let ssh = new_dir.join("ssh.csv");
    copy_lines(&cic.join("SSH-Patator_2961.csv"), &ssh, 0, 400);
    let bot = new_dir.join("bot.csv");
    copy_lines(&cic.join("Botnet_736.csv"), &bot, 0, 400);
    let web = cic.join("Web_Attack_-_Brute_Force_73.csv");

    let model = dir.path().join("cic.model");
    let out = metaids()
        .args(["train", "--dataset", "cic", "--data"])
        .arg(&train_dir)
        .args(["--steps", "30", "--eval-every", "15", "--quiet", "--out"])
        .arg(&model)
        .output()
        .expect("train");
    ok(&out);

    let run = |extra: &[&str], json: &Path| {
        metaids()
            .arg("fewshot")
            .arg("--model")
            .arg(&model)
            .arg("--flows")
            .args([&benign_new, &ssh, &bot, &web])
            .args(["--shots", "1,5", "--episodes", "4", "--quiet", "--json"])
            .arg(json)
            .args(extra)
            .output()
            .expect("fewshot")
    };
    let plain = dir.path().join("plain.json");
    let out = run(&[], &plain);
    ok(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    // The model's row is labelled the headline or an ablation (its validation families decide).
    assert!(
        table.contains("| **protonet** (headline) | 5 |")
            || table.contains("| protonet (ablation) | 5 |"),
        "{table}"
    );
    let v = read_json(&plain);
    let novel: Vec<&str> = v["protocol"]["novel_families"]
        .as_array()
        .expect("novel")
        .iter()
        .map(|f| f["family"].as_str().expect("name"))
        .collect();
    assert_eq!(
        novel,
        ["Botnet", "SSH-Patator", "Web Attack - Brute Force"],
        "{v}"
    );
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 3 * 2, "three model rows at two K");
    for r in results {
        assert!(r["method"].as_str().expect("m").starts_with("protonet"));
        for m in ["macro_f1", "recall", "fpr", "precision"] {
            let x = r[m]["mean"].as_f64().expect("mean");
            assert!((0.0..=1.0).contains(&x), "{m} {x}");
            assert!(r[m]["ci95"].is_f64());
        }
        assert_eq!(
            r["per_family"].as_array().expect("per family").len(),
            3,
            "{r}"
        );
    }
    assert_eq!(v["protocol"]["benign_label"], "BENIGN");
    assert_eq!(v["fewshot"]["recalibrated"], false);
    assert_eq!(v["fewshot"]["prototypes_changed"], false);
    assert_eq!(
        v["fewshot"]["unknown_threshold"],
        v["fewshot"]["model_unknown_threshold"]
    );

    // Recalibrated on 600 benign rows of the new data: another reference, fewer benign queries.
    let recal = dir.path().join("recal.json");
    let out = run(&["--benign-calibration", "600"], &recal);
    ok(&out);
    let w = read_json(&recal);
    assert_eq!(w["fewshot"]["recalibrated"], true);
    assert_eq!(w["fewshot"]["prototypes_changed"], true);
    assert_eq!(w["fewshot"]["calibration_rows"], 300);
    assert_ne!(
        w["fewshot"]["unknown_threshold"],
        w["fewshot"]["model_unknown_threshold"]
    );
    let queries = |x: &serde_json::Value| x["protocol"]["benign_query_rows"].as_u64().expect("q");
    // Benign query rows with an exact twin among the rows the reference was learned from are
    // removed (and counted) by default.
    let pool_twins = |x: &serde_json::Value| -> u64 {
        x["protocol"]["twins_removed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["role"] == "benign query pool")
            .map(|t| t["removed"].as_u64().expect("removed"))
            .sum()
    };
    assert_eq!(
        queries(&w) + pool_twins(&w),
        2000 - 600,
        "{}",
        w["protocol"]
    );
    assert_eq!(queries(&v) + pool_twins(&v), 2000 - 1, "{}", v["protocol"]);

    // Refusals, each naming the problem.
    fails_with(
        &run(&["--benign-calibration", "1990"], &recal),
        "benign (\"BENIGN\") rows",
    );
    fails_with(&run(&["--benign-calibration", "5"], &recal), "too few");
    fails_with(&run(&["--methods", "knn"], &recal), "without seen families");
    let out = metaids()
        .arg("fewshot")
        .arg("--model")
        .arg(&model)
        .arg("--flows")
        .arg(train_dir.join("BENIGN_a.csv"))
        .arg(&ssh)
        .args(["--quiet"])
        .output()
        .expect("fewshot");
    fails_with(&out, "trained on");
    let out = metaids()
        .arg("fewshot")
        .arg("--model")
        .arg(&model)
        .arg("--flows")
        .arg(shared("nsl-kdd/KDDTest+.txt"))
        .args(["--quiet"])
        .output()
        .expect("fewshot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KDDTest+"), "{err}");
    let out = metaids()
        .arg("fewshot")
        .arg("--model")
        .arg(&model)
        .arg("--flows")
        .arg(&benign_new)
        .args(["--quiet"])
        .output()
        .expect("fewshot");
    fails_with(&out, "no attack rows");
}

#[test]
fn standard_split_trains_on_kddtrain_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("std.json");
    let model = dir.path().join("std.model");
    let out = metaids()
        .args(["standard", "--data"])
        .arg(shared("nsl-kdd"))
        .args([
            "--steps",
            "20",
            "--repeats",
            "3",
            "--no-forest",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .arg("--save-model")
        .arg(&model)
        .output()
        .expect("standard");
    ok(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| model (τ per prototype), no shots |"),
        "{table}"
    );
    assert!(
        table.contains("| model (one shared τ), no shots |"),
        "{table}"
    );
    let v = read_json(&json);
    let p = &v["protocol"];
    let test_rows = p["test_rows"].as_u64().expect("test rows");
    assert_eq!(p["train_rows"], 125_973);
    assert_eq!(test_rows, 22_544);
    let test_only = p["test_only_families"].as_array().expect("test only");
    assert_eq!(test_only.len(), 17, "{p}");
    let z = &v["model"]["zero_shot"];
    assert_eq!(z["rows"].as_u64(), Some(test_rows));
    let acc = z["accuracy"].as_f64().expect("acc");
    assert!((0.0..=1.0).contains(&acc));
    // The enrolled rows are not scored.
    let enrolled_rows: u64 = test_only
        .iter()
        .map(|f| f["rows"].as_u64().expect("rows").min(5))
        .sum();
    let e = &v["model"]["enrolled"];
    assert_eq!(e["accuracy"]["n"], 3);
    for rep in e["repeats"].as_array().expect("repeats") {
        assert_eq!(rep["rows"].as_u64(), Some(test_rows - enrolled_rows));
    }
    // Both rules, on the same rows; the per-prototype rule records its level per repeat.
    let s = &v["model_shared_threshold"];
    assert_eq!(s["zero_shot"]["rows"].as_u64(), Some(test_rows));
    assert_eq!(s["enrolled"]["accuracy"]["n"], 3);
    assert!(s["zero_shot_thresholds"]["tau"].is_number());
    let levels = v["model"]["enrolled_per_prototype_level"]
        .as_array()
        .expect("levels");
    assert_eq!(levels.len(), 3);
    assert!(v["model"]["zero_shot_thresholds"]["per_prototype_level"].is_number());
    assert!(v["forest"].is_null());
    // The saved model holds KDDTrain+ only and is accepted back; a model of both files is refused.
    let out = metaids()
        .args(["standard", "--data"])
        .arg(shared("nsl-kdd"))
        .arg("--model")
        .arg(&model)
        .args(["--repeats", "1", "--no-forest", "--quiet"])
        .output()
        .expect("standard --model");
    ok(&out);
    let both = dir.path().join("both.model");
    let out = metaids()
        .args(["train", "--dataset", "nsl-kdd", "--data"])
        .arg(shared("nsl-kdd"))
        .args(["--steps", "5", "--quiet", "--out"])
        .arg(&both)
        .output()
        .expect("train");
    ok(&out);
    let out = metaids()
        .args(["standard", "--data"])
        .arg(shared("nsl-kdd"))
        .arg("--model")
        .arg(&both)
        .args(["--quiet", "--no-forest"])
        .output()
        .expect("standard");
    fails_with(&out, "KDDTrain+ only");
    let out = metaids()
        .args(["standard", "--data"])
        .arg(shared("nsl-kdd/KDDTest+.txt"))
        .output()
        .expect("standard");
    fails_with(&out, "directory");
}
