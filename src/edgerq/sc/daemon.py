"""The service consumer (SC): accepts pipes from SPs and serves each configured
service on a local TCP port, relaying every connection through a pipe that
registered the service's UUID."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Callable
from typing import Any

from edgerq import __version__
from edgerq.carriers import PipeListener, carrier
from edgerq.config.loader import load_consumer
from edgerq.config.model import ConsumerConfig, ConsumerService, ListenerConfig
from edgerq.errors import ConfigError
from edgerq.labels import Limit, Outcome
from edgerq.pipe.status import PipeStatus
from edgerq.protocol.messages import (
    GoawayCode,
)
from edgerq.runtime import oslimits
from edgerq.runtime.admin import AdminServer
from edgerq.runtime.metrics import Metrics
from edgerq.runtime.waiting import wait_until
from edgerq.sc.acceptance import PipeAcceptance
from edgerq.sc.client_connection import ClientConnection
from edgerq.sc.opener import ClientOpener
from edgerq.sc.registry import ServiceRegistry
from edgerq.sc.service_changes import ServiceChanges

log = logging.getLogger("edgerq.sc")


def count_drops(
    listener: PipeListener, counted: dict[PipeListener, dict[str, int]], metrics: Metrics
) -> None:
    """Add what ``listener`` dropped since it was last counted to ``udp_dropped``."""
    seen = counted.setdefault(listener, {})
    for reason, total in listener.dropped().items():
        new = total - seen.get(reason, 0)
        if new > 0:
            metrics.udp_dropped.labels(reason).inc(new)
            seen[reason] = total


def service_entry(
    service: ConsumerService,
    opener: ClientOpener,
    registry: ServiceRegistry,
    bound: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """One service in the SC's ``/status``: its port (the one bound, which a
    configured 0 is not), pipes, clients and bytes."""
    slots, (up, down) = opener.slots[service.uuid], opener.bytes[service.uuid]
    return {
        "name": service.name,
        "uuid": str(service.uuid),
        "port": bound[1] if bound is not None else service.port,
        "pipes": len(registry.pipes_for(service.uuid)),
        "open": slots.in_use,
        "waiting_for_slot": slots.waiting,
        "waiting_for_pipe": registry.waiting_for(service.uuid),
        "bytes_up": up,
        "bytes_down": down,
    }


def pipe_entry(carrier: str, status: PipeStatus, now: float) -> dict[str, Any]:
    """One pipe in the SC's ``/status``."""
    return {
        "id": status.id,
        "sp": status.name,
        "peer": status.peer,
        "carrier": carrier,
        "up_s": round(now - status.opened_at, 1),
        "streams_open": status.streams_open,
        "streams_total": status.streams_total,
    }


class ServiceConsumer:
    """The SC daemon: a pipe listener and one TCP listener per service. ``clock``: the one
    clock of its decisions, which must be the pipes' (``time.monotonic``)."""

    def __init__(self, config: ConsumerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.services = {s.uuid: s for s in config.services}
        self.registry = ServiceRegistry(clock)
        self._servers: dict[uuid_mod.UUID, asyncio.Server] = {}
        self._listeners: dict[str, PipeListener] = {}
        """Carrier name -> its pipe listener."""
        self.listener_addresses: dict[str, tuple[str, int]] = {}
        self.service_addresses: dict[uuid_mod.UUID, tuple[str, int]] = {}
        self.started = clock()
        self.metrics = Metrics()
        self.opener = ClientOpener(
            config.services, self.registry, self.metrics, config.access_log, clock
        )
        self.connections = self.opener.connections
        self.metrics.on_refresh(self.opener.count_bytes)
        self.metrics.on_refresh(self._count_drops)
        self._drops_counted: dict[PipeListener, dict[str, int]] = {}
        """Per pipe listener: datagrams dropped by reason, already added to the metric."""
        self.acceptance = PipeAcceptance(config, self.services, self.registry, self.metrics, clock)
        self.pipes = self.acceptance.pipes
        self.admin: AdminServer | None = None
        self.draining = False
        self.open_files = oslimits.OpenFilesWatch()
        """Each client costs a descriptor, and so does its stream's share of the pipe."""

    # --- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        self.acceptance.log_token()
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

    async def _listen(self, listener: ListenerConfig) -> None:
        pipe_listener = await carrier(listener.protocol).listen(listener, self.acceptance)
        self._listeners[listener.protocol] = pipe_listener
        self.listener_addresses[listener.protocol] = pipe_listener.address
        log.info("accepting pipes (%s) on %s:%d", listener.protocol, *pipe_listener.address)

    def _count_drops(self) -> None:
        """Add what the pipe listeners dropped since the last scrape to the metric."""
        for listener in self._listeners.values():
            count_drops(listener, self._drops_counted, self.metrics)

    async def _serve(self, service: ConsumerService) -> asyncio.Server:
        """Listen on the service's port; clients get the service's current settings."""
        key = service.uuid
        server = await asyncio.get_running_loop().create_server(
            lambda: self._new_client(self.services.get(key, service)),
            service.host,
            service.port,
            backlog=service.listen_backlog,
            reuse_address=True,
        )
        address = server.sockets[0].getsockname()[:2]
        self.service_addresses[key] = address
        log.info(
            "service '%s' (%s, %s) on %s:%d, listen backlog %s",
            service.name,
            key,
            service.type,
            *address,
            oslimits.describe_backlog(service.listen_backlog),
        )
        return server

    def _new_client(self, service: ConsumerService) -> ClientConnection:
        near, warning = self.open_files.check(len(self.connections), self.clock())
        if near:
            self.metrics.limit_hit(Limit.OPEN_FILES)
        if warning is not None:
            log.warning("%s", warning)
        return self.opener.new_client(service)

    def _relisten(self, old: dict[uuid_mod.UUID, ConsumerService], new: ConsumerConfig) -> None:
        """A reload changed only the listen backlog of a port kept open: listen() again."""
        for service in new.services:
            before = old.get(service.uuid)
            server = self._servers.get(service.uuid)
            if before is None or server is None or before.listen_backlog == service.listen_backlog:
                continue
            for sock in server.sockets:
                sock.listen(service.listen_backlog)
            log.info(
                "reload: service '%s' listen backlog now %s",
                service.name,
                oslimits.describe_backlog(service.listen_backlog),
            )

    # --- reload ----------------------------------------------------------------------

    async def reload_file(self) -> None:
        """SIGHUP: read the config file again and apply it (``reload``)."""
        await self.reload(load_consumer(self.config.path))

    async def reload(self, new: ConsumerConfig) -> None:
        """Apply a re-read config: services added, removed or moved, listeners
        rebound; pipes and connections that are unaffected carry on. New ports
        are bound before anything is closed: if one cannot be, nothing changes."""
        old_services = self.services
        new_services = {s.uuid: s for s in new.services}
        changes = ServiceChanges.between(old_services, new_services)
        bound: dict[uuid_mod.UUID, asyncio.Server] = {}
        addresses = dict(self.service_addresses)
        try:
            for service in changes.bind_first:
                bound[service.uuid] = await self._serve(service)
        except OSError as exc:
            for server in bound.values():
                server.close()
            self.service_addresses = addresses
            raise OSError(exc.errno, f"cannot listen: {exc.strerror or exc}") from exc

        for service in changes.removed:
            self._retire(service, new.shutdown_grace)
        for service in changes.moved:
            if service.uuid in old_services and service.uuid in self._servers:
                self._servers.pop(service.uuid).close()
        self.services = self.acceptance.services = new_services
        self.opener.configure(new.services)
        self.opener.access_log = new.access_log
        self._servers.update(bound)
        for service in changes.bind_after:
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
        self._relisten(old_services, new)
        for service in changes.added:
            self.acceptance.adopt_offers(service)
        self.acceptance.announce_registrations(list(changes.removed), list(changes.added))
        self.acceptance.reconfigure(new)
        old_config, self.config = self.config, new
        await self._reload_listeners(old_config, new)
        if old_config.admin != new.admin:
            if self.admin is not None:
                await self.admin.stop()
                self.admin = None
            if new.admin is not None:
                self.admin = AdminServer(new.admin, self.metrics, self.ready, self.status)
                await self.admin.start()
        log.info(
            "reloaded %s: %d service(s) added, %d removed, %d changed",
            new.path,
            len(changes.added),
            len(changes.removed),
            len(changes.changed),
        )

    async def _reload_listeners(self, old: ConsumerConfig, new: ConsumerConfig) -> None:
        before = {listener.protocol: listener for listener in old.listeners}
        after = {listener.protocol: listener for listener in new.listeners}
        for protocol, listener in before.items():
            if after.get(protocol) != listener and protocol in self._listeners:
                # Pipes already accepted stay up on tcp; udp pipes share the socket.
                closing = self._listeners.pop(protocol)
                count_drops(closing, self._drops_counted, self.metrics)
                self._drops_counted.pop(closing, None)
                closing.close()
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

    async def drain(self, grace: float) -> None:
        """Stop taking clients and pipes; let open connections finish, for up to
        ``grace`` s. ``stop`` then closes what is left."""
        self.draining = self.acceptance.draining = True
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

    def bound(self) -> dict[str, Any]:
        """The ports actually bound (a configured port 0 is any free one): the ready
        line on stdout and ``/status`` report them, so tests need not guess free ports."""
        return {
            "role": "sc",
            "listeners": {p: a[1] for p, a in self.listener_addresses.items()},
            "services": {str(u): a[1] for u, a in self.service_addresses.items()},
            "admin": self.admin.address[1] if self.admin and self.admin.address else None,
        }

    def status(self) -> dict[str, Any]:
        self.opener.count_bytes()
        now = self.clock()
        return {
            "role": "sc",
            "version": __version__,
            "uptime_s": round(now - self.started, 1),
            "bound": self.bound(),
            "pipes": [
                pipe_entry(p.carrier, p.status(), now)
                for p in sorted(self.pipes, key=lambda p: p.id)
                if p.authenticated
            ],
            "services": [
                service_entry(s, self.opener, self.registry, self.service_addresses.get(s.uuid))
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
            await asyncio.wait([asyncio.ensure_future(p.closed) for p in self.pipes], timeout=3)
        self._servers.clear()
        self._listeners.clear()
