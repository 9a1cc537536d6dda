"""The admin endpoint (``runtime.admin.AdminServer``) in-process on 127.0.0.1, port 0:
/metrics, /healthz, /readyz, /status, and what anything else gets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from edgerq.config.model import AdminConfig
from edgerq.runtime.admin import AdminServer
from edgerq.runtime.metrics import Metrics
from tests.unit.fakes import in_loop

STATUS: dict[str, Any] = {"role": "sc", "version": "1.0", "pipes": [], "services": []}


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        self.status_line, *fields = head.decode("latin-1").split("\r\n")
        self.headers = dict(field.split(": ", 1) for field in fields)


async def ask(server: AdminServer, request: bytes) -> Answer:
    """Send ``request`` as it is and read the answer to its end (the server closes)."""
    assert server.address is not None
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(request)
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return Answer(raw)


async def get(server: AdminServer, path: str) -> Answer:
    return await ask(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode())


class Daemon:
    """What the server asks of its daemon: readiness and ``/status``."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.is_ready, self.why = True, "listeners bound"
        self.status_calls = 0

    def ready(self) -> tuple[bool, str]:
        return self.is_ready, self.why

    def status(self) -> dict[str, Any]:
        self.status_calls += 1
        return STATUS


Scenario = Callable[[AdminServer, Daemon], Coroutine[Any, Any, None]]


def serving(scenario: Scenario) -> Callable[[], None]:
    """Run ``scenario`` against a started server on 127.0.0.1:0, stopped afterwards."""

    @in_loop
    async def run() -> None:
        daemon = Daemon()
        server = AdminServer(AdminConfig(port=0), daemon.metrics, daemon.ready, daemon.status)
        await server.start()
        try:
            await scenario(server, daemon)
        finally:
            await server.stop()

    run.__name__ = scenario.__name__
    return run


def check(answer: Answer, status_line: str, content_type: str, body: bytes) -> None:
    assert answer.status_line == status_line
    assert answer.headers == {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    assert answer.body == body


TEXT = "text/plain; charset=utf-8"


@serving
async def test_it_listens_on_loopback_on_the_port_the_kernel_gave(
    server: AdminServer, daemon: Daemon
) -> None:
    assert server.address is not None
    host, port = server.address
    assert host == "127.0.0.1" and port != 0


@serving
async def test_healthz(server: AdminServer, daemon: Daemon) -> None:
    check(await get(server, "/healthz"), "HTTP/1.0 200 OK", TEXT, b"ok\n")


@serving
async def test_readyz_is_200_when_ready_and_503_with_why_when_not(
    server: AdminServer, daemon: Daemon
) -> None:
    check(await get(server, "/readyz"), "HTTP/1.0 200 OK", TEXT, b"listeners bound\n")
    daemon.is_ready, daemon.why = False, "draining: shutting down"
    check(
        await get(server, "/readyz"),
        "HTTP/1.0 503 Service Unavailable",
        TEXT,
        b"draining: shutting down\n",
    )


@serving
async def test_status_is_the_daemons_json(server: AdminServer, daemon: Daemon) -> None:
    answer = await get(server, "/status")
    check(answer, "HTTP/1.0 200 OK", "application/json", json.dumps(STATUS, indent=1).encode())
    assert json.loads(answer.body) == STATUS
    assert daemon.status_calls == 1  # asked at each request, not cached
    await get(server, "/status")
    assert daemon.status_calls == 2


@serving
async def test_metrics_are_brought_up_to_date_before_each_scrape(
    server: AdminServer, daemon: Daemon
) -> None:
    metrics = daemon.metrics
    refreshed: list[int] = []
    metrics.on_refresh(lambda: refreshed.append(1))
    metrics.tally.add(metrics.streams, ("web", "ok"), 3)  # counted lazily, flushed at scrape
    answer = await get(server, "/metrics")
    assert answer.status_line == "HTTP/1.0 200 OK"
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert answer.headers["Content-Length"] == str(len(answer.body))
    text = answer.body.decode()
    assert 'edgerq_streams_total{outcome="ok",service="web"} 3.0\n' in text
    assert "# TYPE edgerq_limit_hits_total counter\n" in text
    assert refreshed == [1]
    await get(server, "/metrics")
    assert refreshed == [1, 1]


@serving
async def test_a_query_string_is_ignored(server: AdminServer, daemon: Daemon) -> None:
    check(await get(server, "/readyz?verbose=1"), "HTTP/1.0 200 OK", TEXT, b"listeners bound\n")


@pytest.mark.parametrize("path", ["/", "/nothing", "/metrics/extra", "/status.json"])
def test_anything_else_is_404_naming_the_paths(path: str) -> None:
    @serving
    async def scenario(server: AdminServer, daemon: Daemon) -> None:
        check(
            await get(server, path),
            "HTTP/1.0 404 Not Found",
            TEXT,
            b"try /metrics, /healthz, /readyz or /status\n",
        )

    scenario()


@serving
async def test_only_get_and_head(server: AdminServer, daemon: Daemon) -> None:
    for method in ("POST", "PUT", "DELETE"):
        answer = await ask(server, f"{method} /readyz HTTP/1.0\r\n\r\n".encode())
        check(answer, "HTTP/1.0 405 Method Not Allowed", TEXT, b"only GET\n")
    answer = await ask(server, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert answer.status_line == "HTTP/1.0 200 OK"
    assert answer.headers["Content-Length"] == "3"


@serving
async def test_a_head_request_gets_the_head_without_the_body(
    server: AdminServer, daemon: Daemon
) -> None:
    answer = await ask(server, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert answer.status_line == "HTTP/1.0 200 OK"
    assert answer.body == b""


@serving
async def test_a_request_line_that_is_not_one_is_400(server: AdminServer, daemon: Daemon) -> None:
    for request in (b"\r\n\r\n", b"GET\r\n\r\n", b"/status\r\n\r\n"):
        check(await ask(server, request), "HTTP/1.0 400 Bad Request", TEXT, b"bad request\n")


@serving
async def test_a_lone_blank_line_is_answered_at_once(server: AdminServer, daemon: Daemon) -> None:
    # No request line, so no headers to wait for: answered, not left to the 5 s timeout.
    answer = await asyncio.wait_for(ask(server, b"\r\n"), 2)
    check(answer, "HTTP/1.0 400 Bad Request", TEXT, b"bad request\n")


@serving
async def test_a_request_whose_head_ends_with_the_connection_is_answered(
    server: AdminServer, daemon: Daemon
) -> None:
    assert server.address is not None
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: EOF instead
    writer.write_eof()
    check(Answer(await asyncio.wait_for(reader.read(), 10)), "HTTP/1.0 200 OK", TEXT, b"ok\n")
    writer.close()


@serving
async def test_one_request_per_connection(server: AdminServer, daemon: Daemon) -> None:
    answer = await ask(server, b"GET /healthz HTTP/1.1\r\n\r\nGET /status HTTP/1.1\r\n\r\n")
    check(answer, "HTTP/1.0 200 OK", TEXT, b"ok\n")  # and closed: the second is not read
    assert daemon.status_calls == 0


@in_loop
async def test_stop_closes_the_port() -> None:
    metrics = Metrics()
    server = AdminServer(AdminConfig(port=0), metrics, lambda: (True, ""), lambda: {})
    await server.start()
    assert server.address is not None
    port = server.address[1]
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await server.stop()  # twice: no harm


@in_loop
async def test_stop_before_start_does_nothing() -> None:
    server = AdminServer(AdminConfig(port=0), Metrics(), lambda: (True, ""), lambda: {})
    await server.stop()
    assert server.address is None
