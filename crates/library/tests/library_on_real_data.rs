//! The threat library on real shared data (CIC-IDS2017 corrected) with a small model trained in-test:
//! guarded enrolment accepts a real family from 5 flows and refuses benign or mislabelled support,
//! a library refuses another model, rollback restores content, export → import is bit-identical,
//! feedback stops a rejected flow being flagged, a writer killed mid-commit never corrupts the file,
//! and any sequence of changes keeps version numbers increasing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use metaids_core::episode::seeded_subsample;
use metaids_core::preprocess::PreprocessConfig;
use metaids_core::split::{Split, SplitSpec};
use metaids_core::FlowFrame;
use metaids_ingest::{read_files, resolve_files, ReadOptions};
use metaids_library::{
    EnrolOptions, FlowValues, LibraryError, SupportFlow, Threat, ThreatDraft, ThreatLibrary,
};
use metaids_model::{load, save, train, EncoderConfig, Provenance, ThreatModel, TrainConfig};
use proptest::prelude::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn shared(sub: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p
}

struct Data {
    frame: FlowFrame,
    split: Split,
}

fn cic() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let text = std::fs::read_to_string(repo("splits/cic-ids2017.toml")).expect("split file");
        let spec = SplitSpec::from_toml(&text).expect("spec");
        let files = resolve_files(&shared("cic-ids2017-improved"), &spec.files).expect("files");
        let opts = ReadOptions {
            dataset: Some(spec.dataset),
            ..Default::default()
        };
        let (frame, _) = read_files(&files, &opts).expect("read");
        let split = spec.apply(&frame).expect("split");
        Data { frame, split }
    })
}

fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("library-tests-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("work dir");
        d
    })
}

/// A small model, trained in-test, saved and loaded back (so it has a manifest and a weights hash).
fn trained(seed: u64, steps: usize) -> ThreatModel {
    let d = cic();
    let enc = EncoderConfig {
        hidden: 64,
        depth: 1,
        embedding: 32,
        ..EncoderConfig::for_input(0)
    };
    let cfg = TrainConfig {
        seed,
        steps,
        eval_every: 50,
        patience: 0,
        validation_episodes: 10,
        ways: 5,
        queries: 10,
        ..TrainConfig::default()
    };
    let m = train(
        &d.frame,
        &d.split,
        PreprocessConfig::default(),
        enc,
        &cfg,
        Provenance::default(),
        &mut |_| {},
    )
    .expect("train");
    let dir = work_dir().join(format!("model-{seed}"));
    save(&m, &dir).expect("save");
    load(&dir).expect("load")
}

fn model() -> &'static ThreatModel {
    static M: OnceLock<ThreatModel> = OnceLock::new();
    M.get_or_init(|| trained(11, 300))
}

fn other_model() -> &'static ThreatModel {
    static M: OnceLock<ThreatModel> = OnceLock::new();
    M.get_or_init(|| trained(12, 50))
}

fn fresh(name: &str) -> PathBuf {
    let p = work_dir().join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// `k` seeded rows of `family` as support flows.
fn flows(family: &str, k: usize, seed: u64) -> Vec<SupportFlow> {
    let d = cic();
    let rows = d.frame.rows_by_family()[family].clone();
    let chosen = seeded_subsample(&rows, k, seed);
    embed(&chosen)
}

fn embed(rows: &[usize]) -> Vec<SupportFlow> {
    let d = cic();
    let m = model();
    let emb = m.embed_rows(&d.frame, rows).expect("embed");
    rows.iter()
        .zip(emb.chunks_exact(m.dim()))
        .map(|(&r, e)| SupportFlow {
            source: d.frame.files[d.frame.sources[r].file as usize].path.clone(),
            locator: format!("row {} (line {})", r + 1, d.frame.sources[r].line),
            embedding: e.to_vec(),
            values: FlowValues {
                numeric: d.frame.numeric_row(r).to_vec(),
                categorical: d.frame.categorical_row(r).map(String::from).collect(),
            },
            context: Vec::new(),
        })
        .collect()
}

fn draft(name: &str, support: Vec<SupportFlow>) -> ThreatDraft {
    ThreatDraft {
        name: name.into(),
        description: format!("{name} (test)"),
        severity: 2,
        category: "test".into(),
        support,
        author: "tester".into(),
    }
}

fn flagged_share(t: &Threat, rows: &[usize]) -> f64 {
    let m = model();
    let emb = m.embed_rows(&cic().frame, rows).expect("embed");
    let n = emb
        .chunks_exact(m.dim())
        .filter(|x| t.flags(&m.reference, x))
        .count();
    n as f64 / rows.len().max(1) as f64
}

#[test]
fn five_flows_of_a_novel_family_are_enrolled_within_the_budget() {
    let m = model();
    let path = fresh("enrol.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    assert_eq!(lib.current().expect("current").version, 1);
    let support = flows("SSH-Patator", 5, 7);
    let e = lib
        .add(
            m,
            &draft("ssh brute force", support.clone()),
            EnrolOptions::default(),
        )
        .expect("enrol");
    let r = &e.threat.report;
    assert!(r.accepted && !r.forced, "{r:?}");
    assert_eq!(r.benign_reference_rows, m.reference.calibration_rows());
    assert!(r.benign_reference_rows > 100);
    let allowed = (m.reference.fpr_budget * r.benign_reference_rows as f64).floor() as usize;
    assert!(r.would_flag <= allowed, "{r:?}");
    assert_eq!(r.support_flagged, 5);
    assert_eq!(e.version, 2);
    assert_eq!(e.threat.id, 1);
    assert_eq!(e.threat.signature_id, 9_100_001);
    assert_eq!(e.threat.support, support);
    // The threat detects its family beyond the support and leaves benign query rows alone.
    let d = cic();
    let family = seeded_subsample(&d.split.novel["SSH-Patator"], 300, 1);
    let benign = seeded_subsample(&d.split.benign_query, 1000, 2);
    let recall = flagged_share(&e.threat, &family);
    let fpr = flagged_share(&e.threat, &benign);
    assert!(recall > 0.8, "recall {recall}");
    assert!(fpr < 0.05, "fpr {fpr}");
    // Stored and readable after reopening.
    drop(lib);
    let lib = ThreatLibrary::open(&path, m).expect("reopen");
    assert_eq!(lib.current().expect("current").threats, vec![e.threat]);
}

#[test]
fn poisoned_or_mislabelled_support_is_refused_unless_forced() {
    let m = model();
    let path = fresh("poison.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    // Benign flows called an attack.
    let benign = embed(&seeded_subsample(&cic().split.benign_query, 5, 3));
    let err = lib
        .add(
            m,
            &draft("poisoned", benign.clone()),
            EnrolOptions::default(),
        )
        .expect_err("refused");
    let LibraryError::Refused { report, .. } = &err else {
        panic!("expected a refusal, got {err}");
    };
    assert!(!report.accepted && report.fpr > report.budget, "{report:?}");
    assert!(err.to_string().contains("benign reference flows"), "{err}");
    assert_eq!(lib.current().expect("current").version, 1, "nothing stored");
    // One mislabelled flow among real ones is refused too, and named.
    let mut mixed = flows("SSH-Patator", 4, 7);
    mixed.push(benign[0].clone());
    let err = lib
        .add(m, &draft("mixed", mixed), EnrolOptions::default())
        .expect_err("refused");
    let LibraryError::Refused { report, .. } = &err else {
        panic!("expected a refusal, got {err}");
    };
    assert!(
        report.weakest[0].contains(&benign[0].locator),
        "{:?} vs {}",
        report.weakest,
        benign[0].locator
    );
    // Forced: stored, marked, and it does flag its support (past the budget, as the user asked).
    let forced = lib
        .add(
            m,
            &draft("poisoned", benign),
            EnrolOptions {
                force: true,
                budget: None,
            },
        )
        .expect("forced");
    assert!(forced.threat.report.forced && !forced.threat.report.accepted);
    assert_eq!(forced.threat.report.support_flagged, 5);
    // A preview reports without storing.
    let p = lib
        .preview(
            m,
            &draft("preview", flows("SSH-Patator", 5, 7)),
            EnrolOptions::default(),
        )
        .expect("preview");
    assert!(p.report.accepted);
    assert_eq!(lib.current().expect("current").threats.len(), 1);
}

#[test]
fn a_library_refuses_another_model_and_its_documents() {
    let (m, other) = (model(), other_model());
    let path = fresh("mismatch.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    lib.add(
        m,
        &draft("ssh", flows("SSH-Patator", 5, 7)),
        EnrolOptions::default(),
    )
    .expect("enrol");
    let doc = work_dir().join("mismatch.json");
    lib.export_to(&doc).expect("export");
    drop(lib);
    let err = ThreatLibrary::open(&path, other).expect_err("refused");
    let msg = err.to_string();
    let mine = metaids_library::ModelIdentity::of(m).expect("id").model;
    let theirs = metaids_library::ModelIdentity::of(other).expect("id").model;
    assert_ne!(mine, theirs);
    assert!(matches!(err, LibraryError::ModelMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(&mine) && msg.contains(&theirs),
        "{msg}"
    );
    // A document exported for one model is refused by a library of another.
    let path2 = fresh("mismatch-other.redb");
    let lib2 = ThreatLibrary::create(&path2, other).expect("create");
    let err = lib2
        .import_file(other, &doc, false, "t", EnrolOptions::default())
        .expect_err("refused");
    assert!(matches!(err, LibraryError::ModelMismatch { .. }), "{err}");
    assert!(err.to_string().contains("mismatch.json"), "{err}");
    assert_eq!(lib2.current().expect("current").version, 1);
    // Not a library at all.
    let junk = work_dir().join("junk.redb");
    std::fs::write(&junk, b"not a database").expect("write");
    assert!(ThreatLibrary::open_without_model(&junk).is_err());
    assert!(matches!(
        ThreatLibrary::open_without_model(&work_dir().join("absent.redb")),
        Err(LibraryError::Missing { .. })
    ));
    assert!(matches!(
        ThreatLibrary::create(&path, m),
        Err(LibraryError::Exists { .. })
    ));
}

/// Threats without their revisions (a rollback restores content; the revision, EVE `alert.rev`,
/// still goes up).
fn unrevised(threats: &[Threat]) -> Vec<Threat> {
    threats
        .iter()
        .map(|t| Threat {
            revision: 0,
            ..t.clone()
        })
        .collect()
}

#[test]
fn rollback_restores_an_earlier_version_as_a_new_one() {
    let m = model();
    let path = fresh("rollback.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    let a = lib
        .add(
            m,
            &draft("ssh", flows("SSH-Patator", 5, 7)),
            EnrolOptions::default(),
        )
        .expect("a");
    let b = lib
        .add(
            m,
            &draft("slowhttp", flows("DoS Slowhttptest", 5, 8)),
            EnrolOptions::default(),
        )
        .expect("b");
    let both = lib.current().expect("current");
    assert_eq!(both.version, b.version);
    assert_eq!(both.threats.len(), 2);
    let v4 = lib.remove("ssh", "tester").expect("remove");
    assert_eq!(lib.current().expect("current").threats.len(), 1);
    assert!(matches!(
        lib.remove("ssh", "tester"),
        Err(LibraryError::UnknownThreat { .. })
    ));
    let v5 = lib.rollback(both.version, "tester").expect("rollback");
    assert!(v5 > v4);
    let now = lib.current().expect("current");
    assert_eq!(unrevised(&now.threats), unrevised(&both.threats));
    // rev goes up through a rollback for the threat it brought back; the other is untouched.
    let rev = |v: &metaids_library::LibraryVersion, n: &str| v.threat(n).expect(n).revision;
    assert!(rev(&now, "ssh") > rev(&both, "ssh"));
    assert_eq!(rev(&now, "slowhttp"), rev(&both, "slowhttp"));
    assert_eq!(now.parent, Some(v4));
    assert!(now
        .change
        .contains(&format!("rollback to version {}", both.version)));
    // A new threat after the rollback gets a fresh id: ids are never reused.
    lib.remove("ssh", "tester").expect("remove again");
    let c = lib
        .add(
            m,
            &draft("ssh again", flows("SSH-Patator", 5, 9)),
            EnrolOptions::default(),
        )
        .expect("c");
    assert!(
        c.threat.id > a.threat.id.max(b.threat.id),
        "{}",
        c.threat.id
    );
    let h = lib.history().expect("history");
    assert_eq!(
        h.iter().map(|v| v.version).collect::<Vec<_>>(),
        (1..=h.len() as u64).collect::<Vec<_>>()
    );
    assert!(h.last().expect("last").current);
    assert!(matches!(
        lib.rollback(99, "t"),
        Err(LibraryError::UnknownVersion { .. })
    ));
}

#[test]
fn one_threat_rolls_back_and_the_others_stay() {
    let m = model();
    let path = fresh("rollback-one.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    let ssh = lib
        .add(
            m,
            &draft("ssh", flows("SSH-Patator", 5, 7)),
            EnrolOptions::default(),
        )
        .expect("ssh");
    let before = lib.current().expect("current");
    // Later: ssh gets a negative example, and another threat arrives.
    let negative = flows("DoS Slowhttptest", 1, 3);
    lib.add_negative(m, "ssh", negative, "tester", EnrolOptions::default())
        .expect("reject");
    lib.add(
        m,
        &draft("slowhttp", flows("DoS Slowhttptest", 5, 8)),
        EnrolOptions::default(),
    )
    .expect("slowhttp");
    let later = lib.current().expect("current");
    assert_eq!(later.threat("ssh").expect("ssh").negatives.len(), 1);

    let back = lib
        .rollback_threat(m, "ssh", before.version, "tester")
        .expect("rollback ssh");
    let now = lib.current().expect("current");
    assert_eq!(now.version, back.version);
    let one = |v: &metaids_library::LibraryVersion, name: &str| {
        unrevised(std::slice::from_ref(v.threat(name).expect("threat")))
    };
    assert_eq!(one(&now, "ssh"), one(&before, "ssh"), "ssh as it was");
    assert!(now.threat("ssh").expect("ssh").revision > later.threat("ssh").expect("ssh").revision);
    assert_eq!(back.threat.id, ssh.threat.id);
    assert_eq!(
        now.threat("slowhttp"),
        later.threat("slowhttp"),
        "the others untouched"
    );
    assert!(now.change.contains(&format!(
        "rollback ssh (id {}) to version {}",
        ssh.threat.id, before.version
    )));

    // Removed since: it comes back with its id.
    lib.remove("ssh", "tester").expect("remove");
    lib.rollback_threat(m, "ssh", before.version, "tester")
        .expect("restore");
    let restored = lib.current().expect("current");
    assert_eq!(one(&restored, "ssh"), one(&before, "ssh"));
    assert!(restored.change.contains("restored after its removal"));
    // A threat the version did not have, and a version that does not exist.
    assert!(matches!(
        lib.rollback_threat(m, "slowhttp", before.version, "t"),
        Err(LibraryError::UnknownThreat { .. })
    ));
    assert!(matches!(
        lib.rollback_threat(m, "ssh", 99, "t"),
        Err(LibraryError::UnknownVersion { .. })
    ));
}

#[test]
fn export_then_import_gives_bit_identical_threats() {
    let m = model();
    let path = fresh("export.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    lib.add(
        m,
        &draft("ssh", flows("SSH-Patator", 5, 7)),
        EnrolOptions::default(),
    )
    .expect("a");
    lib.add(
        m,
        &draft("botnet", flows("Botnet", 10, 8)),
        EnrolOptions::default(),
    )
    .expect("b");
    let doc = work_dir().join("export.json");
    assert_eq!(lib.export_to(&doc).expect("export"), 2);
    let path2 = fresh("import.redb");
    let lib2 = ThreatLibrary::create(&path2, m).expect("create");
    let s = lib2
        .import_file(m, &doc, false, "t", EnrolOptions::default())
        .expect("import");
    assert_eq!(s.added.len(), 2);
    let (a, b) = (
        lib.current().expect("a").threats,
        lib2.current().expect("b").threats,
    );
    // Equal but for the revision, which each library stamps with its own version numbers.
    assert_eq!(unrevised(&a), unrevised(&b));
    let bits = |ts: &[Threat]| -> Vec<u32> {
        ts.iter()
            .flat_map(|t| {
                t.prototypes
                    .iter()
                    .flatten()
                    .chain(t.support.iter().flat_map(|f| &f.embedding))
                    .chain(std::iter::once(&t.threshold))
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    // A second import clashes on names unless --replace; replacing keeps ids.
    let err = lib2
        .import_file(m, &doc, false, "t", EnrolOptions::default())
        .expect_err("clash");
    assert!(matches!(err, LibraryError::DuplicateName { .. }), "{err}");
    let s = lib2
        .import_file(m, &doc, true, "t", EnrolOptions::default())
        .expect("replace");
    assert_eq!(s.replaced.len(), 2);
    assert_eq!(lib2.current().expect("b").threats, a);
    // A tampered document is refused with the field named.
    let text = std::fs::read_to_string(&doc).expect("read");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut bad = v.clone();
    bad["threats"][0]["prototypes"][0] = serde_json::json!([1.0, 2.0]);
    let err = lib2
        .import_json(
            m,
            &bad.to_string(),
            Path::new("bad.json"),
            true,
            "t",
            EnrolOptions::default(),
        )
        .expect_err("bad");
    assert!(
        err.to_string().contains("threats[0].prototypes[0]"),
        "{err}"
    );
    let err = lib2
        .import_json(
            m,
            "{\"x\": 1}",
            Path::new("other.json"),
            true,
            "t",
            EnrolOptions::default(),
        )
        .expect_err("bad");
    assert!(
        err.to_string().contains("not a metaids threat export"),
        "{err}"
    );
}

#[test]
fn feedback_confirms_support_and_rejects_flows() {
    let m = model();
    let path = fresh("feedback.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    let e = lib
        .add(
            m,
            &draft("ssh", flows("SSH-Patator", 5, 7)),
            EnrolOptions::default(),
        )
        .expect("enrol");
    // A flagged flow of the family, rejected as a false positive, is no longer flagged.
    let d = cic();
    let others = seeded_subsample(&d.split.novel["SSH-Patator"], 50, 4);
    let cand = embed(&others);
    let victim = cand
        .iter()
        .find(|f| e.threat.flags(&m.reference, &f.embedding))
        .expect("a flagged flow")
        .clone();
    let after = lib
        .add_negative(
            m,
            "ssh",
            vec![victim.clone()],
            "analyst",
            EnrolOptions::default(),
        )
        .expect("reject");
    assert!(!after.threat.flags(&m.reference, &victim.embedding));
    assert_eq!(after.threat.negatives, vec![victim.clone()]);
    assert!(after.threat.threshold >= e.threat.threshold);
    assert!(after.version > e.version);
    // Confirming the rejected flow is a contradiction, refused with nothing written.
    let v = lib.current().expect("current").version;
    let err = lib
        .add_support(
            m,
            "ssh",
            vec![victim.clone()],
            "analyst",
            EnrolOptions::default(),
        )
        .expect_err("contradiction");
    assert!(matches!(err, LibraryError::Contradiction { .. }), "{err}");
    assert_eq!(lib.current().expect("current").version, v);
    // Confirming other flows adds them to the support and refits.
    let confirmed: Vec<SupportFlow> = cand
        .iter()
        .filter(|f| f.embedding != victim.embedding)
        .take(3)
        .cloned()
        .collect();
    let more = lib
        .add_support(m, "ssh", confirmed, "analyst", EnrolOptions::default())
        .expect("confirm");
    assert_eq!(more.threat.support.len(), 8);
    assert_eq!(more.threat.report.support, 8);
    assert!(matches!(
        lib.add_support(m, "nope", Vec::new(), "a", EnrolOptions::default()),
        Err(LibraryError::UnknownThreat { .. })
    ));
}

const WRITER_ENV: &str = "METAIDS_LIBRARY_CRASH_WRITER";

/// Not a test on its own: the child process of the crash test. With the variable set it opens the
/// library and commits versions in a loop (import with replace, then remove), printing each
/// committed version, until killed.
#[test]
fn crash_writer_child() {
    let Ok(spec) = std::env::var(WRITER_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (lib_path, doc, model_path) = (
        parts.next().expect("lib"),
        parts.next().expect("doc"),
        parts.next().expect("model"),
    );
    let model = load(Path::new(model_path)).expect("model");
    let lib = ThreatLibrary::open(Path::new(lib_path), &model).expect("open");
    let doc = std::fs::read_to_string(doc).expect("doc");
    for i in 0.. {
        let v = if i % 2 == 0 {
            lib.import_json(
                &model,
                &doc,
                Path::new("doc.json"),
                true,
                "writer",
                EnrolOptions::default(),
            )
            .expect("import")
            .version
        } else {
            lib.remove("ssh", "writer").expect("remove")
        };
        println!("committed {v}");
    }
}

#[test]
fn a_writer_killed_mid_commit_leaves_the_last_committed_version_intact() {
    let m = model();
    let path = fresh("crash.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    let e = lib
        .add(
            m,
            &draft("ssh", flows("SSH-Patator", 5, 7)),
            EnrolOptions::default(),
        )
        .expect("enrol");
    let doc = work_dir().join("crash.json");
    // The writer child imports, which refits with the model: it loads this one.
    let model_dir = work_dir().join("crash.model");
    save(m, &model_dir).expect("save model");
    lib.export_to(&doc).expect("export");
    drop(lib);
    let exe = std::env::current_exe().expect("exe");
    let mut last_seen = 0;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(
                WRITER_ENV,
                format!(
                    "{}|{}|{}",
                    path.display(),
                    doc.display(),
                    model_dir.display()
                ),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wanted = 3 + round * 7;
        let mut seen = 0;
        let mut committed = 0u64;
        while seen < wanted {
            let Some(line) = lines.next() else { break };
            let line = line.expect("line");
            if let Some(v) = line.strip_prefix("committed ") {
                committed = v.trim().parse().expect("version");
                seen += 1;
            }
        }
        assert_eq!(seen, wanted, "the writer stopped early");
        child.kill().expect("kill");
        child.wait().expect("wait");
        // Reopen: the file is consistent, the current version is at least the last one reported, and
        // every version parses with the content the writer gave it.
        let lib = ThreatLibrary::open(&path, m).expect("reopen after kill");
        let cur = lib.current().expect("current");
        assert!(
            cur.version >= committed && committed > last_seen,
            "{} {committed}",
            cur.version
        );
        last_seen = cur.version;
        let h = lib.history().expect("history");
        assert_eq!(h.last().expect("last").version, cur.version);
        for v in h.iter().skip(2) {
            let full = lib.version(v.version).expect("version");
            match full.threats.as_slice() {
                [] => assert!(full.change.starts_with("remove"), "{}", full.change),
                // Re-imported after a removal, it gets a fresh id (ids are never reused).
                [t] => {
                    assert_eq!(t.signature_id, 9_100_000 + t.id);
                    let same = Threat {
                        id: e.threat.id,
                        signature_id: e.threat.signature_id,
                        revision: e.threat.revision,
                        ..t.clone()
                    };
                    assert_eq!(same, e.threat);
                }
                other => panic!("version {} holds {} threats", v.version, other.len()),
            }
        }
        drop(lib);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Remove(usize),
    Rollback(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3).prop_map(Op::Add),
        (0usize..3).prop_map(Op::Remove),
        (0usize..20).prop_map(Op::Rollback),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn versions_increase_and_rollback_restores_content(ops in proptest::collection::vec(op(), 1..12)) {
        let m = model();
        static SUPPORT: OnceLock<Vec<Vec<SupportFlow>>> = OnceLock::new();
        let support = SUPPORT.get_or_init(|| {
            ["SSH-Patator", "DoS Slowhttptest", "Botnet"]
                .iter()
                .enumerate()
                .map(|(i, f)| flows(f, 5, i as u64))
                .collect()
        });
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = fresh(&format!("prop-{n}.redb"));
        let lib = ThreatLibrary::create(&path, m).expect("create");
        let mut last = lib.current().expect("current").version;
        let mut ids_seen = std::collections::BTreeSet::new();
        let force = EnrolOptions { force: true, budget: None };
        for o in ops {
            let before = lib.current().expect("current");
            let result = match o {
                Op::Add(i) => lib.add(m, &draft(&format!("t{i}"), support[i].clone()), force).map(|e| {
                    prop_assert!(ids_seen.insert(e.threat.id), "id {} reused", e.threat.id);
                    Ok(e.version)
                }),
                Op::Remove(i) => lib.remove(&format!("t{i}"), "p").map(Ok),
                Op::Rollback(v) => lib.rollback(v as u64 + 1, "p").map(Ok),
            };
            match result {
                Ok(v) => {
                    let v = v?;
                    prop_assert!(v > last, "version {v} after {last}");
                    last = v;
                    let now = lib.current().expect("current");
                    prop_assert_eq!(now.version, v);
                    prop_assert_eq!(now.parent, Some(before.version));
                    if let Op::Rollback(old) = o {
                        prop_assert_eq!(unrevised(&now.threats), unrevised(&lib.version(old as u64 + 1).expect("old").threats));
                    }
                    // EVE alert.rev only goes up: a threat's revision never falls, and one that
                    // changed was stamped with this version.
                    for t in &now.threats {
                        prop_assert!(t.revision > 0 && t.revision <= v);
                        if let Some(b) = before.threats.iter().find(|b| b.id == t.id) {
                            prop_assert!(t.revision >= b.revision);
                            if unrevised(std::slice::from_ref(t)) != unrevised(std::slice::from_ref(b)) {
                                prop_assert_eq!(t.revision, v);
                            }
                        }
                    }
                }
                Err(LibraryError::DuplicateName { .. }
                    | LibraryError::UnknownThreat { .. }
                    | LibraryError::UnknownVersion { .. }) => {
                    prop_assert_eq!(lib.current().expect("current"), before, "a failed change wrote");
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}

/// Issue 12: a baseline stores the site profile as a library version, refits every threat on it
/// jointly within the budget, drives later enrolments (the guard then reports both FPRs), and a
/// rollback restores the profile the earlier version had.
#[test]
fn baseline_refits_threats_on_the_site_profile_and_rolls_back() {
    let m = model();
    let path = fresh("baseline.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    lib.add(
        m,
        &draft("ssh", flows("SSH-Patator", 5, 1)),
        EnrolOptions::default(),
    )
    .expect("enrol ssh");
    let before = lib.current().expect("current");
    assert!(before.site.is_none());
    assert!(lib.profile(&before).expect("profile").is_none());

    // The "site": 2,400 benign rows the model was never calibrated on (the benign query pool).
    let d = cic();
    let rows = seeded_subsample(&d.split.benign_query, 2400, 7);
    let emb = m.embed_rows(&d.frame, &rows).expect("embed");
    let sources: Vec<String> = rows
        .iter()
        .map(|&r| {
            d.frame
                .identifiers(r)
                .into_iter()
                .find(|(n, _)| *n == "Src IP")
                .map_or("?".into(), |(_, v)| v.to_string())
        })
        .collect();
    let profile = metaids_decide::SiteProfile::learn(
        &emb,
        m.dim(),
        &sources,
        metaids_decide::ProfileOptions::default(),
    )
    .expect("learn");
    let b = lib
        .baseline(m, &profile, vec!["benign query pool".into()], "tester")
        .expect("baseline");
    let allowed = (profile.budget * b.report.rows as f64).floor() as usize;
    assert!(
        b.report.threat_flagged + b.report.unknown_flagged <= allowed,
        "{:?}",
        b.report
    );
    let after = lib.current().expect("current");
    assert_eq!(after.version, b.version);
    let site = after.site.clone().expect("site");
    assert_eq!(site.calibration_rows, profile.calibration_rows());
    assert_eq!(lib.profile(&after).expect("read").as_ref(), Some(&profile));
    assert_ne!(
        after.threats[0].threshold, before.threats[0].threshold,
        "the threat was refitted on the site's rows"
    );

    // An enrolment on a baselined library is guarded on the site and reports the model's figure.
    let e = lib
        .add(
            m,
            &draft("ftp", flows("FTP-Patator", 5, 2)),
            EnrolOptions::default(),
        )
        .expect("enrol ftp");
    assert!(e.threat.report.model_fpr.is_some(), "{:?}", e.threat.report);
    assert_eq!(
        e.threat.report.benign_reference_rows,
        profile.calibration_rows()
    );
    let now = lib.current().expect("current");
    assert_eq!(now.site, after.site, "the profile carries over");
    let (reference, _) = lib.reference(m).expect("reference");
    let decider = metaids_decide::Decider::new(
        reference.clone(),
        now.threats.clone(),
        reference.unknown_threshold,
    )
    .expect("arm");
    let flagged = reference
        .calibration
        .chunks_exact(m.dim())
        .filter(|c| decider.decide(c).kind != metaids_decide::VerdictKind::Benign)
        .count();
    assert!(
        flagged <= allowed,
        "{flagged} > {allowed}: two threats keep the joint budget"
    );

    // Rolling back to before the baseline restores the model's reference.
    lib.rollback(before.version, "tester").expect("rollback");
    let back = lib.current().expect("current");
    assert!(back.site.is_none());
    assert_eq!(unrevised(&back.threats), unrevised(&before.threats));
    // A profile of another embedding size is refused, and the library is unchanged.
    let mut wrong = profile.clone();
    wrong.dim += 1;
    assert!(lib.baseline(m, &wrong, vec![], "tester").is_err());
    assert_eq!(lib.current().expect("current").version, back.version);

    // Formats: the profile is stored packed, so the file and a document carrying it say a newer
    // format that older builds refuse by name; what carries no profile stays readable by them.
    lib.rollback(after.version, "tester")
        .expect("back to the baseline");
    let doc = lib.export_document().expect("export");
    assert!(doc.site.is_some());
    assert_eq!(doc.format_version, metaids_library::DOCUMENT_VERSION);
    let plain = doc.clone().redacted();
    assert_eq!(
        plain.format_version,
        metaids_library::DOCUMENT_VERSION_PLAIN
    );
    let text = serde_json::to_string(&doc).expect("json");
    assert!(
        text.contains(metaids_decide::packed::TAG),
        "rows are packed"
    );
    let here = Path::new("doc.json");
    assert!(metaids_library::ThreatDocument::parse(&text, here).expect("v2") == doc);
    // A document of the builds that packed rows under version 1 still reads.
    let v1 = text.replace("\"format_version\":2", "\"format_version\":1");
    assert!(v1 != text);
    let read = metaids_library::ThreatDocument::parse(&v1, here).expect("v1");
    assert!(read.format_version == 1 && read.site == doc.site && read.threats == doc.threats);
    let v3 = text.replace("\"format_version\":2", "\"format_version\":3");
    let e = metaids_library::ThreatDocument::parse(&v3, here)
        .expect_err("a newer version is refused")
        .to_string();
    assert!(
        e.contains("format_version") && e.contains("3") && e.contains("1 to 2"),
        "{e}"
    );
    drop(lib);
    let format = |p: &Path| -> String {
        use redb::ReadableDatabase as _;
        let db = redb::Database::open(p).expect("open");
        let txn = db.begin_read().expect("read");
        let meta = txn
            .open_table(redb::TableDefinition::<&str, &str>::new("meta"))
            .expect("meta");
        let f = meta
            .get("format")
            .expect("get")
            .expect("format")
            .value()
            .to_string();
        f
    };
    assert_eq!(format(&path), metaids_library::LIBRARY_FORMAT);
    let plain_path = fresh("plain.redb");
    drop(ThreatLibrary::create(&plain_path, m).expect("create"));
    assert_eq!(format(&plain_path), metaids_library::LIBRARY_FORMAT_PLAIN);
    // A file the builds before the format change wrote (a packed profile under the plain format)
    // still opens with its profile.
    {
        let db = redb::Database::open(&path).expect("open");
        let txn = db.begin_write().expect("write");
        txn.open_table(redb::TableDefinition::<&str, &str>::new("meta"))
            .expect("meta")
            .insert("format", metaids_library::LIBRARY_FORMAT_PLAIN)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let old = ThreatLibrary::open_read_only(&path).expect("a plain-format file with a profile");
    let cur = old.current().expect("current");
    assert_eq!(old.profile(&cur).expect("profile").as_ref(), Some(&profile));
}

/// Issue 12 (items 2, 3): a baseline that adapts the model (the normaliser refit on the site's
/// kept flows) embeds every threat's flows again from their kept feature values before the joint
/// calibration; a threat whose flows kept no values cannot follow and the baseline is refused with
/// its name, the library unchanged; a document exported with the adapted profile carries it.
#[test]
fn an_adapting_baseline_embeds_threat_flows_again_from_their_values() {
    let m = model();
    let path = fresh("adapt.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    lib.add(
        m,
        &draft("ssh", flows("SSH-Patator", 5, 1)),
        EnrolOptions::default(),
    )
    .expect("enrol ssh");
    let mut legacy = flows("FTP-Patator", 5, 2);
    for f in &mut legacy {
        f.values = FlowValues::default();
    }
    lib.add(m, &draft("legacy", legacy), EnrolOptions::default())
        .expect("enrol legacy");

    let d = cic();
    let rows = seeded_subsample(&d.split.benign_query, 2400, 7);
    let sources: Vec<String> = rows.iter().map(|&r| format!("10.0.0.{}", r % 50)).collect();
    let options = metaids_decide::ProfileOptions::default();
    let kept = metaids_decide::kept_flows(&sources, options);
    let refit = m.refit_on(kept.iter().map(|&k| d.frame.numeric_row(rows[k])));
    let normaliser = m.site_normaliser(Some(&refit)).expect("site normaliser");
    assert_ne!(normaliser, m.normaliser, "the site's columns differ");
    let kernel = metaids_model::ScoringKernel::for_model(m).expect("kernel");
    let emb = kernel
        .embed(&normaliser.transform(&d.frame, &rows).expect("transform"))
        .expect("embed");
    let mut profile =
        metaids_decide::SiteProfile::learn(&emb, m.dim(), &sources, options).expect("learn");
    assert_eq!(profile.flows_kept, kept.len());
    profile.adaptation = Some(refit.clone());

    let before = lib.current().expect("current").version;
    let err = lib
        .baseline(m, &profile, vec!["pool".into()], "tester")
        .expect_err("legacy threat cannot follow");
    assert!(err.to_string().contains("\"legacy\""), "{err}");
    assert_eq!(lib.current().expect("current").version, before);

    lib.remove("legacy", "tester").expect("remove");
    let b = lib
        .baseline(m, &profile, vec!["pool".into()], "tester")
        .expect("baseline");
    let r = b.reembedded.as_ref().expect("the adaptation changed");
    assert_eq!((r.flows, r.dropped.len()), (5, 0));
    let ssh = &b.threats[0];
    for f in &ssh.support {
        let cats: Vec<&str> = f.values.categorical.iter().map(String::as_str).collect();
        let mut x = vec![0f32; normaliser.output_dim()];
        normaliser
            .transform_values(&f.values.numeric, &cats, &mut x)
            .expect("values");
        assert_eq!(
            f.embedding,
            kernel.embed(&x).expect("embed"),
            "{}",
            f.locator
        );
    }
    // The guard on an adapted profile reports no figure on the model's own reference rows: they
    // are embeddings under the model's normaliser, not the site's.
    let e = lib
        .add(
            m,
            &draft("ftp", flows("FTP-Patator", 5, 2)),
            EnrolOptions::default(),
        )
        .expect("enrol ftp");
    assert!(e.threat.report.model_fpr.is_none());
    // The same adaptation again: nothing to embed again.
    let again = lib
        .baseline(m, &profile, vec!["pool".into()], "tester")
        .expect("baseline again");
    assert!(again.reembedded.is_none());
    // The stored profile keeps its adaptation, and a profile of another model's columns is refused.
    let now = lib.current().expect("current");
    let stored = lib.profile(&now).expect("profile").expect("some");
    assert_eq!(stored.adaptation.as_ref(), Some(&refit));
    let mut renamed = refit.clone();
    renamed.columns[0].name = "not a column".into();
    assert!(m.site_normaliser(Some(&renamed)).is_err());
}

/// Issue 11 (item 2): an imported document decides nothing by itself — thresholds and prototypes are
/// refitted from the examples, oversized or out-of-range threats are refused, and the guard runs.
#[test]
fn imports_refit_and_guard_what_the_document_claims() {
    let m = model();
    let path = fresh("import-guard.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    lib.add(
        m,
        &draft("ssh", flows("SSH-Patator", 5, 4)),
        EnrolOptions::default(),
    )
    .expect("enrol");
    let good = lib.current().expect("current").threats[0].clone();
    let doc = work_dir().join("import-guard.json");
    lib.export_to(&doc).expect("export");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).expect("read")).expect("json");
    let target = fresh("import-guard-2.redb");
    let lib2 = ThreatLibrary::create(&target, m).expect("create");
    let import = |doc: &serde_json::Value| {
        lib2.import_json(
            m,
            &doc.to_string(),
            Path::new("tampered.json"),
            true,
            "t",
            EnrolOptions::default(),
        )
    };
    // A negative threshold and huge prototypes are ignored: the threat is refitted.
    let mut t = v.clone();
    t["threats"][0]["threshold"] = serde_json::json!(-1000.0);
    let huge = vec![1e30f32; m.dim()];
    t["threats"][0]["prototypes"] = serde_json::json!([huge]);
    import(&t).expect("import");
    let got = lib2.current().expect("current").threats[0].clone();
    assert_eq!(got.threshold, good.threshold);
    assert_eq!(got.prototypes, good.prototypes);
    // 100 prototypes: over the cap, refused with the field named.
    let mut t = v.clone();
    t["threats"][0]["prototypes"] = serde_json::json!(vec![vec![0.0f32; m.dim()]; 100]);
    let err = import(&t).expect_err("too many prototypes");
    assert!(err.to_string().contains("prototypes"), "{err}");
    // A support embedding far outside the model's range is refused.
    let mut t = v.clone();
    t["threats"][0]["support"][0]["embedding"] = serde_json::json!(vec![1e9f32; m.dim()]);
    let err = import(&t).expect_err("out of range");
    assert!(err.to_string().contains("embedding range"), "{err}");
    // Benign flows claimed as a threat: the guard refuses them.
    let mut t = v.clone();
    let benign = embed(&seeded_subsample(&cic().split.benign_query, 5, 9));
    t["threats"][0]["support"] = serde_json::to_value(&benign).expect("json");
    t["threats"][0]["name"] = serde_json::json!("poison");
    let err = import(&t).expect_err("guard");
    assert!(matches!(err, LibraryError::Refused { .. }), "{err}");
    assert!(lib2.current().expect("current").threat("poison").is_none());
    // Feedback with an embedding of 3e38 values is refused, not made a prototype (issue 11, item 8).
    let huge = SupportFlow {
        source: "alerts.json".into(),
        locator: "alert x-1".into(),
        embedding: vec![3e38; m.dim()],
        values: FlowValues::default(),
        context: Vec::new(),
    };
    let v = lib2.current().expect("current").version;
    let err = lib2
        .add_support(m, "ssh", vec![huge], "t", EnrolOptions::default())
        .expect_err("out of range");
    assert!(err.to_string().contains("embedding range"), "{err}");
    assert_eq!(lib2.current().expect("current").version, v);
}

/// Issue 11 (item 1): truncated or bit-flipped library files give an error naming the file (never a
/// panic escaping the library), and readers open a library read-only without blocking each other.
#[test]
fn damaged_files_are_errors_and_readers_share_the_file() {
    let m = model();
    let path = fresh("damage.redb");
    let lib = ThreatLibrary::create(&path, m).expect("create");
    lib.add(
        m,
        &draft("ssh", flows("SSH-Patator", 5, 5)),
        EnrolOptions::default(),
    )
    .expect("enrol");
    drop(lib);
    let bytes = std::fs::read(&path).expect("read");
    // Readers at once: two read-only handles, and the file is not rewritten by them.
    let a = ThreatLibrary::open_read_only(&path).expect("reader a");
    let b = ThreatLibrary::open_read_only_for(&path, m).expect("reader b");
    assert_eq!(
        a.current().expect("a").threats,
        b.current().expect("b").threats
    );
    assert!(matches!(
        a.remove("ssh", "t"),
        Err(LibraryError::ReadOnly { .. })
    ));
    drop((a, b));
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "readers wrote nothing"
    );

    let mut damaged = 0;
    let mut cases: Vec<Vec<u8>> = [64usize, 512, 4096, bytes.len() / 2, bytes.len() - 1]
        .iter()
        .map(|&n| bytes[..n.min(bytes.len())].to_vec())
        .collect();
    for i in 0..40usize {
        let mut b = bytes.clone();
        let at = (i * 7919 + 13) % b.len();
        b[at] ^= 1 << (i % 8);
        cases.push(b);
    }
    for (i, case) in cases.iter().enumerate() {
        let p = work_dir().join(format!("damaged-{i}.redb"));
        std::fs::write(&p, case).expect("write");
        for read_only in [true, false] {
            let opened = if read_only {
                ThreatLibrary::open_read_only(&p)
            } else {
                ThreatLibrary::open_without_model(&p)
            };
            match opened {
                Ok(lib) => {
                    let _ = lib.current().map(|c| lib.profile(&c));
                    let _ = lib.history();
                }
                Err(e) => {
                    damaged += 1;
                    assert!(e.to_string().contains(&format!("damaged-{i}.redb")), "{e}");
                }
            }
        }
        let _ = std::fs::remove_file(&p);
    }
    assert!(damaged >= 10, "only {damaged} damaged copies refused");
}

#[test]
fn every_library_has_its_own_id_kept_by_versions_copies_and_exports() {
    let m = model();
    let (a, b) = (fresh("id-a.redb"), fresh("id-b.redb"));
    let lib_a = ThreatLibrary::create(&a, m).expect("create");
    let lib_b = ThreatLibrary::create(&b, m).expect("create");
    let id = lib_a.id().to_string();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_ne!(id, lib_b.id(), "two libraries of one model share an id");
    lib_a
        .add(
            m,
            &draft("ssh", flows("SSH-Patator", 5, 7)),
            EnrolOptions::default(),
        )
        .expect("enrol");
    let doc = work_dir().join("id-a.json");
    lib_a.export_to(&doc).expect("export");
    drop(lib_a);
    // A new version, a reopen and a copy of the file keep the id; the export carries it.
    assert_eq!(ThreatLibrary::open(&a, m).expect("open").id(), id);
    let copy = fresh("id-a-copy.redb");
    std::fs::copy(&a, &copy).expect("copy");
    assert_eq!(ThreatLibrary::open_read_only(&copy).expect("open").id(), id);
    let armed = metaids_library::ArmedThreats::load(&doc, m).expect("document");
    assert_eq!(armed.library_id, id);
    let armed = metaids_library::ArmedThreats::load(&a, m).expect("library");
    assert_eq!(armed.library_id, id);
}
