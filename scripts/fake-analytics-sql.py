#!/usr/bin/env python3
"""A stand-in for the Workers Analytics Engine SQL API, for
scripts/check-ops.sh: the edge exporter queries it like the real one, so its
/metrics has every synckairos_edge_* series with samples in the live scrape.

    fake-analytics-sql.py PORT TOKEN

Listens on 127.0.0.1:PORT. A POST with `Authorization: Bearer TOKEN` whose
body is a query naming a window (`toDateTime('...')`) and the `le_<ms>`
columns it asks for is answered, in the SQL API's `FORMAT JSON` shape, with
two rows: switches answered 200 and 503, each 10 requests (counts as strings,
as ClickHouse quotes 64-bit integers), all within every latency bound. A
wrong token is 401, a query without a window 400. Not a SQL engine: the
exporter's own tests (edge-exporter/tests/exporter.rs) check the arithmetic.
"""

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    port, token = int(sys.argv[1]), sys.argv[2]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            sql = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            if self.headers.get("authorization") != f"Bearer {token}":
                return self.answer(401, "text/plain", "Authentication error")
            if "toDateTime('" not in sql:
                return self.answer(400, "text/plain", "no window in the query")
            buckets = re.findall(r"\bAS (le_\d+)\b", sql)
            data = []
            for code in ("200", "503"):
                row = {"route": "/v1/sessions/:id/switch", "code": code,
                       "requests": "10", "latency_ms": 200.0}
                row.update({b: "10" for b in buckets})
                data.append(row)
            body = {"meta": [{"name": k, "type": "String"} for k in data[0]],
                    "data": data, "rows": len(data)}
            self.answer(200, "application/json", json.dumps(body))

        def answer(self, status, content_type, text):
            raw = text.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
