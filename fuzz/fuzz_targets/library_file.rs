//! Fuzz target: arbitrary bytes as a threat library file (`--library FILE`), opened read-only and
//! read (current version, history, every version, the site profile). Opening and reading must
//! return errors, never panic past the library's own check, never hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaids_library::ThreatLibrary;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("fuzz.redb");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(lib) = ThreatLibrary::open_read_only(&path) {
        if let Ok(current) = lib.current() {
            let _ = lib.profile(&current);
        }
        if let Ok(history) = lib.history() {
            for v in history {
                let _ = lib.version(v.version);
            }
        }
    }
});
