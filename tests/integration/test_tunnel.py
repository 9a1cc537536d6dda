"""Bytes through a real SC and SP on loopback arrive intact, both ways."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgerq.defaults import STREAM_WINDOW
from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download, read_all, upload
from tests.integration.conftest import Processes, Tunnel, start_tunnel, wait_for, wait_steady

SIZES = [0, 1, 64 * 1024, 50 * 1024 * 1024]


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1B", "64KiB", "50MiB"])
def test_upload_arrives_intact(any_tunnel: Tunnel, size: int) -> None:
    data = payload(size, seed=size)
    assert upload(any_tunnel.service_port, data) == sha256(data)


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1B", "64KiB", "50MiB"])
def test_download_arrives_intact(any_tunnel: Tunnel, size: int) -> None:
    assert download(any_tunnel.service_port, size, seed=7) == sha256(payload(size, 7))


def test_half_close_keeps_the_other_direction_open(any_tunnel: Tunnel) -> None:
    with connect(any_tunnel.service_port) as sock:
        sock.sendall(b"ECHO\nfirst ")
        assert sock.recv(100) == b"first "
        sock.sendall(b"second")
        sock.shutdown(socket.SHUT_WR)
        # The service still answers after our EOF, then closes its side.
        assert read_all(sock) == b"secondBYE\n"


def test_pipelined_requests_on_one_connection(any_tunnel: Tunnel) -> None:
    requests = [f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(500)]
    wire = b"".join(requests)
    with connect(any_tunnel.service_port) as sock:
        sock.sendall(b"ECHO\n" + wire)
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == wire + b"BYE\n"


def test_200_concurrent_connections_share_one_pipe(any_tunnel: Tunnel) -> None:
    def one(i: int) -> bool:
        data = payload(1000 + i * 97, seed=i)
        if i % 2:
            return upload(any_tunnel.service_port, data) == sha256(data)
        return download(any_tunnel.service_port, len(data), i) == sha256(data)

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    assert all(results), f"{results.count(False)} of 200 transfers corrupted or failed"
    assert [p["id"] for p in any_tunnel.sc.status()["pipes"]] == [1]  # one pipe carried all
    assert any_tunnel.backend.accepted >= 200


def bytes_down(admin: str) -> float:
    with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    match = re.search(
        r'^edgerq_stream_bytes_total\{direction="down",service="hash"\} (\S+)$', metrics, re.M
    )
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("carrier", ["tcp", "udp"])
def test_stalled_reader_does_not_hold_up_another_stream(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str
) -> None:
    tunnel = start_tunnel(processes, backend, carrier, tmp_path, admin=True)
    assert tunnel.sc_admin is not None
    size = 20 * 1024 * 1024
    # (No tiny SO_RCVBUF here: TCP itself then crawls at one segment per delayed ACK.)
    stalled = connect(tunnel.service_port)
    stalled.sendall(f"DOWN {size} 3\n".encode())
    # The stalled stream has used up its window once the bytes the SC passed on
    # stop growing after at least a window's worth: flow control holds the rest.
    held = wait_steady(
        lambda: bytes_down(tunnel.sc_admin or ""),
        STREAM_WINDOW,
        30,
        "the stalled stream to fill its window and stop",
    )
    assert held < size // 2, f"{held} of {size} bytes went to a client that reads nothing"
    # Another stream moves 20 MiB through the same pipe while the first one reads nothing.
    assert download(tunnel.service_port, size, seed=4) == sha256(payload(size, 4))
    # The stalled one still gets every byte once it reads.
    digest = hashlib.sha256()
    with stalled:
        while chunk := stalled.recv(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == sha256(payload(size, 3))


def test_sigterm_stops_both_daemons_cleanly(tunnel: Tunnel, processes: Processes) -> None:
    accepted = tunnel.backend.accepted
    open_client = connect(tunnel.service_port)
    open_client.sendall(b"HOLD\n")
    wait_for(lambda: tunnel.backend.accepted > accepted, 10, "the service to be connected")
    assert tunnel.sp.stop() == 0  # after the default 5 s grace period
    assert tunnel.sc.stop() == 0
    open_client.settimeout(5)
    with pytest.raises(ConnectionResetError):  # cut, and told so: not left hanging
        open_client.recv(10)
    open_client.close()
    assert "stopped" in tunnel.sc.log and "stopped" in tunnel.sp.log
    assert "Traceback" not in tunnel.sc.log + tunnel.sp.log


def test_small_requests_are_answered_while_a_bulk_transfer_runs_on_the_same_pipe(
    tunnel: Tunnel,
) -> None:
    # Bulk moves as large DATA frames: a stream that keeps the pipe busy must not
    # hold up a small one. A reader downloads 64 MiB after 64 MiB (hash-checked)
    # while echo round trips run; at least one must be answered with the same
    # download in flight at both ends, bytes flowing in between.
    size = 64 * 1024 * 1024
    lock = threading.Lock()
    progress = {"index": 0, "received": 0}
    stop = threading.Event()
    digests: list[bool] = []

    def bulk() -> None:
        while not stop.is_set():
            with connect(tunnel.service_port) as sock:
                sock.sendall(f"DOWN {size} 5\n".encode())
                digest = hashlib.sha256()
                while chunk := sock.recv(1 << 20):
                    digest.update(chunk)
                    with lock:
                        progress["received"] += len(chunk)
            digests.append(digest.hexdigest() == sha256(payload(size, 5)))
            with lock:
                progress["index"] += 1
                progress["received"] = 0

    def snapshot() -> tuple[int, int]:
        with lock:
            return progress["index"], progress["received"]

    reader = threading.Thread(target=bulk, daemon=True)
    reader.start()
    try:
        wait_for(lambda: snapshot()[1] >= 4 * 1024 * 1024, 60, "the bulk transfer to flow")
        during = 0
        for i in range(10):
            before = snapshot()
            with connect(tunnel.service_port, timeout=30) as sock:
                message = f"small request {i}".encode()
                sock.sendall(b"ECHO\n" + message)
                echoed = b""
                while len(echoed) < len(message):
                    chunk = sock.recv(100)
                    assert chunk, "the echo service closed before answering"
                    echoed += chunk
                assert echoed == message
            after = snapshot()
            if after[0] == before[0] and after[1] > before[1]:
                during += 1
        assert during, "no small request was answered while a bulk download was in flight"
    finally:
        stop.set()
        reader.join(timeout=120)
    assert not reader.is_alive()
    assert digests and all(digests), f"bulk downloads intact: {digests}"
