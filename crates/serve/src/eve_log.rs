//! The service's EVE output: one JSON line per alert and a `stats` record every N seconds,
//! appended to a file that is reopened after SIGHUP (logrotate renames it, then signals: lines
//! written before the reopen are in the renamed file, every later line in the new one, none lost).
//! Each batch's lines are written with one `write` and synced before responders or the API see
//! them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use metaids_detect::{
    Batch, Counter as SinkCounter, DetectError, Sink, SinkReport, Stage, VerdictKind,
};

use crate::state::{KindLabel, Shared, ThreatLabel};

/// The appended EVE file.
#[derive(Debug)]
pub struct EveLog {
    path: PathBuf,
    file: File,
    lines: u64,
    reopened: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl EveLog {
    /// Opens (creates) `path` for appending. A directory is refused by the system.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(EveLog {
            path: path.to_path_buf(),
            file: open_append(path)?,
            lines: 0,
            reopened: 0,
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the file it has and opens the path anew (after a rotation renamed it).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.file = open_append(&self.path)?;
        self.reopened += 1;
        Ok(())
    }

    /// Appends whole lines (`bytes` ends with a newline) in one write, then syncs.
    pub fn append(&mut self, bytes: &[u8], lines: u64) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.lines += lines;
        Ok(())
    }

    /// Lines written since start.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Reopenings since start.
    pub fn reopened(&self) -> u64 {
        self.reopened
    }
}

/// Reopens `log` if a SIGHUP asked for it; counts it.
pub fn reopen_if_asked(log: &mut EveLog, shared: &Shared) -> std::io::Result<()> {
    if shared.take_reopen() {
        log.reopen()?;
        shared.metrics.eve_reopens.inc();
        tracing::info!(path = %log.path().display(), "EVE file reopened");
    }
    Ok(())
}

/// Locks the log (a panic elsewhere does not stop the output).
pub fn lock(log: &Mutex<EveLog>) -> std::sync::MutexGuard<'_, EveLog> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The recording sink of `serve`: appends the batch's alerts to the EVE log (synced), then hands
/// them to the API's recent alerts and counts verdicts and alerts in the metrics.
pub struct ServiceSink {
    log: Arc<Mutex<EveLog>>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    alerts: u64,
}

impl ServiceSink {
    /// A sink writing to `log`.
    pub fn new(log: Arc<Mutex<EveLog>>, shared: Arc<Shared>) -> Self {
        ServiceSink {
            log,
            shared,
            buf: Vec::with_capacity(1 << 16),
            alerts: 0,
        }
    }
}

impl Sink for ServiceSink {
    fn name(&self) -> &str {
        "eve"
    }

    fn stage(&self) -> Stage {
        Stage::Record
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> metaids_detect::Result<()> {
        self.buf.clear();
        for a in batch.alerts {
            self.buf.extend_from_slice(a.line.as_bytes());
            self.buf.push(b'\n');
        }
        {
            let mut log = lock(&self.log);
            let path = log.path().to_path_buf();
            let io = DetectError::io(path);
            reopen_if_asked(&mut log, &self.shared).map_err(io)?;
            log.append(&self.buf, batch.alerts.len() as u64)
                .map_err(DetectError::io(log.path().to_path_buf()))?;
        }
        self.alerts += batch.alerts.len() as u64;
        let m = &self.shared.metrics;
        // A batch holds flows or requests (a web-request model's), never both.
        if batch.flows.first().is_some_and(|f| f.http.is_some()) {
            m.http_requests.inc_by(batch.flows.len() as u64);
        } else {
            m.flows.inc_by(batch.flows.len() as u64);
        }
        m.batch_latency.observe(batch.latency.as_secs_f64());
        let mut kinds = [0u64; 3];
        for v in batch.verdicts {
            kinds[match v.kind {
                VerdictKind::Benign => 0,
                VerdictKind::Threat => 1,
                VerdictKind::Unknown => 2,
            }] += 1;
        }
        for (k, n) in [
            VerdictKind::Benign,
            VerdictKind::Threat,
            VerdictKind::Unknown,
        ]
        .into_iter()
        .zip(kinds)
        {
            if n > 0 {
                m.verdicts
                    .get_or_create(&KindLabel {
                        kind: k.name().into(),
                    })
                    .inc_by(n);
            }
        }
        for a in batch.alerts {
            let v = batch.verdicts.get(a.index);
            let name = match v {
                Some(v) if v.kind == VerdictKind::Threat => v
                    .threat
                    .and_then(|t| batch.context.threats.get(t))
                    .map_or("unknown", |t| t.name.as_str()),
                _ => "unknown",
            };
            m.alerts
                .get_or_create(&ThreatLabel {
                    threat: name.into(),
                })
                .inc();
            self.shared.push_alert(Arc::from(a.line.as_str()));
        }
        Ok(())
    }

    fn finish(&mut self) -> metaids_detect::Result<SinkReport> {
        let log = lock(&self.log);
        Ok(SinkReport {
            sink: "eve".into(),
            counters: vec![(SinkCounter::AlertsWritten, self.alerts)],
            notes: vec![format!(
                "appended {} alerts to {}",
                self.alerts,
                log.path().display()
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_after_rename_loses_no_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("eve.json");
        let shared = Shared::new(8);
        let mut log = EveLog::open(&path).expect("open");
        log.append(b"{\"a\":1}\n", 1).expect("write");
        std::fs::rename(&path, dir.path().join("eve.json.1")).expect("rotate");
        // Before the signal, lines still go to the renamed file (as with Suricata).
        log.append(b"{\"a\":2}\n", 1).expect("write");
        shared.request_reopen();
        reopen_if_asked(&mut log, &shared).expect("reopen");
        log.append(b"{\"a\":3}\n", 1).expect("write");
        let old = std::fs::read_to_string(dir.path().join("eve.json.1")).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert_eq!(old, "{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(new, "{\"a\":3}\n");
        assert_eq!((log.lines(), log.reopened()), (3, 1));
        assert!(!shared.take_reopen());
    }

    #[test]
    fn a_hundred_rotations_under_a_writer_lose_no_line() {
        // A writer thread appends numbered lines as the worker does (reopen if asked, then append);
        // meanwhile the file is renamed and a reopen asked for, 100 times. Every line must be in
        // exactly one of the 101 files, none torn.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("eve.json");
        let shared = Shared::new(8);
        let log = Arc::new(Mutex::new(EveLog::open(&path).expect("open")));
        let total = 5_000u64;
        let writer = {
            let (log, shared) = (Arc::clone(&log), Arc::clone(&shared));
            std::thread::spawn(move || {
                for i in 0..total {
                    let mut l = lock(&log);
                    reopen_if_asked(&mut l, &shared).expect("reopen");
                    l.append(format!("{{\"n\":{i}}}\n").as_bytes(), 1)
                        .expect("append");
                }
            })
        };
        for r in 0..100 {
            // Renamed only once the previous rotation's file exists (logrotate's order).
            while !path.exists() {
                std::thread::yield_now();
            }
            std::fs::rename(&path, dir.path().join(format!("eve.json.{r}"))).expect("rotate");
            shared.request_reopen();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        writer.join().expect("writer");
        let mut seen = vec![0u32; total as usize];
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            files += 1;
            for line in text.lines() {
                let n: u64 = line
                    .strip_prefix("{\"n\":")
                    .and_then(|r| r.strip_suffix('}'))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("torn line {line:?}"));
                seen[n as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "a line lost or written twice");
        assert!(files >= 2, "no rotation happened while writing");
        assert_eq!(lock(&log).lines(), total);
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(EveLog::open(dir.path()).is_err());
    }
}
