//! The readers on the real files of `../shared/data`: row and class counts as their SOURCES.md state.

use std::path::PathBuf;

use metaids_core::schema::{DatasetKind, FileFormat};
use metaids_ingest::{read_files, resolve_files, BadRowPolicy, ReadOptions};

fn shared(sub: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(
        p.exists(),
        "shared data missing at {} (tests read ../shared/data beside the checkout)",
        p.display()
    );
    p
}

#[test]
fn nsl_kdd_counts_match_sources() {
    let dir = shared("nsl-kdd");
    let (frame, skips) =
        read_files(&[dir.join("KDDTrain+.txt")], &ReadOptions::default()).expect("read");
    assert_eq!(skips.skipped, 0);
    assert_eq!(frame.len(), 125_973);
    let counts = frame.family_counts();
    assert_eq!(counts.len(), 23);
    assert_eq!(counts["normal"], 67_343);
    assert_eq!(counts["neptune"], 41_214);
    assert_eq!(counts["spy"], 2);
    assert_eq!(frame.files[0].format, FileFormat::NslKdd);

    let (test, _) = read_files(&[dir.join("KDDTest+.txt")], &ReadOptions::default()).expect("read");
    assert_eq!(test.len(), 22_544);
    let counts = test.family_counts();
    assert_eq!(counts.len(), 38);
    assert_eq!(counts["mscan"], 996);
    assert_eq!(counts["imap"], 1);
    let (t21, _) =
        read_files(&[dir.join("KDDTest-21.txt")], &ReadOptions::default()).expect("read");
    assert_eq!(t21.len(), 11_850);
    let (t20, _) = read_files(
        &[dir.join("KDDTrain+_20Percent.txt")],
        &ReadOptions::default(),
    )
    .expect("read");
    assert_eq!(t20.len(), 25_192);
    assert_eq!(t20.family_counts().len(), 22);
}

#[test]
fn unsw_counts_match_sources() {
    let path = shared("unsw-nb15").join("UNSW_NB15_testing-set.csv");
    let opts = ReadOptions {
        dataset: Some(DatasetKind::UnswNb15),
        ..Default::default()
    };
    let (frame, _) = read_files(&[path], &opts).expect("read");
    assert_eq!(frame.len(), 82_332);
    let counts = frame.family_counts();
    let expected = [
        ("Normal", 37_000),
        ("Generic", 18_871),
        ("Exploits", 11_132),
        ("Fuzzers", 6_062),
        ("DoS", 4_089),
        ("Reconnaissance", 3_496),
        ("Analysis", 677),
        ("Backdoor", 583),
        ("Shellcode", 378),
        ("Worms", 44),
    ];
    assert_eq!(counts.len(), expected.len());
    for (name, n) in expected {
        assert_eq!(counts[name], n, "{name}");
    }
    // The BOM is stripped from `id`, which stays an identifier.
    let ids = frame.identifiers(0);
    assert_eq!(ids[0], ("id", "1"));
}

#[test]
fn cic_improved_counts_match_sources() {
    let dir = shared("cic-ids2017-improved");
    let files = resolve_files(&dir, &["*.csv".to_string()]).expect("files");
    assert_eq!(files.len(), 16);
    let (frame, _) = read_files(&files, &ReadOptions::default()).expect("read");
    assert_eq!(frame.len(), 43_419);
    let counts = frame.family_counts();
    assert_eq!(counts.len(), 16);
    for (name, n) in [
        ("BENIGN", 5000),
        ("Botnet", 736),
        ("DoS Slowhttptest", 1740),
        ("Heartbleed", 11),
        ("Infiltration - Portscan", 5000),
        ("SSH-Patator", 2961),
        ("Web Attack - Brute Force", 73),
        ("Web Attack - SQL Injection", 13),
        ("Web Attack - XSS", 18),
    ] {
        assert_eq!(counts[name], n, "{name}");
    }
    assert!(frame
        .files
        .iter()
        .all(|f| f.format == FileFormat::CicImproved && f.missing_features.is_empty()));
    // Identifiers are kept for reports, outside the feature layout.
    let ids = frame.identifiers(0);
    assert_eq!(
        ids.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp"]
    );
    for forbidden in ["id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp"] {
        assert!(!frame.layout.numeric.iter().any(|c| c == forbidden));
        assert!(!frame.layout.categorical.iter().any(|c| c == forbidden));
    }
}

#[test]
fn skip_policy_reads_good_rows_of_real_file() {
    let dir = shared("nsl-kdd");
    let opts = ReadOptions {
        on_bad_row: BadRowPolicy::Skip,
        ..Default::default()
    };
    let (frame, skips) = read_files(&[dir.join("KDDTest-21.txt")], &opts).expect("read");
    assert_eq!((frame.len(), skips.skipped), (11_850, 0));
}

/// Issue 11 (item 10): streaming a file in chunks hands on exactly the rows a whole read gives, with
/// the frame never holding more than a chunk.
#[test]
fn streaming_in_chunks_gives_the_rows_of_a_whole_read() {
    let path = shared("cic-ids2017-improved/Botnet_736.csv");
    let opts = ReadOptions {
        dataset: Some(DatasetKind::Cic),
        ..ReadOptions::default()
    };
    let (whole, _) = read_files(std::slice::from_ref(&path), &opts).expect("read");
    let mut frame = metaids_core::FlowFrame::new(DatasetKind::Cic.layout());
    let mut skips = metaids_ingest::SkipLog::default();
    let (mut numeric, mut labels, mut lines, mut chunks) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let (rows, skipped) = metaids_ingest::stream_file(
        &mut frame,
        &path,
        &opts,
        &mut skips,
        100,
        &mut |f: &mut metaids_core::FlowFrame| -> Result<(), metaids_ingest::IngestError> {
            assert!(f.len() <= 100);
            chunks += 1;
            numeric.extend_from_slice(&f.numeric);
            for r in 0..f.len() {
                labels.push(f.label(r).to_string());
                lines.push(f.sources[r].line);
            }
            Ok(())
        },
    )
    .expect("stream");
    assert_eq!((rows, skipped), (whole.len(), 0));
    assert_eq!(chunks, whole.len().div_ceil(100));
    assert_eq!(numeric.len(), whole.numeric.len());
    assert!(numeric
        .iter()
        .zip(&whole.numeric)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let want: Vec<String> = (0..whole.len())
        .map(|r| whole.label(r).to_string())
        .collect();
    assert_eq!(labels, want);
    assert_eq!(
        lines,
        whole.sources.iter().map(|s| s.line).collect::<Vec<_>>()
    );
    assert!(frame.is_empty());
}

/// The JSON-lines twin of a corrected CSV (`extract --jsonl`'s layout: the same keys, numbers
/// as JSON numbers, identifiers as strings) reads into the same frame, and a bad line is named
/// by file and line, or counted when skipping.
#[test]
fn json_lines_read_as_their_csv() {
    let csv_path = shared("cic-ids2017-improved/Botnet_736.csv");
    let text = std::fs::read_to_string(&csv_path).expect("csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let mut jsonl = String::new();
    for line in lines {
        let mut object = serde_json::Map::new();
        for (key, value) in header.iter().zip(line.split(',')) {
            let v = match value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) if !key.contains("IP") && *key != "Timestamp" => n.into(),
                _ => serde_json::Value::String(value.to_string()),
            };
            object.insert(key.to_string(), v);
        }
        object.insert("End Reason".into(), "idle_timeout".into());
        jsonl.push_str(&serde_json::Value::Object(object).to_string());
        jsonl.push('\n');
    }
    let dir = tempfile::tempdir().expect("tmp");
    let json_path = dir.path().join("botnet.jsonl");
    std::fs::write(&json_path, &jsonl).expect("write");
    let opts = ReadOptions::default();
    let (a, _) = read_files(std::slice::from_ref(&csv_path), &opts).expect("csv read");
    let (b, _) = read_files(std::slice::from_ref(&json_path), &opts).expect("jsonl read");
    assert_eq!(a.len(), 736);
    assert_eq!(a.len(), b.len());
    assert_eq!(b.files[0].format, FileFormat::CicImproved);
    assert_eq!(a.layout, b.layout);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.numeric), bits(&b.numeric));
    for row in 0..a.len() {
        assert_eq!(a.label(row), b.label(row));
        assert_eq!(
            a.sources[row].line,
            b.sources[row].line + 1,
            "CSV line 1 is its header"
        );
    }

    // A broken line, then a line with an array value.
    let mut broken: Vec<&str> = jsonl.lines().collect();
    broken[3] = "{\"Flow ID\": ";
    let mut object: serde_json::Value = serde_json::from_str(broken[5]).expect("json");
    object["Protocol"] = serde_json::json!([6]);
    let array_line = object.to_string();
    broken[5] = &array_line;
    std::fs::write(&json_path, broken.join("\n")).expect("write");
    let err = read_files(std::slice::from_ref(&json_path), &opts).expect_err("broken");
    let msg = err.to_string();
    assert!(
        msg.contains("botnet.jsonl: line 4: not a JSON object"),
        "{msg}"
    );
    let skip = ReadOptions {
        on_bad_row: BadRowPolicy::Skip,
        ..Default::default()
    };
    let (c, skips) = read_files(std::slice::from_ref(&json_path), &skip).expect("skip");
    assert_eq!((c.len(), skips.skipped), (734, 2));
    assert!(
        skips.examples[1].contains("line 6")
            && skips.examples[1].contains("\"Protocol\" is an array")
    );
}
