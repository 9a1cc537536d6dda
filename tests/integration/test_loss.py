"""Pipes across a lossy link: the SP in a network namespace, joined to the SC by a
veth pair, with the kernel dropping a share of the pipe's packets both ways
(``iptables -m statistic``). Every byte must still arrive intact.

Skipped, with the reason, where namespaces cannot be made (not root, no ``ip``
or ``iptables``). Goodput is never asserted; with ``EDGERQ_LOSS_RESULTS=PATH``
(``make bench-loss``) each transfer's goodput is written there, with the date
and commit of the run, and ``python -m bench.loss`` renders the README's table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.backends import payload, sha256
from tests.integration.clients import connect, download, upload
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    carrier_settings,
    consumer_xml,
    provider_xml,
)

NS = f"erq-sp-{os.getpid()}"
HOST_IF, NS_IF = f"erqh{os.getpid() % 10000}", f"erqn{os.getpid() % 10000}"
HOST_IP, NS_IP = "10.231.7.1", "10.231.7.2"
ROOT = Path(__file__).resolve().parents[2]
SIZE = 20 * 1024 * 1024

pytestmark = pytest.mark.slow


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class LossyLink:
    """The SP side lives in namespace ``NS``; ``drop()`` sets the loss for the pipe."""

    backend_port: int

    def drop(self, probability: float) -> None:
        run("ip", "netns", "exec", NS, "iptables", "-F")
        if probability > 0:
            for chain in ("INPUT", "OUTPUT"):
                run(
                    "ip",
                    "netns",
                    "exec",
                    NS,
                    "iptables",
                    "-A",
                    chain,
                    "-i" if chain == "INPUT" else "-o",
                    NS_IF,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    str(probability),
                    "-j",
                    "DROP",
                )


@pytest.fixture(scope="module")
def link() -> Iterator[LossyLink]:
    reason = why_no_namespaces()
    if reason:
        pytest.skip(reason)
    try:
        run("ip", "netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    backend = None
    try:
        run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        run("ip", "link", "set", NS_IF, "netns", NS)
        run("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        run("ip", "link", "set", HOST_IF, "up")
        run("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
        run("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        run("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        try:
            run("ip", "netns", "exec", NS, "iptables", "-L")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"iptables does not work in a namespace here: {exc.stderr.strip()}")
        backend = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, "-m", "tests.integration.backends"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert backend.stdout is not None
        port = int(backend.stdout.readline())
        yield LossyLink(port)
    finally:
        if backend is not None:
            backend.kill()
            backend.wait()
            for stream in (backend.stdin, backend.stdout):
                if stream is not None:
                    stream.close()
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def start_lossy_tunnel(processes: Processes, link: LossyLink, carrier: str, tmp_path: Path) -> int:
    listener_extra, pipe_extra = carrier_settings(carrier, tmp_path)
    sc = processes.start(
        "sc",
        consumer_xml(
            0,
            [{"uuid": SERVICE_UUID, "port": 0, "request_ttl": 30}],
            token="lossy",
            listener_extra=listener_extra,
            inaddr_any=True,
        ),
    )
    listener, port = sc.listener_port(carrier), sc.service_port()
    processes.start(
        "sp",
        provider_xml(
            [(listener, [(SERVICE_UUID, link.backend_port)], "lossy")],
            pipe_extra=pipe_extra,
            sc_host=HOST_IP,
        ),
        prefix=["ip", "netns", "exec", NS],
    )
    # The SP's admin endpoint is inside the namespace: ask the SC.
    sc.wait_serving(timeout=60)
    return port


def timed(fn: object, *args: object) -> tuple[object, float]:
    started = time.monotonic()
    result = fn(*args)  # type: ignore[operator]
    return result, time.monotonic() - started


@pytest.mark.parametrize("probability", [0.0, 0.02, 0.10])
@pytest.mark.parametrize("carrier", ["udp", "tcp"])
def test_transfers_survive_packet_loss(
    processes: Processes, link: LossyLink, tmp_path: Path, carrier: str, probability: float
) -> None:
    port = start_lossy_tunnel(processes, link, carrier, tmp_path)
    link.drop(probability)
    try:
        data = payload(SIZE, 11)
        got, up_s = timed(upload, port, data)
        assert got == sha256(data), "upload corrupted across the lossy link"
        got, down_s = timed(download, port, SIZE, 12)
        assert got == sha256(payload(SIZE, 12)), "download corrupted across the lossy link"

        def request(i: int) -> bool:
            body = payload(2000 + i, i)
            with connect(port) as sock:
                sock.sendall(b"UP\n" + body)
                sock.shutdown(1)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            return answer.decode().strip() == hashlib.sha256(body).hexdigest()

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(request, range(50)))
        assert all(results), f"{results.count(False)} of 50 request/response streams failed"
    finally:
        link.drop(0)
    mib = SIZE / (1 << 20)
    record_goodput(carrier, probability, mib / up_s, mib / down_s)


RUN: dict[str, object] = {}


def record_goodput(carrier: str, probability: float, up: float, down: float) -> None:
    """Into ``$EDGERQ_LOSS_RESULTS`` (merged: one entry per carrier and loss, each
    with the run that measured it), when set; ``bench.loss`` renders the table."""
    target = os.environ.get("EDGERQ_LOSS_RESULTS")
    if not target:
        return
    from bench.common import provenance, write_json

    if not RUN:
        RUN.update(provenance())
    path = Path(target)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("size_mib", SIZE / (1 << 20))
    data.setdefault("results", {})[f"{carrier} {probability:g}"] = {
        "carrier": carrier,
        "loss": probability,
        "up_mib_s": round(up, 2),
        "down_mib_s": round(down, 2),
        "run": dict(RUN),
    }
    write_json(path, data)
