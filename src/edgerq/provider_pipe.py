"""One pipe of the SP: dial it, keep it up, register, and serve the SC's streams.

``ProviderPipe`` is the ``ProviderOwner`` of the pipe it dials: it registers
the pipe's services, answers each OPEN by connecting to the service (with a
PROXY protocol header when configured), counts what flows, and redials with
backoff when the pipe is lost. ``ServiceProvider`` (sp.py) runs one per
configured pipe.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Sequence
from typing import Any

from edgerq.backoff import Backoff
from edgerq.carriers import carrier
from edgerq.config.model import PipeConfig, PipeLimits, ProviderService
from edgerq.errors import AuthError, VersionError
from edgerq.labels import Outcome
from edgerq.metrics import Metrics
from edgerq.pipe import MuxPipe, Role, open_failure_from_os_error
from edgerq.protocol import proxy_header
from edgerq.protocol.handshake import ProviderHandshake
from edgerq.protocol.messages import Open, OpenFailure, Register, RegisterStatus
from edgerq.relay import LocalConnection
from edgerq.stream import OpenRefused, Stream
from edgerq.waiting import Deadlines

log = logging.getLogger("edgerq.sp")

CONNECT_TIMEOUT = 10.0
DIAL_TIMEOUT = 10.0
REDIAL_STEADY = 6
"""Redials 0.25-0.5 s apart (about 2 s in all) before the delay grows: an SC
restarted in place is found within half a second of its return."""


class ProviderPipe:
    """One configured pipe: dials it, keeps it up, and serves the streams on it."""

    def __init__(
        self, config: PipeConfig, metrics: Metrics | None = None, limits: PipeLimits | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.limits = limits or PipeLimits()
        self.token = config.auth_token.reveal() if config.auth_token is not None else None
        self.services = {s.uuid: s for s in config.services}
        self.pipe: MuxPipe | None = None
        self._dialing: MuxPipe | None = None
        """The pipe of the latest dial, from before its handshake on."""
        self._dialed_streams = self.limits.streams_per_pipe
        """streams_per_pipe when that pipe was built (udp: what QUIC announced)."""
        self.accepted: set[uuid_mod.UUID] = set()
        self.connections: set[LocalConnection] = set()
        self.connecting: Deadlines[asyncio.Task[Any]] = Deadlines(self._connect_expired)
        """Connects to services under way, each with its CONNECT_TIMEOUT."""
        self._timed_out: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()
        self._failure: Exception | None = None
        self.backoff = Backoff(steady=REDIAL_STEADY)
        self.draining = False

    @property
    def label(self) -> str:
        c = self.config
        return f"pipe '{c.name}' to {c.hostname}:{c.port}"

    async def run(self) -> None:
        """Dial, serve until the pipe dies, back off, redial; forever (until cancelled)."""
        if self.token is None:
            log.warning(
                "%s: no auth_token configured; only an SC without a token will accept this pipe",
                self.label,
            )
        if self.config.protocol == "udp":
            if self.config.server_fingerprint:
                log.info(
                    "%s: the SC must present the certificate with SHA-256 fingerprint %s",
                    self.label,
                    self.config.server_fingerprint,
                )
            elif self.config.ca_file:
                log.info(
                    "%s: the SC's certificate is verified against %s",
                    self.label,
                    self.config.ca_file,
                )
            else:
                log.warning(
                    "%s: <insecure>yes</insecure>: the SC's certificate is NOT "
                    "verified; anyone on the path can impersonate it",
                    self.label,
                )
        for service in self.config.services:
            if service.proxy_protocol is not None:
                log.info(
                    "%s: service '%s' gets a PROXY protocol v%d header with the client's address",
                    self.label,
                    service.name,
                    service.proxy_protocol,
                )
        attempt = 0
        while True:
            attempt += 1
            self._failure = None
            try:
                async with carrier(self.config.protocol).dial(
                    self.config, self._new_pipe, DIAL_TIMEOUT
                ) as pipe:
                    reason = await pipe.closed
            except (OSError, TimeoutError, ConnectionError) as exc:
                reason = (
                    "timed out"
                    if isinstance(exc, TimeoutError)
                    else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
                )
                delay = self.backoff.next_delay()
                log.warning(
                    "%s: cannot connect (%s); retry %d in %.1f s",
                    self.label,
                    reason,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except Exception:
                # A bug must not end the redial loop: say so loudly and keep going.
                delay = self.backoff.next_delay()
                log.exception("%s: unexpected error; redial in %.1f s", self.label, delay)
                await asyncio.sleep(delay)
                continue
            self.ready.clear()
            self.pipe = None
            if self.draining:
                return
            if pipe.registered:
                self.backoff.reset()
                attempt = 0
            elif self._failure is not None:
                # Refused by the SC (token, version, a block): retrying quickly would
                # only add failed authentications against this address.
                self.backoff.skip_steady()
            delay = self.backoff.next_delay()
            if isinstance(self._failure, AuthError | VersionError):
                log.error("%s: refused: %s; retry in %.1f s", self.label, reason, delay)
            else:
                log.warning("%s: pipe closed (%s); redial in %.1f s", self.label, reason, delay)
            await asyncio.sleep(delay)

    def retarget(self, config: PipeConfig) -> None:
        """Same pipe, same services, new addresses behind it: used by new streams."""
        for service in config.services:
            before = self.services.get(service.uuid)
            if before is not None and before != service:
                log.info(
                    "%s: service '%s' now at %s:%d (was %s:%d)",
                    self.label,
                    service.name,
                    service.hostname,
                    service.port,
                    before.hostname,
                    before.port,
                )
        self.config = config
        self.services = {s.uuid: s for s in config.services}

    def apply_limits(self, limits: PipeLimits) -> None:
        """A reload changed ``<limits>``: the next dial uses them all; the pipe up now
        takes ``streams_per_pipe`` (for new streams; open ones go on) and
        ``control_backlog`` at once. On udp, QUIC fixed its stream limit at the
        handshake, so a raised ``streams_per_pipe`` waits for the next dial there."""
        if limits == self.limits:
            return
        self.limits = limits
        pipe = self._dialing
        if pipe is None or pipe.closed.done():
            return
        streams = limits.streams_per_pipe
        if pipe.carrier == "udp" and streams > self._dialed_streams:
            log.info(
                "%s: reload raised streams_per_pipe to %d; this udp pipe keeps %d until it "
                "is next dialed (QUIC announced its stream limit at the handshake)",
                self.label,
                streams,
                self._dialed_streams,
            )
            streams = self._dialed_streams
        pipe.set_limits(
            max_streams=streams,
            control_backlog=limits.control_backlog,
            pipe_buffer=limits.pipe_buffer,
        )
        log.info(
            "%s: reload: streams_per_pipe %d, control_backlog %d and pipe_buffer %d apply "
            "to this pipe now",
            self.label,
            streams,
            limits.control_backlog,
            limits.pipe_buffer,
        )

    def drain(self) -> None:
        """Take no new streams (the SC sends them to other pipes); open ones go on."""
        self.draining = True
        if self.pipe is not None:
            self.pipe.drain("SP shutting down")

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close(reason="SP shutting down")
        for conn in list(self.connections):
            conn.abort()

    # --- ProviderOwner -------------------------------------------------------------------

    def _new_pipe(self, pipe_class: type[MuxPipe]) -> MuxPipe:
        self._dialed_streams = self.limits.streams_per_pipe
        self._dialing = pipe_class(
            Role.PROVIDER,
            ProviderHandshake(self.token, self.config.name),
            self,
            name=self.config.name,
            max_streams=self.limits.streams_per_pipe,
            control_backlog=self.limits.control_backlog,
            handshake_timeout=self.limits.handshake_timeout,
            on_limit=self.metrics.limit_hit,
            stream_window=self.config.stream_window,
            pipe_buffer=self.limits.pipe_buffer,
        )
        return self._dialing

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        self.pipe = pipe
        self.metrics.pipes.labels(pipe.carrier, self.config.name).inc()
        log.info(
            "%s: connected and authenticated as %s; registering %d service(s)",
            self.label,
            pipe,
            len(self.services),
        )
        pipe.send_raw(Register(tuple(self.services)).encode())

    def pipe_registered(
        self, pipe: MuxPipe, results: Sequence[tuple[uuid_mod.UUID, RegisterStatus]]
    ) -> None:
        update = self.ready.is_set()  # a second answer: the SC reloaded its config
        before = self.accepted
        self.accepted = set()
        for service_uuid, status in results:
            service = self.services.get(service_uuid)
            name = service.name if service is not None else "?"
            accepted = status is RegisterStatus.ACCEPTED
            if accepted:
                self.accepted.add(service_uuid)
            if update and accepted == (service_uuid in before):
                continue  # unchanged
            self.metrics.registrations.labels("accepted" if accepted else "unknown").inc()
            if accepted:
                log.info("%s: service '%s' (%s) registered", self.label, name, service_uuid)
            else:
                log.warning(
                    "%s: the SC does not know service '%s' (%s); it will not be reachable there",
                    self.label,
                    name,
                    service_uuid,
                )
        if not self.accepted:
            log.error("%s: the SC accepted none of this pipe's services", self.label)
        self.ready.set()

    def pipe_open(self, pipe: MuxPipe, request: Open) -> None:
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
            stream = pipe.accept_stream(request)
            pipe.answer_open(stream, refusal)
            return
        if self.draining:
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
        self._connect(pipe, stream, conn, service)

    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None:
        self._failure = pipe.error
        self.metrics.pipe_closed(pipe.carrier, self.config.name, pipe.authenticated, pipe.error)
        if pipe.authenticated:
            log.info(
                "%s closed after %.1f s, %d stream(s): %s",
                pipe,
                time.monotonic() - pipe.opened_at,
                pipe.streams_total,
                reason,
            )

    # --- streams ---------------------------------------------------------------------

    def _proxy_header(self, pipe: MuxPipe, request: Open, version: int) -> bytes:
        """The PROXY protocol header for the client the SC reported in ``request``."""
        header, problem = proxy_header.header(version, request.client, request.destination)
        if problem is not None:
            log.warning("%s stream %d: PROXY header: %s", pipe, request.stream_id, problem)
        return header

    def _connect(
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
        self.connecting.set(task, loop.time() + CONNECT_TIMEOUT, loop)

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
