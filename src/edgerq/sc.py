"""The service consumer (SC): accepts pipes from SPs and serves each configured
service on a local TCP port, relaying every connection through a pipe that
registered the service's UUID."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid as uuid_mod
from collections.abc import Sequence
from typing import Any

from edgerq import __version__
from edgerq.admin import AdminServer
from edgerq.carriers import carrier
from edgerq.config.model import ConsumerConfig, ConsumerService
from edgerq.errors import AuthError, ConfigError
from edgerq.httperrors import error_response
from edgerq.limits import PipeGate
from edgerq.metrics import Metrics, outcome_label
from edgerq.pipe import MuxPipe, Role
from edgerq.protocol.handshake import ConsumerHandshake
from edgerq.protocol.messages import GoawayCode, Open, RegisterStatus, ResetCode
from edgerq.registry import ServiceRegistry
from edgerq.relay import LocalConnection
from edgerq.stream import OpenRefused

log = logging.getLogger("edgerq.sc")


class ClientConnection(LocalConnection):
    """A client of one service port. ``http`` services answer tunnel failures with 5xx."""

    def __init__(self, consumer: ServiceConsumer, service: ConsumerService) -> None:
        super().__init__(
            service.request_buffer,
            on_done=consumer.connection_done,
            idle_timeout=service.idle_timeout,
        )
        self.service = service
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.holds_slot = False

    def fail(self, status: int, message: str) -> None:
        """The tunnel cannot serve this client: say why (http) or close it."""
        self.outcome = f"{status} {message}"
        if self.service.type == "http" and self.written == 0:
            self.send_and_close(error_response(status, message))
        else:
            self.abort()

    def on_reset(self, reason: str) -> None:
        stream = self.stream
        if stream is not None and stream.opened is not None and not stream.opened.done():
            return  # the opener reports it (502/504)
        if self.service.type == "http" and self.written == 0:
            self.fail(502, f"tunnel closed before the service answered ({reason})")
        else:
            super().on_reset(reason)


class ConnectionSlots:
    """``max_connections`` for one service: taken at once when free (no task, no
    await on the hot path), else waited for in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a slot; True when one was taken."""
        if self.try_take():
            return True
        if timeout <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as the client left: pass it on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter
                return
        self.in_use -= 1


class ServiceConsumer:
    """The SC daemon: a pipe listener and one TCP listener per service."""

    def __init__(self, config: ConsumerConfig) -> None:
        self.config = config
        self.token = config.auth_token.reveal() if config.auth_token is not None else None
        self.services = {s.uuid: s for s in config.services}
        self.registry = ServiceRegistry()
        self.pipes: set[MuxPipe] = set()
        self.connections: set[ClientConnection] = set()
        self._slots = {s.uuid: ConnectionSlots(s.max_connections) for s in config.services}
        self._bytes = {s.uuid: [0, 0] for s in config.services}
        self._servers: list[asyncio.Server] = []
        self._listeners: list[Any] = []
        self.listener_addresses: dict[str, tuple[str, int]] = {}
        self.service_addresses: dict[uuid_mod.UUID, tuple[str, int]] = {}
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.gate = PipeGate(config.limits, self.metrics)
        self.admin: AdminServer | None = None

    # --- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        if self.token is None:
            log.warning(
                "no auth_token configured: any SP that reaches the listener may "
                "register services (set <auth_token> or EDGERQ_AUTH_TOKEN)"
            )
        else:
            log.info("SP authentication required (token from %s)", self.config.token_source)
        try:
            for listener in self.config.listeners:
                pipe_listener = await carrier(listener.protocol).listen(listener, self._new_pipe)
                self._listeners.append(pipe_listener)
                self.listener_addresses[listener.protocol] = pipe_listener.address
                log.info("accepting pipes (%s) on %s:%d", listener.protocol, *pipe_listener.address)
            for service in self.config.services:
                server = await asyncio.get_running_loop().create_server(
                    lambda s=service: self._new_client(s),  # type: ignore[misc]
                    service.host,
                    service.port,
                    backlog=max(128, service.max_connections),
                    reuse_address=True,
                )
                self._servers.append(server)
                address = server.sockets[0].getsockname()[:2]
                self.service_addresses[service.uuid] = address
                log.info(
                    "service '%s' (%s, %s) on %s:%d",
                    service.name,
                    service.uuid,
                    service.type,
                    *address,
                )
            if self.config.admin is not None:
                self.admin = AdminServer(self.config.admin, self.metrics, self.ready, self.status)
                await self.admin.start()
        except OSError as exc:
            await self.stop()
            raise OSError(exc.errno, f"cannot listen: {exc.strerror or exc}") from exc
        except ConfigError:
            await self.stop()
            raise

    def ready(self) -> tuple[bool, str]:
        bound = len(self._listeners) == len(self.config.listeners) and len(
            self.service_addresses
        ) == len(self.config.services)
        return bound, "listeners bound" if bound else "listeners not bound"

    def status(self) -> dict[str, Any]:
        return {
            "role": "sc",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "pipes": [
                {
                    "id": p.id,
                    "sp": p.name,
                    "peer": p.peer,
                    "carrier": p.carrier,
                    "up_s": round(time.monotonic() - p.opened_at, 1),
                    "streams_open": len(p.streams),
                    "streams_total": p.streams_total,
                }
                for p in sorted(self.pipes, key=lambda p: p.id)
                if p.authenticated
            ],
            "services": [
                {
                    "name": s.name,
                    "uuid": str(s.uuid),
                    "port": s.port,
                    "pipes": len(self.registry.pipes_for(s.uuid)),
                    "open": self._slots[s.uuid].in_use,
                    "bytes_up": self._bytes[s.uuid][0],
                    "bytes_down": self._bytes[s.uuid][1],
                }
                for s in self.config.services
            ],
        }

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        for pipe_listener in self._listeners:
            pipe_listener.close()
        for server in self._servers:
            server.close()
        for pipe in list(self.pipes):
            pipe.close(GoawayCode.SHUTDOWN, "SC shutting down")
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        for pipe_listener in self._listeners:
            await pipe_listener.wait_closed()
        if self.pipes:
            await asyncio.wait([p.closed for p in self.pipes], timeout=3)
        self._servers.clear()
        self._listeners.clear()

    # --- pipes -----------------------------------------------------------------------

    def _new_pipe(self, pipe_class: type[MuxPipe]) -> MuxPipe:
        limits = self.config.limits
        pipe = pipe_class(
            Role.CONSUMER,
            ConsumerHandshake(self.token),
            self,
            handshake_timeout=limits.handshake_timeout,
            admit=self.gate.admit,
            control_backlog=limits.control_backlog,
        )
        self.pipes.add(pipe)
        return pipe

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        self.gate.authenticated(pipe)
        self.metrics.pipes.labels(pipe.carrier, pipe.name).inc()
        log.info(
            "%s: SP authenticated%s", pipe, "" if self.token is not None else " (no token required)"
        )

    def pipe_register(
        self, pipe: MuxPipe, uuids: Sequence[uuid_mod.UUID]
    ) -> list[tuple[uuid_mod.UUID, RegisterStatus]]:
        results = []
        for service_uuid in uuids:
            service = self.services.get(service_uuid)
            if service is None:
                log.warning(
                    "%s: SP offers service %s, which this SC does not configure", pipe, service_uuid
                )
                results.append((service_uuid, RegisterStatus.UNKNOWN_SERVICE))
                self.metrics.registrations.labels("unknown").inc()
                continue
            self.metrics.registrations.labels("accepted").inc()
            self.registry.add(service_uuid, pipe)
            log.info(
                "%s: registered service '%s' (%s), %d pipe(s) now serve it",
                pipe,
                service.name,
                service_uuid,
                len(self.registry.pipes_for(service_uuid)),
            )
            results.append((service_uuid, RegisterStatus.ACCEPTED))
        return results

    def pipe_registered(self, pipe: MuxPipe, results: object) -> None:
        raise AssertionError("the SC never receives REGISTERED")

    def pipe_open(self, pipe: MuxPipe, request: Open) -> None:
        raise AssertionError("the SC never receives OPEN")

    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None:
        self.pipes.discard(pipe)
        if self.gate.closed(pipe):
            return  # refused before its handshake: counted by the gate, not logged per pipe
        gone = self.registry.remove_pipe(pipe)
        if pipe.authenticated:
            self.metrics.pipes.labels(pipe.carrier, pipe.name).dec()
        if isinstance(pipe.error, AuthError):
            self.metrics.auth_failures.inc()
        elif pipe.error is not None:
            self.metrics.rejected.labels(type(pipe.error).__name__).inc()
        if pipe.authenticated:
            log.info(
                "%s closed after %.1f s, %d stream(s): %s; services withdrawn: %s",
                pipe,
                time.monotonic() - pipe.opened_at,
                pipe.streams_total,
                reason,
                ", ".join(self.services[u].name for u in gone) or "none",
            )
        else:
            log.warning("%s closed before authenticating: %s", pipe, reason)

    # --- clients ---------------------------------------------------------------------

    def _new_client(self, service: ConsumerService) -> ClientConnection:
        conn = ClientConnection(self, service)
        conn._on_connected = self._client_connected
        self.connections.add(conn)
        return conn

    def _client_connected(self, conn: LocalConnection) -> None:
        assert isinstance(conn, ClientConnection)
        service = conn.service
        loop = asyncio.get_running_loop()
        deadline = loop.time() + service.request_ttl
        slots = self._slots[service.uuid]
        if slots.try_take():
            conn.holds_slot = True
            pipe = self.registry.choose(service.uuid)
            if pipe is not None:  # the common case: no task, no waiting
                self._open(conn, pipe, deadline)
                return
        conn.task = loop.create_task(self._serve_when_possible(conn, deadline))

    async def _serve_when_possible(self, conn: ClientConnection, deadline: float) -> None:
        """Wait (up to request_ttl in all) for a connection slot, then for a pipe."""
        service = conn.service
        loop = asyncio.get_running_loop()
        if not conn.holds_slot:
            if not await self._slots[service.uuid].wait(deadline - loop.time()):
                conn.fail(
                    503,
                    f"service '{service.name}' is at max_connections "
                    f"({service.max_connections}) for over {service.request_ttl:g} s",
                )
                return
            conn.holds_slot = True
        pipe = await self.registry.wait_for(service.uuid, max(0.0, deadline - loop.time()))
        if pipe is None:
            conn.fail(502, f"no SP has registered service '{service.name}'")
            return
        self._open(conn, pipe, deadline)

    def _open(self, conn: ClientConnection, pipe: MuxPipe, deadline: float) -> None:
        service = conn.service
        stream = pipe.open_stream(
            service.uuid,
            window=service.stream_window,
            max_frame=service.request_buffer,
            client=conn.peer,
            sink=conn,
        )
        conn.bind(stream)
        self.metrics.streams_open.labels(service.name).inc()
        assert stream.opened is not None
        conn.timer = asyncio.get_running_loop().call_at(deadline, self._open_expired, conn)
        stream.opened.add_done_callback(lambda opened: self._opened(conn, opened))

    def _opened(self, conn: ClientConnection, opened: asyncio.Future[None]) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if opened.cancelled():
            return
        error = opened.exception()
        if error is None:
            self.metrics.open_seconds.labels(conn.service.name).observe(
                time.monotonic() - conn.started
            )
        else:
            reason = error.reason if isinstance(error, OpenRefused) else str(error)
            conn.fail(502, f"service '{conn.service.name}' unreachable: {reason}")

    def _open_expired(self, conn: ClientConnection) -> None:
        conn.timer = None
        stream = conn.stream
        if stream is None or stream.opened is None or stream.opened.done():
            return
        stream.reset(ResetCode.CANCELLED, "request_ttl ran out before the service answered")
        stream.opened.cancel()
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
        if conn.holds_slot:
            conn.holds_slot = False
            self._slots[conn.service.uuid].release()
        stream = conn.stream
        name = conn.service.name
        outcome_text = conn.outcome or "closed"
        self.metrics.streams.labels(name, outcome_label(outcome_text)).inc()
        if stream is not None:
            self.metrics.streams_open.labels(name).dec()
            self.metrics.bytes.labels(name, "up").inc(stream.bytes_out)
            self.metrics.bytes.labels(name, "down").inc(stream.bytes_in)
            totals = self._bytes[conn.service.uuid]
            totals[0] += stream.bytes_out
            totals[1] += stream.bytes_in
        where = f"{stream.pipe} stream {stream.id}" if stream is not None else "no pipe"
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
