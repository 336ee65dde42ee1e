//! Cross-checks request reassembly against tshark: for every staged capture under
//! `../shared/data/pcaps` (skipped with a note when absent), the multiset of `(method, target)`
//! of the requests `RequestAssembler` reassembles equals tshark's (`tshark -Y http.request -T
//! fields -e http.request.method -e http.request.uri`; tshark reassembles TCP and HTTP heads by
//! default). The lab captures in `data/lab` were recorded with a 96-byte snap length: tshark
//! still shows the request lines that fit, but no request there is whole, so the assembler emits
//! none and counts the cut segments instead.
//!
//! Needs `tshark` on PATH: the test fails with a message when it is absent, unless
//! `METAIDS_SKIP_TSHARK=1` is set.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;

use metaids_flow::{CaptureReader, ReaderConfig};
use metaids_http::stream::{RequestAssembler, StreamConfig, StreamStats};

fn staged(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            staged(&p, out);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        {
            out.push(p);
        }
    }
}

fn lab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/lab")
        .join(format!("{name}.pcap.gz"))
}

type Requests = BTreeMap<(String, String), u32>;

/// Methods Wireshark's HTTP dissector recognises at the start of a request (HTTP's, WebDAV's and
/// a few others); a request with another method is left out of the comparison and printed.
const TSHARK_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "CHECKOUT",
    "CHECKIN",
    "MERGE",
    "LABEL",
    "MKACTIVITY",
    "UPDATE",
    "VERSION-CONTROL",
    "BASELINE-CONTROL",
    "MKWORKSPACE",
    "UNCHECKOUT",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "POLL",
    "BMOVE",
    "BCOPY",
    "BDELETE",
    "BPROPFIND",
    "BPROPPATCH",
    "ICY",
    "M-SEARCH",
    "MKCALENDAR",
    "ACL",
    "ORDERPATCH",
];

fn ours(path: &Path) -> (Requests, StreamStats) {
    let file = std::fs::File::open(path).expect("open capture");
    let input: Box<dyn std::io::BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut reader = CaptureReader::new(input, ReaderConfig::default()).expect("capture header");
    let mut a = RequestAssembler::new(StreamConfig::default());
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet().expect("capture reads cleanly") {
        a.push(&pkt, &mut out);
    }
    let stats = a.finish();
    let mut map = Requests::new();
    for r in out {
        *map.entry((r.request.method, r.request.target)).or_default() += 1;
    }
    (map, stats)
}

fn theirs(path: &Path) -> Requests {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-n", "-Y", "http.request", "-T", "fields"])
        .args(["-e", "http.request.method", "-e", "http.request.uri"])
        .args(["-E", "occurrence=a", "-E", "separator=\t"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = Requests::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // A frame completing several pipelined requests lists each field's values with commas.
        let (methods, uris) = line.split_once('\t').expect("two fields");
        for (m, u) in methods.split(',').zip(uris.split(',')) {
            *map.entry((m.to_string(), u.to_string())).or_default() += 1;
        }
    }
    map
}

#[test]
fn reassembled_requests_equal_tsharks() {
    if std::env::var_os("METAIDS_SKIP_TSHARK").is_some() {
        eprintln!("METAIDS_SKIP_TSHARK=1: tshark cross-check skipped");
        return;
    }
    assert!(
        Command::new("tshark")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "`tshark` is not on PATH: install it (`apt-get install -y tshark`) or set \
         METAIDS_SKIP_TSHARK=1 to skip the tshark cross-check explicitly"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/pcaps");
    let mut files = Vec::new();
    staged(&root, &mut files);
    files.sort();
    let (mut total, mut with_requests) = (0, 0);
    for path in &files {
        let (mut got, stats) = ours(path);
        let want = theirs(path);
        let n: u32 = got.values().sum();
        // tshark's HTTP dissector takes a request only with a method it knows; HTTP allows any
        // token (nmap probes with a random one, `XFOC / HTTP/1.0`).
        let unknown: Vec<(String, String)> = got
            .keys()
            .filter(|(m, _)| !TSHARK_METHODS.contains(&m.as_str()))
            .cloned()
            .collect();
        for k in &unknown {
            eprintln!("{}: {k:?}, a method tshark does not know", path.display());
            got.remove(k);
        }
        let odd: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(k) != Some(v))
            .chain(want.iter().filter(|(k, _)| !got.contains_key(k)))
            .take(5)
            .collect();
        assert!(
            odd.is_empty(),
            "{}: metaids and tshark differ, e.g. {odd:?}; {stats:?}",
            path.display()
        );
        if n > 0 {
            eprintln!("{}: {n} requests, {stats:?}", path.display());
            with_requests += 1;
        }
        total += n;
    }
    if files.is_empty() {
        eprintln!(
            "no staged captures under {}; only the lab checked",
            root.display()
        );
    } else {
        assert!(
            with_requests >= 5 && total >= 40,
            "{total} requests in {with_requests} captures"
        );
    }
    for name in [
        "benign-api",
        "attack-sqli",
        "benign-web",
        "attack-http-flood",
    ] {
        let (got, stats) = ours(&lab(name));
        assert!(
            got.is_empty(),
            "{name}: a request from a 96-byte snap length"
        );
        assert!(stats.truncated > 100, "{name}: {stats:?}");
    }
}
