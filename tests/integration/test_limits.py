"""Limits against abuse, with real daemons on loopback, over both carriers.

Different source addresses are played with 127.0.0.0/8: every address in it
reaches the loopback interface, and ``from_source.py`` makes a daemon's
sockets leave from the one it is given.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgerq.errors import ProtocolError
from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download, read_all
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    carrier_settings,
    consumer_xml,
    free_port,
    provider_xml,
    wait_for,
)

FROM_SOURCE = str(Path(__file__).resolve().parent / "from_source.py")
GOAWAY = 16


def metric(admin: int, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def start_sc(
    processes: Processes,
    carrier: str,
    tmp_path: Path,
    limits: str = "",
    service: dict[str, object] | None = None,
    extra: str = "",
) -> tuple[Any, int, int, int, str]:
    """An SC with a token and an admin port: (daemon, listener, service port, admin, pipe_extra)."""
    listener_extra, pipe_extra = carrier_settings(carrier, tmp_path)
    listener, port, admin = free_port(), free_port(), free_port()
    sc = processes.start(
        "sc",
        consumer_xml(
            listener,
            [{"uuid": SERVICE_UUID, "name": "hash", "port": port, **(service or {})}],
            token="s3cret",
            extra=f"<admin><port>{admin}</port></admin><limits>{limits}</limits>{extra}",
            listener_extra=listener_extra,
        ),
    )
    sc.wait_log("accepting pipes")
    return sc, listener, port, admin, pipe_extra


def goaway_reason(data: bytes) -> str:
    """The reason of the first GOAWAY frame in ``data`` ("" when there is none)."""
    offset = 0
    while offset + 9 <= len(data):
        length, ftype, _ = struct.unpack_from(">IBI", data, offset)
        if ftype == GOAWAY:
            return data[offset + 10 : offset + 9 + length].decode(errors="replace")
        offset += 9 + length
    return ""


# --- failed authentications block a source -------------------------------------------


@pytest.mark.parametrize("carrier", ["tcp", "udp"])
def test_wrong_token_flood_from_one_source_is_blocked_while_another_registers(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str
) -> None:
    sc, listener, port, admin, pipe_extra = start_sc(
        processes,
        carrier,
        tmp_path,
        "<auth_failures>3</auth_failures><auth_window>60</auth_window><auth_block>120</auth_block>",
    )
    attacker = processes.start(
        "sp",
        provider_xml(
            [(listener, [(SERVICE_UUID, backend.port)], "Wr0ng-t0ken")], pipe_extra=pipe_extra
        ),
        prefix=[sys.executable, FROM_SOURCE, "127.0.0.2"],
    )
    sc.wait_log("source 127.0.0.2 blocked for 120 s after 3 failed authentications", timeout=30)
    # The attacker keeps redialling; from now on it is turned away before any handshake.
    wait_for(
        lambda: metric(admin, "edgerq_limit_hits_total", '{limit="auth_blocked"}') >= 1,
        30,
        "a refused pipe from the blocked source",
    )
    if carrier == "tcp":
        attacker.wait_log("too many failed authentications from 127.0.0.2", timeout=30)
    # A correct SP at another address is not affected.
    processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")], pipe_extra=pipe_extra),
    )
    sc.wait_log("now serve it", timeout=30)
    assert download(port, 100_000) == sha256(payload(100_000))
    log = sc.log
    # No handshake after the block (each failure is one line from the pipe, one from the SC).
    assert log.count("closed before authenticating: SP's token proof is wrong") == 3
    assert log.count("blocked for 120 s") == 1  # one line per block, not per attempt
    assert "127.0.0.2" in log and "Wr0ng" not in log
    assert metric(admin, "edgerq_auth_blocks_total") == 1
    assert metric(admin, "edgerq_auth_blocked_sources") == 1
    assert metric(admin, "edgerq_auth_failures_total") == 3


def test_fast_wrong_token_flood_on_tcp_is_cut_off_before_the_handshake(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    from tests.integration.fake_peer import FakeProvider

    sc, listener, port, admin, _ = start_sc(
        processes, "tcp", tmp_path, "<auth_failures>3</auth_failures>"
    )
    reasons = []
    for _ in range(20):
        fake = FakeProvider(listener, b"wrong", source="127.0.0.3")
        try:
            fake.authenticate()
            reasons.append("authenticated?!")
        except (ProtocolError, ConnectionError) as exc:
            reasons.append(str(exc))
        finally:
            fake.close()
    assert sum("token proof is wrong" in r for r in reasons) == 3, reasons
    assert sum("too many failed authentications from 127.0.0.3" in r for r in reasons) == 17
    assert sc.log.count("closed before authenticating: SP's token proof is wrong") == 3
    assert metric(admin, "edgerq_limit_hits_total", '{limit="auth_blocked"}') == 17
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]))
    sc.wait_log("now serve it", timeout=30)
    assert download(port, 10_000) == sha256(payload(10_000))


# --- pipes that never authenticate ---------------------------------------------------


def test_half_open_handshakes_are_bounded_and_dropped_on_tcp(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    sc, listener, port, admin, _ = start_sc(
        processes,
        "tcp",
        tmp_path,
        "<unauthenticated_pipes>4</unauthenticated_pipes><handshake_timeout>2</handshake_timeout>",
    )
    silent = []
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", listener), timeout=15)
        silent.append(sock)
    sp = processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]))
    reasons = []
    for sock in silent:
        with sock, contextlib.suppress(ConnectionResetError):
            reasons.append(goaway_reason(read_all(sock)))
    assert reasons.count("too many pipes are authenticating; try again later") >= 6, reasons
    assert reasons.count("handshake not completed in time") == 4, reasons
    sc.wait_log("now serve it", timeout=40)
    assert download(port, 100_000) == sha256(payload(100_000))
    assert sc.log.count("pipes are authenticating (unauthenticated_pipes)") >= 1
    assert sc.log.count("closed before authenticating: handshake not completed in time") == 4
    assert metric(admin, "edgerq_limit_hits_total", '{limit="unauthenticated_pipes"}') >= 6
    assert sp.proc is not None and sp.proc.poll() is None


def quic_silent_clients(port: int, count: int, connect_wait: float, patience: float) -> list[str]:
    """Open ``count`` QUIC connections that never say HELLO; how each one ended."""
    script = str(Path(__file__).resolve().parent / "quic_silent.py")
    done = subprocess.run(
        [sys.executable, script, str(port), str(count), str(connect_wait), str(patience)],
        capture_output=True,
        text=True,
        timeout=connect_wait + patience + 30,
        check=True,
    )
    return done.stdout.splitlines()


def test_half_open_handshakes_are_bounded_and_dropped_on_udp(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    sc, listener, port, admin, pipe_extra = start_sc(
        processes,
        "udp",
        tmp_path,
        "<unauthenticated_pipes>3</unauthenticated_pipes><handshake_timeout>8</handshake_timeout>",
    )
    outcomes = quic_silent_clients(listener, 8, connect_wait=4, patience=20)
    answered = [o for o in outcomes if o != "not answered"]
    # Never more than the limit at once: the rest were dropped at their first datagram.
    assert 1 <= len(answered) <= 3, outcomes
    assert all(o == "handshake not completed in time" for o in answered), outcomes
    assert metric(admin, "edgerq_limit_hits_total", '{limit="unauthenticated_pipes"}') >= 5
    processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")], pipe_extra=pipe_extra),
    )
    sc.wait_log("now serve it", timeout=40)
    assert download(port, 100_000) == sha256(payload(100_000))
    assert sc.log.count("pipes are authenticating (unauthenticated_pipes)") >= 1


# --- idle clients --------------------------------------------------------------------


def closed_by_peer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the SC still sends, up to its close (fails after ``timeout``)."""
    sock.settimeout(timeout)
    try:
        return read_all(sock)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize(("carrier", "kind"), [("tcp", "http"), ("udp", "http"), ("tcp", "tcp")])
def test_slowloris_holds_no_more_than_max_connections_and_idle_timeout_frees_them(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str, kind: str
) -> None:
    sc, listener, port, admin, pipe_extra = start_sc(
        processes,
        carrier,
        tmp_path,
        service={"type": kind, "max_connections": 2, "request_ttl": 1, "idle_timeout": 3},
    )
    processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")], pipe_extra=pipe_extra),
    )
    sc.wait_log("now serve it", timeout=30)
    holders = [connect(port, timeout=15) for _ in range(2)]
    wait_for(lambda: backend.accepted >= 2, 10, "both slots held up to the service")
    extras = [connect(port, timeout=15) for _ in range(3)]
    for sock in extras:  # over max_connections: 503 (http) or closed once request_ttl runs out
        with sock:
            answer = closed_by_peer(sock, 15)
        if kind == "http":
            assert answer.startswith(b"HTTP/1.1 503") and b"max_connections (2)" in answer
        else:
            assert answer == b""
    for sock in holders:  # silent: at idle_timeout, http says 408 (no request came), tcp is cut
        with sock:
            answer = closed_by_peer(sock, 15)
        if kind == "http":
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
            assert b"no request within idle_timeout (3 s)" in answer
        else:
            assert answer == b""
    sc.wait_log("idle timeout (3 s without a byte either way)", count=2)
    assert download(port, 100_000) == sha256(payload(100_000))  # the slots are free again
    assert metric(admin, "edgerq_streams_total", '{outcome="idle_timeout",service="hash"}') == 2
    assert metric(admin, "edgerq_streams_total", '{outcome="503",service="hash"}') == 3


def test_an_http_request_the_service_never_answers_gets_504_at_idle_timeout(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    sc, listener, port, _, _ = start_sc(
        processes, "tcp", tmp_path, service={"type": "http", "idle_timeout": 1}
    )
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]))
    sc.wait_log("now serve it", timeout=30)
    with connect(port, timeout=15) as sock:
        sock.sendall(b"HOLD\n")  # the service reads it and never answers
        answer = closed_by_peer(sock, 15)
    assert answer.startswith(b"HTTP/1.1 504 Gateway Timeout"), answer
    assert b"no answer within idle_timeout (1 s)" in answer
    sc.wait_log("idle timeout (1 s without a byte either way)")


def test_a_connection_that_keeps_talking_outlives_idle_timeout(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    sc, listener, port, _, _ = start_sc(processes, "tcp", tmp_path, service={"idle_timeout": 1})
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]))
    sc.wait_log("now serve it", timeout=30)
    with connect(port, timeout=15) as sock:
        sock.sendall(b"ECHO\n")
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 3.5:  # three and a half idle_timeouts of chatter
            sock.sendall(b"x")
            sent += 1
            echoed = b""
            while len(echoed) < 1:
                echoed += sock.recv(10)
            assert echoed == b"x"
            time.sleep(0.3)
        assert "idle timeout" not in sc.log
        # Silence from now on: the SC closes it.
        assert closed_by_peer(sock, 15) == b""
    sc.wait_log("idle timeout (1 s without a byte either way)")
    assert sent >= 5


def test_provider_idle_timeout_closes_the_service_side(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    sc, listener, port, _, _ = start_sc(processes, "tcp", tmp_path)
    sp = processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]).replace(
            "</port></service>", "</port><idle_timeout>1</idle_timeout></service>"
        ),
    )
    sc.wait_log("now serve it", timeout=30)
    with connect(port, timeout=15) as sock:
        sock.sendall(b"HOLD\n")
        assert closed_by_peer(sock, 15) == b""
    sp.wait_log("idle timeout (1 s without a byte either way)")
    assert download(port, 10_000) == sha256(payload(10_000))
