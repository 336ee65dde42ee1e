#!/usr/bin/env python3
"""The validation behind `metaids baseline`'s default adaptation for web-request models (`none`).

For each family (default: the split's validation families cmdi and lfi), builds the requests
`crates/cli/tests/web_detect.rs` builds from the vendored payloads (data/http): a baseline request
file of 1,000 benign requests (two values each), 5 attack requests in an access log (an ordinary
`id` beside the payload in `q`), and a test log of 600 held-out benign requests and the family's
other payloads. Then, per adaptation (`normaliser`, `none`): threat add --access-log, baseline
--request-file --adapt A --budget B, detect --access-log; prints benign and attack requests flagged.

    scripts/web-adapt-validation.py MODEL [--metaids BIN] [--families cmdi,lfi] [--budget 0.01]

MODEL: `metaids train --dataset http-requests --data data/http --out MODEL` (README figures: seed 2026).
The figures in README (cmdi 64% → 12%, lfi 93% → 43% with the refit) were measured with a budget
of 0.01 per value, before `--budget` became per request; pass `--budget 0.02` to reproduce them
(two values a request).
"""
import argparse
import csv
import gzip
import io
import json
import pathlib
import subprocess
import tempfile
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent


def family(rows, f):
    seen, out = set(), []
    for r in rows:
        if r[0] == f and r[2].strip() and r[2] not in seen:
            seen.add(r[2])
            out.append(r[2])
    return out


def enc(v):
    return urllib.parse.quote_plus(v, safe="*-._")


def log(client, s, target, agent):
    return '%s - - [07/Dec/2026:05:%02d:%02d +0000] "GET %s HTTP/1.1" 200 512 "-" "%s"\n' % (
        client, (s // 60) % 60, s % 60, target, agent)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--metaids", default=str(ROOT / "target/release/metaids"))
    ap.add_argument("--families", default="cmdi,lfi")
    ap.add_argument("--budget", default="0.01")
    a = ap.parse_args()
    with gzip.open(ROOT / "data/http/payloads.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    benign = family(rows, "benign")
    base, rest = benign[:2000], benign[2000:]
    enrol_b, test_b = rest[:5], rest[5:605]
    run = lambda *args: subprocess.run([a.metaids, *args], check=True, capture_output=True)
    for fam in a.families.split(","):
        attack = family(rows, fam)
        enrol_a, test_a = attack[:5], attack[5:]
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            with open(d / "baseline.txt", "w") as f:
                for i in range(0, len(base), 2):
                    q = "&".join("%s=%s" % (k, enc(v)) for k, v in zip(["nombre", "ciudad"], base[i:i + 2]))
                    f.write("GET /tienda1/publico/registro.jsp?%s HTTP/1.1\r\nHost: localhost:8080\r\n"
                            "User-Agent: Mozilla/5.0\r\n\r\n" % q)
            with open(d / "enrol.log", "w") as f:
                for i, (x, y) in enumerate(zip(enrol_b, enrol_a)):
                    f.write(log("10.0.0.66", i, "/search.jsp?id=%s&q=%s" % (enc(x), enc(y)), "tool/1.0"))
            with open(d / "test.log", "w") as f:
                for i, x in enumerate(test_b):
                    f.write(log("10.0.1.%d" % (i % 200 + 1), i,
                                "/tienda1/publico/registro.jsp?nombre=%s" % enc(x), "Mozilla/5.0"))
                for i, y in enumerate(test_a):
                    f.write(log("10.0.0.66", i, "/search.jsp?id=7&q=%s" % enc(y), "tool/1.0"))
            for adapt in ("normaliser", "none"):
                lib, eve = d / ("%s.redb" % adapt), d / ("%s.eve" % adapt)
                run("threat", "add", "--model", a.model, "--library", str(lib), "--name", fam,
                    "--access-log", str(d / "enrol.log"))
                run("baseline", "--model", a.model, "--library", str(lib), "--request-file",
                    str(d / "baseline.txt"), "--adapt", adapt, "--budget", a.budget)
                run("detect", "--model", a.model, "--library", str(lib), "--access-log",
                    str(d / "test.log"), "--alerts", str(eve), "--dedup-max", "1000000", "--quiet")
                lines = [int(json.loads(l)["alert"]["context"]["metaids"]["origin"].rsplit(":", 1)[1])
                         for l in open(eve)]
                nb = sum(1 for x in lines if x <= len(test_b))
                print("%s --adapt %s: benign flagged %d/%d, attack flagged %d/%d" % (
                    fam, adapt, nb, len(test_b), len(lines) - nb, len(test_a)))


if __name__ == "__main__":
    main()
