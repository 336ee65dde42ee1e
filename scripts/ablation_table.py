#!/usr/bin/env python3
"""Prints the README's ablation tables from the files scripts/ablation.sh wrote.

Usage: python3 scripts/ablation_table.py OUT_DIR
"""
import json
import os
import re
import statistics
import sys

out = sys.argv[1]
SEEDS = [2026, 2027, 2028]
EMBS = [16, 32, 64, 128]
KS = [1, 2, 5, 10, 20]


def validation_f1(name):
    with open(os.path.join(out, f"{name}-train.txt")) as f:
        m = re.search(r"validation F1 \(K=5[^)]*\): ([0-9.]+)", f.read())
    return float(m.group(1)) if m else float("nan")


def macro_f1(path):
    with open(path) as f:
        report = json.load(f)
    return {(r["method"], r["shots"]): r["macro_f1"]["mean"] for r in report["results"]}


def cell(xs):
    mean = statistics.mean(xs)
    return f"{mean:.3f} ({min(xs):.3f}–{max(xs):.3f})" if len(xs) > 1 else f"{mean:.3f}"


for ds in ["nsl-kdd", "unsw-nb15", "cic"]:
    print(f"\n{ds}: protonet macro-F1, mean (min–max) over training seeds {SEEDS}\n")
    print("| embedding | validation F1 (K=5) | " + " | ".join(f"K={k}" for k in KS) + " |")
    print("|---" * (len(KS) + 2) + "|")
    for e in EMBS:
        names = [f"{ds}-e{e}-s{s}" for s in SEEDS if os.path.exists(os.path.join(out, f"{ds}-e{e}-s{s}.json"))]
        if not names:
            continue
        runs = [macro_f1(os.path.join(out, f"{n}.json")) for n in names]
        vals = [validation_f1(n) for n in names]
        print(f"| {e} | {cell(vals)} | " + " | ".join(cell([r[("protonet", k)] for r in runs]) for k in KS) + " |")
    forest = os.path.join(out, f"{ds}-forest.json")
    if os.path.exists(forest):
        r = macro_f1(forest)
        print("| forest+shots @1% FPR | — | " + " | ".join(f"{v:.3f}" for k in KS for (m, kk), v in r.items() if kk == k and m.startswith("random-forest")) + " |")
