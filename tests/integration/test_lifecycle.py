"""SIGTERM drains before it stops; SIGHUP reloads the config without a restart."""

from __future__ import annotations

import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download, upload
from tests.integration.conftest import (
    SERVICE_UUID,
    Daemon,
    Processes,
    consumer_xml,
    free_port,
    provider_xml,
    wait_for,
)

OTHER_UUID = uuid.UUID("99999999-2222-3333-4444-555555555555")


def echo_round(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "the echo stream ended early"
        got += chunk
    return got


def signal_daemon(daemon: Daemon, sig: signal.Signals) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(sig)


def exit_code(daemon: Daemon, timeout: float = 30) -> int:
    assert daemon.proc is not None
    try:
        return int(daemon.proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{daemon.command} did not exit") from None


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def sc_and_sp(
    processes: Processes, backend: HashService, grace: float = 30
) -> tuple[Daemon, Daemon, int]:
    sc = processes.start(
        "sc",
        consumer_xml(
            0,
            [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}],
            extra=f"<shutdown_grace>{grace}</shutdown_grace>",
        ),
    )
    listener, port = sc.listener_port(), sc.service_port()
    sp = processes.start(
        "sp",
        provider_xml(
            [(listener, [(SERVICE_UUID, backend.port)], None)],
            extra=f"<shutdown_grace>{grace}</shutdown_grace>",
        ),
    )
    sp.wait_registered()
    return sc, sp, port


# --- SIGTERM -------------------------------------------------------------------------


def test_sigterm_lets_open_connections_finish_and_takes_no_new_ones(
    processes: Processes, backend: HashService
) -> None:
    sc, _sp, port = sc_and_sp(processes, backend)
    with connect(port) as client:
        client.sendall(b"ECHO\n")
        assert echo_round(client, b"before") == b"before"
        signal_daemon(sc, signal.SIGTERM)
        wait_for(lambda: sc.get("/readyz") == (503, "draining: shutting down\n"), 10, "drain")
        assert refused(port)  # no new clients
        data = payload(300_000, 5)
        assert echo_round(client, data) == data  # the open one carries on
        client.shutdown(socket.SHUT_WR)
        assert client.recv(100) == b"BYE\n"
    assert exit_code(sc) == 0
    assert "drained: every connection finished" in sc.log
    assert "grace period" not in sc.log


def test_sigterm_cuts_what_is_left_after_the_grace_period(
    processes: Processes, backend: HashService
) -> None:
    sc, _sp, port = sc_and_sp(processes, backend, grace=1)
    with connect(port) as client:
        client.sendall(b"HOLD\n")
        wait_for(lambda: sc.open_connections() == 1, 10, "the SC to hold the connection")
        signal_daemon(sc, signal.SIGTERM)
        assert exit_code(sc) == 0
        client.settimeout(10)
        with pytest.raises(ConnectionResetError):
            client.recv(10)
    assert "grace period of 1 s over: cutting 1 connection(s)" in sc.log


def test_a_second_sigterm_stops_at_once(processes: Processes, backend: HashService) -> None:
    sc, _sp, port = sc_and_sp(processes, backend, grace=600)
    with connect(port) as client:
        client.sendall(b"HOLD\n")
        wait_for(lambda: sc.open_connections() == 1, 10, "the SC to hold the connection")
        signal_daemon(sc, signal.SIGTERM)
        wait_for(lambda: sc.get("/readyz") == (503, "draining: shutting down\n"), 10, "drain")
        signal_daemon(sc, signal.SIGTERM)
        assert exit_code(sc) == 0
    assert "second signal: stopping now" in sc.log


def test_a_draining_sp_hands_new_streams_to_the_other_sp(
    processes: Processes, backend: HashService
) -> None:
    sc = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}]))
    listener, port = sc.listener_port(), sc.service_port()
    xml = provider_xml(
        [(listener, [(SERVICE_UUID, backend.port)], None)],
        extra="<shutdown_grace>30</shutdown_grace>",
    )
    first = processes.start("sp", xml)
    sc.wait_serving(pipes=1, timeout=30)
    with connect(port) as held:  # only one SP yet: this stream is on the first
        held.sendall(b"ECHO\n")
        assert echo_round(held, b"x") == b"x"
        processes.start("sp", xml)
        sc.wait_serving(pipes=2, timeout=30)
        signal_daemon(first, signal.SIGTERM)
        sc.wait_log("is draining")
        for i in range(20):  # all on the second SP, none lost
            assert download(port, 20_000, i) == sha256(payload(20_000, i))
        assert first.proc is not None and first.proc.poll() is None  # still draining
        data = payload(100_000, 9)
        assert echo_round(held, data) == data
        held.shutdown(socket.SHUT_WR)
        assert held.recv(100) == b"BYE\n"
    assert exit_code(first) == 0
    assert "drained: every stream finished" in first.log


# --- SIGHUP --------------------------------------------------------------------------


def test_sighup_adds_removes_and_moves_services_and_keeps_the_pipe(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    listener, port, other_port, moved_port = free_port(), free_port(), free_port(), free_port()
    sc = processes.start(
        "sc", consumer_xml(listener, [{"uuid": SERVICE_UUID, "name": "hash", "port": port}])
    )
    sc.ready()
    # The SP offers both services; the SC knows only the first for now.
    sp = processes.start(
        "sp",
        provider_xml(
            [(listener, [(SERVICE_UUID, backend.port), (OTHER_UUID, backend.port)], None)]
        ),
    )
    sc.wait_serving(timeout=30)
    assert upload(port, b"one") == sha256(b"one")

    with connect(port) as held:  # open across the reload, on a service that moves
        held.sendall(b"ECHO\n")
        assert echo_round(held, b"x") == b"x"
        sc.config.write_text(
            consumer_xml(
                listener,
                [
                    {"uuid": SERVICE_UUID, "name": "hash", "port": moved_port},
                    {"uuid": OTHER_UUID, "name": "other", "port": other_port},
                ],
            )
        )
        signal_daemon(sc, signal.SIGHUP)
        sc.ready(count=2)  # a ready line per reload applied
        assert refused(port)
        assert upload(moved_port, b"two") == sha256(b"two")
        assert upload(other_port, b"three") == sha256(b"three")
        assert echo_round(held, b"still") == b"still"
    # The SC told the SP that the service it added is now accepted.
    sp.wait_status(
        lambda s: any(
            x["uuid"] == str(OTHER_UUID) and x["accepted"] for x in s["pipes"][0]["services"]
        ),
        f"{OTHER_UUID} accepted",
        timeout=10,
    )

    # Remove the first service: its port closes, the other stays.
    sc.config.write_text(
        consumer_xml(listener, [{"uuid": OTHER_UUID, "name": "other", "port": other_port}])
    )
    signal_daemon(sc, signal.SIGHUP)
    sc.ready(count=3)
    assert refused(moved_port)
    assert upload(other_port, b"four") == sha256(b"four")
    assert "closed after" not in sc.log  # one pipe all along
    assert sc.log.count("SP authenticated") == 1
    assert "Traceback" not in sc.log + sp.log


def test_sighup_with_an_invalid_config_keeps_the_running_one(
    processes: Processes, backend: HashService
) -> None:
    sc, _sp, port = sc_and_sp(processes, backend)
    good = sc.pinned_config()
    sc.config.write_text(good.replace("<services>", "<services><bogus/>"))
    signal_daemon(sc, signal.SIGHUP)
    sc.wait_log("reload refused")
    assert "bogus" in sc.log  # the error names what is wrong
    assert upload(port, b"fine") == sha256(b"fine")
    # A port already taken by someone else: refused too, nothing changes.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        sc.config.write_text(good.replace(f"<port>{port}</port>", f"<port>{taken}</port>"))
        signal_daemon(sc, signal.SIGHUP)
        sc.wait_log("reload refused", count=2)
    assert upload(port, b"still fine") == sha256(b"still fine")


def test_sighup_on_the_sp_points_a_service_elsewhere_without_redialing(
    processes: Processes, backend: HashService
) -> None:
    sc, sp, port = sc_and_sp(processes, backend)
    with HashService() as second:
        sp.config.write_text(sp.config.read_text().replace(str(backend.port), str(second.port)))
        signal_daemon(sp, signal.SIGHUP)
        sp.ready(count=2)  # a ready line per reload applied
        before = second.accepted
        assert upload(port, b"moved") == sha256(b"moved")
        assert second.accepted == before + 1
    assert "1 retargeted" in sp.log
    assert [p["id"] for p in sc.status()["pipes"]] == [1]  # the pipe stayed up


def test_sighup_on_the_sp_replaces_a_changed_pipe(
    processes: Processes, backend: HashService
) -> None:
    sc, sp, port = sc_and_sp(processes, backend)
    sc2 = processes.start(
        "sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}])
    )
    listener2, port2 = sc2.listener_port(), sc2.service_port()
    sp.config.write_text(
        provider_xml(
            [(listener2, [(SERVICE_UUID, backend.port)], None)],
            extra="<shutdown_grace>1</shutdown_grace>",
        )
    )
    signal_daemon(sp, signal.SIGHUP)
    sc2.wait_serving(timeout=30)
    wait_for(lambda: sc.serving() == 0, 30, "the old SC to withdraw the service")
    assert upload(port2, b"moved") == sha256(b"moved")
    wait_for(lambda: not refused(port), 1, "the old SC still listening")
