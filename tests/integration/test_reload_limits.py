"""``streams_per_pipe`` on a live pipe, and reloads that change only ``<limits>``
(issue 12, findings 6 and the qh3 item): the limit in force is the configured one,
on both carriers, before and after a reload, at both daemons."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.integration.backends import HashService, sha256
from tests.integration.clients import connect, upload
from tests.integration.conftest import (
    SERVICE_UUID,
    Daemon,
    Processes,
    provider_xml,
    start_consumer,
)
from tests.integration.test_limits import FROM_SOURCE, metric, start_sc


def held_stream(port: int) -> socket.socket:
    """A connection whose stream reached the service (an echo came back)."""
    sock = connect(port, timeout=30)
    sock.sendall(b"ECHO\nx")
    assert sock.recv(1) == b"x", "a stream within streams_per_pipe was not served"
    return sock


def is_refused(port: int) -> bool:
    """True when the tunnel closes the connection without serving it (the SP refused
    the stream); False when the service answers. A connection held open (neither)
    times out and fails the test. The refusal may reset the connection before
    connect() returns on a busy machine: that too is a refusal."""
    try:
        with connect(port, timeout=30) as sock:
            sock.sendall(b"ECHO\nx")
            return sock.recv(1) != b"x"
    except ConnectionResetError:
        return True


def provider(limit: int, listener: int, backend: HashService, pipe_extra: str) -> str:
    return provider_xml(
        [(listener, [(SERVICE_UUID, backend.port)], "s3cret")],
        pipe_extra=pipe_extra,
        extra=f"<limits><streams_per_pipe>{limit}</streams_per_pipe></limits>",
    )


def start(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str, limit: int
) -> tuple[Daemon, Daemon, int]:
    consumer = start_consumer(processes, carrier, tmp_path)
    sp = processes.start(
        "sp", provider(limit, consumer.listener_port, backend, consumer.pipe_extra)
    )
    consumer.sc.wait_log("now serve it", timeout=30)
    return consumer.sc, sp, consumer.service_port


@pytest.mark.parametrize("carrier", ["udp", "tcp"])
def test_a_live_pipe_carries_exactly_streams_per_pipe(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str
) -> None:
    """udp: the QUIC stream limit follows streams_per_pipe (qh3 fixes 100; edgerq
    patches it), and one stream past it is refused, not held by QUIC."""
    sc, sp, port = start(processes, backend, tmp_path, carrier, limit=5)
    held = [held_stream(port) for _ in range(5)]
    assert is_refused(port)
    sp.wait_log("carries its limit of 5 concurrent streams")
    held.pop().close()  # a slot frees up once that stream has ended
    sp.wait_log(": ok", timeout=30)  # the SP ended that stream
    assert upload(port, b"after") == sha256(b"after")
    for sock in held:
        sock.close()
    assert sc.log.count("authenticated") == 1  # all on the same pipe


@pytest.mark.parametrize("carrier", ["udp", "tcp"])
def test_an_sp_reload_that_lowers_streams_per_pipe_applies_to_the_pipe_up(
    processes: Processes, backend: HashService, tmp_path: Path, carrier: str
) -> None:
    """Before: a reload that changed only <limits> left every pipe on its old limit."""
    sc, sp, port = start(processes, backend, tmp_path, carrier, limit=5)
    held = [held_stream(port) for _ in range(3)]
    sp.config.write_text(
        sp.config.read_text().replace("<streams_per_pipe>5<", "<streams_per_pipe>3<")
    )
    assert sp.proc is not None
    sp.proc.send_signal(signal.SIGHUP)
    sp.wait_log("0 pipe(s) (re)started, 0 retargeted, 0 removed, 1 unchanged")
    sp.wait_log("streams_per_pipe 3, control_backlog")
    assert is_refused(port)  # 3 open: at the new limit (the old one allowed 5)
    sp.wait_log("carries its limit of 3 concurrent streams")
    for sock in held:
        sock.close()
    sp.wait_log(": ok", count=3, timeout=30)  # the SP ended those streams
    assert upload(port, b"after") == sha256(b"after")
    assert sc.log.count("authenticated") == 1  # the pipe stayed up


def test_an_sc_reload_that_changes_only_limits_applies_at_once(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    """auth_failures lowered by a reload: the next wrong token from a source blocks it."""
    sc, listener, port, admin, pipe_extra = start_sc(
        processes, "tcp", tmp_path, "<auth_failures>50</auth_failures>"
    )
    processes.start("sp", provider(16, listener, backend, pipe_extra))
    sc.wait_log("now serve it", timeout=30)
    sc.config.write_text(
        sc.config.read_text().replace(
            "<auth_failures>50</auth_failures>",
            "<auth_failures>1</auth_failures><auth_block>120</auth_block>",
        )
    )
    assert sc.proc is not None
    sc.proc.send_signal(signal.SIGHUP)
    sc.wait_log("reload: new limits")
    processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], "Wr0ng")], pipe_extra=pipe_extra),
        prefix=[sys.executable, FROM_SOURCE, "127.0.0.2"],
    )
    sc.wait_log("source 127.0.0.2 blocked for 120 s after 1 failed authentications", timeout=30)
    assert metric(admin, "edgerq_auth_blocks_total") == 1
    assert upload(port, b"still") == sha256(b"still")  # the pipe up is not affected
