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
from edgerq.config.model import ConsumerConfig, ConsumerService, ListenerConfig
from edgerq.errors import AuthError, ConfigError
from edgerq.httperrors import error_response
from edgerq.labels import Outcome
from edgerq.limits import PipeGate, source_address
from edgerq.metrics import Metrics
from edgerq.pipe import MuxPipe, Role
from edgerq.protocol.handshake import ConsumerHandshake
from edgerq.protocol.messages import (
    GoawayCode,
    Open,
    OpenFailure,
    Registered,
    RegisterStatus,
    ResetCode,
)
from edgerq.registry import SUSPECT_AFTER, ServiceRegistry
from edgerq.relay import LocalConnection
from edgerq.stream import OpenRefused, PipeLost, Stream
from edgerq.waiting import wait_until

log = logging.getLogger("edgerq.sc")

PROBE_INTERVAL = 0.5
"""While a new connection waits for OPEN_OK, how often its pipe is checked for silence."""


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
        self.deadline = 0.0
        """Loop time by which the service must have answered (request_ttl)."""
        self.confirmed = False
        """The SP has connected to the service (OPEN_OK); no failover after that."""
        self.counted = False
        self.tried: frozenset[MuxPipe] = frozenset()
        """Pipes this connection was opened on and lost; only failovers add to it."""

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
        if stream is not None and not self.confirmed and stream.opened is not None:
            opened = stream.opened
            if not opened.done() or (not opened.cancelled() and opened.exception() is not None):
                return  # the opener decides: another pipe, or 502/504
        if self.service.type == "http" and self.written == 0:
            self.fail(502, f"tunnel closed before the service answered ({reason})")
        else:
            super().on_reset(reason, outcome)


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
        self._servers: dict[uuid_mod.UUID, asyncio.Server] = {}
        self._listeners: dict[str, Any] = {}
        """Carrier name -> its pipe listener."""
        self._offered: dict[MuxPipe, tuple[uuid_mod.UUID, ...]] = {}
        """What each pipe offered, known or not: a reload may add a service."""
        self.listener_addresses: dict[str, tuple[str, int]] = {}
        self.service_addresses: dict[uuid_mod.UUID, tuple[str, int]] = {}
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.metrics.on_refresh(self._count_bytes)
        self.gate = PipeGate(config.limits, self.metrics)
        self.admin: AdminServer | None = None
        self.draining = False

    # --- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        self._log_token()
        try:
            for listener in self.config.listeners:
                await self._listen(listener)
            for service in self.config.services:
                self._servers[service.uuid] = await self._serve(service)
            if self.config.admin is not None:
                self.admin = AdminServer(self.config.admin, self.metrics, self.ready, self.status)
                await self.admin.start()
        except OSError as exc:
            await self.stop()
            raise OSError(exc.errno, f"cannot listen: {exc.strerror or exc}") from exc
        except ConfigError:
            await self.stop()
            raise

    def _log_token(self) -> None:
        if self.token is None:
            log.warning(
                "no auth_token configured: any SP that reaches the listener may "
                "register services (set <auth_token> or EDGERQ_AUTH_TOKEN)"
            )
        else:
            log.info("SP authentication required (token from %s)", self.config.token_source)

    async def _listen(self, listener: ListenerConfig) -> None:
        pipe_listener = await carrier(listener.protocol).listen(listener, self._new_pipe)
        self._listeners[listener.protocol] = pipe_listener
        self.listener_addresses[listener.protocol] = pipe_listener.address
        log.info("accepting pipes (%s) on %s:%d", listener.protocol, *pipe_listener.address)

    async def _serve(self, service: ConsumerService) -> asyncio.Server:
        """Listen on the service's port; clients get the service's current settings."""
        key = service.uuid
        server = await asyncio.get_running_loop().create_server(
            lambda: self._new_client(self.services.get(key, service)),
            service.host,
            service.port,
            backlog=max(128, service.max_connections),
            reuse_address=True,
        )
        address = server.sockets[0].getsockname()[:2]
        self.service_addresses[key] = address
        log.info("service '%s' (%s, %s) on %s:%d", service.name, key, service.type, *address)
        return server

    # --- reload ----------------------------------------------------------------------

    async def reload(self, new: ConsumerConfig) -> None:
        """Apply a re-read config: services added, removed or moved, listeners
        rebound; pipes and connections that are unaffected carry on. New ports
        are bound before anything is closed: if one cannot be, nothing changes."""
        old_services = self.services
        new_services = {s.uuid: s for s in new.services}
        ours = {s.port for s in old_services.values()}
        moved = [
            s
            for u, s in new_services.items()
            if u not in old_services
            or (s.host, s.port) != (old_services[u].host, old_services[u].port)
        ]
        # Ports we hold now can only be bound once released; bind the others first.
        fresh, later = (
            [s for s in moved if s.port not in ours],
            [s for s in moved if s.port in ours],
        )
        bound: dict[uuid_mod.UUID, asyncio.Server] = {}
        addresses = dict(self.service_addresses)
        try:
            for service in fresh:
                bound[service.uuid] = await self._serve(service)
        except OSError as exc:
            for server in bound.values():
                server.close()
            self.service_addresses = addresses
            raise OSError(exc.errno, f"cannot listen: {exc.strerror or exc}") from exc

        removed = [old_services[u] for u in old_services if u not in new_services]
        added = [s for u, s in new_services.items() if u not in old_services]
        for service in removed:
            self._retire(service, new.shutdown_grace)
        for service in moved:
            if service.uuid in old_services and service.uuid in self._servers:
                self._servers.pop(service.uuid).close()
        self.services = new_services
        for service in new.services:
            self._slots.setdefault(service.uuid, ConnectionSlots(service.max_connections))
            self._slots[service.uuid].limit = service.max_connections
            self._bytes.setdefault(service.uuid, [0, 0])
        self._servers.update(bound)
        for service in later:
            try:
                self._servers[service.uuid] = await self._serve(service)
            except OSError as exc:
                log.error(
                    "reload: service '%s' cannot listen on %s:%d: %s; it is unreachable",
                    service.name,
                    service.host,
                    service.port,
                    exc.strerror or exc,
                )
        for service in added:
            self._adopt_offers(service)
        self._announce_registrations(removed, added)

        token = new.auth_token.reveal() if new.auth_token is not None else None
        token_changed = token != self.token
        self.token = token
        old_config, self.config = self.config, new
        if token_changed:
            log.info("reload: new pipes authenticate with the new token; pipes up stay up")
            self._log_token()
        if new.limits != old_config.limits:
            self.gate.reconfigure(new.limits)
            log.info("reload: new limits apply to pipes that connect from now on")
        await self._reload_listeners(old_config, new)
        if old_config.admin != new.admin:
            if self.admin is not None:
                await self.admin.stop()
                self.admin = None
            if new.admin is not None:
                self.admin = AdminServer(new.admin, self.metrics, self.ready, self.status)
                await self.admin.start()
        changed = [
            s.name for s in new.services if s.uuid in old_services and s != old_services[s.uuid]
        ]
        log.info(
            "reloaded %s: %d service(s) added, %d removed, %d changed",
            new.path,
            len(added),
            len(removed),
            len(changed),
        )

    async def _reload_listeners(self, old: ConsumerConfig, new: ConsumerConfig) -> None:
        before = {listener.protocol: listener for listener in old.listeners}
        after = {listener.protocol: listener for listener in new.listeners}
        for protocol, listener in before.items():
            if after.get(protocol) != listener and protocol in self._listeners:
                # Pipes already accepted stay up on tcp; udp pipes share the socket.
                self._listeners.pop(protocol).close()
                self.listener_addresses.pop(protocol, None)
                log.info("reload: stopped accepting %s pipes on port %d", protocol, listener.port)
        for protocol, listener in after.items():
            if before.get(protocol) != listener:
                try:
                    await self._listen(listener)
                except OSError as exc:
                    log.error(
                        "reload: cannot accept %s pipes on port %d: %s",
                        protocol,
                        listener.port,
                        exc.strerror or exc,
                    )

    def _retire(self, service: ConsumerService, grace: float) -> None:
        """A reload removed ``service``: no new clients; open ones get ``grace`` s."""
        server = self._servers.pop(service.uuid, None)
        if server is not None:
            server.close()
        self.service_addresses.pop(service.uuid, None)
        self.registry.remove_service(service.uuid)
        open_now = [c for c in self.connections if c.service.uuid == service.uuid]
        log.info(
            "reload: service '%s' removed; %d open connection(s) may finish within %g s",
            service.name,
            len(open_now),
            grace,
        )
        if open_now:
            asyncio.get_running_loop().call_later(grace, self._cut, service, open_now)

    def _cut(self, service: ConsumerService, conns: list[ClientConnection]) -> None:
        left = [c for c in conns if not c.done]
        if left:
            log.warning(
                "service '%s' was removed %s: cutting %d connection(s) still open",
                service.name,
                "and its grace period is over",
                len(left),
            )
        for conn in left:
            conn.set_outcome(Outcome.ERROR, "cut: service removed by a reload")
            conn.abort()

    def _adopt_offers(self, service: ConsumerService) -> None:
        for pipe, offered in self._offered.items():
            if service.uuid in offered and not pipe.closing:
                self.registry.add(service.uuid, pipe)
                log.info(
                    "%s: registered service '%s' (%s) added by a reload, %d pipe(s) now serve it",
                    pipe,
                    service.name,
                    service.uuid,
                    len(self.registry.pipes_for(service.uuid)),
                )

    def _announce_registrations(
        self, removed: Sequence[ConsumerService], added: Sequence[ConsumerService]
    ) -> None:
        """Tell each SP whose offers a reload changed what is now accepted."""
        touched = {s.uuid for s in removed} | {s.uuid for s in added}
        for pipe, offered in self._offered.items():
            if touched.intersection(offered) and not pipe.closing:
                pipe.send_raw(Registered(tuple(self._registration_results(offered))).encode())

    def _registration_results(
        self, offered: Sequence[uuid_mod.UUID]
    ) -> list[tuple[uuid_mod.UUID, RegisterStatus]]:
        return [
            (u, RegisterStatus.ACCEPTED if u in self.services else RegisterStatus.UNKNOWN_SERVICE)
            for u in offered
        ]

    async def drain(self, grace: float) -> None:
        """Stop taking clients and pipes; let open connections finish, for up to
        ``grace`` s. ``stop`` then closes what is left."""
        self.draining = True
        for server in self._servers.values():
            server.close()
        log.info(
            "draining: service ports closed, %d open connection(s) may finish within %g s",
            len(self.connections),
            grace,
        )
        if await wait_until(lambda: not self.connections, grace):
            log.info("drained: every connection finished")
        else:
            log.warning(
                "grace period of %g s over: cutting %d connection(s)", grace, len(self.connections)
            )

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: shutting down"
        bound = len(self._listeners) == len(self.config.listeners) and len(
            self.service_addresses
        ) == len(self.config.services)
        return bound, "listeners bound" if bound else "listeners not bound"

    def _count_bytes(self) -> None:
        """Add the bytes open connections relayed since the last count (at scrapes)."""
        for conn in self.connections:
            self._count(conn)

    def _count(self, conn: ClientConnection) -> None:
        up, down = conn.uncounted_bytes()
        if up or down:
            name = conn.service.name
            self.metrics.bytes.labels(name, "up").inc(up)
            self.metrics.bytes.labels(name, "down").inc(down)
            totals = self._bytes[conn.service.uuid]
            totals[0] += up
            totals[1] += down

    def status(self) -> dict[str, Any]:
        self._count_bytes()
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
        for pipe_listener in self._listeners.values():
            pipe_listener.close()
        for server in self._servers.values():
            server.close()
        for pipe in list(self.pipes):
            pipe.close(GoawayCode.SHUTDOWN, "SC shutting down")
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers.values():
            await server.wait_closed()
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
            on_limit=self.gate.limit_hit,
            control_backlog=limits.control_backlog,
        )
        self.pipes.add(pipe)
        return pipe

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        self.gate.authenticated(pipe)
        if self.draining:
            pipe.close(GoawayCode.SHUTDOWN, "SC is shutting down")
        self.metrics.pipes.labels(pipe.carrier, pipe.name).inc()
        log.info(
            "%s: SP authenticated%s", pipe, "" if self.token is not None else " (no token required)"
        )
        self._watch_predecessors(pipe)

    def _watch_predecessors(self, pipe: MuxPipe) -> None:
        """An SP that restarts dials its pipe again, under the same name, from the
        same address. Its old pipe is dead, but on udp nothing says so until the
        heartbeat timeout (8 s), and the streams on it hang until then. So an older
        pipe of that name and address is closed once it is also silent for
        SUSPECT_AFTER; one still heard from (an SP reloading) is left alone."""
        if not pipe.name:
            return
        host = source_address(pipe.peer)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for old in self.pipes:
            if (
                old is not pipe
                and old.authenticated
                and not old.closing
                and old.name == pipe.name
                and source_address(old.peer) == host
            ):
                wait = max(0.0, old.last_heard + SUSPECT_AFTER + 0.1 - now)
                loop.call_later(wait, self._close_if_superseded, old, pipe)

    def _close_if_superseded(self, old: MuxPipe, new: MuxPipe) -> None:
        if old.closing or old.closed.done() or new.closing or new.closed.done():
            return
        silent = time.monotonic() - old.last_heard
        if silent <= SUSPECT_AFTER:
            return  # alive: the same SP has two pipes of that name for a while
        reason = f"superseded by {new} from the same SP, silent for {silent:.1f} s"
        log.warning("%s: %s; closing (its SP restarted)", old, reason)
        old.abort(reason)

    def pipe_register(
        self, pipe: MuxPipe, uuids: Sequence[uuid_mod.UUID]
    ) -> list[tuple[uuid_mod.UUID, RegisterStatus]]:
        self._offered[pipe] = tuple(uuids)
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
        self._offered.pop(pipe, None)
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
                ", ".join(self.services[u].name for u in gone if u in self.services) or "none",
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
        conn.deadline = loop.time() + service.request_ttl
        slots = self._slots[service.uuid]
        if slots.try_take():
            conn.holds_slot = True
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
        deadline = conn.deadline
        if not conn.holds_slot:
            if not await self._slots[service.uuid].wait(deadline - loop.time()):
                conn.fail(
                    503,
                    f"service '{service.name}' is at max_connections "
                    f"({service.max_connections}) for over {service.request_ttl:g} s",
                )
                return
            conn.holds_slot = True
        pipe = await self.registry.wait_for(
            service.uuid, max(0.0, deadline - loop.time()), exclude=conn.tried
        )
        if pipe is None:
            if conn.tried:
                conn.fail(502, f"no other SP could take service '{service.name}' in time")
            else:
                conn.fail(502, f"no SP has registered service '{service.name}'")
            return
        self._open(conn, pipe, replay, eof)

    def _open(
        self, conn: ClientConnection, pipe: MuxPipe, replay: bytes = b"", eof: bool = False
    ) -> None:
        service = conn.service
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
        conn.bind(stream)
        if not conn.counted:
            conn.counted = True
            self.metrics.streams_open.labels(service.name).inc()
        assert stream.opened is not None
        self._watch_open(conn, stream)
        stream.opened.add_done_callback(lambda opened: self._opened(conn, stream, opened))

    def _watch_open(self, conn: ClientConnection, stream: Stream) -> None:
        """One timer while the SP has not answered: the next probe, or the deadline."""
        loop = asyncio.get_running_loop()
        when = min(conn.deadline, loop.time() + PROBE_INTERVAL)
        conn.timer = loop.call_at(when, self._check_open, conn, stream)

    def _check_open(self, conn: ClientConnection, stream: Stream) -> None:
        """Still no OPEN_OK. Past request_ttl: 504. Else, if the pipe has gone silent
        (a killed udp SP says nothing, and the heartbeat timeout takes 8 s) while
        another pipe is heard from, open the connection there instead."""
        conn.timer = None
        if conn.stream is not stream or stream.opened is None or stream.opened.done():
            return
        if asyncio.get_running_loop().time() >= conn.deadline:
            self._open_expired(conn)
            return
        pipe = stream.pipe
        silent = time.monotonic() - pipe.last_heard
        if (
            silent > SUSPECT_AFTER
            and not conn.written
            and self.registry.choose(conn.service.uuid, exclude=conn.tried | {pipe}) is not None
        ):
            stream.reset(ResetCode.CANCELLED, f"pipe silent for {silent:.1f} s")
            stream.opened.cancel()
            lost = PipeLost(OpenFailure.CONNECT_ERROR, f"pipe silent for {silent:.1f} s")
            if not self._fail_over(conn, stream, lost):
                conn.fail(502, f"service '{conn.service.name}' unreachable: {lost.reason}")
            return
        self._watch_open(conn, stream)

    def _opened(self, conn: ClientConnection, stream: Stream, opened: asyncio.Future[None]) -> None:
        if conn.stream is not stream:
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if opened.cancelled():
            return
        error = opened.exception()
        if error is None:
            conn.confirmed = True
            stream.replay = None
            self.registry.note_opened(conn.service.uuid, stream.pipe)
            self.metrics.open_seconds.labels(conn.service.name).observe(
                time.monotonic() - conn.started
            )
            return
        if isinstance(error, OpenRefused) and not isinstance(error, PipeLost):
            self.registry.note_refused(conn.service.uuid, stream.pipe)
        if conn.done or self._fail_over(conn, stream, error):
            return
        reason = error.reason if isinstance(error, OpenRefused) else str(error)
        conn.fail(502, f"service '{conn.service.name}' unreachable: {reason}")

    def _fail_over(self, conn: ClientConnection, stream: Stream, error: BaseException) -> bool:
        """Open ``conn`` again on another pipe when its pipe died, or its SP could
        not reach the service, before anything reached the client and within
        request_ttl. True when a new pipe is being sought."""
        if conn.written or stream.eof_received or stream.replay is None:
            return False
        loop = asyncio.get_running_loop()
        if loop.time() >= conn.deadline:
            return False
        service = conn.service
        conn.tried = conn.tried | {stream.pipe}
        lost = isinstance(error, PipeLost)
        if not lost and self.registry.choose(service.uuid, exclude=conn.tried) is None:
            return False  # a refusal, and no other SP to ask
        replay, eof = bytes(stream.replay), stream.eof_sent
        cause = "pipe_lost" if lost else "refused"
        self.metrics.retries.labels(service.name, cause).inc()
        log.info(
            "%s stream %d: client %s service '%s': %s before the service answered; "
            "opening it on another pipe (%d B to replay)",
            stream.pipe,
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
        self.metrics.streams.labels(name, conn.outcome_kind or Outcome.CLOSED_EARLY).inc()
        if conn.counted:
            self.metrics.streams_open.labels(name).dec()
        self._count(conn)
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
