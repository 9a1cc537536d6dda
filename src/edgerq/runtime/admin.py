"""The admin HTTP endpoint of a daemon: /metrics, /healthz, /readyz, /status.

A deliberately small HTTP/1.0 server on asyncio (GET only, one request per
connection), so the daemon needs no thread and no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgerq.config.model import AdminConfig
from edgerq.runtime.metrics import Metrics

log = logging.getLogger("edgerq.admin")

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class AdminServer:
    def __init__(
        self,
        config: AdminConfig,
        metrics: Metrics,
        ready: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._ready = ready
        self._status = status
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, reuse_address=True
        )
        self.address = self._server.sockets[0].getsockname()[:2]
        log.info(
            "admin endpoint on http://%s:%d/ (metrics, healthz, readyz, status)", *self.address
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while request.strip() and (await reader.readline()).strip():
                    pass  # the headers: read, not used (a blank request line has none)
            parts = request.decode("latin-1").split()
            status, content_type, body = self._answer(parts)
        except (TimeoutError, ConnectionError, UnicodeDecodeError, asyncio.LimitOverrunError):
            writer.close()
            return
        head = (
            f"HTTP/1.0 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        # HEAD: the same head, Content-Length included, and no content (RFC 9110 9.3.2)
        writer.write(head.encode("latin-1") + (b"" if parts[:1] == ["HEAD"] else body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _answer(self, parts: list[str]) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if len(parts) < 2:
            return 400, text, b"bad request\n"
        method, path = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET\n"
        if path == "/metrics":
            self.metrics.refresh()
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            ready, why = self._ready()
            return (200 if ready else 503), text, f"{why}\n".encode()
        if path == "/status":
            return 200, "application/json", json.dumps(self._status(), indent=1).encode()
        return 404, text, b"try /metrics, /healthz, /readyz or /status\n"
