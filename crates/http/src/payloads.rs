//! Labelled web-attack payload families: the `family,source,payload` CSV that
//! `scripts/http-data.py` builds (`data/http/payloads.csv.gz`, sources and licences in
//! `data/http/SOURCES.md`). Read from any `Read` (the caller decompresses); a row that is not three
//! fields, an empty family or a header other than the expected one is an error naming the source,
//! the line and the field.

use std::collections::BTreeMap;
use std::io::Read;

/// One labelled payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Family (`benign`, `sqli`, `xss`, …).
    pub family: String,
    /// Where it came from (file and line in the upstream repository).
    pub source: String,
    /// The payload string (a parameter value or an attack string), as the source has it.
    pub payload: String,
    /// 1-based line of the file where its row starts (a quoted payload may span lines).
    pub line: u64,
}

/// Why the file cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}, line {line}: {message}")]
pub struct PayloadsError {
    /// The name given to the reader.
    pub source_name: String,
    /// 1-based line (0 when the error is not tied to one).
    pub line: u64,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The header the file must start with.
pub const HEADER: [&str; 3] = ["family", "source", "payload"];

/// Reads every payload of `input`, named `source_name` in errors.
pub fn read_payloads(input: impl Read, source_name: &str) -> Result<Vec<Payload>, PayloadsError> {
    let fail = |line: u64, message: String| PayloadsError {
        source_name: source_name.to_string(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|e| fail(1, format!("header: {e}")))?
        .clone();
    if header.iter().ne(HEADER) {
        return Err(fail(
            1,
            format!(
                "header is {:?}, expected {}",
                header.iter().collect::<Vec<_>>(),
                HEADER.join(",")
            ),
        ));
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            fail(line, format!("not a CSV row: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 3 {
            return Err(fail(
                line,
                format!(
                    "{} fields, expected 3 (family, source, payload)",
                    record.len()
                ),
            ));
        }
        if record[0].is_empty() {
            return Err(fail(line, "field family: empty".into()));
        }
        out.push(Payload {
            family: record[0].to_string(),
            source: record[1].to_string(),
            payload: record[2].to_string(),
            line,
        });
    }
    Ok(out)
}

/// Payloads per family, in name order.
pub fn family_counts(payloads: &[Payload]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for p in payloads {
        *counts.entry(p.family.as_str()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_with_quoted_newlines_and_bad_rows_are_named() {
        let ok = "family,source,payload\nbenign,a:2,\"c/ caridad s/n\"\nxxe,b,\"<?xml?>\n<!DOCTYPE x>\"\n";
        let got = read_payloads(ok.as_bytes(), "p.csv").expect("reads");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].payload, "<?xml?>\n<!DOCTYPE x>");
        assert_eq!((got[0].line, got[1].line), (2, 3));
        assert_eq!(
            family_counts(&got).into_iter().collect::<Vec<_>>(),
            [("benign", 1), ("xxe", 1)]
        );

        let e = read_payloads("family,payload\n".as_bytes(), "p.csv").expect_err("header");
        assert!(e.to_string().starts_with("p.csv, line 1: header is"), "{e}");
        let e = read_payloads("family,source,payload\nsqli,x\n".as_bytes(), "p.csv")
            .expect_err("two fields");
        assert_eq!(
            e.to_string(),
            "p.csv, line 2: 2 fields, expected 3 (family, source, payload)"
        );
        let e = read_payloads(
            "family,source,payload\nsqli,a,b\n,x,y\n".as_bytes(),
            "p.csv",
        )
        .expect_err("empty family");
        assert_eq!(e.to_string(), "p.csv, line 3: field family: empty");
    }
}
