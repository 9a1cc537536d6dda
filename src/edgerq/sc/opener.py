"""How the SC opens each client connection through a pipe: the open attempt.

A client accepted on a service port becomes a ``ClientConnection``. The
``ClientOpener`` takes a ``max_connections`` slot for it (``ConnectionSlots``),
finds a pipe that registered the service (``ServiceRegistry``), opens a stream
there and waits for the SP's OPEN_OK, within ``request_ttl`` in all. Until
OPEN_OK the bytes the client sent are kept, so when the pipe dies or its SP
cannot reach the service the connection is opened again on another pipe
(failover) and loses nothing; an ``http`` service answers 502/503/504 when no
pipe can serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable

from edgerq.config.model import ConsumerService
from edgerq.labels import Limit, Outcome
from edgerq.pipe.interface import MuxPipe
from edgerq.pipe.stream import OpenAnswer, OpenRefused, PipeLost, Stream
from edgerq.protocol.messages import OpenFailure, ResetCode
from edgerq.runtime.metrics import Metrics
from edgerq.runtime.relay import LocalConnection
from edgerq.runtime.waiting import Deadlines
from edgerq.sc.client_connection import ClientConnection
from edgerq.sc.fairness import Take
from edgerq.sc.open_attempt import OpenState, Probe
from edgerq.sc.registry import ServiceRegistry
from edgerq.sc.slots import ConnectionSlots
from edgerq.sc.slow_clients import SlowClients

log = logging.getLogger("edgerq.sc")

PROBE_INTERVAL = 0.5
"""While a new connection waits for OPEN_OK, how often its pipe is checked for silence."""


class ClientOpener:
    """Every client connection of the SC from accept to close: slot, pipe, stream,
    failover, and what is counted of it."""

    def __init__(
        self,
        services: Iterable[ConsumerService],
        registry: ServiceRegistry,
        metrics: Metrics,
        access_log: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.clock = clock
        """The SC's one clock, the pipes' too (``last_heard``): ``time.monotonic``."""
        self.access_log = access_log
        """Log connections that ended well at INFO (``ClientConnection.log_end``)."""
        self.metrics = metrics
        self.connections: set[ClientConnection] = set()
        self.slots: dict[uuid_mod.UUID, ConnectionSlots] = {}
        self.bytes: dict[uuid_mod.UUID, list[int]] = {}
        """Bytes up and down per service, as counted so far."""
        self.slow = SlowClients(metrics, self.slots, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.unanswered: Deadlines[ClientConnection] = Deadlines(self._check_open, clock)
        """Connections whose SP has not answered yet: the next probe, or the deadline."""
        self.configure(services)

    def configure(self, services: Iterable[ConsumerService]) -> None:
        """Limits of new and reloaded services (a slot taken stays taken)."""
        for service in services:
            if service.uuid in self.slots:
                self.slots[service.uuid].configure(service)
            else:
                self.slots[service.uuid] = ConnectionSlots(service)
            self.bytes.setdefault(service.uuid, [0, 0])

    def count_bytes(self) -> None:
        """Add the bytes open connections relayed since the last count (at scrapes)."""
        for conn in self.connections:
            self._count(conn)

    def _count(self, conn: ClientConnection) -> None:
        up, down = conn.uncounted_bytes()
        if up or down:
            name = conn.service.name
            tally, metric = self.metrics.tally, self.metrics.bytes
            tally.add(metric, (name, "up"), up)
            tally.add(metric, (name, "down"), down)
            totals = self.bytes[conn.service.uuid]
            totals[0] += up
            totals[1] += down

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the SC runs on, looked up once: on Python 3.11 every
        ``asyncio.get_running_loop()`` is a getpid() system call, and this runs
        twice per new connection."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def new_client(self, service: ConsumerService) -> ClientConnection:
        conn = ClientConnection(
            service,
            self.connection_done,
            self.client_connected,
            self._answered,
            self.slots[service.uuid],
        )
        self.connections.add(conn)
        return conn

    def client_connected(self, conn: LocalConnection) -> None:
        assert isinstance(conn, ClientConnection)
        service = conn.service
        now = self.clock()
        conn.begin(now)
        if self.slots[service.uuid].try_take(conn.source):
            conn.slot_taken(now)
            self.slow.start(conn, now)
            pipe = self.registry.choose(service.uuid)
            if pipe is not None:  # the common case: no task, no waiting
                self._open(conn, pipe)
                return
        conn.wait_in(self._running_loop().create_task(self._serve_when_possible(conn)))

    async def _serve_when_possible(
        self, conn: ClientConnection, replay: bytes = b"", eof: bool = False
    ) -> None:
        """Wait (up to request_ttl in all) for a connection slot, then for a pipe;
        on a failover, send the bytes the lost stream carried (``replay``) first."""
        service = conn.service
        attempt = conn.attempt
        deadline = attempt.deadline
        if attempt.state is OpenState.WAITING_FOR_SLOT:
            slots = self.slots[service.uuid]
            fair = slots.fair
            by_source = fair.in_use < fair.limit  # a free slot, but not for this source
            if by_source:
                self.slow.limit_hit(conn, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
            taken = await slots.wait(conn.source, deadline - self.clock())
            if taken is Take.REFUSED:
                self.slow.limit_hit(conn, Limit.WAITING_PER_SOURCE, "refused")
                attempt.failed()
                conn.fail(
                    503,
                    f"service '{service.name}' is busy and {conn.source} already has "
                    f"{fair.waiting_from(conn.source)} connection(s) waiting "
                    f"(waiting_per_source {service.waiting_per_source})",
                )
                return
            if taken is Take.TIMED_OUT:
                attempt.failed()
                if fair.in_use >= fair.limit:
                    why = f"is at max_connections ({service.max_connections})"
                else:
                    why = (
                        f"has no slot for {conn.source}, which holds its share "
                        f"(connections_per_source {fair.cap_of(conn.source)})"
                    )
                conn.fail(503, f"service '{service.name}' {why} for over {service.request_ttl:g} s")
                return
            if conn.done:  # the client left as the slot came (wait_for kept it)
                slots.release(conn.source)
                return
            now = self.clock()
            conn.slot_taken(now)
            self.slow.start(conn, now)
        pipe = await self.registry.wait_for(
            service.uuid, max(0.0, deadline - self.clock()), exclude=attempt.tried
        )
        if pipe is None:
            attempt.failed()
            if attempt.tried:
                conn.fail(502, f"no other SP could take service '{service.name}' in time")
            else:
                conn.fail(502, f"no SP has registered service '{service.name}'")
            return
        self._open(conn, pipe, replay, eof)

    def _open(
        self, conn: ClientConnection, pipe: MuxPipe, replay: bytes = b"", eof: bool = False
    ) -> None:
        service = conn.service
        conn.attempt.pipe_chosen(pipe)
        stream = pipe.open_stream(
            service.uuid,
            window=service.stream_window,
            max_frame=service.request_buffer,
            client=conn.peer,
            destination=conn.local,
            sink=conn,
        )
        # Until OPEN_OK, keep what the client sent: should the pipe die first,
        # the connection is opened again on another pipe and loses nothing.
        stream.replay = bytearray()
        if replay:
            stream.send(replay)
        if eof:
            stream.send_eof()
        conn.bind(stream, pipe.paused)
        if conn.count_open():
            self.metrics.tally.add(self.metrics.streams_open, (service.name,))
        self._watch_open(conn)

    def _answered(
        self, conn: ClientConnection, stream: Stream, failure: OpenRefused | None
    ) -> None:
        """The SP answered ``stream``'s OPEN (or its pipe died first). Handled on the
        loop's next turn, outside the pipe's frame processing that told us."""
        pipe = conn.attempt.pipe
        if conn.stream is stream and pipe is not None:
            self._running_loop().call_soon(self._opened, conn, pipe, stream, failure)

    def _watch_open(self, conn: ClientConnection) -> None:
        """While the SP has not answered: the next probe, or the deadline (on the
        opener's one timer for all of them, not a timer per connection)."""
        when = min(conn.attempt.deadline, self.clock() + PROBE_INTERVAL)
        self.unanswered.set(conn, when, self._running_loop())

    def _check_open(self, conn: ClientConnection) -> None:
        """Still no OPEN_OK. Past request_ttl: 504. Else, if the pipe has gone silent
        (a killed udp SP says nothing, and the heartbeat timeout takes 8 s) while
        another pipe is heard from, open the connection there instead."""
        stream = conn.stream
        if conn.done or stream is None or stream.answer is not OpenAnswer.AWAITED:
            return
        attempt = conn.attempt
        pipe = attempt.pipe
        assert pipe is not None
        now = self.clock()
        silent = now - pipe.last_heard
        decision = attempt.probe(
            now,
            silent,
            answered=conn.written > 0,
            other_pipe=lambda: (
                self.registry.choose(conn.service.uuid, exclude=attempt.tried | {pipe}) is not None
            ),
        )
        if decision is Probe.EXPIRED:
            self._open_expired(conn)
            return
        if decision is Probe.FAIL_OVER:
            stream.abandon_open()
            stream.reset(ResetCode.CANCELLED, f"pipe silent for {silent:.1f} s")
            lost = PipeLost(OpenFailure.CONNECT_ERROR, f"pipe silent for {silent:.1f} s")
            if not self._fail_over(conn, pipe, stream, lost):
                attempt.failed()
                conn.fail(502, f"service '{conn.service.name}' unreachable: {lost.reason}")
            return
        self._watch_open(conn)

    def _opened(
        self, conn: ClientConnection, pipe: MuxPipe, stream: Stream, error: OpenRefused | None
    ) -> None:
        if conn.stream is not stream:
            return
        self.unanswered.discard(conn)
        if error is None:
            conn.attempt.confirmed()
            stream.replay = None
            self.registry.note_opened(conn.service.uuid, pipe)
            self.metrics.tally.observe(
                self.metrics.open_seconds, (conn.service.name,), self.clock() - conn.started
            )
            return
        if not isinstance(error, PipeLost):
            self.registry.note_refused(conn.service.uuid, pipe)
        if conn.done or self._fail_over(conn, pipe, stream, error):
            return
        conn.attempt.failed()
        conn.fail(502, f"service '{conn.service.name}' unreachable: {error.reason}")

    def _fail_over(
        self, conn: ClientConnection, pipe: MuxPipe, stream: Stream, error: OpenRefused
    ) -> bool:
        """Open ``conn`` again on another pipe when its pipe died, or its SP could
        not reach the service, before anything reached the client and within
        request_ttl. True when a new pipe is being sought."""
        service = conn.service
        lost = isinstance(error, PipeLost)
        if stream.replay is None or not conn.attempt.fail_over(
            self.clock(),
            replayable=not conn.written and not stream.eof_received,
            pipe_lost=lost,
            other_pipe=lambda tried: self.registry.choose(service.uuid, exclude=tried) is not None,
        ):
            return False
        replay, eof = bytes(stream.replay), stream.eof_sent
        cause = "pipe_lost" if lost else "refused"
        self.metrics.retries.labels(service.name, cause).inc()
        log.info(
            "%s stream %d: client %s service '%s': %s before the service answered; "
            "opening it on another pipe (%d B to replay)",
            pipe,
            stream.id,
            conn.peer,
            service.name,
            "pipe lost" if lost else f"refused ({error.reason})",
            len(replay),
        )
        conn.unbind()
        loop = self._running_loop()
        conn.wait_in(loop.create_task(self._serve_when_possible(conn, replay, eof)))
        return True

    def _open_expired(self, conn: ClientConnection) -> None:
        stream = conn.stream
        if stream is None or stream.answer is not OpenAnswer.AWAITED:
            return
        self.unanswered.discard(conn)
        stream.abandon_open()
        stream.reset(ResetCode.CANCELLED, "request_ttl ran out before the service answered")
        conn.attempt.failed()
        conn.fail(
            504,
            f"service '{conn.service.name}' was not reached within "
            f"request_ttl ({conn.service.request_ttl:g} s)",
        )

    def connection_done(self, conn: LocalConnection) -> None:
        assert isinstance(conn, ClientConnection)
        self.connections.discard(conn)
        conn.settle()
        self.unanswered.discard(conn)
        name = conn.service.name
        tally = self.metrics.tally
        tally.add(self.metrics.streams, (name, conn.outcome_kind or Outcome.CLOSED_EARLY))
        if conn.counted:
            tally.add(self.metrics.streams_open, (name,), -1)
        self._count(conn)
        conn.log_end(self.access_log)
