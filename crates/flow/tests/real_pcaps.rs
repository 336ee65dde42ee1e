//! Every staged capture in /work/shared/data/pcaps reads without error, with the packet count
//! that SOURCES.md lists. Skipped (with a note) when the directory is absent.

use std::path::{Path, PathBuf};

use metaids_flow::{extract_csv, FlowConfig, ReaderConfig};

const ROOT: &str = "/work/shared/data/pcaps";

fn expected_counts() -> Vec<(PathBuf, u64)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("SOURCES.md")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let path = cols.get(1)?;
            let packets: u64 = cols.get(6)?.parse().ok()?;
            (path.ends_with(".pcap") || path.ends_with(".pcapng"))
                .then(|| (Path::new(ROOT).join(path), packets))
        })
        .collect()
}

#[test]
fn staged_captures_read_cleanly() {
    let captures = expected_counts();
    if captures.is_empty() {
        eprintln!("no staged captures under {ROOT}; skipping");
        return;
    }
    let mut total_rows = 0;
    for (path, packets) in &captures {
        let file = std::fs::File::open(path).expect("open capture");
        let mut csv = Vec::new();
        let report = extract_csv(
            std::io::BufReader::new(file),
            &mut csv,
            ReaderConfig::default(),
            FlowConfig::default(),
            Some("test"),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            report.capture_error.is_none(),
            "{}: {:?}",
            path.display(),
            report.capture_error
        );
        assert_eq!(report.engine.packets, *packets, "{}", path.display());
        assert!(report.rows > 0, "{}", path.display());
        let text = String::from_utf8(csv).expect("utf8");
        for line in text.lines() {
            assert_eq!(line.split(',').count(), 91, "{}: {line}", path.display());
        }
        eprintln!(
            "{}: {} packets, {} flows, {} skipped",
            path.display(),
            report.engine.packets,
            report.rows,
            report.engine.skipped_total()
        );
        total_rows += report.rows;
    }
    assert!(total_rows > 0);
}
