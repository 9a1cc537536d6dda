"""The service provider (SP): dials every configured pipe, proves the token,
registers its services, and connects each stream the SC opens to the real
service. Pipes are redialed forever with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from edgerq import __version__
from edgerq.admin import AdminServer
from edgerq.backoff import Backoff
from edgerq.carriers import carrier
from edgerq.config.model import PipeConfig, PipeLimits, ProviderConfig, ProviderService
from edgerq.errors import AuthError, VersionError
from edgerq.labels import Outcome
from edgerq.metrics import Metrics
from edgerq.pipe import MuxPipe, Role, open_failure_from_os_error
from edgerq.protocol import proxy_header
from edgerq.protocol.handshake import ProviderHandshake
from edgerq.protocol.messages import Open, OpenFailure, Register, RegisterStatus
from edgerq.relay import LocalConnection
from edgerq.stream import OpenRefused, Stream
from edgerq.waiting import wait_until

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
        self.accepted: set[uuid_mod.UUID] = set()
        self.connections: set[LocalConnection] = set()
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
        return pipe_class(
            Role.PROVIDER,
            ProviderHandshake(self.token, self.config.name),
            self,
            name=self.config.name,
            max_streams=self.limits.streams_per_pipe,
            control_backlog=self.limits.control_backlog,
            handshake_timeout=self.limits.handshake_timeout,
            on_limit=self.metrics.limit_hit,
        )

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
        self.metrics.streams_open.labels(service.name).inc()
        asyncio.get_running_loop().create_task(self._connect(pipe, stream, conn, service))

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

    async def _connect(
        self, pipe: MuxPipe, stream: Stream, conn: LocalConnection, service: ProviderService
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, _ = await loop.create_connection(
                    lambda: conn, service.hostname, service.port
                )
        except (OSError, TimeoutError) as exc:
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
            return
        if stream.finished or conn.done:
            transport.abort()
            return
        pipe.answer_open(stream, None)

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
        self.metrics.bytes.labels(name, "up").inc(received)
        self.metrics.bytes.labels(name, "down").inc(sent)

    def _connection_done(self, conn: LocalConnection) -> None:
        self.connections.discard(conn)
        stream = conn.stream
        if stream is None:
            return
        outcome = conn.outcome or "closed"
        service = self.services.get(stream.service)
        name = service.name if service is not None else str(stream.service)
        self.metrics.streams_open.labels(name).dec()
        self.metrics.streams.labels(name, conn.outcome_kind or Outcome.CLOSED_EARLY).inc()
        self._count(conn)
        level = logging.DEBUG if outcome == "ok" else logging.INFO
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


def same_but_targets(old: PipeConfig, new: PipeConfig) -> bool:
    """True when only where services point (or their names) changed: the pipe and
    its registration can stay."""
    return replace(old, services=()) == replace(new, services=()) and [
        s.uuid for s in old.services
    ] == [s.uuid for s in new.services]


class ServiceProvider:
    """The SP daemon: one ``ProviderPipe`` per configured pipe."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics.on_refresh(self._count_bytes)
        self.pipes = [ProviderPipe(p, self.metrics, config.limits) for p in config.pipes]
        self._tasks: list[asyncio.Task[None]] = []
        self.admin: AdminServer | None = None
        self.started = time.monotonic()
        self.draining = False
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.config.admin is not None:
            self.admin = AdminServer(self.config.admin, self.metrics, self.ready, self.status)
            await self.admin.start()
        for pipe in self.pipes:
            self._tasks.append(loop.create_task(pipe.run(), name=pipe.label))

    async def drain(self, grace: float) -> None:
        """Take no new streams; let open ones finish, for up to ``grace`` s.
        ``stop`` then closes what is left."""
        self.draining = True
        for pipe, task in zip(self.pipes, self._tasks, strict=True):
            pipe.drain()
            if pipe.pipe is None:
                task.cancel()  # not connected: nothing to finish
        log.info(
            "draining: no new streams, %d open may finish within %g s", self.open_streams(), grace
        )
        if await wait_until(lambda: self.open_streams() == 0, grace):
            log.info("drained: every stream finished")
        else:
            log.warning(
                "grace period of %g s over: cutting %d stream(s)", grace, self.open_streams()
            )

    async def reload(self, new: ProviderConfig) -> None:
        """Apply a re-read config. Pipes whose settings are unchanged stay up; a pipe
        whose services only point elsewhere is updated in place (new streams go to
        the new address); other changed, and removed, pipes drain for up to
        ``shutdown_grace`` s while their replacements dial."""
        current = {
            p.config.name: (p, task) for p, task in zip(self.pipes, self._tasks, strict=True)
        }
        pipes: list[ProviderPipe] = []
        tasks: list[asyncio.Task[None]] = []
        started = updated = 0
        loop = asyncio.get_running_loop()
        for config in new.pipes:
            old = current.pop(config.name, None)
            if old is not None and old[0].config == config:
                pipes.append(old[0])
                tasks.append(old[1])
                continue
            if old is not None and same_but_targets(old[0].config, config):
                old[0].retarget(config)
                pipes.append(old[0])
                tasks.append(old[1])
                updated += 1
                continue
            if old is not None:
                self._retire(*old, new.shutdown_grace)
            pipe = ProviderPipe(config, self.metrics)
            pipes.append(pipe)
            tasks.append(loop.create_task(pipe.run(), name=pipe.label))
            started += 1
        for pipe, task in current.values():
            self._retire(pipe, task, new.shutdown_grace)
        self.pipes, self._tasks, self.config = pipes, tasks, new
        if self.admin is not None and self.admin.config != new.admin:
            await self.admin.stop()
            self.admin = None
        if self.admin is None and new.admin is not None:
            self.admin = AdminServer(new.admin, self.metrics, self.ready, self.status)
            await self.admin.start()
        log.info(
            "reloaded %s: %d pipe(s) (re)started, %d retargeted, %d removed, %d unchanged",
            new.path,
            started,
            updated,
            len(current),
            len(pipes) - started - updated,
        )

    def _retire(self, pipe: ProviderPipe, task: asyncio.Task[None], grace: float) -> None:
        """A reload removed or replaced ``pipe``: drain it, then close it."""
        log.info(
            "%s: removed or changed by a reload; %d open stream(s) may finish within %g s",
            pipe.label,
            len(pipe.connections),
            grace,
        )
        pipe.drain()
        if pipe.pipe is None:
            task.cancel()
            return

        async def finish() -> None:
            if not await wait_until(lambda: not pipe.connections, grace):
                log.warning(
                    "%s: grace period over, cutting %d stream(s)",
                    pipe.label,
                    len(pipe.connections),
                )
            task.cancel()
            pipe.close()

        self._retiring.add(asyncio.get_running_loop().create_task(finish()))
        self._retiring = {t for t in self._retiring if not t.done()}

    def open_streams(self) -> int:
        return sum(len(p.connections) for p in self.pipes)

    def _count_bytes(self) -> None:
        for pipe in self.pipes:
            pipe.count_bytes()

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: shutting down"
        registered = [p.config.name for p in self.pipes if p.ready.is_set()]
        if registered:
            return True, "registered on: " + ", ".join(registered)
        return False, "no pipe registered yet"

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "role": "sp",
            "version": __version__,
            "uptime_s": round(now - self.started, 1),
            "pipes": [
                {
                    "name": p.config.name,
                    "sc": f"{p.config.hostname}:{p.config.port}",
                    "carrier": p.config.protocol,
                    "registered": p.ready.is_set(),
                    "up_s": round(now - p.pipe.opened_at, 1) if p.pipe is not None else None,
                    "streams_open": len(p.pipe.streams) if p.pipe is not None else 0,
                    "streams_total": p.pipe.streams_total if p.pipe is not None else 0,
                    "services": [
                        {
                            "name": s.name,
                            "uuid": str(s.uuid),
                            "target": f"{s.hostname}:{s.port}",
                            "accepted": s.uuid in p.accepted,
                            "proxy_protocol": (
                                f"v{s.proxy_protocol}" if s.proxy_protocol is not None else None
                            ),
                        }
                        for s in p.config.services
                    ],
                }
                for p in self.pipes
            ],
        }

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        for task in self._tasks:
            task.cancel()
        for pipe in self.pipes:
            pipe.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closing = [p.pipe.closed for p in self.pipes if p.pipe is not None]
        if closing:
            await asyncio.wait(closing, timeout=3)
        self._tasks.clear()
