//! Helpers shared by the CLI's end-to-end tests: the built binary, the shared data, and a run that
//! must succeed.

// Each test binary compiles its own copy and uses a subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `metaids` binary, run from the repository root.
pub fn metaids() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metaids"));
    c.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    c
}

/// A path under `../shared/data` beside the checkout (asserted to exist).
pub fn shared(sub: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p
}

/// Asserts the run succeeded (showing its output if not) and returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `metaids threat export` of `library` (with `extra` flags) into `out`, asserted to succeed, and
/// the document read back.
pub fn export(library: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    ok(&metaids()
        .args(["threat", "export", "--library"])
        .arg(library)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("threat export"));
    let text = std::fs::read_to_string(out).expect("read the exported document");
    serde_json::from_str(&text).expect("the exported document is JSON")
}

/// Trains the small CIC-IDS2017 model the end-to-end tests share (150 steps, 64 hidden units, one
/// block, 32-d embeddings, seed 5) into `out`, asserted to succeed.
pub fn train_small_model(out: &Path) {
    ok(&metaids()
        .args(["train", "--dataset", "cic", "--data"])
        .arg(shared("cic-ids2017-improved"))
        .args([
            "--steps",
            "150",
            "--hidden",
            "64",
            "--depth",
            "1",
            "--embedding",
            "32",
        ])
        .args(["--eval-every", "50", "--seed", "5", "--quiet", "--out"])
        .arg(out)
        .output()
        .expect("train"));
}

/// A private CA and a certificate it signed for 127.0.0.1, made by the `openssl` command in `dir`:
/// `(ca.pem, cert.pem, key.pem)`; `None` when openssl cannot run (the caller says it skips).
pub fn test_certificates(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let p = |n: &str| dir.join(n);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .ok()?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let d = dir.display();
    let steps = [
        format!("req -x509 {ec} -days 2 -subj /CN=metaids-test-CA -keyout {d}/ca.key -out {d}/ca.pem"),
        format!("req {ec} -subj /CN=localhost -keyout {d}/key.pem -out {d}/leaf.csr"),
        format!("x509 -req -days 2 -in {d}/leaf.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial -extfile {d}/ext.cnf -out {d}/cert.pem"),
    ];
    for step in steps {
        let ok = std::process::Command::new("openssl")
            .args(step.split_whitespace())
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return None;
        }
    }
    Some((p("ca.pem"), p("cert.pem"), p("key.pem")))
}
