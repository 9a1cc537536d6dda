"""The service consumer (SC): accepts pipes from SPs and serves each configured
service on a local TCP port, relaying every connection through a pipe that
registered the service's UUID."""

from __future__ import annotations

import asyncio
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
from edgerq.labels import Outcome
from edgerq.limits import PipeGate, source_address
from edgerq.metrics import Metrics
from edgerq.opening import ClientConnection, ClientOpener
from edgerq.pipe import MuxPipe, Role
from edgerq.protocol.handshake import ConsumerHandshake
from edgerq.protocol.messages import (
    GoawayCode,
    Registered,
    RegisterStatus,
)
from edgerq.registry import SUSPECT_AFTER, ServiceRegistry
from edgerq.waiting import wait_until

log = logging.getLogger("edgerq.sc")


class ServiceConsumer:
    """The SC daemon: a pipe listener and one TCP listener per service."""

    def __init__(self, config: ConsumerConfig) -> None:
        self.config = config
        self.token = config.auth_token.reveal() if config.auth_token is not None else None
        self.services = {s.uuid: s for s in config.services}
        self.registry = ServiceRegistry()
        self.pipes: set[MuxPipe] = set()
        self._servers: dict[uuid_mod.UUID, asyncio.Server] = {}
        self._listeners: dict[str, Any] = {}
        """Carrier name -> its pipe listener."""
        self._offered: dict[MuxPipe, tuple[uuid_mod.UUID, ...]] = {}
        """What each pipe offered, known or not: a reload may add a service."""
        self.listener_addresses: dict[str, tuple[str, int]] = {}
        self.service_addresses: dict[uuid_mod.UUID, tuple[str, int]] = {}
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.opener = ClientOpener(config.services, self.registry, self.metrics)
        self.connections = self.opener.connections
        self.metrics.on_refresh(self.opener.count_bytes)
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
            lambda: self.opener.new_client(self.services.get(key, service)),
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
        self.opener.configure(new.services)
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

    def status(self) -> dict[str, Any]:
        self.opener.count_bytes()
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
                    "open": self.opener.slots[s.uuid].in_use,
                    "bytes_up": self.opener.bytes[s.uuid][0],
                    "bytes_down": self.opener.bytes[s.uuid][1],
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
