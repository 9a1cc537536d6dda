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
from collections.abc import Iterable

from edgerq.config.model import ConsumerService
from edgerq.fairness import FairSlots, LogGate, Rate, RateWindow, Take, head_complete, source_of
from edgerq.httperrors import error_response
from edgerq.labels import Limit, Outcome
from edgerq.metrics import Metrics
from edgerq.open_attempt import OpenAttempt, OpenState, Probe
from edgerq.pipe import MuxPipe
from edgerq.protocol.messages import OpenFailure, ResetCode
from edgerq.registry import ServiceRegistry
from edgerq.relay import LocalConnection
from edgerq.stream import OpenRefused, PipeLost, Stream

log = logging.getLogger("edgerq.sc")

PROBE_INTERVAL = 0.5
"""While a new connection waits for OPEN_OK, how often its pipe is checked for silence."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines about one source hitting one limit of one service."""

_LIMIT_WORDS = {
    Limit.CONNECTIONS_PER_SOURCE: "it holds its share of the slots (connections_per_source {cap})",
    Limit.WAITING_PER_SOURCE: "too many of its connections wait already "
    "(waiting_per_source {service.waiting_per_source})",
    Limit.HEADER_TIMEOUT: "header_timeout ({service.header_timeout:g} s); 408",
    Limit.MIN_RATE: "below min_rate ({service.effective_min_rate:g} B/s); cut",
}

_NOT_STARTED: OpenAttempt[MuxPipe] = OpenAttempt(0.0)
"""Every connection's attempt until it is accepted (never moved: replaced then)."""


class ClientConnection(LocalConnection):
    """A client of one service port. ``http`` services answer tunnel failures with 5xx."""

    def __init__(self, opener: ClientOpener, service: ConsumerService) -> None:
        super().__init__(
            service.request_buffer,
            on_done=opener.connection_done,
            on_connected=opener.client_connected,
            idle_timeout=service.idle_timeout,
        )
        self.service = service
        self.attempt: OpenAttempt[MuxPipe] = _NOT_STARTED
        """Where the opening stands (set when the client is accepted)."""
        self.task: asyncio.Task[None] | None = None
        """Waiting for a slot or a pipe."""
        self.timer: asyncio.TimerHandle | None = None
        """The next probe of an open the SP has not answered yet."""
        self.holds_slot = False
        self.counted = False
        self.source = "?"
        """The client's address: slots are shared fairly between sources."""
        self.read_total = 0
        """Bytes read from the client so far (for ``min_rate``)."""
        self.head_done = service.type != "http" or service.header_timeout is None
        """``http``: whether the head of the first request has arrived."""
        self._head_tail = b""
        self.rate: RateWindow | None = None
        self.accepted_at = 0.0
        """When the client got its slot (and began to be read), on the loop's clock."""
        self.guard: asyncio.TimerHandle | None = None
        """The next ``header_timeout`` or ``min_rate`` check."""

    def buffer_updated(self, nbytes: int) -> None:
        self.read_total += nbytes
        if not self.head_done:
            self.head_done, self._head_tail = head_complete(self._head_tail, self._view[:nbytes])
        super().buffer_updated(nbytes)

    def too_slow(self, reason: str) -> None:
        """Cut by ``header_timeout`` or ``min_rate``: 408 to an ``http`` client that
        got no answer yet, a reset otherwise."""
        self.set_outcome(Outcome.IDLE_TIMEOUT, reason)  # idle in all but name
        if self.service.type == "http" and self.written == 0:
            self.send_and_close(error_response(408, reason))
        else:
            self.abort()

    def fail(self, status: int, message: str) -> None:
        """The tunnel cannot serve this client: say why (http) or close it."""
        self.outcome_kind = Outcome.for_status(status)
        self.outcome = f"{status} {message}"
        if self.service.type == "http" and self.written == 0:
            self.send_and_close(error_response(status, message))
        else:
            self.abort()

    def idle_expired(self, timeout: float) -> None:
        """An ``http`` client that got no answer yet is told why: 408 when it never
        sent a byte, 504 when the service never answered; anything else is cut."""
        if self.service.type != "http" or self.written != 0:
            super().idle_expired(timeout)
            return
        if self.bytes_received == 0:
            status, message = 408, f"no request within idle_timeout ({timeout:g} s)"
        else:
            status, message = 504, f"no answer within idle_timeout ({timeout:g} s)"
        self.send_and_close(error_response(status, message))

    def on_reset(self, reason: str, outcome: Outcome) -> None:
        stream = self.stream
        confirmed = self.attempt.state is OpenState.CONFIRMED
        if stream is not None and not confirmed and stream.opened is not None:
            opened = stream.opened
            if not opened.done() or (not opened.cancelled() and opened.exception() is not None):
                return  # the opener decides: another pipe, or 502/504
        if self.service.type == "http" and self.written == 0:
            self.fail(502, f"tunnel closed before the service answered ({reason})")
        else:
            super().on_reset(reason, outcome)


class ConnectionSlots:
    """``max_connections`` for one service, shared fairly between source addresses
    (``fairness.FairSlots``): taken at once when free (no task, no await on the
    hot path), else waited for in the source's turn."""

    def __init__(self, service: ConsumerService) -> None:
        self.fair: FairSlots[asyncio.Future[None]] = FairSlots(
            service.max_connections,
            service.per_source_cap,
            service.waiting_per_source,
            service.trusted_sources,
        )

    @property
    def in_use(self) -> int:
        return self.fair.in_use

    def configure(self, service: ConsumerService) -> None:
        self._grant(
            self.fair.configure(
                service.max_connections,
                service.per_source_cap,
                service.waiting_per_source,
                service.trusted_sources,
            )
        )

    def try_take(self, source: str) -> bool:
        return self.fair.try_take(source)

    async def wait(self, source: str, timeout: float) -> Take:
        """Wait up to ``timeout`` s for a slot: TAKEN, REFUSED (too many of this
        source waiting already) or WAIT (none came in time)."""
        if self.fair.try_take(source):
            return Take.TAKEN
        if timeout <= 0:
            return Take.WAIT
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fair.enqueue(source, waiter) is Take.REFUSED:
            return Take.REFUSED
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self.fair.cancel(source, waiter)
            if waiter.done() and not waiter.cancelled():
                return Take.TAKEN  # handed a slot as the timeout fired: keep it
            return Take.WAIT
        except asyncio.CancelledError:
            self.fair.cancel(source, waiter)
            if waiter.done() and not waiter.cancelled():
                self.release(source)  # handed a slot just as the client left: pass it on
            raise
        return Take.TAKEN

    def release(self, source: str) -> None:
        self._grant(self.fair.release(source))

    def _grant(self, granted: list[tuple[str, asyncio.Future[None]]]) -> None:
        for source, waiter in granted:
            if waiter.done():  # cancelled, its task not yet told: the slot goes on
                self.release(source)
            else:
                waiter.set_result(None)  # the slot passes straight to the waiter


class ClientOpener:
    """Every client connection of the SC from accept to close: slot, pipe, stream,
    failover, and what is counted of it."""

    def __init__(
        self,
        services: Iterable[ConsumerService],
        registry: ServiceRegistry,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.connections: set[ClientConnection] = set()
        self.slots: dict[uuid_mod.UUID, ConnectionSlots] = {}
        self.bytes: dict[uuid_mod.UUID, list[int]] = {}
        """Bytes up and down per service, as counted so far."""
        self.log_gate = LogGate(LOG_INTERVAL)
        """One line per (service, source, limit) and interval: a flood logs a count."""
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
            self.metrics.bytes.labels(name, "up").inc(up)
            self.metrics.bytes.labels(name, "down").inc(down)
            totals = self.bytes[conn.service.uuid]
            totals[0] += up
            totals[1] += down

    def new_client(self, service: ConsumerService) -> ClientConnection:
        conn = ClientConnection(self, service)
        self.connections.add(conn)
        return conn

    def client_connected(self, conn: LocalConnection) -> None:
        assert isinstance(conn, ClientConnection)
        service = conn.service
        loop = asyncio.get_running_loop()
        attempt: OpenAttempt[MuxPipe] = OpenAttempt(loop.time() + service.request_ttl)
        conn.attempt = attempt
        conn.source = source_of(conn.peer)
        slots = self.slots[service.uuid]
        if slots.try_take(conn.source):
            conn.holds_slot = True
            attempt.slot_taken()
            self._guard(conn, loop.time())
            pipe = self.registry.choose(service.uuid)
            if pipe is not None:  # the common case: no task, no waiting
                self._open(conn, pipe)
                return
        conn.task = loop.create_task(self._serve_when_possible(conn))

    async def _serve_when_possible(
        self, conn: ClientConnection, replay: bytes = b"", eof: bool = False
    ) -> None:
        """Wait (up to request_ttl in all) for a connection slot, then for a pipe;
        on a failover, send the bytes the lost stream carried (``replay``) first."""
        service = conn.service
        loop = asyncio.get_running_loop()
        attempt = conn.attempt
        deadline = attempt.deadline
        if attempt.state is OpenState.WAITING_FOR_SLOT:
            slots = self.slots[service.uuid]
            fair = slots.fair
            by_source = fair.in_use < fair.limit  # a free slot, but not for this source
            if by_source:
                self._limit_hit(conn, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
            taken = await slots.wait(conn.source, deadline - loop.time())
            if taken is Take.REFUSED:
                self._limit_hit(conn, Limit.WAITING_PER_SOURCE, "refused")
                attempt.failed()
                conn.fail(
                    503,
                    f"service '{service.name}' is busy and {conn.source} already has "
                    f"{fair.waiting_from(conn.source)} connection(s) waiting "
                    f"(waiting_per_source {service.waiting_per_source})",
                )
                return
            if taken is Take.WAIT:
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
            conn.holds_slot = True
            attempt.slot_taken()
            self._guard(conn, loop.time())
        pipe = await self.registry.wait_for(
            service.uuid, max(0.0, deadline - loop.time()), exclude=attempt.tried
        )
        if pipe is None:
            attempt.failed()
            if attempt.tried:
                conn.fail(502, f"no other SP could take service '{service.name}' in time")
            else:
                conn.fail(502, f"no SP has registered service '{service.name}'")
            return
        self._open(conn, pipe, replay, eof)

    # --- slow clients: header_timeout, min_rate -----------------------------------

    def _guard(self, conn: ClientConnection, now: float) -> None:
        """Arm the first check of a connection that just got its slot (and starts
        being read; time spent waiting for a slot is the SC's, not the client's):
        its head deadline (``http``) and the end of its first ``min_rate`` window,
        whichever comes first."""
        service = conn.service
        conn.accepted_at = now
        rate = service.effective_min_rate
        if rate > 0:
            conn.rate = RateWindow(rate, service.rate_window, now)
        self._arm_guard(conn, now)

    def _arm_guard(self, conn: ClientConnection, now: float) -> None:
        service = conn.service
        when: float | None = None
        if not conn.head_done and service.header_timeout is not None and conn.written == 0:
            when = conn.accepted_at + service.header_timeout
        if conn.rate is not None:
            when = conn.rate.next_check if when is None else min(when, conn.rate.next_check)
        if when is not None:
            loop = asyncio.get_running_loop()
            conn.guard = loop.call_at(max(when, now), self._check_guard, conn)

    def _check_guard(self, conn: ClientConnection) -> None:
        conn.guard = None
        if conn.done:
            return
        now = asyncio.get_running_loop().time()
        service = conn.service
        timeout = service.header_timeout
        if (
            not conn.head_done
            and timeout is not None
            and conn.written == 0
            and now >= conn.accepted_at + timeout
        ):
            self._limit_hit(conn, Limit.HEADER_TIMEOUT, "sent no complete request head")
            conn.too_slow(f"request head not complete within header_timeout ({timeout:g} s)")
            return
        rate = conn.rate
        if rate is not None and now >= rate.next_check:
            verdict, moved = rate.check(now, conn.read_total + conn.written)
            if verdict is Rate.SLOW:
                self._limit_hit(conn, Limit.MIN_RATE, f"moved {moved} B in {rate.window:g} s")
                conn.too_slow(
                    f"too slow: {moved} B in {rate.window:g} s, below min_rate "
                    f"({rate.min_rate:g} B/s)"
                )
                return
        self._arm_guard(conn, now)

    def _limit_hit(self, conn: ClientConnection, limit: Limit, what: str) -> None:
        """Count a limit's decision; log it, at most once per source, limit and interval."""
        self.metrics.limit_hit(limit)
        service = conn.service
        skipped = self.log_gate.allow((service.uuid, conn.source, limit), time.monotonic())
        if skipped is None:
            return
        more = f" (and {skipped} more from it in the last {LOG_INTERVAL:g} s)" if skipped else ""
        log.warning(
            "service '%s': client %s %s: %s%s",
            service.name,
            conn.source,
            what,
            _LIMIT_WORDS[limit].format(service=service, cap=self._cap(conn)),
            more,
        )

    def _cap(self, conn: ClientConnection) -> int:
        return self.slots[conn.service.uuid].fair.cap_of(conn.source)

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
        if not conn.counted:
            conn.counted = True
            self.metrics.streams_open.labels(service.name).inc()
        assert stream.opened is not None
        self._watch_open(conn, stream)
        stream.opened.add_done_callback(lambda opened: self._opened(conn, pipe, stream, opened))

    def _watch_open(self, conn: ClientConnection, stream: Stream) -> None:
        """One timer while the SP has not answered: the next probe, or the deadline."""
        loop = asyncio.get_running_loop()
        when = min(conn.attempt.deadline, loop.time() + PROBE_INTERVAL)
        conn.timer = loop.call_at(when, self._check_open, conn, stream)

    def _check_open(self, conn: ClientConnection, stream: Stream) -> None:
        """Still no OPEN_OK. Past request_ttl: 504. Else, if the pipe has gone silent
        (a killed udp SP says nothing, and the heartbeat timeout takes 8 s) while
        another pipe is heard from, open the connection there instead."""
        conn.timer = None
        if conn.stream is not stream or stream.opened is None or stream.opened.done():
            return
        attempt = conn.attempt
        pipe = attempt.pipe
        assert pipe is not None
        silent = time.monotonic() - pipe.last_heard
        decision = attempt.probe(
            asyncio.get_running_loop().time(),
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
            stream.reset(ResetCode.CANCELLED, f"pipe silent for {silent:.1f} s")
            stream.opened.cancel()
            lost = PipeLost(OpenFailure.CONNECT_ERROR, f"pipe silent for {silent:.1f} s")
            if not self._fail_over(conn, pipe, stream, lost):
                attempt.failed()
                conn.fail(502, f"service '{conn.service.name}' unreachable: {lost.reason}")
            return
        self._watch_open(conn, stream)

    def _opened(
        self, conn: ClientConnection, pipe: MuxPipe, stream: Stream, opened: asyncio.Future[None]
    ) -> None:
        if conn.stream is not stream:
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if opened.cancelled():
            return
        error = opened.exception()
        if error is None:
            conn.attempt.confirmed()
            stream.replay = None
            self.registry.note_opened(conn.service.uuid, pipe)
            self.metrics.open_seconds.labels(conn.service.name).observe(
                time.monotonic() - conn.started
            )
            return
        if isinstance(error, OpenRefused) and not isinstance(error, PipeLost):
            self.registry.note_refused(conn.service.uuid, pipe)
        if conn.done or self._fail_over(conn, pipe, stream, error):
            return
        reason = error.reason if isinstance(error, OpenRefused) else str(error)
        conn.attempt.failed()
        conn.fail(502, f"service '{conn.service.name}' unreachable: {reason}")

    def _fail_over(
        self, conn: ClientConnection, pipe: MuxPipe, stream: Stream, error: BaseException
    ) -> bool:
        """Open ``conn`` again on another pipe when its pipe died, or its SP could
        not reach the service, before anything reached the client and within
        request_ttl. True when a new pipe is being sought."""
        loop = asyncio.get_running_loop()
        service = conn.service
        lost = isinstance(error, PipeLost)
        if stream.replay is None or not conn.attempt.fail_over(
            loop.time(),
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
            "pipe lost" if lost else f"refused ({getattr(error, 'reason', error)})",
            len(replay),
        )
        conn.unbind()
        conn.task = loop.create_task(self._serve_when_possible(conn, replay, eof))
        return True

    def _open_expired(self, conn: ClientConnection) -> None:
        stream = conn.stream
        if stream is None or stream.opened is None or stream.opened.done():
            return
        stream.reset(ResetCode.CANCELLED, "request_ttl ran out before the service answered")
        stream.opened.cancel()
        conn.attempt.failed()
        conn.fail(
            504,
            f"service '{conn.service.name}' was not reached within "
            f"request_ttl ({conn.service.request_ttl:g} s)",
        )

    def connection_done(self, conn: LocalConnection) -> None:
        assert isinstance(conn, ClientConnection)
        self.connections.discard(conn)
        if conn.task is not None and not conn.task.done():
            conn.task.cancel()
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.guard is not None:
            conn.guard.cancel()
            conn.guard = None
        if conn.holds_slot:
            conn.holds_slot = False
            self.slots[conn.service.uuid].release(conn.source)
        stream = conn.stream
        name = conn.service.name
        self.metrics.streams.labels(name, conn.outcome_kind or Outcome.CLOSED_EARLY).inc()
        if conn.counted:
            self.metrics.streams_open.labels(name).dec()
        self._count(conn)
        where = f"{conn.attempt.pipe} stream {stream.id}" if stream is not None else "no pipe"
        up = stream.bytes_out if stream is not None else 0
        down = stream.bytes_in if stream is not None else 0
        outcome = conn.outcome or "closed"
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(
            level,
            "%s: client %s service '%s': %d B up, %d B down, %.3f s: %s",
            where,
            conn.peer,
            conn.service.name,
            up,
            down,
            time.monotonic() - conn.started,
            outcome,
        )
