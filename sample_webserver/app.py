"""The sample web server behind the tunnel (private side of the Compose suite).

Like the original edgerq's sample server, every path answers one fixed
standard answer. A few paths serve what the tests and the load test need:

  GET  /health          "ok" (the container's healthcheck)
  ANY  /echo            the request body back; method in X-Echo-Method,
                        body SHA-256 in X-Body-SHA256
  GET  /bytes/<n>       n deterministic bytes (see ``pattern_bytes``), their
                        SHA-256 in X-Content-SHA256
  GET  /delay/<ms>      the standard answer after ms milliseconds (max 30 s)
  GET  /stream/<n>      n lines, sent chunked (no Content-Length), one chunk each
  ANY  /<anything else> the standard answer
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, request

STANDARD_ANSWER = b"edgerq sample webserver: standard answer\n"
MAX_BYTES = 64 * 1024 * 1024
MAX_DELAY_MS = 30_000
MAX_STREAM_LINES = 100_000
CHUNK = 64 * 1024

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_BYTES


def pattern_bytes(start: int, length: int) -> bytes:
    """Bytes [start, start+length) of the deterministic stream: byte i is i % 251."""
    base = bytes(range(251))
    offset = start % 251
    reps = (offset + length) // 251 + 1
    return (base * reps)[offset : offset + length]


def pattern_sha256(n: int) -> str:
    digest = hashlib.sha256()
    for start in range(0, n, CHUNK):
        digest.update(pattern_bytes(start, min(CHUNK, n - start)))
    return digest.hexdigest()


def stream_line(i: int) -> bytes:
    return b"line %06d edgerq stream\n" % i


@app.get("/health")
def health() -> Response:
    return Response(b"ok\n", mimetype="text/plain")


@app.route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def echo() -> Response:
    body = request.get_data(cache=False)
    resp = Response(body, mimetype=request.mimetype or "application/octet-stream")
    resp.headers["X-Echo-Method"] = request.method
    resp.headers["X-Echo-Query"] = request.query_string.decode("latin-1")
    resp.headers["X-Body-SHA256"] = hashlib.sha256(body).hexdigest()
    return resp


@app.get("/bytes/<int:n>")
def nbytes(n: int) -> Response:
    if n > MAX_BYTES:
        return Response(b"too many bytes\n", status=400, mimetype="text/plain")

    def generate() -> Iterator[bytes]:
        for start in range(0, n, CHUNK):
            yield pattern_bytes(start, min(CHUNK, n - start))

    resp = Response(generate(), mimetype="application/octet-stream")
    resp.headers["Content-Length"] = str(n)
    resp.headers["X-Content-SHA256"] = pattern_sha256(n)
    return resp


@app.get("/delay/<int:ms>")
def delay(ms: int) -> Response:
    time.sleep(min(ms, MAX_DELAY_MS) / 1000)
    return Response(STANDARD_ANSWER, mimetype="text/plain")


@app.get("/stream/<int:n>")
def stream(n: int) -> Response:
    n = min(n, MAX_STREAM_LINES)

    def generate() -> Iterator[bytes]:
        for i in range(n):
            yield stream_line(i)

    # no Content-Length: gunicorn sends Transfer-Encoding: chunked
    return Response(generate(), mimetype="text/plain")


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
@app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
def standard(path: str) -> Response:
    request.get_data(cache=False)  # drain any body
    resp = Response(STANDARD_ANSWER, mimetype="text/plain")
    resp.headers["X-Served-By"] = os.environ.get("HOSTNAME", "webserver")
    return resp
