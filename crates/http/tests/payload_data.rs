//! The vendored payload families (`data/http/payloads.csv.gz`) read as data/http/SOURCES.md says:
//! the counts of its table, no string in two families, no repeat within one.

use std::collections::HashMap;
use std::path::PathBuf;

use metaids_http::payloads::{family_counts, read_payloads};

#[test]
fn the_vendored_families_are_what_sources_md_says() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/http");
    let file =
        std::fs::File::open(root.join("payloads.csv.gz")).expect("data/http/payloads.csv.gz");
    let payloads = read_payloads(flate2::read::GzDecoder::new(file), "payloads.csv.gz")
        .expect("the vendored file reads");

    // The counts table of SOURCES.md, parsed, must equal what the file holds.
    let sources = std::fs::read_to_string(root.join("SOURCES.md")).expect("SOURCES.md");
    let table: Vec<(String, usize)> = sources
        .lines()
        .skip_while(|l| !l.starts_with("| family | payloads |"))
        .skip(2)
        .take_while(|l| l.starts_with("| ") && !l.starts_with("| all "))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].to_string(),
                cells[2].replace(',', "").parse().expect("a count"),
            )
        })
        .collect();
    let counts: Vec<(String, usize)> = family_counts(&payloads)
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    assert_eq!(counts, table);
    assert!(
        counts.len() >= 10,
        "benign and at least nine attack families"
    );

    let mut family_of: HashMap<&str, &str> = HashMap::new();
    for p in &payloads {
        assert!(
            !p.payload.trim().is_empty(),
            "empty payload from {}",
            p.source
        );
        assert!(
            p.source.contains('/'),
            "source names its file: {}",
            p.source
        );
        if let Some(other) = family_of.insert(&p.payload, &p.family) {
            panic!(
                "{:?} is in {other} and {} (again at {})",
                p.payload, p.family, p.source
            );
        }
    }
}
