//! The `metaids` binary end to end: JSON report fields, clear errors on bad input, `--help`.

use std::path::PathBuf;
use std::process::Command;

fn metaids() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metaids"));
    c.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    c
}

fn shared(sub: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p.display().to_string()
}

/// `metaids evaluate` on the shared CIC-IDS2017 files with `args`, quietly, asserted to succeed;
/// its stdout.
fn evaluate_cic(args: &[&str], json: &std::path::Path) -> String {
    let out = metaids()
        .args(["evaluate", "--dataset", "cic", "--data"])
        .arg(shared("cic-ids2017-improved"))
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(json)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn evaluate_writes_report_with_protocol_and_ci() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("r.json");
    let csv_path = dir.path().join("episodes.csv").display().to_string();
    let table = evaluate_cic(
        &[
            "--shots",
            "1,5",
            "--episodes",
            "3",
            "--methods",
            "nearest-centroid,forest+shots@budget",
            "--episodes-csv",
            &csv_path,
        ],
        &json,
    );
    assert!(table.contains("| nearest-centroid | 5 |"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    for r in results {
        assert!(r["method"].is_string() && r["shots"].is_u64());
        for m in ["macro_f1", "recall", "fpr", "precision"] {
            assert!(
                r[m]["mean"].is_f64() && r[m]["ci95"].is_f64(),
                "{m}: {}",
                r[m]
            );
        }
        assert_eq!(r["per_family"].as_array().expect("per family").len(), 5);
        // Operating points on the whole benign query pool, per method and per family.
        let o = &r["operating"];
        // The 1,500-row query pool less the rows that repeat a training row (removed by default).
        let twins = &report["protocol"]["twins_removed"][0];
        assert_eq!(twins["role"], "benign query pool");
        let left = twins["left"].as_u64().expect("left");
        assert_eq!(left + twins["removed"].as_u64().expect("removed"), 1500);
        assert_eq!(o["pool_rows"], left, "{o}");
        for m in ["pool_fpr", "pr_auc"] {
            let v = o[m]["mean"].as_f64().expect("mean");
            assert!((0.0..=1.0).contains(&v), "{m}: {v}");
        }
        for k in ["0.001", "0.01"] {
            assert!(o["recall_at_fpr_oracle"][k]["mean"].is_f64(), "{o}");
        }
        for k in ["0.5", "0.01", "0.001"] {
            assert!(o["precision_at_base_rate"][k]["ci95"].is_f64(), "{o}");
            assert!(o["f1_at_base_rate"][k]["mean"].is_f64(), "{o}");
        }
        // Recall at a threshold from the method's own calibration rows: the budget-matched forest
        // keeps held-out benign rows, the nearest centroid none.
        let calibrated = r["method"].as_str().expect("name").contains("FPR");
        for m in ["recall_at_fpr", "pool_fpr_at_calibrated"] {
            for k in ["0.001", "0.01"] {
                assert_eq!(o[m][k]["mean"].is_f64(), calibrated, "{m} {k}: {o}");
            }
        }
        assert!(r["per_family"][0]["operating"]["pr_auc"]["mean"].is_f64());
        // The ROC curve: recall at ten false-positive rates, never falling as the rate grows.
        let roc = o["roc"].as_array().expect("roc");
        assert_eq!(roc.len(), 10);
        let recalls: Vec<f64> = roc
            .iter()
            .map(|p| p["recall"]["mean"].as_f64().expect("recall"))
            .collect();
        assert!(
            recalls.windows(2).all(|w| w[0] <= w[1] + 1e-12),
            "{recalls:?}"
        );
    }
    assert!(
        table.contains("Operating points on 1490 benign query-pool rows")
            && table.contains("removed as queries for an exact twin in the training rows: benign query pool 10 of 1500"),
        "{table}"
    );
    // One CSV line per method, K, family and episode: 2 methods × 2 K × 5 families × 3 episodes.
    let csv = std::fs::read_to_string(dir.path().join("episodes.csv")).expect("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("method,shots,family,episode,train_seed,f1,recall,fpr,precision,pool_fpr,pr_auc,recall_at_fpr_oracle_0.0005,recall_at_fpr_oracle_0.001,recall_at_fpr_oracle_0.002,recall_at_fpr_oracle_0.005,recall_at_fpr_oracle_0.01,recall_at_fpr_oracle_0.02,recall_at_fpr_oracle_0.05,recall_at_fpr_oracle_0.1,recall_at_fpr_oracle_0.2,recall_at_fpr_oracle_0.5,precision_at_base_rate_0.5,precision_at_base_rate_0.01,precision_at_base_rate_0.001,recall_at_fpr_0.001,recall_at_fpr_0.01,pool_fpr_at_calibrated_0.001,pool_fpr_at_calibrated_0.01,f1_at_base_rate_0.5,f1_at_base_rate_0.01,f1_at_base_rate_0.001")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2 * 2 * 5 * 3);
    assert!(rows.iter().all(|l| l.split(',').count() == 31), "{csv}");
    // The same report drawn as HTML, opened in a headless browser.
    let html = dir.path().join("report.html");
    let page = render_report(&json, &html);
    // Three K-shot charts, one ROC and one PR chart per novel family (five); no embedding map
    // without a model row.
    assert_eq!(page.matches("<svg").count(), 3 + 5 + 5, "charts");
    assert!(page.contains("DoS Slowhttptest — ROC at K=5"));
    assert!(page.contains("DoS Slowhttptest — PR at 1:100, K=5"));
    assert!(!page.contains("Embedding map"));
    // The N-way confusion matrix counts every N-way query.
    let centroid = results
        .iter()
        .find(|r| r["method"] == "nearest-centroid" && r["shots"] == 5)
        .expect("centroid row");
    let confusion = &centroid["confusion"];
    let families = confusion["families"].as_array().expect("families").len();
    let counted: u64 = confusion["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter())
        .map(|n| n.as_u64().expect("count"))
        .sum();
    let ways = centroid["ways"].as_u64().expect("ways");
    assert!(families >= ways as usize && ways >= 2, "{confusion}");
    assert_eq!(counted, 3 * ways * 10, "3 episodes × N ways × 10 queries");
    // Without a model row the page shows the first method's matrix.
    assert!(page.contains("N-way confusion matrix — nearest-centroid at K=5"));
    assert!(page.contains(&report["protocol"]["split_sha256"].as_str().expect("sha")[..16]));
    assert!(!page.contains("<script"), "self-contained, no script");
    render_is_not_blank(&html, dir.path());
    // A pool larger than --pool-max is sampled (seeded) to that many rows.
    let small = dir.path().join("small.json");
    evaluate_cic(
        &[
            "--shots",
            "5",
            "--episodes",
            "2",
            "--methods",
            "nearest-centroid",
            "--pool-max",
            "300",
        ],
        &small,
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&small).expect("json")).expect("parse");
    assert_eq!(r["results"][0]["operating"]["pool_rows"], 300);
    assert_eq!(r["protocol"]["config"]["pool_max"], 300);
    let p = &report["protocol"];
    assert_eq!(p["dataset"], "cic");
    assert_eq!(p["seed"], 2026);
    assert_eq!(p["episodes"], 3);
    assert_eq!(p["split_sha256"].as_str().expect("hash").len(), 64);
    assert_eq!(p["files"].as_array().expect("files").len(), 16);
    assert!(p["too_small"].as_array().expect("too small").is_empty());
    // Duplicates per role: the 5,000 Infiltration-Portscan rows hold 31 with a Portscan twin.
    let dups = p["duplicates"].as_array().expect("duplicates");
    assert_eq!(dups.len(), 5);
    let novel = dups.iter().find(|d| d["role"] == "novel").expect("novel");
    assert_eq!(novel["twins_in_training"], 31, "{novel}");
    assert_eq!(novel["rows"], 736 + 1740 + 5000 + 2961 + 73, "{novel}");
    assert!(table.contains("- novel: 10510 rows"), "{table}");
}

#[test]
fn malformed_file_gives_named_error_and_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "0,tcp,http,SF,1,2\n").expect("write");
    let out = metaids()
        .args(["stats", "--data"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.txt: line 1 matches no known format"),
        "{err}"
    );

    let row = "0,tcp,private,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,229,10,0.00,0.00,1.00,1.00,0.04,0.06,0.00,255,10,0.04,0.06,0.00,0.00,0.00,0.00,1.00,1.00,neptune,21";
    let file = dir.path().join("k.txt");
    std::fs::write(&file, format!("{row}\n{}\n", row.replace(",229,", ",x,"))).expect("write");
    let out = metaids()
        .args(["stats", "--dataset", "nsl-kdd", "--data"])
        .arg(&file)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("k.txt: line 2: column \"count\": expected a number, found \"x\""),
        "{err}"
    );
    let out = metaids()
        .args([
            "stats",
            "--dataset",
            "nsl-kdd",
            "--on-bad-row",
            "skip",
            "--data",
        ])
        .arg(&file)
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 1 malformed row"));
}

#[test]
fn directory_without_dataset_is_refused_clearly() {
    let out = metaids()
        .args(["evaluate", "--data", &shared("nsl-kdd")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dataset"));
}

#[test]
fn help_teaches_the_protocol() {
    let out = metaids()
        .args(["evaluate", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("K + 10") && help.contains("--on-bad-row") && help.contains("Example"),
        "{help}"
    );
}

#[test]
fn demo_runs_on_the_shipped_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = metaids()
        .args([
            "demo",
            "--episodes",
            "1",
            "--shots",
            "5",
            "--methods",
            "nearest-centroid,protonet",
            "--quiet",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| protonet | 5 |") && stdout.contains("| nearest-centroid | 5 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("At K=5: best baseline nearest-centroid"),
        "{stdout}"
    );
    // Both threats enrolled from 5 capture flows, then detected in the rest of their capture.
    for name in ["SSH password guessing", "FTP brute force"] {
        assert!(
            stdout.contains(&format!("enrolled {name:?} from 5 of them")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("not used for enrolment detected as {name:?}")),
            "{stdout}"
        );
    }
    // Outputs: a parseable EVE file whose alerts name the enrolled threats, verdicts, a report.
    let alerts = std::fs::read_to_string(dir.path().join("alerts.json")).expect("alerts");
    let mut signatures = std::collections::BTreeSet::new();
    for line in alerts.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("EVE line is JSON");
        assert_eq!(v["event_type"], "alert", "{line}");
        signatures.insert(
            v["alert"]["signature"]
                .as_str()
                .expect("signature")
                .to_string(),
        );
    }
    assert!(
        signatures.contains("metaids SSH password guessing")
            && signatures.contains("metaids FTP brute force"),
        "{signatures:?}"
    );
    let verdicts = std::fs::read_to_string(dir.path().join("verdicts.jsonl")).expect("verdicts");
    assert_eq!(
        verdicts.lines().count(),
        11 + 30,
        "one verdict per capture flow"
    );
    let report = std::fs::read_to_string(dir.path().join("report.md")).expect("report");
    assert!(report.contains("## 4. Detection"), "{report}");
    // The web part: a threat from 5 attack requests, the site's baseline, an access log scored.
    assert!(report.contains("## 7. Web requests"), "{report}");
    let flagged = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("injections flagged: "))
        .expect("the web part's figures");
    let (got, of) = flagged
        .split_once(" of ")
        .map(|(a, b)| {
            let n = |t: &str| -> usize { t.split(' ').next().expect("n").parse().expect("count") };
            (n(a), n(b))
        })
        .expect("N of M");
    assert!(of > 0 && got * 10 >= of * 8, "{flagged}");
    let web = std::fs::read_to_string(dir.path().join("web/eve.json")).expect("web alerts");
    let first: serde_json::Value =
        serde_json::from_str(web.lines().next().expect("a web alert")).expect("EVE line");
    assert_eq!(first["app_proto"], "http", "{first}");
    assert!(first["http"]["url"].is_string(), "{first}");
}

#[test]
fn train_checks_its_output_before_reading_or_training() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep me").expect("write");
    // The data path does not exist either: the --out refusal must come first, before any
    // loading or training.
    let out = metaids()
        .args(["train", "--dataset", "cic", "--data"])
        .arg(dir.path().join("no-such-data"))
        .arg("--out")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a metaids model directory"), "{err}");
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn an_absurd_timeout_is_named_as_out_of_range_not_as_non_positive() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = metaids()
        .args(["extract", "--pcap"])
        .arg(shared(
            "pcaps/esnet-scanners/masscan/udp_0_1000_20190821.pcap",
        ))
        .args(["--idle-timeout", "1e300", "--out"])
        .arg(dir.path().join("f.csv"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--idle-timeout") && err.contains("below 1e9"),
        "{err}"
    );
    assert!(!err.contains("must be positive"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn extract_prints_every_reader_counter() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = metaids()
        .args(["extract", "--pcap"])
        .arg(shared(
            "pcaps/esnet-scanners/masscan/udp_0_1000_20190821.pcap",
        ))
        .arg("--out")
        .arg(dir.path().join("f.csv"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for name in [
        "reader_packets",
        "reader_unknown_interface 0",
        "reader_bad_tsresol 0",
        "reader_timestamp_out_of_range 0",
        "reader_other_blocks",
    ] {
        assert!(err.contains(name), "{name} missing from\n{err}");
    }
}

#[test]
fn stats_counts_exact_duplicates_and_novel_rows_with_training_twins() {
    let out = metaids()
        .args([
            "stats",
            "--dataset",
            "unsw-nb15",
            "--data",
            &shared("unsw-nb15"),
        ])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The audit's figures for UNSW-NB15: 34.5% repeated rows, 10.7% with another label's values, and
    // most novel Analysis rows copies of training rows.
    assert!(
        text.contains("28386 of 82332 rows repeat another (34.5%), 8809 carry values"),
        "{text}"
    );
    assert!(
        text.contains("| Analysis | 677 | novel | 446 | 231 | 619 | 619 |"),
        "{text}"
    );
}

#[test]
fn evaluate_train_seeds_pools_model_rows_and_pairs_them_with_the_best_baseline() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("r.json");
    let csv_path = dir.path().join("episodes.csv").display().to_string();
    let table = evaluate_cic(
        &[
            "--train-seeds",
            "1,2",
            "--shots",
            "5",
            "--episodes",
            "2",
            "--methods",
            "protonet,nearest-centroid,forest+shots@budget",
            "--episodes-csv",
            &csv_path,
        ],
        &json,
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(report["protocol"]["train_seeds"], serde_json::json!([1, 2]));
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    let model = results
        .iter()
        .find(|r| r["method"] == "protonet")
        .expect("model row");
    assert_eq!(model["model_row"], true);
    assert_eq!(model["train_seeds"], serde_json::json!([1, 2]));
    // Macro figures pool 2 seeds × 2 episodes.
    assert_eq!(model["macro_f1"]["n"], 4, "{model}");
    let baseline = results
        .iter()
        .find(|r| r["method"] == "nearest-centroid")
        .expect("baseline row");
    assert_eq!(baseline["macro_f1"]["n"], 2);
    assert_eq!(baseline["model_row"], false);
    // Paired against the best baseline of each metric: the forest has the only own-calibration
    // recall, so it is the baseline there.
    let paired = report["paired"].as_array().expect("paired");
    let own = paired
        .iter()
        .find(|d| d["metric"] == "recall_at_fpr_0.001")
        .expect("own-calibration pair");
    assert_eq!(own["baseline"], "random-forest+shots @1% FPR");
    assert_eq!(own["difference"]["n"], 4);
    assert!(table.contains("Paired differences"), "{table}");
    assert!(table.contains("(ablation, 2 seeds)") || table.contains("(headline, 2 seeds)"));
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    let seeds: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("protonet,"))
        .map(|l| l.split(',').nth(4).expect("train_seed"))
        .collect();
    assert_eq!(seeds, ["1", "2"].into_iter().collect());
    // The map of the model's embedding: benign, seen and novel rows on two principal components.
    let map = &report["embedding_map"];
    assert_eq!(map["method"], "protonet", "{map}");
    let points = map["points"].as_array().expect("points");
    for role in ["benign-train", "benign-pool", "seen", "novel"] {
        assert!(points.iter().any(|p| p["role"] == role), "{role}");
    }
    assert!(points
        .iter()
        .all(|p| p["x"].as_f64().is_some_and(f64::is_finite) && p["y"].is_f64()));
    let explained: Vec<f64> = map["explained_variance"]
        .as_array()
        .expect("explained")
        .iter()
        .map(|v| v.as_f64().expect("share"))
        .collect();
    assert!(
        explained[0] >= explained[1] && explained[0] + explained[1] <= 1.0 + 1e-9,
        "{explained:?}"
    );
    let html = dir.path().join("report.html");
    let page = render_report(&json, &html);
    assert!(page.contains("Embedding map") && page.contains("Embedding of protonet (PCA)"));
    assert!(
        page.contains("N-way confusion matrix — protonet"),
        "model row's matrix"
    );
}

/// Runs `metaids report` on `json` into `html` and returns the page.
fn render_report(json: &std::path::Path, html: &std::path::Path) -> String {
    let out = metaids()
        .args(["report", "--json"])
        .arg(json)
        .arg("--out")
        .arg(html)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(html).expect("html")
}

/// Opens `html` in headless Chromium and checks the screenshot is not blank: a good share of its
/// pixels are not white and it has many colours (charts, bands, tables). CI installs Chromium
/// (`.ci/run`), so there a missing browser is a failure; elsewhere the check says it was skipped.
fn render_is_not_blank(html: &std::path::Path, dir: &std::path::Path) {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium to check the HTML report renders"
        );
        eprintln!("skipped: no Chromium to render the HTML report");
        return;
    };
    let shot = dir.join("report.png");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks_exact(channels).collect();
    let inked = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 200))
        .count();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        inked * 50 > pixels.len(),
        "{inked} of {} pixels drawn",
        pixels.len()
    );
    assert!(colours.len() > 50, "{} colours", colours.len());
}
