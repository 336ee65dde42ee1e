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
