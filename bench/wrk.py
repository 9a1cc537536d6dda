"""The HTTP load of ``make bench`` and of the CPU benches: nginx serving two bodies, and
``wrk`` driving a scenario (small or 1 MiB GETs, keep-alive or a new connection each)
at one port, its figures read from its ``--latency`` output."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from bench.common import is_root
from bench.procs import LOCALHOST, Stack, free_port

SMALL_BODY = 100
LARGE_BODY = 1024 * 1024
HTTP_TOOLS = {"nginx": "nginx", "wrk": "wrk"}
"""The binaries (and their Debian packages) of the load and its backend."""


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str
    connections: int
    close: bool = False

    @property
    def bulk(self) -> bool:
        return self.path == "/large"


SCENARIOS = (
    Scenario("small-ka-1", "small GET keep-alive, 1 conn", "/small", 1),
    Scenario("small-ka-16", "small GET keep-alive, 16 conns", "/small", 16),
    Scenario("small-ka-64", "small GET keep-alive, 64 conns", "/small", 64),
    Scenario("small-close-16", "small GET Connection: close, 16 conns", "/small", 16, close=True),
    Scenario("large-4", "1 MiB GET keep-alive, 4 conns", "/large", 4),
)
MAX_CONNECTIONS_NEEDED = max(s.connections for s in SCENARIOS)

# --- wrk -------------------------------------------------------------------------------

_UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_UNITS_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if m is None:
        raise ValueError(f"cannot read a wrk latency: {text!r}")
    return float(m.group(1)) * _UNITS_TIME[m.group(2)]


@dataclass
class WrkResult:
    requests_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    error_text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "req_s": round(self.requests_per_s, 1),
            "mb_s": round(self.mb_per_s, 2),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
            "error_text": self.error_text,
        }


def parse_wrk(out: str) -> WrkResult:
    def grab(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.MULTILINE)
        if m is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{out}")
        return m

    rps = float(grab(r"^Requests/sec:\s+([\d.]+)").group(1))
    m = grab(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)")
    mb_s = float(m.group(1)) * _UNITS_BYTES[m.group(2)] / 1e6
    p50 = _ms(grab(r"^\s+50%\s+(\S+)").group(1))
    p99 = _ms(grab(r"^\s+99%\s+(\S+)").group(1))
    requests = int(grab(r"^\s+(\d+) requests in").group(1))
    errors, notes = 0, []
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock is not None:
        counts = [int(x) for x in sock.groups()]
        errors += sum(counts)
        if sum(counts):
            notes.append(sock.group(0))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx is not None:
        errors += int(non2xx.group(1))
        notes.append(non2xx.group(0))
    return WrkResult(rps, mb_s, p50, p99, requests, errors, "; ".join(notes))


def run_wrk(wrk: str, port: int, scenario: Scenario, duration: float) -> WrkResult:
    threads = 1 if scenario.connections < 2 else 2
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{scenario.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{LOCALHOST}:{port}{scenario.path}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# --- the backend -------------------------------------------------------------------------


def start_nginx(stack: Stack, nginx: str) -> int:
    """nginx on a free loopback port, 1 worker, ``/small`` and ``/large``: the direct path."""
    port = free_port()
    root = stack.path("nginx")
    www = root / "www"
    for sub in ("www", "tmp", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (www / "small").write_bytes(b"x" * (SMALL_BODY - 1) + b"\n")
    (www / "large").write_bytes(os.urandom(LARGE_BODY))
    temp = root / "tmp"
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
{"user root;" if is_root() else ""}
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen {LOCALHOST}:{port} backlog=4096;
        root {www};
        location = /small {{ }}
        location = /large {{ }}
        location / {{ return 404; }}
    }}
}}
"""
    )
    proc = stack.start(
        "nginx", [nginx, "-e", str(root / "logs" / "error.log"), "-p", str(root), "-c", str(conf)]
    )
    proc.wait_port(port)
    return port


def http_check(port: int) -> None:
    """One GET of each body through a path; raises if it does not arrive whole."""
    for path, size in (("/small", SMALL_BODY), ("/large", LARGE_BODY)):
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200 or len(body) != size:
            raise RuntimeError(
                f"GET {path} on :{port}: status {response.status}, {len(body)} bytes, "
                f"expected 200 with {size}"
            )
