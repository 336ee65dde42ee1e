//! Malformed inputs give errors that name the file, the line and the column, or counted skips.

use std::io::Write;
use std::path::{Path, PathBuf};

use metaids_core::schema::{cic_improved_header, DatasetKind, FileFormat};
use metaids_ingest::{read_files, BadRowPolicy, IngestError, ReadOptions};

const NSL_ROW: &str = "0,tcp,private,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,229,10,0.00,0.00,1.00,1.00,0.04,0.06,0.00,255,10,0.04,0.06,0.00,0.00,0.00,0.00,1.00,1.00,neptune,21";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write");
    p
}

fn read(path: &Path, opts: ReadOptions) -> Result<usize, IngestError> {
    read_files(&[path.to_path_buf()], &opts).map(|(f, _)| f.len())
}

#[test]
fn truncated_last_line_names_line_and_counts() {
    let dir = tempfile::tempdir().expect("tmp");
    let cut = &NSL_ROW[..NSL_ROW.len() - 30];
    let p = write(dir.path(), "t.txt", &format!("{NSL_ROW}\n{NSL_ROW}\n{cut}"));
    let err = read(&p, ReadOptions::default()).expect_err("truncated");
    let msg = err.to_string();
    assert!(matches!(err, IngestError::Row { line: 3, .. }), "{msg}");
    assert!(
        msg.contains("t.txt") && msg.contains("line 3") && msg.contains("expected 43 fields"),
        "{msg}"
    );
    // With skip, the good rows are kept and the bad one counted.
    let opts = ReadOptions {
        on_bad_row: BadRowPolicy::Skip,
        ..Default::default()
    };
    let (frame, skips) = read_files(&[p], &opts).expect("skip");
    assert_eq!((frame.len(), skips.skipped), (2, 1));
    assert!(skips.examples[0].contains("line 3"));
}

#[test]
fn wrong_column_count_in_csv() {
    let dir = tempfile::tempdir().expect("tmp");
    let header = cic_improved_header().join(",");
    let p = write(dir.path(), "c.csv", &format!("{header}\n1,2,3\n"));
    let msg = read(&p, ReadOptions::default())
        .expect_err("count")
        .to_string();
    assert!(
        msg.contains("c.csv: line 2: expected 91 fields, found 3"),
        "{msg}"
    );
}

#[test]
fn non_numeric_field_names_column_expected_and_found() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = NSL_ROW.replacen(",229,", ",lots,", 1);
    let p = write(dir.path(), "n.txt", &format!("{NSL_ROW}\n{bad}\n"));
    let msg = read(&p, ReadOptions::default())
        .expect_err("nan")
        .to_string();
    assert!(
        msg.contains("n.txt: line 2: column \"count\": expected a number, found \"lots\""),
        "{msg}"
    );
}

#[test]
fn empty_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write(dir.path(), "e.csv", "");
    let err = read(&p, ReadOptions::default()).expect_err("empty");
    assert!(matches!(err, IngestError::Empty { .. }), "{err}");
    assert!(err.to_string().contains("e.csv: the file is empty"));
    let p = write(dir.path(), "bom.csv", "\u{feff}\n");
    assert!(matches!(
        read(&p, ReadOptions::default()),
        Err(IngestError::Empty { .. })
    ));
}

#[test]
fn unknown_and_wrong_formats() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write(dir.path(), "junk.csv", "hello,world\n1,2\n");
    let msg = read(&p, ReadOptions::default())
        .expect_err("unknown")
        .to_string();
    assert!(
        msg.contains("junk.csv: line 1 matches no known format"),
        "{msg}"
    );
    // An NSL-KDD file offered as UNSW-NB15.
    let p = write(dir.path(), "kdd.txt", &format!("{NSL_ROW}\n"));
    let opts = ReadOptions {
        dataset: Some(DatasetKind::UnswNb15),
        ..Default::default()
    };
    let msg = read(&p, opts).expect_err("wrong dataset").to_string();
    assert!(
        msg.contains("kdd.txt: this is a nsl-kdd file, but dataset unsw-nb15 was asked for"),
        "{msg}"
    );
    // Forcing a CSV format onto it: its first line is taken as a header that lacks the columns.
    let opts = ReadOptions {
        format: Some(FileFormat::UnswNb15),
        ..Default::default()
    };
    let msg = read(&p, opts).expect_err("forced").to_string();
    assert!(
        msg.contains("line 1 (header)") && msg.contains("lacks required column"),
        "{msg}"
    );
}

#[test]
fn runaway_line_is_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let header = cic_improved_header().join(",");
    let huge = "9".repeat(2 << 20);
    let p = write(dir.path(), "big.csv", &format!("{header}\n{huge}"));
    let msg = read(&p, ReadOptions::default())
        .expect_err("huge")
        .to_string();
    assert!(
        msg.contains("big.csv") && msg.contains("longer than"),
        "{msg}"
    );
}

#[test]
fn gzip_files_read_like_plain_ones() {
    use flate2::write::GzEncoder;
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("k.txt.gz");
    let mut enc = GzEncoder::new(
        std::fs::File::create(&p).expect("create"),
        flate2::Compression::fast(),
    );
    enc.write_all(format!("{NSL_ROW}\n{NSL_ROW}\n").as_bytes())
        .expect("gz");
    enc.finish().expect("finish");
    assert_eq!(read(&p, ReadOptions::default()).expect("gz read"), 2);
}

#[test]
fn missing_file_names_path() {
    let msg = read(Path::new("/nonexistent/x.csv"), ReadOptions::default())
        .expect_err("missing")
        .to_string();
    assert!(msg.starts_with("/nonexistent/x.csv:"), "{msg}");
}

/// The original CIC-IDS2017 `MachineLearningCSV` schema: leading spaces, the duplicated
/// `Fwd Header Length`, `Infinity`/`NaN`, a Latin-1 dash in the label, CRLF line ends.
#[test]
fn original_cic_schema_is_detected_and_mapped() {
    let header = " Destination Port, Flow Duration, Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets, Total Length of Bwd Packets, Fwd Packet Length Max, Fwd Packet Length Min, Fwd Packet Length Mean, Fwd Packet Length Std,Bwd Packet Length Max, Bwd Packet Length Min, Bwd Packet Length Mean, Bwd Packet Length Std,Flow Bytes/s, Flow Packets/s, Flow IAT Mean, Flow IAT Std, Flow IAT Max, Flow IAT Min,Fwd IAT Total, Fwd IAT Mean, Fwd IAT Std, Fwd IAT Max, Fwd IAT Min,Bwd IAT Total, Bwd IAT Mean, Bwd IAT Std, Bwd IAT Max, Bwd IAT Min,Fwd PSH Flags, Bwd PSH Flags, Fwd URG Flags, Bwd URG Flags, Fwd Header Length, Bwd Header Length,Fwd Packets/s, Bwd Packets/s, Min Packet Length, Max Packet Length, Packet Length Mean, Packet Length Std, Packet Length Variance,FIN Flag Count, SYN Flag Count, RST Flag Count, PSH Flag Count, ACK Flag Count, URG Flag Count, CWE Flag Count, ECE Flag Count, Down/Up Ratio, Average Packet Size, Avg Fwd Segment Size, Avg Bwd Segment Size, Fwd Header Length,Fwd Avg Bytes/Bulk, Fwd Avg Packets/Bulk, Fwd Avg Bulk Rate, Bwd Avg Bytes/Bulk, Bwd Avg Packets/Bulk,Bwd Avg Bulk Rate,Subflow Fwd Packets, Subflow Fwd Bytes, Subflow Bwd Packets, Subflow Bwd Bytes,Init_Win_bytes_forward, Init_Win_bytes_backward, act_data_pkt_fwd, min_seg_size_forward,Active Mean, Active Std, Active Max, Active Min,Idle Mean, Idle Std, Idle Max, Idle Min, Label";
    let mut values: Vec<String> = (0..78).map(|i| (i * 3).to_string()).collect();
    values[0] = "80".into();
    values[14] = "Infinity".into();
    values[15] = "NaN".into();
    let benign = format!("{},BENIGN", values.join(","));
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("Tuesday-WorkingHours.pcap_ISCX.csv");
    let mut bytes = format!("{header}\r\n{benign}\r\n").into_bytes();
    bytes.extend_from_slice(values.join(",").as_bytes());
    bytes.extend_from_slice(b",Web Attack \x96 XSS\r\n");
    std::fs::write(&p, bytes).expect("write");
    let (frame, _) = read_files(&[p], &ReadOptions::default()).expect("read");
    assert_eq!(frame.layout.kind, DatasetKind::Cic);
    assert_eq!(frame.files[0].format, FileFormat::CicOriginal);
    assert_eq!(frame.len(), 2);
    assert_eq!(frame.label(0), "BENIGN");
    assert_eq!(frame.label(1), "Web Attack - XSS");
    let bytes_per_s = frame
        .layout
        .numeric
        .iter()
        .position(|c| c == "Flow Bytes/s")
        .expect("column");
    assert_eq!(frame.numeric_row(0)[bytes_per_s], f32::INFINITY);
    assert!(frame.numeric_row(0)[bytes_per_s + 1].is_nan());
    // Features the original release lacks are recorded, and read as missing.
    assert!(frame.files[0]
        .missing_features
        .contains(&"Total TCP Flow Time".to_string()));
    let tcp_time = frame
        .layout
        .numeric
        .iter()
        .position(|c| c == "Total TCP Flow Time")
        .expect("column");
    assert!(frame.numeric_row(0)[tcp_time].is_nan());
    assert_eq!(frame.categorical_row(0).next(), Some("80"));
}
