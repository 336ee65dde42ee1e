//! `metaids threat …` end to end on real shared data: a small model trained by `metaids train`, then
//! enrolment from flow-file rows (label, row numbers) and from a capture, the guard refusing benign
//! support, list/show/history, export → import into a new library, rollback, remove, and the refusal
//! of another model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn metaids() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metaids"));
    c.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    c
}

fn shared(sub: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p.display().to_string()
}

fn run(args: &[&str]) -> Output {
    metaids().args(args).output().expect("run metaids")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "metaids {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "metaids {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn work() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("threat-cli-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    })
}

fn train(seed: &str, steps: &str) -> String {
    let out = work().join(format!("model-{seed}"));
    let cic = shared("cic-ids2017-improved");
    ok(&[
        "train",
        "--dataset",
        "cic",
        "--data",
        &cic,
        "--out",
        &out.display().to_string(),
        "--seed",
        seed,
        "--steps",
        steps,
        "--hidden",
        "64",
        "--depth",
        "1",
        "--embedding",
        "32",
        "--quiet",
    ]);
    out.display().to_string()
}

fn model() -> &'static str {
    static M: OnceLock<String> = OnceLock::new();
    M.get_or_init(|| train("11", "300"))
}

fn path(name: &str) -> String {
    let p = work().join(name);
    let _ = std::fs::remove_file(&p);
    p.display().to_string()
}

#[test]
fn threat_commands_end_to_end() {
    let m = model();
    let lib = path("lib.redb");
    let ssh = shared("cic-ids2017-improved/SSH-Patator_2961.csv");
    let out = ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh brute force",
        "--flows",
        &ssh,
        "--label",
        "SSH-Patator",
        "--enrol-shots",
        "5",
        "--severity",
        "1",
        "--category",
        "brute-force",
        "--author",
        "alice",
    ]);
    assert!(out.contains("created threat library"), "{out}");
    assert!(out.contains("took 5 of 2961 selected flows"), "{out}");
    // The guard's report (README figures: `cargo test -p metaids --test threat -- --nocapture`).
    eprintln!("genuine support:\n{out}");
    assert!(
        out.contains("accepted") && out.contains("library version 2"),
        "{out}"
    );

    // Rows by number, from the same file.
    let out = ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh rows",
        "--flows",
        &ssh,
        "--rows",
        "1-3,10",
        "--author",
        "alice",
        "--force",
    ]);
    assert!(out.contains("using all 4 selected flows"), "{out}");
    assert!(out.contains("row 10 (line 11)"), "{out}");

    // Issue 10: enrolling flows an existing threat already flags warns and names it.
    let out = run(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh twin",
        "--flows",
        &ssh,
        "--rows",
        "20-24",
        "--dry-run",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("already flagged by threat \"ssh brute force\""),
        "{err}"
    );
    // Issue 10: a flow file without --label or --rows is refused, not enrolled at random.
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "random",
        "--flows",
        &ssh,
    ]);
    assert!(err.contains("--label") && err.contains("--rows"), "{err}");

    // Benign flows called an attack: refused, nothing stored.
    let benign = shared("cic-ids2017-improved/BENIGN_5000.csv");
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "poison",
        "--flows",
        &benign,
        "--label",
        "BENIGN",
    ]);
    assert!(err.contains("REFUSED") && err.contains("refused"), "{err}");
    eprintln!("benign flows called an attack:\n{err}");
    let list = ok(&["threat", "list", "--library", &lib]);
    assert!(list.contains("version 3, 2 threat(s)"), "{list}");
    assert!(
        list.contains("| 1 | 9100001 | ssh brute force | 1 | brute-force |"),
        "{list}"
    );
    assert!(!list.contains("poison"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["threat", "list", "--library", &lib, "--json"])).expect("json");
    assert_eq!(json["version"], 3);
    assert_eq!(json["threats"][0]["signature_id"], 9_100_001);
    // rev: the library version of the threat's last change (enrolled in 2, untouched by 3).
    assert_eq!(json["threats"][0]["rev"], 2);
    assert_eq!(json["model"]["dim"], 32);
    // Issue 10: read-only commands take no --author; a missing library says what creates one.
    let err = fails(&["threat", "list", "--library", &lib, "--author", "bob"]);
    assert!(err.contains("--author"), "{err}");
    let err = fails(&["threat", "list", "--library", &path("missing.redb")]);
    assert!(
        err.contains("does not exist") && err.contains("threat add") && !err.contains("--create"),
        "{err}"
    );

    let show = ok(&["threat", "show", "--library", &lib, "ssh brute force"]);
    assert!(
        show.contains("support (5):") && show.contains("SSH-Patator_2961.csv row "),
        "{show}"
    );
    assert!(show.contains("created by alice"), "{show}");
    let json = ok(&[
        "threat",
        "show",
        "--library",
        &lib,
        "ssh brute force",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["signature_id"], 9_100_001);
    assert_eq!(v["support"].as_array().expect("support").len(), 5);

    // Export, then import into a new library (created for the document's model).
    let doc = path("lib.json");
    ok(&["threat", "export", "--library", &lib, "--out", &doc]);
    // Issue 10: --redact keeps file names only; the document still arms the same threats.
    let red = path("lib-redacted.json");
    ok(&[
        "threat",
        "export",
        "--library",
        &lib,
        "--out",
        &red,
        "--redact",
    ]);
    let text = std::fs::read_to_string(&red).expect("read");
    assert!(text.contains("\"SSH-Patator_2961.csv\""), "file names stay");
    assert!(
        !text.contains(&shared("cic-ids2017-improved")),
        "directories go"
    );
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).expect("read")).expect("json");
    let redacted: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        full["threats"][0]["prototypes"],
        redacted["threats"][0]["prototypes"]
    );
    assert_eq!(
        full["threats"][0]["threshold"],
        redacted["threats"][0]["threshold"]
    );
    let lib2 = path("lib2.redb");
    let out = ok(&["threat", "import", "--library", &lib2, "--model", m, &doc]);
    assert!(out.contains("2 added"), "{out}");
    // The same threat but for its revision, which each library stamps with its own version.
    let shown = |l: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&ok(&[
            "threat",
            "show",
            "--library",
            l,
            "ssh rows",
            "--json",
        ]))
        .expect("json");
        v.as_object_mut().expect("object").remove("revision");
        v
    };
    assert_eq!(shown(&lib), shown(&lib2));
    let err = fails(&["threat", "import", "--library", &lib2, "--model", m, &doc]);
    assert!(err.contains("exists already"), "{err}");
    ok(&[
        "threat",
        "import",
        "--library",
        &lib2,
        "--model",
        m,
        &doc,
        "--replace",
    ]);
    // Issue 11: a document's embeddings far outside the model's range are refused, and the failed
    // import into a new library leaves no library file behind.
    let mut tampered: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).expect("read")).expect("json");
    let dim = tampered["model"]["dim"].as_u64().expect("dim") as usize;
    tampered["threats"][0]["support"][0]["embedding"] = serde_json::json!(vec![1e9f32; dim]);
    let bad = path("tampered.json");
    std::fs::write(&bad, tampered.to_string()).expect("write");
    let lib3 = path("lib3.redb");
    let err = fails(&["threat", "import", "--library", &lib3, "--model", m, &bad]);
    assert!(
        err.contains("embedding range") && err.contains("tampered.json"),
        "{err}"
    );
    assert!(
        !Path::new(&lib3).exists(),
        "the failed import removed the library it created"
    );

    // Remove, rollback, history.
    ok(&["threat", "remove", "--library", &lib, "ssh rows"]);
    let list = ok(&["threat", "list", "--library", &lib]);
    assert!(!list.contains("ssh rows"), "{list}");
    let out = ok(&["threat", "rollback", "--library", &lib, "3"]);
    assert!(out.contains("as version 5"), "{out}");
    let list = ok(&["threat", "list", "--library", &lib]);
    assert!(
        list.contains("ssh rows") && list.contains("version 5"),
        "{list}"
    );
    let hist = ok(&["threat", "history", "--library", &lib]);
    for needle in [
        "| 1 |",
        "| 5 (current) | 4 |",
        "rollback to version 3",
        "remove ssh rows",
    ] {
        assert!(hist.contains(needle), "{needle}: {hist}");
    }
    let err = fails(&["threat", "rollback", "--library", &lib, "42"]);
    assert!(err.contains("no version 42"), "{err}");
    let err = fails(&["threat", "show", "--library", &lib, "nope"]);
    assert!(err.contains("no threat named \"nope\""), "{err}");
}

#[test]
fn enrolment_from_a_capture_with_a_filter() {
    let m = model();
    let lib = path("pcap.redb");
    let pcap = shared("pcaps/zeek-traces/ssh/sshguess.pcap");
    let out = ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh guessing",
        "--pcap",
        &pcap,
        "--select",
        "port 22 and proto tcp",
        "--enrol-shots",
        "5",
        "--force",
    ]);
    assert!(out.contains("guard: flags"), "{out}");
    assert!(out.contains("flow ") && out.contains("-22-6 at "), "{out}");
    let show = ok(&["threat", "show", "--library", &lib, "ssh guessing"]);
    assert!(show.contains("sshguess.pcap flow "), "{show}");
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "x",
        "--pcap",
        &pcap,
        "--select",
        "port 1",
    ]);
    assert!(err.contains("no flow matches"), "{err}");
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "x",
        "--pcap",
        &pcap,
        "--select",
        "port 22 port 23",
    ]);
    assert!(err.contains("expected `and` or `or`"), "{err}");
    // `or`, `not` and networks select flows; `--filter` is still accepted for `--select`.
    let out = ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "y",
        "--pcap",
        &pcap,
        "--filter",
        "port 2222 or dport 22 and not net 10.0.0.0/8",
        "--dry-run",
    ]);
    assert!(out.contains("dry run: nothing stored"), "{out}");
}

#[test]
fn a_library_refuses_another_model() {
    let m = model();
    let other = train("12", "20");
    let lib = path("mismatch.redb");
    let ssh = shared("cic-ids2017-improved/SSH-Patator_2961.csv");
    ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh",
        "--flows",
        &ssh,
        "--label",
        "SSH-Patator",
    ]);
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        &other,
        "--name",
        "ssh2",
        "--flows",
        &ssh,
        "--label",
        "SSH-Patator",
    ]);
    assert!(
        err.contains("was built for model") && err.contains("mismatch.redb"),
        "{err}"
    );
    assert!(err.contains(&other), "{err}");
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "bad",
        "--flows",
        &ssh,
        "--label",
        "No-Such-Label",
    ]);
    assert!(
        err.contains("no selected row is labelled") && err.contains("SSH-Patator"),
        "{err}"
    );
    let err = fails(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "bad",
        "--flows",
        &ssh,
        "--rows",
        "99999",
    ]);
    assert!(err.contains("data rows"), "{err}");
}

/// Issue 12: `metaids baseline` learns the site profile, refuses what it cannot calibrate or what
/// looks like attack traffic, and detect then decides with it.
#[test]
fn baseline_learns_the_site_and_detect_uses_it() {
    let m = model();
    let lib = path("baseline.redb");
    let ssh = shared("cic-ids2017-improved/SSH-Patator_2961.csv");
    let benign = shared("cic-ids2017-improved/BENIGN_5000.csv");
    ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh",
        "--flows",
        &ssh,
        "--label",
        "SSH-Patator",
    ]);
    // A budget the baseline cannot support is refused with what it needs; nothing is stored.
    let err = fails(&[
        "baseline",
        "--model",
        m,
        "--library",
        &lib,
        "--flows",
        &benign,
        "--label",
        "BENIGN",
        "--budget",
        "0.0005",
    ]);
    assert!(
        err.contains("needs at least 20000 calibration rows") && err.contains("calibration rows"),
        "{err}"
    );
    let err = fails(&[
        "baseline",
        "--model",
        m,
        "--library",
        &lib,
        "--flows",
        &benign,
        "--label",
        "NOPE",
    ]);
    assert!(err.contains("no flows to learn from"), "{err}");
    let list = ok(&["threat", "list", "--library", &lib]);
    assert!(list.contains("version 2,"), "unchanged: {list}");

    let out = ok(&[
        "baseline",
        "--model",
        m,
        "--library",
        &lib,
        "--flows",
        &benign,
        "--label",
        "BENIGN",
    ]);
    eprintln!("baseline:\n{out}");
    assert!(out.contains("baseline: 5000 flows offered"), "{out}");
    // CIC's DNS server sends 932 of the 5,000 flows: the 10% cap keeps 500 of them.
    assert!(
        out.contains("4568 kept")
            && out.contains("capped source 192.168.10.3: 932 flows offered, 500 kept"),
        "{out}"
    );
    assert!(
        out.contains("joint calibration on 3426 calibration rows at budget 0.01"),
        "{out}"
    );
    // Each half at the split-conformal rank: ⌊0.005 · 3427⌋ − 1 = 16 rows above its threshold.
    assert!(
        out.contains(
            "calibration: budget 0.01 at the split-conformal rank (16 of 3426 calibration rows"
        ),
        "{out}"
    );
    assert!(out.contains("stored as library version 3"), "{out}");
    // The default adaptation (chosen on a validation site): the numeric columns refit on the kept
    // flows, and the threat enrolled before it embedded again from its kept feature values.
    assert!(
        out.contains(
            "adaptation: the model's numeric columns standardised on the kept baseline flows"
        ) && out.contains("the adaptation changed: 5 threat flows embedded again"),
        "{out}"
    );
    let err = fails(&[
        "baseline",
        "--model",
        m,
        "--library",
        &lib,
        "--flows",
        &benign,
        "--label",
        "BENIGN",
    ]);
    assert!(
        err.contains("already has a baseline") && err.contains("--update"),
        "{err}"
    );
    // The SSH threat flags most of an SSH-guessing window: not the site's benign traffic.
    let err = fails(&[
        "baseline",
        "--model",
        m,
        "--library",
        &lib,
        "--flows",
        &ssh,
        "--update",
    ]);
    assert!(err.contains("looks like attack traffic"), "{err}");

    // detect decides with the profile and says so in its summary.
    let alerts = path("baseline-eve.json");
    let out = ok(&[
        "detect",
        "--model",
        m,
        "--library",
        &lib,
        "--flows",
        &benign,
        "--alerts",
        &alerts,
        "--quiet",
    ]);
    assert!(
        out.contains("site profile: 3426 calibration rows")
            && out.contains("adaptation: normaliser refit on the baseline"),
        "{out}"
    );

    // An enrolment on the adapted library embeds as the baseline did: the same five flows
    // enrolled again give exactly the embeddings the baseline's re-embedding gave the first threat.
    ok(&[
        "threat",
        "add",
        "--library",
        &lib,
        "--model",
        m,
        "--name",
        "ssh-again",
        "--flows",
        &ssh,
        "--label",
        "SSH-Patator",
        "--force",
    ]);
    let doc = path("baseline-doc.json");
    ok(&["threat", "export", "--library", &lib, "--out", &doc]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).expect("read")).expect("json");
    let support = |name: &str| {
        v["threats"]
            .as_array()
            .expect("threats")
            .iter()
            .find(|t| t["name"] == name)
            .expect("threat")["support"]
            .clone()
    };
    let (first, again) = (support("ssh"), support("ssh-again"));
    assert_eq!(first.as_array().expect("support").len(), 5);
    assert!(!first[0]["values"]["numeric"]
        .as_array()
        .expect("values")
        .is_empty());
    for (a, b) in first
        .as_array()
        .expect("a")
        .iter()
        .zip(again.as_array().expect("b"))
    {
        assert_eq!(a["locator"], b["locator"]);
        assert_eq!(a["embedding"], b["embedding"], "{}", a["locator"]);
    }
    assert!(
        v["site"]["adaptation"]["columns"].as_array().is_some(),
        "the document carries the adaptation with its profile"
    );
}

/// Issue 10: with stderr not a terminal (as here), a long command prints status lines instead of
/// staying silent.
#[test]
fn train_prints_status_lines_without_a_terminal() {
    let out = run(&[
        "train",
        "--dataset",
        "cic",
        "--data",
        &shared("cic-ids2017-improved"),
        "--out",
        &work().join("status.model").display().to_string(),
        "--steps",
        "20",
        "--hidden",
        "32",
        "--depth",
        "1",
        "--embedding",
        "16",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train: ") && err.contains("/20"), "{err}");
}
