//! The watched capture directory and the progress kept across restarts: a capture is scored once,
//! identified by its name, size and modification time; one still being written (changed within
//! the settle time) waits for a later scan. Progress is written atomically after every capture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServeError};

/// One capture's record in the progress file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Size in bytes when scored.
    pub size: u64,
    /// Modification time (ns since the epoch) when scored.
    pub mtime_ns: u64,
    /// `done`, or `failed` (unreadable; not retried until the file changes).
    pub status: String,
    /// Flows scored.
    pub flows: u64,
    /// Packets read.
    pub packets: u64,
    /// A warning or the error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The progress file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Format version (1).
    pub format: u32,
    /// By file name within the directory.
    pub files: BTreeMap<String, FileRecord>,
}

/// What a watched directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Captures ([`is_capture_name`]); progress keys are their names.
    Captures,
    /// Flow files ([`is_flow_file_name`]); progress keys are `flows/NAME`.
    Flows,
}

impl Kind {
    /// Whether a file of this name is one to score.
    pub fn wants(self, name: &str) -> bool {
        match self {
            Kind::Captures => is_capture_name(name),
            Kind::Flows => is_flow_file_name(name),
        }
    }

    /// The progress key of the file `name`.
    pub fn key(self, name: &str) -> String {
        match self {
            Kind::Captures => name.to_string(),
            Kind::Flows => format!("flows/{name}"),
        }
    }
}

/// A file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its path.
    pub path: PathBuf,
    /// Its progress key: its name within the directory (`flows/NAME` for flow files).
    pub name: String,
    /// Captures or flow files.
    pub kind: Kind,
    /// Size.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: u64,
}

/// File names scored: `.pcap`, `.pcapng`, `.cap`, each optionally `.gz`; hidden files never.
pub fn is_capture_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let base = name.strip_suffix(".gz").unwrap_or(name);
    [".pcap", ".pcapng", ".cap"]
        .iter()
        .any(|ext| base.len() > ext.len() && base.ends_with(ext))
}

/// Flow-file names scored: `.csv`, optionally `.gz`; hidden files never.
pub fn is_flow_file_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let base = name.strip_suffix(".gz").unwrap_or(name);
    base.len() > 4 && base.ends_with(".csv")
}

fn mtime_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Progress {
    /// Reads the progress file; a missing file is a fresh start, a damaged one an error naming it
    /// (scoring everything again would repeat every alert).
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Progress {
                    format: 1,
                    files: BTreeMap::new(),
                })
            }
            Err(source) => {
                return Err(ServeError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let p: Progress = serde_json::from_str(&text).map_err(|e| ServeError::Config {
            field: format!("progress file {}", path.display()),
            message: format!("{e} (move it away to score every capture again)"),
        })?;
        if p.format != 1 {
            return Err(ServeError::Config {
                field: format!("progress file {}", path.display()),
                message: format!("format {} is not 1", p.format),
            });
        }
        Ok(p)
    }

    /// Writes the progress file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ServeError::Config {
            field: "progress".into(),
            message: e.to_string(),
        })?;
        metaids_durable::write_atomic(path, text.as_bytes()).map_err(|source| ServeError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether `c` was scored (or failed) as it is now.
    pub fn seen(&self, c: &Candidate) -> bool {
        self.files
            .get(&c.name)
            .is_some_and(|r| r.size == c.size && r.mtime_ns == c.mtime_ns)
    }

    /// Forgets captures no longer in the directory (`present`: the names a scan listed), so the
    /// file does not grow without bound as captures are rotated away.
    pub fn retain_present(&mut self, present: &[String]) {
        self.files
            .retain(|name, _| present.binary_search(name).is_ok());
    }
}

/// Lists the directory: the files of `kind` not yet scored and settled (unchanged for `settle`),
/// in name order, and the progress key of every such file present (sorted).
pub fn scan(
    dir: &Path,
    kind: Kind,
    progress: &Progress,
    settle: Duration,
    now: SystemTime,
) -> Result<(Vec<Candidate>, Vec<String>)> {
    let io = |source| ServeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut todo = Vec::new();
    let mut present = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !kind.wants(&name) {
            continue;
        }
        let name = kind.key(&name);
        // Follows symlinks; a directory or special file named like a capture is skipped.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        present.push(name.clone());
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let c = Candidate {
            path: entry.path(),
            name,
            kind,
            size: meta.len(),
            mtime_ns: mtime_ns(modified),
        };
        let settled = now.duration_since(modified).is_ok_and(|age| age >= settle);
        if settled && !progress.seen(&c) {
            todo.push(c);
        }
    }
    todo.sort_by(|a, b| a.name.cmp(&b.name));
    present.sort();
    Ok((todo, present))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_names() {
        for n in ["a.pcap", "a.pcapng", "b.cap", "c.pcap.gz", "x.y.pcapng.gz"] {
            assert!(is_capture_name(n), "{n}");
        }
        for n in [
            ".a.pcap",
            "a.pcap.tmp",
            "pcap",
            ".pcap",
            "a.txt",
            "a.gz",
            "a.pcap.partial",
        ] {
            assert!(!is_capture_name(n), "{n}");
        }
        assert!(is_flow_file_name("a.csv") && is_flow_file_name("b.csv.gz"));
        for n in [".a.csv", "csv", ".csv", "a.csv.tmp", "a.pcap"] {
            assert!(!is_flow_file_name(n), "{n}");
        }
        assert_eq!(Kind::Flows.key("a.csv"), "flows/a.csv");
    }

    #[test]
    fn scan_settles_skips_seen_and_forgets_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("b.pcap"), b"bb").expect("write");
        std::fs::write(d.join("a.pcap"), b"a").expect("write");
        std::fs::write(d.join("notes.txt"), b"x").expect("write");
        std::fs::create_dir(d.join("dir.pcap")).expect("mkdir");
        let mut p = Progress::load(&d.join("missing.json")).expect("fresh");
        // Just written: not settled yet.
        let (todo, present) = scan(
            d,
            Kind::Captures,
            &p,
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .expect("scan");
        assert!(todo.is_empty());
        assert_eq!(present, ["a.pcap", "b.pcap"]);
        let later = SystemTime::now() + Duration::from_secs(120);
        let (todo, _) = scan(d, Kind::Captures, &p, Duration::from_secs(60), later).expect("scan");
        assert_eq!(
            todo.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["a.pcap", "b.pcap"]
        );
        let c = &todo[0];
        p.files.insert(
            c.name.clone(),
            FileRecord {
                size: c.size,
                mtime_ns: c.mtime_ns,
                status: "done".into(),
                flows: 1,
                packets: 2,
                note: None,
            },
        );
        let state = d.join("state.json");
        p.save(&state).expect("save");
        let p = Progress::load(&state).expect("load");
        let (todo, _) = scan(d, Kind::Captures, &p, Duration::ZERO, later).expect("scan");
        assert_eq!(
            todo.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b.pcap"]
        );
        // A file that changes is scored again.
        std::fs::write(d.join("a.pcap"), b"aaaa").expect("rewrite");
        let (todo, _) = scan(d, Kind::Captures, &p, Duration::ZERO, later).expect("scan");
        assert_eq!(todo.len(), 2);
        let mut p = p;
        p.retain_present(&["b.pcap".to_string()]);
        assert!(p.files.is_empty());
    }

    #[test]
    fn a_damaged_progress_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        std::fs::write(&state, b"{\"format\":1,\"files\":{\"a\":").expect("write");
        let e = Progress::load(&state).expect_err("damaged").to_string();
        assert!(e.contains("state.json"), "{e}");
    }
}
