//! The nftables responder: adds the source addresses of alerts to named nftables sets with a timeout.
//!
//! By default it only writes a script (a dry run, streamed like the alerts file and renamed at the
//! end) that `nft -f` can load: it creates the table and an IPv4 and an IPv6 set with
//! `flags timeout` (idempotent `add`s) and adds each offending address with
//! `add element … timeout Ns`. With `apply` it also runs `nft -f -` on each batch's new elements.
//!
//! - **Allow-list**: addresses inside an allow-listed network (loopback and the unspecified and
//!   broadcast addresses always; more with [`NftConfig::allow`]) are never added, only counted.
//! - **Refresh**: an address that alerts again once half its timeout has passed is re-added with a
//!   fresh timeout (`add`, `delete`, `add` in one transaction: nft's `add` alone keeps the old
//!   expiry, and works on nft versions without `destroy`); what it remembers of an address is
//!   forgotten once its element has expired, so memory stays bounded over a long run.
//! - **Drop rule**: with [`NftConfig::drop_rule`] the table gets its own `input` chain (flushed and
//!   refilled on every load, so loading twice adds nothing) whose rules drop the sets' sources;
//!   otherwise the sets block nothing by themselves and the script's header shows that rule.
//! - **A set of another shape**: before the first `apply`, `nft -j list set` is read; a set of that
//!   name with another type or without `flags timeout` is refused with a message naming it (nft
//!   itself would fail every batch with "File exists").
//!
//! Only parsed IP addresses ever reach the script (never raw text from the input).

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;

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
    /// Networks never blocked, besides loopback and the unspecified and broadcast addresses.
    pub allow: Vec<IpNet>,
    /// Add a chain to the table that drops the sets' traffic (default false: sets only).
    pub drop_rule: bool,
}

/// Networks never blocked whatever the settings: loopback, unspecified, broadcast.
pub fn always_allowed() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "0.0.0.0/32",
        "::/128",
        "255.255.255.255/32",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
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
            allow: Vec::new(),
            drop_rule: false,
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

    /// The idempotent lines that create the table and both sets (and, with `drop_rule`, the
    /// table's own `input` chain, flushed and refilled).
    pub fn header(&self) -> String {
        let (f, t) = (&self.family, &self.table);
        let mut h = format!(
            "add table {f} {t}\n\
             add set {f} {t} {} {{ type ipv4_addr; flags timeout; }}\n\
             add set {f} {t} {} {{ type ipv6_addr; flags timeout; }}\n",
            self.set4, self.set6
        );
        if self.drop_rule {
            h.push_str(&format!(
                "add chain {f} {t} input {{ type filter hook input priority -10; policy accept; }}\n\
                 flush chain {f} {t} input\n\
                 add rule {f} {t} input ip saddr @{} drop\n\
                 add rule {f} {t} input ip6 saddr @{} drop\n",
                self.set4, self.set6
            ));
        }
        h
    }

    fn set_of(&self, addr: IpAddr) -> &str {
        if addr.is_ipv4() {
            &self.set4
        } else {
            &self.set6
        }
    }

    /// The line adding `addr` to its set.
    pub fn element(&self, addr: IpAddr) -> String {
        format!(
            "add element {} {} {} {{ {addr} timeout {}s }}\n",
            self.family,
            self.table,
            self.set_of(addr),
            self.timeout_s
        )
    }

    /// The lines giving `addr` a fresh timeout whether or not its element is still there: ensure
    /// it, delete it, add it again (one transaction under `nft -f`).
    pub fn refresh(&self, addr: IpAddr) -> String {
        let (f, t, set) = (&self.family, &self.table, self.set_of(addr));
        format!(
            "add element {f} {t} {set} {{ {addr} }}\n\
             delete element {f} {t} {set} {{ {addr} }}\n{}",
            self.element(addr)
        )
    }

    /// Whether `addr` is never to be blocked.
    pub fn allowed(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        always_allowed()
            .iter()
            .chain(&self.allow)
            .any(|n| n.contains(&addr))
    }

    /// A set of `name` that exists with another shape, read from `nft -j list set` output:
    /// `Some(why)` when it cannot take timed elements of `want` (`ipv4_addr`, `ipv6_addr`).
    pub fn shape_problem(listing: &str, name: &str, want: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(listing).ok()?;
        let set = v["nftables"]
            .as_array()?
            .iter()
            .find_map(|o| o.get("set").filter(|s| s["name"] == name))?;
        let ty = set["type"].as_str().unwrap_or("?");
        let timeout = set["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "timeout"));
        if ty != want {
            Some(format!("it holds {ty}, not {want}"))
        } else if !timeout {
            Some("it has no `flags timeout`, so elements cannot expire".into())
        } else {
            None
        }
    }

    /// What applying will do, in words (printed before the first change).
    pub fn describe(&self) -> String {
        format!(
            "will run `{} -f -` to add the source address of every {} alert to nftables set {} {} {} \
             (IPv6: {}) with a {} s timeout, refreshed when an address alerts again after half of it; \
             never an address of {}; the sets are created if absent; {}",
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
            self.timeout_s,
            always_allowed()
                .iter()
                .chain(&self.allow)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if self.drop_rule {
                "their traffic is dropped by the table's own input chain"
            } else {
                "no rule is added"
            }
        )
    }
}

/// The nftables responder.
#[derive(Debug)]
pub struct NftablesSink {
    config: NftConfig,
    script: StreamFile,
    /// When each address was last added (forgotten once its element has expired).
    added: HashMap<IpAddr, Instant>,
    checked_sets: bool,
    allow_listed: u64,
    refreshed: u64,
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
            added: HashMap::new(),
            checked_sets: false,
            allow_listed: 0,
            refreshed: 0,
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

    /// The lines for an alert from `addr` at `now`: a new element, a refresh once half the timeout
    /// has passed, or nothing (allow-listed, or added recently).
    fn lines_for(&mut self, addr: IpAddr, now: Instant) -> Option<String> {
        if self.config.allowed(addr) {
            self.allow_listed += 1;
            return None;
        }
        let half = Duration::from_secs(self.config.timeout_s / 2);
        match self.added.get(&addr) {
            None => {
                self.added.insert(addr, now);
                self.elements += 1;
                Some(self.config.element(addr))
            }
            Some(&at) if now.duration_since(at) >= half => {
                self.added.insert(addr, now);
                self.refreshed += 1;
                Some(self.config.refresh(addr))
            }
            Some(_) => None,
        }
    }

    /// Forgets addresses whose elements have expired by `now`.
    fn forget_expired(&mut self, now: Instant) {
        let timeout = Duration::from_secs(self.config.timeout_s);
        self.added.retain(|_, at| now.duration_since(*at) < timeout);
    }

    /// Refuses sets of the configured names that exist with another shape (read once, before the
    /// first `apply`); a set not there yet is fine (the header creates it).
    fn check_sets(&self) -> Result<()> {
        let c = &self.config;
        for (set, want) in [(&c.set4, "ipv4_addr"), (&c.set6, "ipv6_addr")] {
            let Ok(out) = Command::new(&c.nft)
                .args(["-j", "list", "set", &c.family, &c.table, set])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
            else {
                continue;
            };
            if !out.status.success() {
                continue;
            }
            let listing = String::from_utf8_lossy(&out.stdout);
            if let Some(why) = NftConfig::shape_problem(&listing, set, want) {
                return Err(DetectError::Config {
                    field: "nft set",
                    message: format!(
                        "nftables set {} {} {set} exists but {why}: choose another set name (--nft-set/--nft-set6) or remove it",
                        c.family, c.table
                    ),
                });
            }
        }
        Ok(())
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
        let now = Instant::now();
        self.forget_expired(now);
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
            if let Some(lines) = self.lines_for(addr, now) {
                body.push_str(&lines);
            }
        }
        if body.is_empty() {
            return Ok(());
        }
        self.script.write_all(body.as_bytes())?;
        self.script.sync()?;
        if self.config.apply {
            if !self.checked_sets {
                self.check_sets()?;
                self.checked_sets = true;
            }
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
                (Counter::NftAllowListed, self.allow_listed),
                (Counter::NftRefreshed, self.refreshed),
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

    fn sink(config: NftConfig) -> (tempfile::TempDir, NftablesSink) {
        let dir = tempfile::tempdir().expect("tmp");
        let s = NftablesSink::create(&dir.path().join("x.nft"), config).expect("sink");
        (dir, s)
    }

    #[test]
    fn allow_listed_addresses_are_never_blocked() {
        let c = NftConfig {
            allow: vec![
                "10.1.0.0/16".parse().expect("net"),
                "2001:db8::/32".parse().expect("net"),
            ],
            ..NftConfig::default()
        };
        for a in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "2001:db8::5",
            "::ffff:10.1.9.9",
            "0.0.0.0",
        ] {
            assert!(c.allowed(a.parse().expect("ip")), "{a}");
        }
        for a in ["10.2.0.1", "192.168.56.1", "2001:db9::1", "::ffff:8.8.8.8"] {
            assert!(!c.allowed(a.parse().expect("ip")), "{a}");
        }
        let (_d, mut s) = sink(c);
        let now = Instant::now();
        assert_eq!(s.lines_for("10.1.2.3".parse().expect("ip"), now), None);
        assert_eq!(s.allow_listed, 1);
        assert!(s.added.is_empty());
    }

    #[test]
    fn an_address_seen_again_is_refreshed_after_half_its_timeout_and_then_forgotten() {
        let (_d, mut s) = sink(NftConfig {
            timeout_s: 100,
            ..NftConfig::default()
        });
        let a: IpAddr = "192.168.56.1".parse().expect("ip");
        let t0 = Instant::now();
        let first = s.lines_for(a, t0).expect("added");
        assert!(
            first.starts_with("add element inet metaids blocklist { 192.168.56.1 timeout 100s }")
        );
        assert_eq!(
            s.lines_for(a, t0 + Duration::from_secs(49)),
            None,
            "too soon"
        );
        let again = s
            .lines_for(a, t0 + Duration::from_secs(50))
            .expect("refreshed");
        assert_eq!(
            again,
            "add element inet metaids blocklist { 192.168.56.1 }\n\
             delete element inet metaids blocklist { 192.168.56.1 }\n\
             add element inet metaids blocklist { 192.168.56.1 timeout 100s }\n"
        );
        assert_eq!((s.elements, s.refreshed), (1, 1));
        // Memory stays bounded: an address whose element expired is forgotten, then added anew.
        s.forget_expired(t0 + Duration::from_secs(149));
        assert_eq!(s.added.len(), 1);
        s.forget_expired(t0 + Duration::from_secs(150));
        assert!(s.added.is_empty());
        assert!(s.lines_for(a, t0 + Duration::from_secs(151)).is_some());
        assert_eq!(s.elements, 2);
    }

    #[test]
    fn sets_of_another_shape_are_named() {
        let listing = |set: &str| {
            format!(
                r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {{"set": {{"family": "inet", "name": "blocklist", "table": "metaids", "handle": 1, {set}}}}}]}}"#
            )
        };
        let ok = listing(r#""type": "ipv4_addr", "flags": ["timeout"]"#);
        assert_eq!(
            NftConfig::shape_problem(&ok, "blocklist", "ipv4_addr"),
            None
        );
        let plain = listing(r#""type": "ipv4_addr""#);
        assert!(NftConfig::shape_problem(&plain, "blocklist", "ipv4_addr")
            .is_some_and(|w| w.contains("flags timeout")));
        let other = listing(r#""type": "inet_service", "flags": ["timeout"]"#);
        assert!(NftConfig::shape_problem(&other, "blocklist", "ipv4_addr")
            .is_some_and(|w| w.contains("inet_service")));
        assert_eq!(
            NftConfig::shape_problem("not json", "blocklist", "ipv4_addr"),
            None
        );
    }

    /// In a network namespace of its own (`unshare -rn`, where nft may change the ruleset), the
    /// header with the drop rule loads twice without adding a rule twice, a refresh gives an
    /// element a fresh timeout, and `nft -j` of a set made without timeouts is refused by name.
    #[test]
    fn scripts_load_in_a_private_namespace() {
        let probe = Command::new("unshare")
            .args(["-rn", "nft", "list", "ruleset"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            println!("skipping: `unshare -rn nft` is not available here");
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let c = NftConfig {
            drop_rule: true,
            timeout_s: 100,
            ..NftConfig::default()
        };
        let a: IpAddr = "203.0.113.7".parse().expect("ip");
        let first = dir.path().join("first.nft");
        std::fs::write(&first, format!("{}{}", c.header(), c.element(a))).expect("write");
        let refresh = dir.path().join("refresh.nft");
        let long = NftConfig {
            timeout_s: 5000,
            ..c.clone()
        };
        std::fs::write(&refresh, format!("{}{}", long.header(), long.refresh(a))).expect("write");
        let script = format!(
            "nft -f {f} && nft -f {f} && nft -f {r} && nft list table inet metaids",
            f = first.display(),
            r = refresh.display()
        );
        let out = Command::new("unshare")
            .args(["-rn", "sh", "-c", &script])
            .output()
            .expect("unshare");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.matches("ip saddr @blocklist drop").count(),
            1,
            "{text}"
        );
        assert!(text.contains("203.0.113.7 timeout 1h23m20s"), "{text}");
        let listing = Command::new("unshare")
            .args([
                "-rn",
                "sh",
                "-c",
                "nft add table inet metaids && nft add set inet metaids blocklist '{ type ipv4_addr; }' && nft -j list set inet metaids blocklist",
            ])
            .output()
            .expect("unshare");
        let why = NftConfig::shape_problem(
            &String::from_utf8_lossy(&listing.stdout),
            "blocklist",
            "ipv4_addr",
        );
        assert!(why.is_some_and(|w| w.contains("timeout")));
    }
}
