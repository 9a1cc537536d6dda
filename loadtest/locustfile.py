"""Locust load test of the edgerq Compose suite.

Every task checks the answer itself, not only its status: the standard
answer's exact body, the /bytes body against its SHA-256 header *and* the
known deterministic pattern, the /echo body against what was sent, the
/stream lines. A wrong byte counts as a failure.

Target: --host (http://proxy:8080 through the tunnel, http://webserver:8000
direct). Think time per user: LOCUST_WAIT="MIN-MAX" seconds (default 0.1-0.5).

LOCUST_LATENCY_FILE=PATH: when Locust quits, write there the exact percentiles
of the successful requests' response times (JSON, milliseconds). Locust's own
tables round every time under 100 ms to a whole millisecond, so a p50 of
"1 ms" may be anything from 0.5 to 1.5 ms: too coarse for a ratio.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random

from locust import FastHttpUser, between, events, task

STANDARD_ANSWER = b"edgerq sample webserver: standard answer\n"
_PATTERN = bytes(range(251))


def pattern_bytes(n: int) -> bytes:
    """The web server's /bytes/<n> body: byte i is i % 251."""
    return (_PATTERN * (n // 251 + 1))[:n]


def stream_body(n: int) -> bytes:
    return b"".join(b"line %06d edgerq stream\n" % i for i in range(n))


@events.init_command_line_parser.add_listener
def _target_label(parser: object) -> None:
    """Say in the web UI what the host is: "Custom parameters", "Edgerq path"."""
    parser.add_argument(  # type: ignore[attr-defined]
        "--edgerq-path",
        type=str,
        default=os.environ.get("EDGERQ_TARGET_LABEL", "(not set)"),
        help="what the target host is: through the tunnel or straight at the web server",
        include_in_web_ui=True,
    )


_LATENCY_FILE = os.environ.get("LOCUST_LATENCY_FILE")
_latencies: list[float] = []


@events.request.add_listener
def _record_latency(response_time: float, exception: BaseException | None, **kw: object) -> None:
    if _LATENCY_FILE and exception is None:
        _latencies.append(response_time)


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of sorted values."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@events.quitting.add_listener
def _write_latencies(environment: object, **kw: object) -> None:
    if not _LATENCY_FILE or not _latencies:
        return
    ordered = sorted(_latencies)
    summary = {"requests": len(ordered), "mean_ms": round(sum(ordered) / len(ordered), 3)}
    for q in (50, 95, 99):
        summary[f"p{q}_ms"] = round(percentile(ordered, q), 3)
    with open(_LATENCY_FILE, "w", encoding="utf-8") as out:
        json.dump(summary, out)
        out.write("\n")


def _wait_range() -> tuple[float, float]:
    lo, _, hi = os.environ.get("LOCUST_WAIT", "0.1-0.5").partition("-")
    return float(lo), float(hi or lo)


_EXPECTED_SHA = {
    n: hashlib.sha256(pattern_bytes(n)).hexdigest() for n in (1024, 65536, 262144, 1048576)
}
_STREAM_200 = stream_body(200)


class EdgerqUser(FastHttpUser):
    wait_time = between(*_wait_range())
    connection_timeout = 10.0
    network_timeout = 60.0

    @task(10)
    def standard_answer(self) -> None:
        path = f"/some/path/{random.randrange(1000)}?q={random.randrange(1000)}"
        with self.client.get(path, name="/[any]", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.content != STANDARD_ANSWER:
                resp.failure(f"wrong body ({len(resp.content or b'')} bytes)")

    @task(5)
    def echo(self) -> None:
        body = random.randbytes(random.randrange(1, 64 * 1024))
        with self.client.post(
            "/echo?x=1",
            data=body,
            name="/echo",
            catch_response=True,
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.content != body:
                resp.failure(
                    f"echo mismatch: sent {len(body)}, got {len(resp.content or b'')} bytes"
                )
            elif resp.headers.get("X-Echo-Method") != "POST":
                resp.failure(f"method {resp.headers.get('X-Echo-Method')!r}")

    @task(5)
    def nbytes(self) -> None:
        n = random.choice((1024, 65536, 262144))
        self._check_bytes(n, "/bytes/[n]")

    @task(1)
    def nbytes_large(self) -> None:
        self._check_bytes(1048576, "/bytes/1MiB")

    def _check_bytes(self, n: int, name: str) -> None:
        with self.client.get(f"/bytes/{n}", name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            body = resp.content or b""
            digest = hashlib.sha256(body).hexdigest()
            if len(body) != n:
                resp.failure(f"length {len(body)} != {n}")
            elif digest != resp.headers.get("X-Content-SHA256"):
                resp.failure("SHA-256 does not match the X-Content-SHA256 header")
            elif digest != _EXPECTED_SHA[n]:
                resp.failure("body is not the expected byte pattern")

    @task(2)
    def stream(self) -> None:
        with self.client.get("/stream/200", name="/stream/200", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.content != _STREAM_200:
                resp.failure(f"stream body mismatch ({len(resp.content or b'')} bytes)")

    @task(1)
    def delay(self) -> None:
        with self.client.get("/delay/50", name="/delay/50", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.content != STANDARD_ANSWER:
                resp.failure("wrong body")
