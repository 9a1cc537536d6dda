"""The udp carrier: certificate checks, hostile datagrams, aborted streams, restarts."""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    Tunnel,
    carrier_settings,
    consumer_xml,
    provider_xml,
    start_consumer,
    start_provider,
    start_tunnel,
    wait_for,
    wait_steady,
)
from tests.integration.test_topologies import rss_kib


def udp_tunnel(processes: Processes, backend: HashService, tmp_path: Path) -> Tunnel:
    return start_tunnel(processes, backend, "udp", tmp_path)


def test_wrong_pinned_fingerprint_is_refused_with_both_values(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    listener_extra, _ = carrier_settings("udp", tmp_path)
    sc = processes.start(
        "sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}], listener_extra=listener_extra)
    )
    listener = sc.listener_port("udp")
    wrong = ":".join(["AB"] * 32)
    sp = processes.start(
        "sp",
        provider_xml(
            [(listener, [(SERVICE_UUID, backend.port)], None)],
            pipe_extra=f"<protocol>udp</protocol><server_fingerprint>{wrong}</server_fingerprint>",
        ),
    )
    sp.wait_log("does not match the pinned fingerprint")
    line = next(x for x in sp.log.splitlines() if "does not match" in x)
    assert f"expected {wrong}" in line
    assert "received " in line and "received none" not in line
    assert sc.metric('edgerq_registrations_total{result="accepted"}') == 0  # none ever


def test_generated_certificate_is_kept_next_to_the_config(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    sc = processes.start(
        "sc",
        consumer_xml(
            0, [{"uuid": SERVICE_UUID, "port": 0}], listener_extra="<protocol>udp</protocol>"
        ),
    )
    sc.ready()
    cert = sc.config.parent / "edgerq-sc-cert.pem"
    assert cert.exists() and (sc.config.parent / "edgerq-sc-key.pem").exists()
    assert "generated a self-signed certificate" in sc.log
    first = cert.read_bytes()
    sc.stop()
    again = processes.start("sc", sc.config.read_text())
    again.ready()
    assert cert.read_bytes() == first  # kept, not regenerated
    assert (sc.config.parent / "edgerq-sc-key.pem").stat().st_mode & 0o077 == 0


def test_random_datagrams_do_not_hurt_the_sc(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    tunnel = udp_tunnel(processes, backend, tmp_path)
    assert tunnel.sc.proc is not None
    before = rss_kib(tunnel.sc.proc.pid)
    rng = random.Random(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(3000):
            kind = i % 3
            if kind == 0:  # garbage of any size
                data = rng.randbytes(rng.randint(0, 1500))
            elif kind == 1:  # looks like a long-header Initial, truncated or padded
                data = bytes([0xC0 | rng.randint(0, 15)]) + struct.pack(">I", 1)
                data += bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8)
                data += os.urandom(rng.randint(0, 1300))
            else:  # short header with a random connection id
                data = bytes([0x40 | rng.randint(0, 63)]) + os.urandom(rng.randint(1, 200))
            s.sendto(data, ("127.0.0.1", tunnel.listener_port))
            if i % 500 == 0:
                time.sleep(0.05)
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))
    grown = rss_kib(tunnel.sc.proc.pid) - before
    assert grown < 32 * 1024, f"SC grew by {grown} KiB after 3000 hostile datagrams"
    assert tunnel.sc.proc.poll() is None
    assert "Traceback" not in tunnel.sc.log


def test_aborted_streams_give_their_slots_back(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    tunnel = udp_tunnel(processes, backend, tmp_path)
    # More aborted connections than the pipe's concurrent stream limit (100 in qh3):
    # if a reset stream kept its slot, the pipe would stall for good.
    for i in range(250):
        sock = connect(tunnel.service_port)
        sock.sendall(f"DOWN {4 << 20} {i}\n".encode())
        sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST mid-transfer
    assert download(tunnel.service_port, 1 << 20, 7) == sha256(payload(1 << 20, 7))
    # Every aborted stream was closed and logged at the SC (one line per stream).
    wait_for(lambda: tunnel.sc.log.count("service 'hash':") >= 251, 15, "a line for every stream")


def test_server_speaks_first_through_udp(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    # A protocol where the service talks first (SMTP, SSH banners): the OPEN message
    # makes the QUIC stream visible to the SP before the client sends anything.
    banner = socket.create_server(("127.0.0.1", 0))
    banner_port = banner.getsockname()[1]

    def serve_banner() -> None:
        conn, _ = banner.accept()
        with conn:
            conn.sendall(b"220 edgerq test ready\r\n")
            conn.recv(100)

    thread = threading.Thread(target=serve_banner, daemon=True)
    thread.start()
    consumer = start_consumer(processes, "udp", tmp_path)
    start_provider(processes, consumer, banner_port)
    with connect(consumer.service_port, timeout=10) as sock:
        assert sock.recv(100) == b"220 edgerq test ready\r\n"  # before we said anything
    thread.join(10)
    banner.close()


def test_sc_restart_over_udp(processes: Processes, backend: HashService, tmp_path: Path) -> None:
    tunnel = udp_tunnel(processes, backend, tmp_path)
    assert download(tunnel.service_port, 1000) == sha256(payload(1000))
    tunnel.sc.kill()
    started = time.monotonic()
    tunnel.sp.wait_log("pipe closed", timeout=15)
    noticed = time.monotonic() - started
    assert noticed < 12, f"dead SC noticed after {noticed:.1f} s"
    sc2 = processes.start("sc", tunnel.sc.pinned_config())
    sc2.wait_serving(timeout=60)
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))


def test_sp_redials_at_once_when_the_restarted_sc_does_not_know_its_pipe(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    """An SC restarted on the same port tells the SP its QUIC connection is gone,
    so the SP redials without waiting out its 8 s heartbeat timeout."""
    tunnel = udp_tunnel(processes, backend, tmp_path)
    assert download(tunnel.service_port, 1000) == sha256(payload(1000))
    tunnel.sc.kill()
    killed = time.monotonic()
    sc2 = processes.start("sc", tunnel.sc.pinned_config())
    sc2.ready(timeout=60)
    sc2.wait_serving(timeout=60)
    healed = time.monotonic() - killed
    sp_log, sc_log = tunnel.sp.log, sc2.log
    assert "the SC does not know this connection (restarted?)" in sp_log
    assert "heartbeat timeout" not in sp_log, "the SP waited for its heartbeat timeout"
    assert "for a connection this SC does not know" in sc_log
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))
    print(f"\nudp SC restart: pipe registered again {healed:.1f} s after the kill")


def test_a_restarted_sp_supersedes_its_dead_pipe_at_once(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    """A killed udp SP says nothing; when it comes back under the same pipe name,
    the SC closes the old, silent pipe instead of waiting out its heartbeat
    timeout, so the streams that hung on it are reset."""
    tunnel = udp_tunnel(processes, backend, tmp_path)
    accepted = backend.accepted
    with connect(tunnel.service_port, timeout=30) as held:
        held.sendall(b"HOLD\n")
        wait_for(lambda: backend.accepted > accepted, 10, "the held stream at the service")
        tunnel.sp.kill()
        sp2 = processes.start("sp", tunnel.sp.config.read_text())
        sp2.wait_registered(timeout=30)
        try:
            cut = held.recv(100)
        except ConnectionResetError:
            cut = b"reset"
    assert cut == b"reset", f"the held connection ended with {cut!r}, not a reset"
    sc_log = tunnel.sc.log
    assert "from the same SP, silent for" in sc_log and "closing (its SP restarted)" in sc_log
    assert "no heartbeat" not in sc_log, "the SC waited for the heartbeat timeout"
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))


def test_notices_naming_another_connection_do_not_close_a_quiet_pipe(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    """Forged notices, from anyone who cannot see the pipe's connection id, change
    nothing even while the pipe is quiet (its SC stopped for 3 s, not restarted)."""
    import re
    import signal

    from edgerq.carriers.quic import gone_notice
    from edgerq.carriers.quic.pipe import FORGOTTEN_AFTER

    tunnel = udp_tunnel(processes, backend, tmp_path)
    sp_ports = {
        int(port) for port in re.findall(r"\(127\.0\.0\.1:(\d+)\): SP authenticated", tunnel.sc.log)
    }
    assert sp_ports, tunnel.sc.log
    assert tunnel.sc.proc is not None
    tunnel.sc.proc.send_signal(signal.SIGSTOP)
    try:
        # The time is the subject here: the SP believes a notice only once its pipe
        # has been quiet this long, and no signal shows how long it has been.
        time.sleep(FORGOTTEN_AFTER + 0.5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            for _ in range(50):
                for port in sp_ports:
                    forged = gone_notice.MAGIC + random.randbytes(gone_notice.CONNECTION_ID_LENGTH)
                    forger.sendto(forged, ("127.0.0.1", port))
        time.sleep(1.0)  # for the SP to read them while still quiet (nothing to observe)
    finally:
        tunnel.sc.proc.send_signal(signal.SIGCONT)
    assert download(tunnel.service_port, 1 << 20) == sha256(payload(1 << 20))
    assert "does not know this connection" not in tunnel.sp.log
    assert [p["id"] for p in tunnel.sc.status()["pipes"]] == [1]  # never redialed


def test_initial_flood_gets_no_amplified_answers(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    import ssl

    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection

    tunnel = udp_tunnel(processes, backend, tmp_path)
    assert tunnel.sc.proc is not None
    before = rss_kib(tunnel.sc.proc.pid)
    sockets = []
    sent: dict[int, int] = {}
    for _ in range(300):  # real Initial packets, each from a fresh source port
        client = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True, alpn_protocols=["edgerq/1"], verify_mode=ssl.CERT_NONE
            )
        )
        client.connect(("127.0.0.1", tunnel.listener_port), now=time.monotonic())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for data, _ in client.datagrams_to_send(now=time.monotonic()):
            sock.sendto(data, ("127.0.0.1", tunnel.listener_port))
            sent[sock.fileno()] = sent.get(sock.fileno(), 0) + len(data)
        sockets.append(sock)
    received = dict.fromkeys(sent, 0)

    def answered() -> float:
        for sock in sockets:
            while True:
                try:
                    received[sock.fileno()] += len(sock.recv(65536))
                except BlockingIOError:
                    break
        return sum(received.values())

    # Until the SC has said all it will (its answers stop), not a guessed pause.
    wait_steady(answered, 0, 30, "the SC's answers to stop")
    worst = max(received[fd] / sent[fd] for fd in sent)
    for sock in sockets:
        sock.close()
    # RFC 9000 §8.1: at most three times what an unvalidated address sent.
    assert worst <= 3.0, f"an unvalidated source got {worst:.1f}x the bytes it sent"
    assert download(tunnel.service_port, 100_000) == sha256(payload(100_000))
    grown = rss_kib(tunnel.sc.proc.pid) - before
    assert grown < 32 * 1024, f"SC grew by {grown} KiB after 300 Initial packets"


def test_plain_text_and_unknown_short_headers_get_no_answer(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    """Only connection ids this SC's key tagged get a notice: text, scans and
    random ids (which look like QUIC short headers) are met with silence."""
    tunnel = udp_tunnel(processes, backend, tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.5)
        s.sendto(b"GET / HTTP/1.0\r\n\r\n" * 80, ("127.0.0.1", tunnel.listener_port))
        for _ in range(200):
            data = bytes([0x40 | random.randint(0, 63)]) + os.urandom(random.randint(40, 1200))
            s.sendto(data, ("127.0.0.1", tunnel.listener_port))
        with pytest.raises(TimeoutError):
            answer = s.recv(2048)
            pytest.fail(f"the SC answered: {answer[:40]!r}")
    assert "does not know" not in tunnel.sc.log


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one SC takes every example
)
@given(datagrams=st.lists(st.binary(min_size=0, max_size=1500), min_size=1, max_size=20))
def test_arbitrary_datagrams_never_break_the_listener(
    udp_fuzz_target: Tunnel, datagrams: list[bytes]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in datagrams:
            s.sendto(data, ("127.0.0.1", udp_fuzz_target.listener_port))
    assert udp_fuzz_target.sc.proc is not None
    assert udp_fuzz_target.sc.proc.poll() is None, "the SC died"


@pytest.fixture(scope="module")
def udp_fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    processes = Processes(tmp_path)
    with HashService() as backend:
        tunnel = start_tunnel(processes, backend, "udp", tmp_path)
        yield tunnel
        # After everything Hypothesis threw at it, the tunnel still carries bytes intact.
        assert download(tunnel.service_port, 200_000, 5) == sha256(payload(200_000, 5))
        assert "Traceback" not in tunnel.sc.log
        processes.stop_all()


@pytest.mark.parametrize("mode", ["ca_file", "insecure"])
def test_sp_verifies_the_sc_by_ca_file_or_says_it_does_not(
    processes: Processes, backend: HashService, tmp_path: Path, mode: str
) -> None:
    consumer = start_consumer(processes, "udp", tmp_path, token=None)
    if mode == "ca_file":  # the certificate the SC generated, trusted as it is
        check = f"<ca_file>{tmp_path / 'sc-cert.pem'}</ca_file><server_name>localhost</server_name>"
        expected_log = "verified against"
    else:
        check, expected_log = "<insecure>yes</insecure>", "is NOT verified"
    consumer = dataclasses.replace(consumer, pipe_extra=f"<protocol>udp</protocol>{check}")
    sp = start_provider(processes, consumer, backend.port, token=None)
    assert expected_log in sp.log
    assert download(consumer.service_port, 100_000) == sha256(payload(100_000))


def test_more_concurrent_streams_than_qh3_allows_by_default(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    # qh3 fixes 100 concurrent streams per connection; a pipe must hold more
    # long-lived connections than that (carriers/quic.py raises the limit).
    listener_extra, pipe_extra = carrier_settings("udp", tmp_path)
    sc = processes.start(
        "sc",
        consumer_xml(
            0,
            [{"uuid": SERVICE_UUID, "port": 0, "max_connections": 400}],
            listener_extra=listener_extra,
        ),
    )
    listener, port = sc.listener_port("udp"), sc.service_port()
    processes.start(
        "sp",
        provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)], pipe_extra=pipe_extra),
    )
    sc.wait_serving(timeout=30)
    held = []
    try:
        for _ in range(250):
            sock = connect(port, timeout=15)
            sock.sendall(b"ECHO\n")
            held.append(sock)
        for i, sock in enumerate(held):
            sock.sendall(f"ping {i}".encode())
        answered = sum(1 for i, sock in enumerate(held) if sock.recv(100) == f"ping {i}".encode())
    finally:
        for sock in held:
            sock.close()
    assert answered == 250, f"only {answered} of 250 held connections answered"
    assert download(port, 100_000) == sha256(payload(100_000))
