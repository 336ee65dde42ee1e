//! The nftables responder: adds the source addresses of alerts to named nftables sets with a timeout.
//!
//! By default it only writes a script (a dry run, streamed like the alerts file and renamed at the
//! end) that `nft -f` can load: it creates the table and an IPv4 and an IPv6 set with
//! `flags timeout` (idempotent `add`s) and adds each offending address once per run with
//! `add element … timeout Ns`. With `apply` it also runs `nft -f -` on each batch's new elements.
//! The sets block nothing by themselves; the script's header shows the one rule that drops their
//! traffic. Only parsed IP addresses ever reach the script (never raw text from the input).

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::detector::VerdictKind;
use crate::error::{DetectError, Result};
use crate::sink::{Batch, Counter, Sink, SinkReport, Stage, StreamFile};

/// nftables responder settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// Table family (`inet`, `ip`, `ip6`, `bridge`, `netdev`): default `inet`.
    pub family: String,
    /// Table name (default `metaids`).
    pub table: String,
    /// IPv4 set name (default `blocklist`).
    pub set4: String,
    /// IPv6 set name (default `blocklist6`).
    pub set6: String,
    /// Element timeout in seconds (default 3600).
    pub timeout_s: u64,
    /// Also respond to unknown anomalies (default: known threats only).
    pub include_unknown: bool,
    /// Run `nft -f -` for each batch (default false: script only).
    pub apply: bool,
    /// The nft binary (default `nft`).
    pub nft: String,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            family: "inet".into(),
            table: "metaids".into(),
            set4: "blocklist".into(),
            set6: "blocklist6".into(),
            timeout_s: 3600,
            include_unknown: false,
            apply: false,
            nft: "nft".into(),
        }
    }
}

fn valid_name(s: &str) -> bool {
    s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl NftConfig {
    /// Refuses names nft would not take (or that could inject script text) and a zero timeout.
    pub fn validate(&self) -> Result<()> {
        if !["inet", "ip", "ip6", "bridge", "netdev"].contains(&self.family.as_str()) {
            return Err(DetectError::Config {
                field: "nft family",
                message: format!(
                    "expected inet, ip, ip6, bridge or netdev, found {:?}",
                    self.family
                ),
            });
        }
        for (field, v) in [
            ("nft table", &self.table),
            ("nft set", &self.set4),
            ("nft set6", &self.set6),
        ] {
            if !valid_name(v) {
                return Err(DetectError::Config {
                    field,
                    message: format!("expected a letter then letters, digits or _, found {v:?}"),
                });
            }
        }
        if self.timeout_s == 0 {
            return Err(DetectError::Config {
                field: "nft timeout",
                message: "expected at least 1 second".into(),
            });
        }
        Ok(())
    }

    /// The idempotent lines that create the table and both sets.
    pub fn header(&self) -> String {
        let (f, t) = (&self.family, &self.table);
        format!(
            "add table {f} {t}\n\
             add set {f} {t} {} {{ type ipv4_addr; flags timeout; }}\n\
             add set {f} {t} {} {{ type ipv6_addr; flags timeout; }}\n",
            self.set4, self.set6
        )
    }

    /// The line adding `addr` to its set.
    pub fn element(&self, addr: IpAddr) -> String {
        let set = if addr.is_ipv4() {
            &self.set4
        } else {
            &self.set6
        };
        format!(
            "add element {} {} {set} {{ {addr} timeout {}s }}\n",
            self.family, self.table, self.timeout_s
        )
    }

    /// What applying will do, in words (printed before the first change).
    pub fn describe(&self) -> String {
        format!(
            "will run `{} -f -` to add the source address of every {} alert to nftables set {} {} {} \
             (IPv6: {}) with a {} s timeout; the sets are created if absent; no rule is added",
            self.nft,
            if self.include_unknown {
                "threat or unknown-anomaly"
            } else {
                "known-threat"
            },
            self.family,
            self.table,
            self.set4,
            self.set6,
            self.timeout_s
        )
    }
}

/// The nftables responder.
#[derive(Debug)]
pub struct NftablesSink {
    config: NftConfig,
    script: StreamFile,
    seen: HashSet<IpAddr>,
    elements: u64,
    invalid: u64,
    applied: u64,
    apply_failures: u64,
    last_error: Option<String>,
}

impl NftablesSink {
    /// A responder writing its script to `script` (through `script.partial`).
    pub fn create(script: &Path, config: NftConfig) -> Result<Self> {
        config.validate()?;
        let mut file = StreamFile::create(script)?;
        let head = format!(
            "#!/usr/sbin/nft -f\n\
             # metaids response script: source addresses of alerts, added with a timeout.\n\
             # Load with `nft -f {}`; drop their traffic once with e.g.\n\
             #   add chain {f} {t} input {{ type filter hook input priority -10; policy accept; }}\n\
             #   add rule {f} {t} input ip saddr @{s4} drop\n\
             #   add rule {f} {t} input ip6 saddr @{s6} drop\n{}",
            script.display(),
            config.header(),
            f = config.family,
            t = config.table,
            s4 = config.set4,
            s6 = config.set6,
        );
        file.write_all(head.as_bytes())?;
        Ok(NftablesSink {
            config,
            script: file,
            seen: HashSet::new(),
            elements: 0,
            invalid: 0,
            applied: 0,
            apply_failures: 0,
            last_error: None,
        })
    }

    /// The script's final path.
    pub fn script_path(&self) -> PathBuf {
        self.script.path().to_path_buf()
    }

    fn apply(&mut self, body: &str) {
        let text = format!("{}{body}", self.config.header());
        let run = || -> std::result::Result<(), String> {
            let mut child = Command::new(&self.config.nft)
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", self.config.nft))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(text.as_bytes())
                    .map_err(|e| format!("writing to nft: {e}"))?;
            }
            let out = child
                .wait_with_output()
                .map_err(|e| format!("waiting for nft: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "nft exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        match run() {
            Ok(()) => self.applied += 1,
            Err(e) => {
                self.apply_failures += 1;
                self.last_error = Some(e);
            }
        }
    }
}

impl Sink for NftablesSink {
    fn name(&self) -> &str {
        "nftables"
    }

    fn stage(&self) -> Stage {
        Stage::Respond
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        let mut body = String::new();
        for a in batch.alerts {
            let kind = batch.verdicts[a.index].kind;
            let wanted = kind == VerdictKind::Threat
                || (kind == VerdictKind::Unknown && self.config.include_unknown);
            if !wanted {
                continue;
            }
            let Some(addr) = batch.flows[a.index].src_ip else {
                self.invalid += 1;
                continue;
            };
            if self.seen.insert(addr) {
                body.push_str(&self.config.element(addr));
                self.elements += 1;
            }
        }
        if body.is_empty() {
            return Ok(());
        }
        self.script.write_all(body.as_bytes())?;
        self.script.sync()?;
        if self.config.apply {
            self.apply(&body);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.script.commit()?;
        let mut notes = vec![format!(
            "wrote nftables script {} ({} elements){}",
            self.script.path().display(),
            self.elements,
            if self.config.apply {
                ""
            } else {
                "; dry run: load it with `nft -f FILE` or rerun with --apply-nftables"
            }
        )];
        if let Some(e) = &self.last_error {
            notes.push(format!("last nft failure: {e}"));
        }
        Ok(SinkReport {
            sink: "nftables".into(),
            counters: vec![
                (Counter::NftElements, self.elements),
                (Counter::NftInvalidAddresses, self.invalid),
                (Counter::NftBatchesApplied, self.applied),
                (Counter::NftApplyFailures, self.apply_failures),
            ],
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lines_formatted() {
        let c = NftConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.element("192.168.56.1".parse().expect("ip")),
            "add element inet metaids blocklist { 192.168.56.1 timeout 3600s }\n"
        );
        assert_eq!(
            c.element("2001:db8::1".parse().expect("ip")),
            "add element inet metaids blocklist6 { 2001:db8::1 timeout 3600s }\n"
        );
        for bad in ["", "1x", "a b", "x;flush ruleset", "a}"] {
            let c = NftConfig {
                table: bad.into(),
                ..NftConfig::default()
            };
            assert!(c.validate().is_err(), "{bad:?}");
        }
        let c = NftConfig {
            family: "arp;".into(),
            ..NftConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(NftConfig {
            timeout_s: 0,
            ..NftConfig::default()
        }
        .validate()
        .is_err());
        assert!(NftConfig::default()
            .describe()
            .contains("metaids blocklist"));
    }
}
