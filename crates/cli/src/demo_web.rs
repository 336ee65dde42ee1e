//! The demo's web part: a web-request model trained on the payload families shipped in
//! `data/http`, a template-injection threat (a family the model never saw) enrolled from five
//! attack requests of an access log, the site's baseline learnt from its benign requests, and
//! `detect --access-log` on a log where a client starts injecting.
//!
//! The requests are built from the vendored values: benign values are CSIC 2010 parameter values
//! (real traffic) under CSIC's paths; the attack values are PayloadsAllTheThings' template
//! injections. Baseline, enrolment and test use disjoint values. Every step runs the `metaids`
//! command a user would run (printed), so the demo shows the commands and their output.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use metaids_http::params::encode;

/// Benign values for the baseline (two per request).
const BASELINE_VALUES: usize = 4_000;
/// Benign requests in the test log.
const TEST_BENIGN: usize = 1_000;

fn log_line(out: &mut String, client: &str, second: usize, target: &str, agent: &str) {
    let _ = writeln!(
        out,
        "{client} - - [07/Dec/2026:{:02}:{:02}:{:02} +0000] \"GET {target} HTTP/1.1\" 200 {} \"-\" \"{agent}\"",
        10 + second / 3600 % 10,
        second / 60 % 60,
        second % 60,
        512 + second % 977
    );
}

/// Runs `metaids ARGS`, printing the command and the lines of its output that start with one of
/// `show` (after leading spaces).
fn metaids(args: &[&str], show: &[&str]) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the metaids binary")?;
    println!("   $ metaids {}", args.join(" "));
    let out = Command::new(exe)
        .args(args)
        .output()
        .context("cannot run metaids")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "metaids {} failed:\n{stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for l in stdout.lines() {
        if show.iter().any(|p| l.trim_start().starts_with(p)) {
            println!("     {}", l.trim_start());
        }
    }
    Ok(stdout)
}

/// The web part; returns its lines for the report.
pub fn run(data: &Path, out: &Path, seed: u64) -> Result<Vec<String>> {
    let path = data.join("payloads.csv.gz");
    if !path.is_file() {
        bail!(
            "{} not found: run the demo from the repository root",
            path.display()
        );
    }
    let payloads = metaids_http::payloads::read_payloads(
        metaids_ingest::open(&path).with_context(|| format!("cannot open {}", path.display()))?,
        &path.display().to_string(),
    )?;
    let family = |f: &str| -> Vec<&str> {
        let mut seen = HashSet::new();
        payloads
            .iter()
            .filter(|p| p.family == f && !p.payload.trim().is_empty())
            .map(|p| p.payload.as_str())
            .filter(|p| seen.insert(*p))
            .collect()
    };
    let (benign, ssti) = (family("benign"), family("ssti"));
    if benign.len() < BASELINE_VALUES + 5 + TEST_BENIGN || ssti.len() < 20 {
        bail!("{}: too few benign or ssti payloads", path.display());
    }
    let dir = out.join("web");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = |name: &str| -> PathBuf { dir.join(name) };
    let (base, rest) = benign.split_at(BASELINE_VALUES);
    let (enrol_benign, test_benign) = rest.split_at(5);
    let (enrol_ssti, test_ssti) = ssti.split_at(5);

    let mut text = String::new();
    for (i, pair) in base.chunks(2).enumerate() {
        let page = ["registro.jsp", "anadir.jsp", "autenticar.jsp"][i % 3];
        let _ = write!(
            text,
            "GET /tienda1/publico/{page}?nombre={}&ciudad={} HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
            encode(pair[0]),
            encode(pair.get(1).copied().unwrap_or("madrid"))
        );
    }
    metaids_ingest::write_atomic(&file("site-benign.txt"), text.as_bytes())?;

    text.clear();
    for (i, (b, s)) in enrol_benign.iter().zip(enrol_ssti).enumerate() {
        let target = format!(
            "/tienda1/publico/buscar.jsp?id={}&q={}",
            encode(b),
            encode(s)
        );
        log_line(
            &mut text,
            "203.0.113.66",
            i,
            &target,
            "python-requests/2.31",
        );
    }
    metaids_ingest::write_atomic(&file("attack-requests.log"), text.as_bytes())?;

    // The day's log: the site's clients, and from line TEST_BENIGN + 1 on, a client injecting.
    text.clear();
    for (i, b) in test_benign[..TEST_BENIGN].iter().enumerate() {
        let target = format!("/tienda1/publico/registro.jsp?nombre={}", encode(b));
        let client = format!("198.51.100.{}", i % 120 + 1);
        log_line(&mut text, &client, i * 3, &target, "Mozilla/5.0");
    }
    for (i, s) in test_ssti.iter().enumerate() {
        let target = format!("/tienda1/publico/buscar.jsp?id=7&q={}", encode(s));
        log_line(
            &mut text,
            "203.0.113.66",
            3_000 + i,
            &target,
            "python-requests/2.31",
        );
    }
    metaids_ingest::write_atomic(&file("access.log"), text.as_bytes())?;

    let s = |p: PathBuf| p.display().to_string();
    let (model, library, alerts) = (
        s(file("web.model")),
        s(file("web.redb")),
        s(file("eve.json")),
    );
    for stale in [&library, &alerts] {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {stale}"))
            }
            _ => {}
        }
    }
    if Path::new(&model).is_dir() {
        std::fs::remove_dir_all(&model).with_context(|| format!("cannot replace {model}"))?;
    }
    let seed = seed.to_string();
    let data_arg = data.display().to_string();
    println!("   a. the web-request model, meta-trained on the payload families (template injection held out):");
    metaids(
        &[
            "train",
            "--dataset",
            "http-requests",
            "--data",
            &data_arg,
            "--out",
            &model,
            "--seed",
            &seed,
            "--quiet",
        ],
        &["wrote model", "validation F1"],
    )?;
    println!("   b. a template-injection threat from 5 requests of an attack tool:");
    metaids(
        &[
            "threat",
            "add",
            "--model",
            &model,
            "--library",
            &library,
            "--name",
            "template injection",
            "--category",
            "web-application-attack",
            "--severity",
            "1",
            "--access-log",
            &s(file("attack-requests.log")),
        ],
        &["/", "guard:", "enrolled"],
    )?;
    println!("   c. the site's baseline, from its benign requests:");
    metaids(
        &[
            "baseline",
            "--model",
            &model,
            "--library",
            &library,
            "--request-file",
            &s(file("site-benign.txt")),
        ],
        &["baseline:", "joint calibration", "stored as"],
    )?;
    println!("   d. the day's access log:");
    metaids(
        &[
            "detect",
            "--model",
            &model,
            "--library",
            &library,
            "--access-log",
            &s(file("access.log")),
            "--alerts",
            &alerts,
            "--dedup-max",
            "1000000",
            "--quiet",
        ],
        &[],
    )?;
    let mut benign_flagged = 0;
    let mut attack_flagged = 0;
    let mut as_threat = 0;
    let mut sample = None;
    for line in std::fs::read_to_string(&alerts)
        .with_context(|| format!("cannot read {alerts}"))?
        .lines()
    {
        let e: metaids_detect::EveEvent =
            serde_json::from_str(line).with_context(|| format!("{alerts}: not an EVE record"))?;
        let m = e.metaids().context("an alert without metaids' details")?;
        let at: usize = m
            .origin
            .rsplit(':')
            .next()
            .and_then(|l| l.parse().ok())
            .context("an alert without its line")?;
        if at <= TEST_BENIGN {
            benign_flagged += 1;
        } else {
            attack_flagged += 1;
            if m.threat.is_some() {
                as_threat += 1;
                if sample.is_none() {
                    sample = Some(e.clone());
                }
            }
        }
    }
    let mut lines = vec![
        format!(
            "Web requests: template injection, a family the web model never saw, enrolled from 5 attack requests; \
             the site's baseline from {} benign requests; then an access log of {TEST_BENIGN} benign requests and {} injections.",
            BASELINE_VALUES / 2,
            test_ssti.len()
        ),
        format!(
            "   injections flagged: {attack_flagged} of {} ({as_threat} as the enrolled threat, the rest as unknown anomalies); \
             benign requests flagged: {benign_flagged} of {TEST_BENIGN}",
            test_ssti.len()
        ),
    ];
    if let Some(e) = sample {
        let http = e.http.as_ref().map(|h| h.url.clone()).unwrap_or_default();
        let matched = e
            .metaids()
            .and_then(|m| m.matched.as_ref())
            .map(|m| format!("{} = {}", m.field, m.excerpt))
            .unwrap_or_default();
        lines.push(format!(
            "   e.g. {} {} {}: http.url {http}, matched {matched}",
            e.timestamp,
            e.src_ip,
            e.alert.as_ref().map_or("", |a| a.signature.as_str())
        ));
    }
    lines.push(format!("   files: {}", dir.display()));
    for l in &lines {
        println!("{l}");
    }
    Ok(lines)
}
