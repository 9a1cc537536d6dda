"""Fair service ports: a slow client from one address cannot deny a service to others.

Sources are played with 127.0.0.0/8 (on Linux every address in it is local):
the attacker's sockets are bound to 127.0.0.2, the legitimate client's to
127.0.0.1. The service is a real HTTP server in a thread of the test process.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.backends import HashService, payload, sha256
from tests.integration.conftest import SERVICE_UUID, Processes, provider_xml, wait_for
from tests.integration.test_limits import metric, start_sc

ATTACKER = "127.0.0.2"
LEGIT = "127.0.0.1"
REQUEST_TTL = 3.0  # conftest's consumer_xml sets <request_ttl>3</request_ttl>
BODY = 20_000


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = payload(BODY, int(self.path.strip("/") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the tunnel cut a slowloris connection: expected, not worth a traceback


@pytest.fixture
def http_backend() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, seed: int) -> bool:
    """One legitimate request from 127.0.0.1: True when a 200 with the intact body
    came back (the SC answers 503/504 itself when request_ttl runs out)."""
    sock = socket.socket()
    sock.settimeout(REQUEST_TTL + 10)
    try:
        sock.bind((LEGIT, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET /{seed} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:
        return False
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.0 200") and sha256(body) == sha256(payload(BODY, seed))


class Slowloris:
    """``count`` connections from 127.0.0.2, each sending a correct-looking partial
    request and then one byte every ``interval`` s; a cut one is opened again."""

    def __init__(self, port: int, count: int, interval: float = 2.0) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.socks: list[socket.socket | None] = [None] * count
        self.opened = 0
        self.cut = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        sock = socket.socket()
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            sock.bind((ATTACKER, 0))
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n")
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        self.opened += 1
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            for i in range(self.count):
                if self._stop.is_set():
                    return
                sock = self.socks[i]
                if sock is not None:
                    try:
                        sock.send(b"X")
                        with contextlib.suppress(BlockingIOError):
                            if sock.recv(65536) == b"":  # an answer or a close: it was cut
                                raise ConnectionResetError
                    except OSError:
                        sock.close()
                        self.cut += 1
                        sock = None
                if sock is None:
                    self.socks[i] = self._open()
            self._stop.wait(self.interval)

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def test_slowloris_from_one_address_does_not_deny_the_service_to_another(
    processes: Processes, tmp_path: Path, http_backend: int
) -> None:
    sc, listener, port, admin, _ = start_sc(processes, "tcp", tmp_path, service={"type": "http"})
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, http_backend)], "s3cret")]))
    sc.wait_log("now serve it", timeout=30)
    served = failed = 0
    with Slowloris(port, 200) as attack:
        # The attack is on once its connections hold every slot it can get
        # (before fair ports: all of max_connections).
        wait_for(lambda: attack.opened >= 200, 30, "200 slowloris connections opened")
        time.sleep(1)
        started = time.monotonic()
        for seed in range(10):  # over 10 s: the attack lasts past header_timeout
            if get(port, seed):
                served += 1
            else:
                failed += 1
            time.sleep(1.0)
        elapsed = time.monotonic() - started
    print(
        f"\nslowloris: 200 connections from {ATTACKER} ({attack.opened} opened, "
        f"{attack.cut} cut by the SC); legitimate requests from {LEGIT} over {elapsed:.0f} s: "
        f"served {served}, failed {failed}"
    )
    assert failed == 0, f"served {served}, failed {failed}"
    assert metric(admin, "edgerq_limit_hits_total", '{limit="connections_per_source"}') > 0
    assert metric(admin, "edgerq_limit_hits_total", '{limit="header_timeout"}') > 0
    assert sc.log.count(f"client {ATTACKER}") >= 1


def trickle(port: int, every: float, patience: float) -> tuple[bytes, int]:
    """Open an ECHO connection and send one byte every ``every`` s until the SC cuts
    it (or ``patience`` s pass): (what came back, bytes sent)."""
    sent = 0
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=patience) as sock:
        sock.sendall(b"ECHO\n")
        sock.settimeout(every)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"x")
                sent += 1
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
            except TimeoutError:
                continue
            except OSError:
                break
            time.sleep(every)
    return got, sent


def test_a_connection_below_min_rate_is_cut_one_at_full_speed_is_not(
    processes: Processes, tmp_path: Path, backend: HashService
) -> None:
    sc, listener, port, admin, _ = start_sc(
        processes, "tcp", tmp_path, service={"min_rate": 50, "rate_window": 2}
    )
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]))
    sc.wait_log("now serve it", timeout=30)
    # One byte every 0.5 s (and its echo) is far below 50 B/s: cut within a window or two.
    _, sent = trickle(port, 0.5, patience=30)
    sc.wait_log("too slow: ", timeout=15)
    sc.wait_log("below min_rate (50 B/s)", timeout=15)
    assert sent < 30, f"a trickling connection was not cut (sent {sent} B)"
    assert metric(admin, "edgerq_limit_hits_total", '{limit="min_rate"}') >= 1
    # A transfer at full speed over several windows is untouched.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"DOWN 300000 7\n")
        digest = hashlib.sha256()
        while chunk := sock.recv(65536):
            digest.update(chunk)
    assert digest.hexdigest() == sha256(payload(300000, 7))
    assert metric(admin, "edgerq_limit_hits_total", '{limit="min_rate"}') == 1


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(15)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_one_address_gets_its_share_a_trusted_proxy_all_of_max_connections(
    processes: Processes, tmp_path: Path, backend: HashService
) -> None:
    sc, listener, port, admin, _ = start_sc(
        processes,
        "tcp",
        tmp_path,
        service={
            "type": "http",
            "max_connections": 5,
            "connections_per_source": 1,
            "request_ttl": 1,
        },
        extra="<trusted_sources>127.0.0.1</trusted_sources>",
    )
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "s3cret")]))
    sc.wait_log("now serve it", timeout=30)
    held = []
    try:
        for source in (LEGIT, LEGIT, LEGIT, "127.0.0.2"):  # the trusted proxy takes 3 of 5
            sock = connect_from(source, port)
            sock.sendall(b"HOLD\n")
            held.append(sock)
        wait_for(lambda: backend.accepted >= 4, 10, "four connections held up to the service")
        with connect_from("127.0.0.2", port) as over:  # over 127.0.0.2's share of 1
            over.sendall(b"HOLD\n")
            answer = over.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"holds its share (connections_per_source 1)" in answer
        with connect_from("127.0.0.3", port) as other:  # the fifth slot was free all along
            other.sendall(b"HOLD\n")
            wait_for(lambda: backend.accepted >= 5, 10, "another address got the free slot")
    finally:
        for sock in held:
            sock.close()
    assert metric(admin, "edgerq_limit_hits_total", '{limit="connections_per_source"}') == 1
    sc.wait_log("client 127.0.0.2 waits for a slot: it holds its share of the slots")
