"""Steady load over every SC task of the Swarm stack, and their metrics.

Runs inside a container on the stack's ``front`` network (the edgerq image's
Python, standard library only). Every request goes to the next SC task in
turn (``tasks.sc`` looked up again every half second) on a new connection:
a POST of random bytes to the sample web server's ``/echo``, which counts as
served only when the body comes back identical. Every request is one JSON
line in ``--out``: when it started and ended, which SC address it went to,
and whether it was served. Once a second the metrics of every SC task are
read and written as a line too (streams served, pipes connected).

It stops when ``--stop-file`` appears or after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import socket
import threading
import time
from typing import IO, Any


class Targets:
    """The SC task addresses, looked up again in the background."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.addresses: list[str] = []
        self._next = 0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        try:
            infos = socket.getaddrinfo(self.name, self.port, type=socket.SOCK_STREAM)
        except OSError:
            return  # keep what we knew
        addresses = sorted({str(info[4][0]) for info in infos})
        with self._lock:
            self.addresses = addresses

    def pick(self) -> str | None:
        with self._lock:
            if not self.addresses:
                return None
            self._next = (self._next + 1) % len(self.addresses)
            return self.addresses[self._next]


class Log:
    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def one_request(address: str, port: int, rng: random.Random) -> str | None:
    """None when served intact, else what went wrong."""
    body = rng.randbytes(rng.randint(256, 4096))
    conn = http.client.HTTPConnection(address, port, timeout=15)
    try:
        conn.request(
            "POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"}
        )
        response = conn.getresponse()
        got = response.read()
        if response.status != 200:
            return f"HTTP {response.status}"
        if got != body or response.getheader("X-Body-SHA256") != hashlib.sha256(body).hexdigest():
            return f"body differs ({len(got)} of {len(body)} bytes)"
        return None
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def worker(targets: Targets, log: Log, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        address = targets.pick()
        if address is None:
            time.sleep(0.1)
            continue
        started = time.time()
        error = one_request(address, targets.port, rng)
        log.write({"t0": started, "t1": time.time(), "sc": address, "error": error})


def scrape(address: str, port: int) -> dict[str, float] | None:
    try:
        conn = http.client.HTTPConnection(address, port, timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    served = pipes = 0.0
    for line in text.splitlines():
        if line.startswith("edgerq_streams_total{") and 'outcome="ok"' in line:
            served += float(line.rsplit(" ", 1)[1])
        elif line.startswith("edgerq_pipes_connected{"):
            pipes += float(line.rsplit(" ", 1)[1])
    return {"served": served, "pipes": pipes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="tasks.sc")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--metrics-port", type=int, default=9100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    args = parser.parse_args()

    targets = Targets(args.target, args.port)
    targets.refresh()
    stop = threading.Event()
    with open(args.out, "a", encoding="utf-8") as out:
        log = Log(out)
        threads = [
            threading.Thread(target=worker, args=(targets, log, stop, seed), daemon=True)
            for seed in range(args.concurrency)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + args.duration
        next_scrape = 0.0
        while time.monotonic() < deadline and not os.path.exists(args.stop_file):
            targets.refresh()
            if time.monotonic() >= next_scrape:
                next_scrape = time.monotonic() + 1.0
                log.write(
                    {
                        "metrics": time.time(),
                        "sc": {a: scrape(a, args.metrics_port) for a in targets.addresses},
                    }
                )
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=20)


if __name__ == "__main__":
    main()
