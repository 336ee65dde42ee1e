//! The service's settings: a TOML file (`metaids serve --config metaids.toml`, every key optional
//! except where noted) whose values command-line flags override. `examples/metaids.toml` documents
//! every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, ServeError};

/// Everything `serve` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The model directory (required).
    pub model: Option<PathBuf>,
    /// The threat library (required): a library file, read at start and again whenever it changes.
    pub library: Option<PathBuf>,
    /// A directory of captures (pcap, pcapng, `.gz`): each new file is scored once.
    pub pcap_dir: Option<PathBuf>,
    /// A network interface to capture from (a build with the `live` feature; needs CAP_NET_RAW).
    pub interface: Option<String>,
    /// A BPF filter (tcpdump syntax) for `interface`.
    pub bpf: Option<String>,
    /// A directory of flow files (CSV of the model's dataset, `.csv` or `.csv.gz`, as
    /// `metaids extract` or CICFlowMeter write them): each new file is scored once.
    pub flow_dir: Option<PathBuf>,
    /// The EVE JSON file alerts and stats records are appended to (required); reopened on SIGHUP.
    pub eve: Option<PathBuf>,
    /// Where progress over `pcap_dir` and `flow_dir` is kept across restarts (default: `EVE.state.json` beside
    /// the EVE file).
    pub state: Option<PathBuf>,
    /// The API's address (default 127.0.0.1:9330).
    pub listen: SocketAddr,
    /// Bearer tokens: lines `name role token` (role `read` or `write`). Without it the API is
    /// read-only, and only on a loopback address.
    pub tokens: Option<PathBuf>,
    /// The API's TLS certificate chain (PEM); with `tls_key`, the API speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// The sensor's name in EVE records (`host`; default: the machine's host name).
    pub sensor: Option<String>,
    /// Seconds between EVE `stats` records (0: none; default 60).
    pub stats_interval_s: u64,
    /// Milliseconds between scans of `pcap_dir` and `flow_dir` (default 1000).
    pub poll_ms: u64,
    /// A capture is scored once it has not changed for this long (milliseconds; default 2000):
    /// a file still being written is left for a later scan.
    pub settle_ms: u64,
    /// Flows per micro-batch (default 1024).
    pub batch: usize,
    /// Alerts kept in memory for `GET /alerts` (default 10,000).
    pub recent_alerts: usize,
    /// Largest request body in bytes, an uploaded capture included (default 16 MiB).
    pub max_body_bytes: usize,
    /// Stop by itself after this many seconds (0: run until SIGTERM or Ctrl-C; default 0).
    pub max_runtime_s: u64,
    /// Block the sources of threat alerts in nftables sets, applied as alerts arrive (`nft -f -`;
    /// needs CAP_NET_ADMIN), with the script kept at `EVE.nft` (default false).
    pub nft: bool,
    /// Also block the sources of unknown-anomaly alerts (default false).
    pub nft_unknown: bool,
    /// Seconds an address stays blocked, refreshed when it alerts again (default 3600).
    pub nft_timeout_s: u64,
    /// Networks never blocked (CIDR), besides loopback and the unspecified and broadcast addresses.
    pub nft_allow: Vec<String>,
    /// Give metaids' table its own input chain that drops the sets' traffic (default false).
    pub nft_drop_rule: bool,
    /// POST every alert to this http:// or https:// URL (default: none).
    pub webhook: Option<String>,
    /// A header sent with every webhook request, `Name: value`.
    pub webhook_header: Option<String>,
    /// PEM certificates the webhook trusts instead of Mozilla's roots.
    pub webhook_ca: Option<PathBuf>,
    /// Also send every alert to these targets: `syslog:udp://HOST:PORT`, `syslog:unix:/dev/log`
    /// (RFC 5424), `unix-stream:PATH` or `unix-dgram:PATH` (JSON lines).
    pub forward: Vec<String>,
    /// The syslog facility of forwarded alerts, 0–23 (default 21, local5, as Suricata).
    pub syslog_facility: u8,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model: None,
            library: None,
            pcap_dir: None,
            interface: None,
            bpf: None,
            flow_dir: None,
            eve: None,
            state: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9330)),
            tokens: None,
            tls_cert: None,
            tls_key: None,
            sensor: None,
            stats_interval_s: 60,
            poll_ms: 1000,
            settle_ms: 2000,
            batch: 1024,
            recent_alerts: 10_000,
            max_body_bytes: 16 << 20,
            max_runtime_s: 0,
            nft: false,
            nft_unknown: false,
            nft_timeout_s: 3600,
            nft_allow: Vec::new(),
            nft_drop_rule: false,
            webhook: None,
            webhook_header: None,
            webhook_ca: None,
            forward: Vec::new(),
            syslog_facility: 21,
        }
    }
}

/// The settings once checked: required paths present, numbers in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The model directory.
    pub model: PathBuf,
    /// The threat library file.
    pub library: PathBuf,
    /// The watched capture directory.
    pub pcap_dir: Option<PathBuf>,
    /// The watched flow-file directory.
    pub flow_dir: Option<PathBuf>,
    /// The EVE file.
    pub eve: PathBuf,
    /// The progress file.
    pub state: PathBuf,
    /// The rest, as given.
    pub config: ServeConfig,
    /// The sensor name.
    pub sensor: String,
}

impl ServeConfig {
    /// Reads a TOML config file; an unknown key or a value of the wrong type is an error naming
    /// the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ServeError::Config {
            field: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Checks the settings.
    pub fn check(self) -> Result<Checked> {
        let need = |v: &Option<PathBuf>, field: &'static str| {
            v.clone().ok_or_else(|| ServeError::Config {
                field: field.into(),
                message: "required (a flag or a key of the config file)".into(),
            })
        };
        let model = need(&self.model, "model")?;
        let library = need(&self.library, "library")?;
        let eve = need(&self.eve, "eve")?;
        let range = |v: u64, lo: u64, hi: u64, field: &'static str| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ServeError::Config {
                    field: field.into(),
                    message: format!("expected {lo} to {hi}, found {v}"),
                })
            }
        };
        range(self.poll_ms, 10, 3_600_000, "poll_ms")?;
        range(self.settle_ms, 0, 3_600_000, "settle_ms")?;
        range(self.stats_interval_s, 0, 86_400, "stats_interval_s")?;
        range(self.batch as u64, 1, 1 << 20, "batch")?;
        range(self.recent_alerts as u64, 1, 10_000_000, "recent_alerts")?;
        range(self.max_body_bytes as u64, 1024, 1 << 30, "max_body_bytes")?;
        for (dir, field) in [(&self.pcap_dir, "pcap_dir"), (&self.flow_dir, "flow_dir")] {
            if let Some(dir) = dir {
                if !dir.is_dir() {
                    return Err(ServeError::Config {
                        field: field.into(),
                        message: format!("{} is not a directory", dir.display()),
                    });
                }
            }
        }
        if let (Some(p), Some(f)) = (&self.pcap_dir, &self.flow_dir) {
            if p == f {
                return Err(ServeError::Config {
                    field: "flow_dir".into(),
                    message: format!(
                        "{} is also pcap_dir: give captures and flow files directories of their own",
                        f.display()
                    ),
                });
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServeError::Config {
                field: if self.tls_cert.is_some() {
                    "tls_key"
                } else {
                    "tls_cert"
                }
                .into(),
                message: "TLS needs both tls_cert and tls_key".into(),
            });
        }
        if self.tokens.is_none() && !self.listen.ip().is_loopback() {
            return Err(ServeError::Config {
                field: "listen".into(),
                message: format!(
                    "{} is not a loopback address and no tokens file is given: the API would be open to the network (give --tokens)",
                    self.listen
                ),
            });
        }
        let state = self.state.clone().unwrap_or_else(|| {
            let mut p = eve.clone().into_os_string();
            p.push(".state.json");
            PathBuf::from(p)
        });
        let sensor = self.sensor.clone().unwrap_or_else(host_name);
        Ok(Checked {
            model,
            library,
            pcap_dir: self.pcap_dir.clone(),
            flow_dir: self.flow_dir.clone(),
            eve,
            state,
            sensor,
            config: self,
        })
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`, else `HOSTNAME`, else `metaids`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "metaids".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_names_an_unknown_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "model = \"m\"\npoll_msec = 5\n").expect("write");
        let e = ServeConfig::load(&p).expect_err("unknown key").to_string();
        assert!(e.contains("poll_msec"), "{e}");
        std::fs::write(&p, "model = \"m\"\npoll_ms = \"fast\"\n").expect("write");
        let e = ServeConfig::load(&p).expect_err("wrong type").to_string();
        assert!(e.contains("poll_ms"), "{e}");
    }

    #[test]
    fn required_settings_and_ranges_are_checked() {
        let e = ServeConfig::default()
            .check()
            .expect_err("no model")
            .to_string();
        assert!(e.contains("model"), "{e}");
        let ok = ServeConfig {
            model: Some("m".into()),
            library: Some("l".into()),
            eve: Some("/tmp/x/eve.json".into()),
            ..ServeConfig::default()
        };
        let c = ok.clone().check().expect("valid");
        assert_eq!(c.state, PathBuf::from("/tmp/x/eve.json.state.json"));
        let e = ServeConfig {
            poll_ms: 1,
            ..ok.clone()
        }
        .check()
        .expect_err("range");
        assert!(e.to_string().contains("poll_ms"), "{e}");
        let open = ServeConfig {
            listen: "0.0.0.0:9330".parse().expect("addr"),
            ..ok
        };
        let e = open.check().expect_err("open API").to_string();
        assert!(e.contains("tokens"), "{e}");
    }
}

#[cfg(test)]
mod example {
    use super::*;

    #[test]
    fn the_example_config_parses_with_the_defaults_it_states() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/metaids.toml");
        let c = ServeConfig::load(&p).expect("example config");
        let d = ServeConfig::default();
        assert_eq!(c.model, Some(PathBuf::from("/var/lib/metaids/cic.model")));
        assert_eq!(
            (
                c.listen,
                c.stats_interval_s,
                c.poll_ms,
                c.settle_ms,
                c.batch
            ),
            (
                d.listen,
                d.stats_interval_s,
                d.poll_ms,
                d.settle_ms,
                d.batch
            )
        );
        assert_eq!(
            (c.recent_alerts, c.max_body_bytes, c.max_runtime_s),
            (d.recent_alerts, d.max_body_bytes, d.max_runtime_s)
        );
    }
}
