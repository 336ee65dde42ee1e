#!/usr/bin/env python3
"""A small web shop with an SQL injection, for the web lab (scripts/lab/web/record.sh) only.

Serves any path under /tienda1/ on 127.0.0.1:PORT inside the lab's network namespace. The `id`
parameter (query or form body) is pasted into an SQLite query unescaped — the injection sqlmap
finds; every other parameter is echoed back HTML-escaped. Errors are shown, as careless apps do.
It never listens outside the namespace's loopback. Stops after --max-requests requests or
--seconds seconds, whichever comes first.
"""
import argparse
import html
import sqlite3
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.executescript(
    """
    CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price INTEGER);
    INSERT INTO products VALUES (1, 'Jamón Ibérico', 39), (2, 'Queso Manchego', 12),
        (3, 'Aceite de oliva', 9), (4, 'Vino de Rioja', 15);
    CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT, password TEXT);
    INSERT INTO users VALUES (1, 'admin', '5f4dcc3b5aa765d61d8327deb882cf99');
    """
)
LOCK = threading.Lock()


class Shop(BaseHTTPRequestHandler):
    served = 0

    def log_message(self, *args):
        pass

    def reply(self, params):
        body = ["<html><body><h1>Tienda</h1>"]
        pid = params.get("id")
        if pid is not None:
            try:
                with LOCK:
                    rows = DB.execute(
                        "SELECT name, price FROM products WHERE id = " + pid
                    ).fetchall()
                for name, price in rows:
                    body.append(f"<p>{html.escape(str(name))}: {html.escape(str(price))} EUR</p>")
            except Exception as e:  # shown to the client, as a careless app does
                body.append(f"<p>Error: {html.escape(str(e))}</p>")
        for k, v in sorted(params.items()):
            if k != "id":
                body.append(f"<p>{html.escape(k)} = {html.escape(v)}</p>")
        body.append("</body></html>")
        data = "\n".join(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        Shop.served += 1

    def params(self, query):
        return {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True, encoding="latin-1").items()}

    def do_GET(self):
        self.reply(self.params(urllib.parse.urlsplit(self.path).query))

    def do_POST(self):
        n = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        query = urllib.parse.urlsplit(self.path).query
        p = self.params(query)
        p.update(self.params(self.rfile.read(n).decode("latin-1")))
        self.reply(p)

    do_PUT = do_POST


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--max-requests", type=int, default=200000)
    ap.add_argument("--seconds", type=float, default=3600)
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    deadline = time.time() + a.seconds
    while time.time() < deadline and Shop.served < a.max_requests:
        time.sleep(0.2)
    server.shutdown()


if __name__ == "__main__":
    main()
