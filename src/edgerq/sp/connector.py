"""How the SP answers each OPEN: connect to the service, answer the stream, count it.

``ServiceConnector`` serves the streams of one configured pipe (``ProviderPipe``
dials and keeps up the pipe itself): it refuses an OPEN for a service the pipe
does not offer or while the SP drains, otherwise connects to the service (with
a PROXY protocol header when configured) within ``connect_timeout`` and answers
OPEN_OK or why not, then counts what the connection relayed until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from typing import Any

from edgerq.config.model import ProviderService
from edgerq.defaults import CONNECT_TIMEOUT
from edgerq.labels import Outcome
from edgerq.pipe.interface import MuxPipe
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol import proxy_header
from edgerq.protocol.messages import Open, OpenFailure
from edgerq.runtime.metrics import Metrics
from edgerq.runtime.relay import LocalConnection
from edgerq.runtime.waiting import Deadlines

log = logging.getLogger("edgerq.sp")


class ServiceConnector:
    """The local connections behind one pipe's streams, from OPEN to close."""

    def __init__(
        self,
        label: str,
        services: dict[uuid_mod.UUID, ProviderService],
        metrics: Metrics,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.label = label
        """The pipe's name in log lines (``ProviderPipe`` updates it on a reload)."""
        self.services = services
        """The pipe's services by UUID (``ProviderPipe`` replaces it on a reload)."""
        self.metrics = metrics
        self.connect_timeout = connect_timeout
        self.connections: set[LocalConnection] = set()
        self.connecting: Deadlines[asyncio.Task[Any]] = Deadlines(self._connect_expired)
        """Connects to services under way, each with its deadline."""
        self._timed_out: set[asyncio.Task[Any]] = set()

    def open(self, pipe: MuxPipe, request: Open, *, draining: bool = False) -> None:
        """Answer the SC's OPEN: refuse it, or connect to the service and answer then."""
        service = self.services.get(request.uuid)
        if service is None:
            log.warning(
                "%s: SC asked for service %s, which this pipe does not offer",
                self.label,
                request.uuid,
            )
            refusal = OpenRefused(
                OpenFailure.UNKNOWN_SERVICE, f"service {request.uuid} is not offered by this SP"
            )
            pipe.answer_open(pipe.accept_stream(request), refusal)
            return
        if draining:
            stream = pipe.accept_stream(request)
            pipe.answer_open(stream, OpenRefused(OpenFailure.DRAINING, "the SP is shutting down"))
            return
        stream = pipe.accept_stream(request)
        preamble = b""
        if service.proxy_protocol is not None:
            preamble = self._proxy_header(pipe, request, service.proxy_protocol)
        conn = LocalConnection(
            request.max_frame,
            on_done=self._connection_done,
            preamble=preamble,
            idle_timeout=service.idle_timeout,
        )
        conn.bind(stream, pipe.paused)
        self.connections.add(conn)
        self.metrics.tally.add(self.metrics.streams_open, (service.name,))
        self.connect(pipe, stream, conn, service)

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    def _proxy_header(self, pipe: MuxPipe, request: Open, version: int) -> bytes:
        """The PROXY protocol header for the client the SC reported in ``request``."""
        header, problem = proxy_header.header(version, request.client, request.destination)
        if problem is not None:
            log.warning("%s stream %d: PROXY header: %s", pipe, request.stream_id, problem)
        return header

    def connect(
        self, pipe: MuxPipe, stream: Stream, conn: LocalConnection, service: ProviderService
    ) -> None:
        """Connect to the service; answer the stream when that is done or failed.

        A task for ``create_connection`` with its deadline among the pipe's
        others (one timer for all), not a coroutine of our own under
        ``asyncio.timeout``: a frame, a timeout object and a timer armed and
        cancelled less per stream (this runs once per connection)."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.create_connection(lambda: conn, service.hostname, service.port)
        )
        self.connecting.set(task, time.monotonic() + self.connect_timeout, loop)

        def connected(done: asyncio.Task[tuple[asyncio.Transport, LocalConnection]]) -> None:
            self.connecting.discard(done)
            if done.cancelled():
                if done not in self._timed_out:
                    return  # cancelled from outside (shutdown), as the coroutine was
                self._timed_out.discard(done)
                error: BaseException = TimeoutError()
            else:
                exc = done.exception()
                if exc is None:
                    self._connected(pipe, stream, conn, done.result()[0])
                    return
                error = exc
            if not isinstance(error, OSError):
                raise error
            self._connect_failed(pipe, stream, conn, service, error)

        task.add_done_callback(connected)

    def _connect_expired(self, task: asyncio.Task[Any]) -> None:
        self._timed_out.add(task)
        task.cancel()

    def _connected(
        self, pipe: MuxPipe, stream: Stream, conn: LocalConnection, transport: asyncio.Transport
    ) -> None:
        if stream.finished or conn.done:
            transport.abort()
            return
        pipe.answer_open(stream, None)

    def _connect_failed(
        self,
        pipe: MuxPipe,
        stream: Stream,
        conn: LocalConnection,
        service: ProviderService,
        exc: OSError,
    ) -> None:
        failure = open_failure_from_os_error(exc)
        log.warning(
            "%s stream %d: service '%s' at %s:%d: %s",
            pipe,
            stream.id,
            service.name,
            service.hostname,
            service.port,
            failure.reason,
        )
        conn.set_outcome(Outcome.ERROR, failure.reason)
        if not stream.finished:
            pipe.answer_open(stream, failure)
        conn.abort()

    def count_bytes(self) -> None:
        """Add the bytes open connections relayed since the last count (at scrapes)."""
        for conn in self.connections:
            self._count(conn)

    def _count(self, conn: LocalConnection) -> None:
        stream = conn.stream
        sent, received = conn.uncounted_bytes()
        if stream is None or not (sent or received):
            return
        service = self.services.get(stream.service)
        name = service.name if service is not None else str(stream.service)
        tally, metric = self.metrics.tally, self.metrics.bytes
        tally.add(metric, (name, "up"), received)
        tally.add(metric, (name, "down"), sent)

    def _connection_done(self, conn: LocalConnection) -> None:
        self.connections.discard(conn)
        stream = conn.stream
        if stream is None:
            return
        outcome = conn.outcome or "closed"
        service = self.services.get(stream.service)
        name = service.name if service is not None else str(stream.service)
        tally = self.metrics.tally
        tally.add(self.metrics.streams_open, (name,), -1)
        tally.add(self.metrics.streams, (name, conn.outcome_kind or Outcome.CLOSED_EARLY))
        self._count(conn)
        level = logging.DEBUG if outcome == "ok" else logging.INFO
        if not log.isEnabledFor(level):
            return  # the line's arguments are not even formatted
        log.log(
            level,
            "%s stream %d: service %s: %d B in, %d B out, %.3f s: %s",
            stream.writer,
            stream.id,
            stream.service,
            stream.bytes_in,
            stream.bytes_out,
            time.monotonic() - conn.started,
            outcome,
        )


def open_failure_from_os_error(exc: OSError) -> OpenRefused:
    """Why a connect to the service failed, as the OPEN_FAIL code and reason the SC hears."""
    if isinstance(exc, ConnectionRefusedError):
        return OpenRefused(OpenFailure.CONNECT_REFUSED, f"connection refused: {exc.strerror}")
    if isinstance(exc, TimeoutError):
        return OpenRefused(OpenFailure.CONNECT_TIMEOUT, "connect timed out")
    return OpenRefused(OpenFailure.CONNECT_ERROR, f"cannot connect: {exc.strerror or exc}")
