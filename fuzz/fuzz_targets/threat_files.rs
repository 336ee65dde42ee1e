//! Fuzz target: arbitrary bytes as the JSON files metaids reads from other people — a threat
//! document (`metaids threat import`, `metaids detect --library FILE.json`), one threat of it, and an
//! EVE alert line (`metaids feedback`). Parsing and validation must return errors, never panic. It does not
//! exercise the redb store (redb's own format checks cover it).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use metaids_detect::{EveEvent, Threat};
use metaids_library::ThreatDocument;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.json");
    if let Ok(doc) = ThreatDocument::parse(text, path) {
        let _ = doc.validate(path);
    }
    if let Ok(t) = serde_json::from_str::<Threat>(text) {
        for dim in [1, 8, 32] {
            let _ = t.validate(dim);
        }
        let _ = t.rev();
    }
    let _ = serde_json::from_str::<EveEvent>(text);
});
