"""<proxy_protocol>: the service behind the SP learns the real client's address.

A real SC and SP on loopback; the service reads the PROXY header with the
tests' own parser (tests/proxy_parser.py), then hashes the rest of the
connection, so the header must come first and the payload must be intact.
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.backends import payload, sha256
from tests.integration.clients import read_all
from tests.integration.conftest import (
    SERVICE_UUID,
    ConsumerHalf,
    Daemon,
    Processes,
    provider_xml,
    start_consumer,
)
from tests.proxy_parser import Parsed, read_from

CLIENT_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
"""Clients bind these loopback addresses: the SP itself connects from 127.0.0.1."""


@dataclass
class Received:
    header: Parsed | None
    digest: str
    data: bytes


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, ProxyService)
        sock: socket.socket = self.request
        sock.settimeout(60)
        header = read_from(sock)[0] if server.expect_header else None
        data = read_all(sock)
        digest = hashlib.sha256(data).hexdigest()
        with server.lock:
            server.received.append(Received(header, digest, data))
        sock.sendall(digest.encode() + b"\n")


class ProxyService(socketserver.ThreadingTCPServer):
    """Reads a PROXY header (when told to), then answers the SHA-256 of the rest."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, expect_header: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.expect_header = expect_header
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.port: int = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> ProxyService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def start_provider_with(
    processes: Processes, consumer: ConsumerHalf, service_port: int, proxy: str | None
) -> Daemon:
    xml = provider_xml(
        [(consumer.listener_port, [(SERVICE_UUID, service_port)], "s3cret")],
        pipe_extra=consumer.pipe_extra,
    )
    if proxy is not None:
        assert xml.count("</port></service>") == 1
        xml = xml.replace(
            "</port></service>", f"</port><proxy_protocol>{proxy}</proxy_protocol></service>"
        )
    sp = processes.start("sp", xml)
    consumer.sc.wait_serving(timeout=30)
    return sp


def upload_from(host: str, port: int, data: bytes) -> tuple[tuple[str, int], str]:
    """Connect from ``host``, send ``data`` at once, half-close; (own address, answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(host, 0)) as s:
        local = s.getsockname()
        s.sendall(data)  # no waiting: the data races the SP's connect to the service
        s.shutdown(socket.SHUT_WR)
        return (local[0], local[1]), read_all(s).decode().strip()


@pytest.mark.parametrize("carrier", ["tcp", "udp"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_service_gets_the_clients_address_before_the_payload(
    processes: Processes, tmp_path: Path, carrier: str, version: str
) -> None:
    consumer = start_consumer(processes, carrier, tmp_path)
    with ProxyService(expect_header=True) as service:
        sp = start_provider_with(processes, consumer, service.port, version)
        sp.wait_log(f"service 'svc0' gets a PROXY protocol {version} header")
        # Several clients at once, each with a payload larger than the stream
        # window (1 MiB): every header belongs to its own connection, and the
        # header bytes do not upset flow control.
        jobs = [(CLIENT_HOSTS[i % 3], payload(3 * 1024 * 1024 + i, seed=i)) for i in range(6)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(
                pool.map(lambda job: upload_from(job[0], consumer.service_port, job[1]), jobs)
            )
    for (client, answer), (host, data) in zip(results, jobs, strict=True):
        assert client[0] == host
        assert answer == sha256(data)
    by_source = {r.header.source: r for r in service.received if r.header is not None}
    assert len(by_source) == len(jobs) == len(service.received)
    for (client, _), (_, data) in zip(results, jobs, strict=True):
        got = by_source[client]
        assert got.header == Parsed(
            int(version[1]),
            "PROXY",
            "TCP4",
            client,
            ("127.0.0.1", consumer.service_port),
        )
        assert got.digest == sha256(data)


@pytest.mark.parametrize("carrier", ["tcp", "udp"])
def test_service_without_proxy_protocol_gets_the_bytes_unchanged(
    processes: Processes, tmp_path: Path, carrier: str
) -> None:
    consumer = start_consumer(processes, carrier, tmp_path)
    with ProxyService(expect_header=False) as service:
        sp = start_provider_with(processes, consumer, service.port, None)
        # Data that itself looks like a PROXY header must pass through untouched.
        data = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n" + payload(200_000, seed=7)
        _, answer = upload_from(CLIENT_HOSTS[0], consumer.service_port, data)
    assert answer == sha256(data)
    assert [r.data for r in service.received] == [data]
    assert "PROXY protocol" not in sp.log
