#!/usr/bin/env python3
"""Replays requests to 127.0.0.1:PORT for the web lab: the JSON lines `metaids requests` writes
(e.g. from the CSIC 2010 request files), so the requests are parsed by the same code metaids uses.

Takes N requests that carry a query string or a body (what metaids scores), in file order after
skipping SKIP of them, and sends each on a new connection with its method, path, query,
User-Agent, Content-Type and body as recorded (an absolute URL's host is dropped: the lab's app
answers on 127.0.0.1). Bounded: N requests, a 5 s timeout each.
"""
import argparse
import http.client
import json
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--skip", type=int, default=0)
    a = ap.parse_args()
    sent = skipped = 0
    with open(a.jsonl, encoding="utf-8") as f:
        for line in f:
            if sent >= a.n:
                break
            r = json.loads(line)
            u = urllib.parse.urlsplit(r["http"]["url"])
            body = r.get("body", "").encode("latin-1", "replace")
            if not u.query and not body:
                continue
            if skipped < a.skip:
                skipped += 1
                continue
            path = u.path + ("?" + u.query if u.query else "")
            headers = {"Host": "localhost:8080"}
            for name, value in r.get("headers", []):
                if name.lower() in ("user-agent", "content-type"):
                    headers[name] = value
            c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
            try:
                c.request(r["http"]["http_method"], path, body=body or None, headers=headers)
                c.getresponse().read()
            finally:
                c.close()
            sent += 1
    print(f"replayed {sent} requests from {a.jsonl}")


if __name__ == "__main__":
    main()
