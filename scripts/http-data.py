#!/usr/bin/env python3
"""Builds data/http/payloads.csv.gz, the labelled web-request payload families, from two MIT-licensed
public sources (see data/http/SOURCES.md for repositories, commits, licences and hashes):

  --httpparams DIR   a checkout of Morzeux/HttpParamsDataset at 926670a7 (payload_full.csv)
  --patt DIR         a checkout of swisskyrepo/PayloadsAllTheThings at f9fa5141 (its Intruder lists)

Every input file's sha256 is checked against the table below before it is read, so the output is
the same bytes on every machine (gzip with mtime 0). Rules, applied in this order:
  - HttpParamsDataset rows keep their `attack_type` as the family (`norm` becomes `benign`).
  - A PayloadsAllTheThings list gives one payload per non-empty line (line end removed), except
    comment lines: `#` alone, `#` followed by white space, or `#…:` (a heading); `#{7*7}` is a
    payload. An XXE file under `XXE Injection/Files/` is one payload, the whole file.
  - Exact repeats within a family are kept once; a payload found in two or more families (benign
    included) is dropped from all of them, so no family shares a string with another.
Prints the counts per family and what was dropped; the same table is in data/http/SOURCES.md.
"""
import argparse
import collections
import csv
import gzip
import hashlib
import io
import os
import sys

HTTPPARAMS = {"payload_full.csv": "a4e62ba13435ad3dd583c5790db2175629020fc41c56e1b26baa02a9ae45f03d"}

# family -> list of (path in PayloadsAllTheThings, whole_file)
PATT = {
    "sqli": ("SQL Injection/Intruder", False),
    "xss": ("XSS Injection/Intruders", False),
    "cmdi": ("Command Injection/Intruder", False),
    "path-traversal": ("Directory Traversal/Intruder", False),
    "lfi": ("File Inclusion/Intruders", False),
    "ssti": ("Server Side Template Injection/Intruder", False),
    "xxe": ("XXE Injection/Intruders", False),
    "xxe-file": ("XXE Injection/Files", True),
    "ldap": ("LDAP Injection/Intruder", False),
    "nosql": ("NoSQL Injection/Intruder", False),
    "crlf": ("CRLF Injection/Files", False),
    "open-redirect": ("Open Redirect/Intruder", False),
}
# Lists in those folders that are not attack payloads.
NOT_PAYLOADS = {"LDAP Injection/Intruder/LDAP_attributes.txt"}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def is_comment(line):
    return line == "#" or (line.startswith("#") and (line[1].isspace() or line.endswith(":")))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--httpparams", required=True)
    ap.add_argument("--patt", required=True)
    ap.add_argument("--out", default="data/http/payloads.csv.gz")
    ap.add_argument("--manifest", help="write each PayloadsAllTheThings file's path, sha256 and lines here")
    a = ap.parse_args()

    rows = []  # (family, source, payload)
    for name, want in HTTPPARAMS.items():
        path = os.path.join(a.httpparams, name)
        got = sha256(path)
        if got != want:
            sys.exit(f"{path}: sha256 {got}, expected {want} (another commit?)")
        with open(path, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f), start=2):
                family = "benign" if r["attack_type"] == "norm" else r["attack_type"]
                rows.append((family, f"HttpParamsDataset/{name}:{i}", r["payload"]))

    manifest = []
    for family, (folder, whole) in PATT.items():
        family = "xxe" if family == "xxe-file" else family
        base = os.path.join(a.patt, folder)
        for name in sorted(os.listdir(base)):
            rel = f"{folder}/{name}"
            path = os.path.join(base, name)
            if rel in NOT_PAYLOADS or name.endswith(".md") or not os.path.isfile(path):
                continue
            data = open(path, "rb").read()
            text = data.decode("utf-8", errors="replace")
            taken = 0
            if whole:
                rows.append((family, f"PayloadsAllTheThings/{rel}", text.strip("\r\n")))
                taken = 1
            else:
                for i, line in enumerate(text.split("\n"), start=1):
                    line = line.rstrip("\r")
                    if not line.strip() or is_comment(line):
                        continue
                    rows.append((family, f"PayloadsAllTheThings/{rel}:{i}", line))
                    taken += 1
            manifest.append((family, rel, hashlib.sha256(data).hexdigest(), taken))

    families_of = collections.defaultdict(set)
    for family, _, payload in rows:
        families_of[payload].add(family)
    seen = set()
    kept = []
    repeats = collections.Counter()
    shared = collections.Counter()
    for family, source, payload in rows:
        if len(families_of[payload]) > 1:
            shared[family] += (family, payload) not in seen
            seen.add((family, payload))
            continue
        if (family, payload) in seen:
            repeats[family] += 1
            continue
        seen.add((family, payload))
        kept.append((family, source, payload))
    kept.sort(key=lambda r: (r[0] != "benign", r[0]))  # stable: benign first, then by family

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["family", "source", "payload"])
    w.writerows(kept)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue().encode("utf-8"))

    counts = collections.Counter(r[0] for r in kept)
    print("| family | payloads | repeats dropped | shared with another family, dropped |")
    print("|---|---:|---:|---:|")
    for family in sorted(counts, key=lambda f: (f != "benign", f)):
        print(f"| {family} | {counts[family]:,} | {repeats[family]:,} | {shared[family]:,} |")
    print(f"| all | {sum(counts.values()):,} | {sum(repeats.values()):,} | {sum(shared.values()):,} |")
    print(f"{a.out}: sha256 {sha256(a.out)}", file=sys.stderr)
    if a.manifest:
        with open(a.manifest, "w") as f:
            for family, rel, digest, taken in manifest:
                f.write(f"{family}\t{rel}\t{digest}\t{taken}\n")


if __name__ == "__main__":
    main()
