//! Web-request payload families through the few-shot protocol: `--dataset http-requests` on the
//! vendored `data/http` reads the payloads as feature rows, holds the split's novel families out,
//! and reports like a flow dataset; a payload file given to a flow reader is a clear error.

use std::path::PathBuf;
use std::process::Command;

fn metaids() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metaids"));
    c.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    c
}

/// `metaids evaluate --dataset http-requests --data data/http` with `extra` arguments.
fn evaluate_http(extra: &[&std::ffi::OsStr]) -> std::process::Output {
    metaids()
        .args([
            "evaluate",
            "--dataset",
            "http-requests",
            "--data",
            "data/http",
        ])
        .args(extra)
        .output()
        .expect("run")
}

#[test]
fn payload_families_are_evaluated_like_flow_families() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("http.json");
    let args = [
        "--shots",
        "5",
        "--episodes",
        "3",
        "--methods",
        "nearest-centroid,tfidf-logreg+shots@budget,tfidf-forest+shots@budget,libinjection",
        "--quiet",
        "--json",
    ];
    let mut extra: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    extra.push(json.as_os_str());
    let out = evaluate_http(&extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| nearest-centroid | 5 |"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let p = &report["protocol"];
    assert_eq!(p["dataset"], "http-requests");
    assert_eq!(p["split_file"], "splits/http-requests.toml");
    let novel: Vec<&str> = p["novel_families"]
        .as_array()
        .expect("novel")
        .iter()
        .map(|f| f["family"].as_str().expect("name"))
        .collect();
    assert_eq!(
        novel,
        ["crlf", "ldap", "nosql", "open-redirect", "ssti", "xxe"]
    );
    assert_eq!(
        p["feature_dim"], 263,
        "7 shape counts and 256 n-gram buckets"
    );
    let r = &report["results"][0];
    assert!(r["macro_f1"]["mean"].is_f64(), "{r}");
    // The classical text baseline runs on the payloads' n-gram buckets (and only there).
    assert!(
        table.contains("| tfidf-logreg+shots @1% FPR | 5 |"),
        "{table}"
    );
    let method = |name: &str| -> &serde_json::Value {
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|m| m["method"] == name)
            .unwrap_or_else(|| panic!("no {name} row"))
    };
    let tfidf = method("tfidf-logreg+shots @1% FPR");
    assert!(
        tfidf["macro_f1"]["mean"].as_f64().expect("f1") > 0.5,
        "{tfidf}"
    );
    // And the forest on the same TF-IDF rows.
    let forest = method("tfidf-forest+shots @1% FPR");
    assert!(
        forest["macro_f1"]["mean"].as_f64().expect("f1") > 0.5,
        "{forest}"
    );
    assert!(
        forest["description"]
            .as_str()
            .is_some_and(|d| d.contains("TF-IDF")),
        "{forest}"
    );
    // The signature baseline: the same rows flagged in every task, no benign pool row; of the
    // novel families, XXE's markup trips its XSS detector and template injection nothing.
    let sig = method("libinjection (signatures)");
    let family = |name: &str| -> f64 {
        sig["per_family"]
            .as_array()
            .expect("per family")
            .iter()
            .find(|f| f["family"] == name)
            .unwrap_or_else(|| panic!("{name} in {sig}"))["recall"]["mean"]
            .as_f64()
            .expect("recall")
    };
    assert!(family("xxe") > 0.5, "{sig}");
    assert_eq!(family("ssti"), 0.0, "{sig}");
    assert_eq!(sig["fpr"]["mean"].as_f64(), Some(0.0), "{sig}");
    // K = 5 needs 15 rows: every novel family qualifies.
    assert_eq!(r["per_family"].as_array().expect("per family").len(), 6);

    let out = evaluate_http(&["--fold".as_ref(), "1".as_ref()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one built-in split (fold 0)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_payload_file_is_refused_by_the_flow_readers_with_the_way_to_read_it() {
    let out = metaids()
        .args([
            "stats",
            "--data",
            "data/http/payloads.csv.gz",
            "--format",
            "cic-improved",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let out = metaids()
        .args(["stats", "--data", "data/http/payloads.csv.gz"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "detected as http-payloads: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("dataset http-requests — 61960 rows, 12 families"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
