"""Bad input and failures: a clear log line, no crash, nothing lost for anyone else."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
import uuid
from pathlib import Path

from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download, read_all
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    Tunnel,
    consumer_xml,
    free_port,
    provider_xml,
    wait_for,
)
from tests.integration.fake_peer import FakeProvider

HTTP_GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def http_status(port: int, request: bytes = HTTP_GET) -> tuple[int, bytes]:
    with connect(port, timeout=20) as sock:
        sock.sendall(request)
        response = read_all(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def start_sc(
    processes: Processes,
    services: list[dict[str, object]],
    token: str | None,
    listener: int | None = None,
    env: dict[str, str] | None = None,
):
    """An SC on its own listener port (0 unless given), ready; (SC, listener port).
    A service given port 0 binds any free one: ``sc.service_port()``."""
    sc = processes.start("sc", consumer_xml(listener or 0, services, token=token), env)
    return sc, sc.listener_port()


def test_wrong_token_is_refused_and_nothing_registers(
    processes: Processes, backend: HashService
) -> None:
    sc, listener = start_sc(
        processes,
        [{"uuid": SERVICE_UUID, "port": 0, "type": "http", "request_ttl": 1}],
        token="right",
    )
    port = sc.service_port()
    sp = processes.start(
        "sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "Tok3n-Wr0ng-xyz")])
    )
    sc.wait_log("token proof is wrong")
    sp.wait_log("refused")
    status, body = http_status(port)
    assert status == 502 and b"no SP has registered" in body
    assert sc.metric('edgerq_registrations_total{result="accepted"}') == 0  # none ever
    assert "Tok3n-Wr0ng" not in sc.log + sp.log  # the token never shows in logs


def test_sp_without_token_is_refused_by_an_sc_with_one(
    processes: Processes, backend: HashService
) -> None:
    sc, listener = start_sc(processes, [{"uuid": SERVICE_UUID, "port": 0}], "t0k")
    sp = processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
    sp.wait_log("the SC requires a token and none is configured")
    assert sc.metric('edgerq_registrations_total{result="accepted"}') == 0  # none ever


def test_token_from_environment(processes: Processes, backend: HashService) -> None:
    sc, listener = start_sc(
        processes,
        [{"uuid": SERVICE_UUID, "port": 0}],
        None,
        env={"EDGERQ_AUTH_TOKEN": "from-env"},
    )
    port = sc.service_port()
    processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]),
        env={"EDGERQ_AUTH_TOKEN": "from-env"},
    )
    sc.wait_serving()
    assert "token from EDGERQ_AUTH_TOKEN" in sc.log
    assert download(port, 1000) == sha256(payload(1000))


def test_unknown_uuid_is_answered_and_logged(processes: Processes, backend: HashService) -> None:
    stranger = uuid.UUID("99999999-8888-7777-6666-555555555555")
    sc, listener = start_sc(processes, [{"uuid": SERVICE_UUID, "port": 0}], None)
    port = sc.service_port()
    sp = processes.start(
        "sp",
        provider_xml([(listener, [(stranger, backend.port), (SERVICE_UUID, backend.port)], None)]),
    )
    sc.wait_log(f"SP offers service {stranger}, which this SC does not configure")
    sp.wait_log("the SC does not know service")
    sc.wait_serving()
    assert download(port, 5000) == sha256(payload(5000))  # the known one still works


def test_service_down_gives_502_for_http(processes: Processes) -> None:
    dead_port = free_port()  # nothing listens here
    sc, listener = start_sc(processes, [{"uuid": SERVICE_UUID, "port": 0, "type": "http"}], None)
    port = sc.service_port()
    sp = processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, dead_port)], None)]))
    sc.wait_serving()
    status, body = http_status(port)
    assert status == 502
    assert b"connection refused" in body.lower()
    sp.wait_log("connection refused")


def test_service_down_closes_a_tcp_client(processes: Processes) -> None:
    sc, listener = start_sc(processes, [{"uuid": SERVICE_UUID, "port": 0}], None)
    port = sc.service_port()
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, free_port())], None)]))
    sc.wait_serving()
    with connect(port, timeout=10) as sock:
        sock.sendall(b"hello")
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
    sc.wait_log("unreachable")


def test_no_provider_gives_502_after_request_ttl(processes: Processes) -> None:
    sc, _listener = start_sc(
        processes,
        [{"uuid": SERVICE_UUID, "port": 0, "type": "http", "request_ttl": "0.5"}],
        None,
    )
    port = sc.service_port()
    status, body = http_status(port)
    assert status == 502
    assert body.startswith(b"edgerq: no SP has registered service")


def test_over_max_connections_gives_503(processes: Processes, backend: HashService) -> None:
    sc, listener = start_sc(
        processes,
        [
            {
                "uuid": SERVICE_UUID,
                "port": 0,
                "type": "http",
                "max_connections": 1,
                "request_ttl": 1,
            }
        ],
        None,
    )
    port = sc.service_port()
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
    sc.wait_serving()
    with connect(port) as holder:
        holder.sendall(b"HOLD\n")
        wait_for(lambda: sc.open_connections() == 1, 10, "the holder to take the only slot")
        status, body = http_status(port)
        assert status == 503 and b"max_connections" in body
    # Once the slot is free the service answers again.
    assert download(port, 100) == sha256(payload(100))


def test_service_not_reached_in_time_gives_504(processes: Processes) -> None:
    sc, listener = start_sc(
        processes, [{"uuid": SERVICE_UUID, "port": 0, "type": "http", "request_ttl": 1}], None
    )
    port = sc.service_port()
    fake = FakeProvider(listener)  # registers, then never answers OPEN
    try:
        fake.authenticate()
        fake.register(SERVICE_UUID)
        status, body = http_status(port)
        assert status == 504 and b"request_ttl" in body
    finally:
        fake.close()


def test_random_bytes_at_the_pipe_listener(tunnel: Tunnel) -> None:
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", tunnel.listener_port), timeout=10) as s:
            s.sendall(os.urandom(20000))
            with contextlib.suppress(ConnectionResetError):
                read_all(s)
    tunnel.sc.wait_log("not an edgerq pipe", count=1)
    assert download(tunnel.service_port, 100_000) == sha256(payload(100_000))
    assert tunnel.sc.proc is not None and tunnel.sc.proc.poll() is None


def test_malformed_and_oversized_frames_close_only_that_pipe(tunnel: Tunnel) -> None:
    cases = [
        struct.pack(">IBI", 0, 200, 0),  # unknown frame type
        struct.pack(">IBI", 0x7FFFFFFF, 12, 1),  # frame far beyond the limit
        struct.pack(">IBI", 3, 5, 0) + b"xyz",  # truncated REGISTER body
    ]
    for bad in cases:
        fake = FakeProvider(tunnel.listener_port, b"s3cret")
        fake.authenticate()
        fake.sock.sendall(bad)
        assert fake.closed_by_peer(), f"SC kept a pipe open after {bad!r}"
        fake.close()
    tunnel.sc.wait_log("unknown frame type 200")
    tunnel.sc.wait_log("exceeds the limit")
    tunnel.sc.wait_log("register length does not match its count")
    assert download(tunnel.service_port, 100_000) == sha256(payload(100_000))


def test_unauthenticated_peer_cannot_send_large_frames(tunnel: Tunnel) -> None:
    with socket.create_connection(("127.0.0.1", tunnel.listener_port), timeout=10) as s:
        s.sendall(struct.pack(">IBI", 1 << 20, 1, 0))
        assert read_all(s) != b"x"
    tunnel.sc.wait_log("exceeds the limit of 4096")


def test_sp_killed_mid_transfer_closes_clients_promptly(
    tunnel: Tunnel, processes: Processes, backend: HashService
) -> None:
    victim = connect(tunnel.service_port, timeout=15)
    victim.sendall(f"DOWN {200 * 1024 * 1024} 1\n".encode())
    assert victim.recv(1000)
    tunnel.sp.kill()
    started = time.monotonic()
    try:
        while victim.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    victim.close()
    assert time.monotonic() - started < 14, "client was left hanging after the SP died"
    wait_for(lambda: tunnel.sc.serving() == 0, 15, "the SC to withdraw the dead SP's pipe")
    assert "services withdrawn: hash" in tunnel.sc.log  # and says which
    # A new SP takes over; new connections work again.
    processes.start("sp", tunnel.sp.config.read_text())
    tunnel.sc.wait_serving()  # the old pipe's registration was withdrawn above
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))


def test_sc_restarted_while_sp_runs(tunnel: Tunnel, processes: Processes) -> None:
    assert download(tunnel.service_port, 1000) == sha256(payload(1000))
    held = connect(tunnel.service_port)
    held.sendall(b"HOLD\n")
    wait_for(
        lambda: tunnel.sp.status()["pipes"][0]["streams_open"] == 1,
        10,
        "the SP to hold the stream open",
    )
    tunnel.sc.kill()
    held.close()
    # The SP's side of the held stream is closed with the pipe, not left open.
    wait_for(lambda: tunnel.backend.open == 0, 15, "the service's connection to be closed")
    wait_for(lambda: tunnel.sp.get("/readyz")[0] == 503, 15, "the SP to know it has no pipe")
    sc2 = processes.start("sc", tunnel.sc.pinned_config())
    sc2.wait_serving(timeout=40)
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))


def test_sp_first_then_sc(processes: Processes, backend: HashService) -> None:
    listener = free_port()  # the SP dials it before anything listens there
    sp = processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
    sp.wait_log("cannot connect")
    sc = processes.start("sc", consumer_xml(listener, [{"uuid": SERVICE_UUID, "port": 0}]))
    port = sc.service_port()
    sc.wait_serving(timeout=40)
    assert download(port, 10_000) == sha256(payload(10_000))


def test_frozen_sc_is_noticed_by_heartbeat(tunnel: Tunnel) -> None:
    assert tunnel.sc.proc is not None
    os.kill(tunnel.sc.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        tunnel.sp.wait_log("no heartbeat", timeout=15)
        noticed = time.monotonic() - started
    finally:
        os.kill(tunnel.sc.proc.pid, signal.SIGCONT)
    assert noticed < 12, f"dead pipe noticed only after {noticed:.1f} s"
    # Registered again (the stale pipe may still count as serving at the SC).
    wait_for(
        lambda: tunnel.sc.metric('edgerq_registrations_total{result="accepted"}') >= 2,
        40,
        "the SP's second registration",
    )
    assert download(tunnel.service_port, 1000) == sha256(payload(1000))


def test_two_hop_chain(processes: Processes, backend: HashService) -> None:
    # SC1 <- SP1 -> SC2 <- SP2 -> service; SP1's service is SC2's service port.
    sc1 = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    sc2 = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    l1, p1, l2, p2 = (
        sc1.listener_port(),
        sc1.service_port(),
        sc2.listener_port(),
        sc2.service_port(),
    )
    processes.start("sp", provider_xml([(l2, [(SERVICE_UUID, backend.port)], None)]))
    processes.start("sp", provider_xml([(l1, [(SERVICE_UUID, p2)], None)]))
    sc1.wait_serving(timeout=30)
    sc2.wait_serving(timeout=30)
    size = 5 * 1024 * 1024
    assert download(p1, size, 9) == sha256(payload(size, 9))


def test_invalid_config_exits_1_with_file_and_line(processes: Processes, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text(
        "<service_consumer>\n<listener><port>99999</port></listener>\n</service_consumer>\n"
    )
    daemon = processes.start("sc", bad.read_text())
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=20) == 1
    wait_for(lambda: ":2:" in daemon.log, 5, "file:line in the error")
    assert "99999" in daemon.log and "Traceback" not in daemon.log
