"""Several SPs serve one UUID: streams spread over them, and a dead one costs
no request that starts after it died."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgerq.sc.registry import REFUSED_FOR
from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import download, upload
from tests.integration.conftest import (
    SERVICE_UUID,
    Daemon,
    Processes,
    carrier_settings,
    consumer_xml,
    free_port,
    provider_xml,
    wait_for,
)


@dataclass
class Attempt:
    started: float
    ended: float
    kind: str
    error: str = ""


@dataclass
class Load:
    """Client threads that keep sending checked requests until told to stop."""

    port: int
    attempts: list[Attempt] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            seed = index * 100_000 + n
            kind = ("small", "upload", "1MiB")[n % 3]
            size = 1 << 20 if kind == "1MiB" else 2_000
            started = time.monotonic()
            error = ""
            try:
                if kind == "upload":
                    data = payload(size, seed)
                    got = upload(self.port, data)
                else:
                    got = download(self.port, size, seed)
                if got != sha256(payload(size, seed)):
                    error = f"hash mismatch ({got[:16]})"
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.attempts.append(Attempt(started, time.monotonic(), kind, error))

    def run(self, threads: int) -> list[threading.Thread]:
        workers = [threading.Thread(target=self.worker, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        return workers


def three_sps(
    processes: Processes, backend: HashService, carrier: str, tmp_path: Path
) -> tuple[Daemon, list[Daemon], int]:
    listener_extra, pipe_extra = carrier_settings(carrier, tmp_path)
    sc = processes.start(
        "sc",
        consumer_xml(
            0,
            [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}],
            listener_extra=listener_extra,
        ),
    )
    listener, port = sc.listener_port(carrier), sc.service_port()
    xml = provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)], pipe_extra=pipe_extra)
    sps = [processes.start("sp", xml) for _ in range(3)]
    sc.wait_serving(pipes=3, timeout=30)
    return sc, sps, port


@pytest.mark.parametrize("carrier", ["tcp", "udp"])
def test_sigkill_of_one_of_three_sps_fails_no_later_request(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str
) -> None:
    sc, sps, port = three_sps(processes, backend, carrier, tmp_path)
    load = Load(port)
    workers = load.run(threads=6)
    try:
        wait_for(lambda: len(load.attempts) >= 30, 60, "30 requests before the kill")
        # Streams spread over the SPs: each has carried some of them.
        wait_for(
            lambda: all(sp.status()["pipes"][0]["streams_total"] > 0 for sp in sps),
            60,
            "every SP to carry streams",
        )
        killed_at = time.monotonic()
        sps[1].kill()
        wait_for(lambda: sc.serving() == 2, 30, "the SC to withdraw the dead SP's pipe")
        noticed_at = time.monotonic()
        # Keep the load on the two survivors for a while longer.
        wait_for(
            lambda: sum(a.started > noticed_at for a in load.attempts) >= 60,
            90,
            "60 requests after the SC noticed the kill",
        )
    finally:
        load.stop.set()
        for w in workers:
            w.join(timeout=90)
    assert not any(w.is_alive() for w in workers), "a client hung on a dead pipe"

    after = [a for a in load.attempts if a.started >= killed_at]
    before = [a for a in load.attempts if a.started < killed_at]
    failed_after = [a for a in after if a.error]
    print(
        f"\n{carrier}: {len(before)} requests before the kill "
        f"({sum(bool(a.error) for a in before)} failed: in flight on the dead pipe), "
        f"{len(after)} after ({len(failed_after)} failed); "
        f"SC noticed the kill after {noticed_at - killed_at:.2f} s"
    )
    assert len(after) >= 60
    assert failed_after == []
    assert [a for a in load.attempts if "hash mismatch" in a.error] == []
    # The dead pipe's streams were closed, not left hanging: every one of its
    # clients got an answer or an error, and the SC says which pipe went.
    cut = [a for a in before if a.error]
    if cut:
        last = max(a.ended for a in cut) - killed_at
        print(f"{carrier}: the last cut request ended {last:.2f} s after the kill")
    assert "services withdrawn: hash" in sc.log


def test_an_sp_that_cannot_reach_the_service_hands_over_to_one_that_can(
    processes: Processes, backend: HashService
) -> None:
    """A refusal from one SP is not the client's problem while another SP can connect."""
    sc = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    listener, port = sc.listener_port(), sc.service_port()
    dead_port = free_port()  # nothing listens here
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, dead_port)], None)]))
    sc.wait_serving(pipes=1, timeout=30)
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
    sc.wait_serving(pipes=2, timeout=30)
    started = time.monotonic()
    for i in range(20):
        data = payload(50_000, i)
        assert upload(port, data) == sha256(data)
    elapsed = time.monotonic() - started
    # One at a time, every one of these ties on open streams, and the broken SP
    # registered first: it is tried, refuses, and then goes last for REFUSED_FOR s.
    refusals = sc.log.count("refused (connection refused")
    assert refusals >= 1
    assert "opening it on another pipe" in sc.log
    assert refusals <= 1 + int(elapsed // REFUSED_FOR), (
        f"{refusals} of 20 connections went to the SP that cannot reach the service "
        f"in {elapsed:.1f} s"
    )


def test_clients_waiting_for_a_pipe_get_the_next_one(
    processes: Processes, backend: HashService
) -> None:
    """With every SP gone, new clients wait (up to request_ttl) for the next to register."""
    sc = processes.start(
        "sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0, "request_ttl": 30}])
    )
    listener, port = sc.listener_port(), sc.service_port()
    results: list[str] = []

    def client(seed: int) -> None:
        results.append(download(port, 100_000, seed))

    waiting = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    for t in waiting:
        t.start()
    wait_for(lambda: sc.open_connections() == 5, 10, "five clients queued for a pipe")
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
    for t in waiting:
        t.join(timeout=60)
    assert sorted(results) == sorted(sha256(payload(100_000, i)) for i in range(5))
