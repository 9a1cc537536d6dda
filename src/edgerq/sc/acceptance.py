"""How the SC accepts pipes: admission, authentication, registration, and
superseding the pipe of an SP that restarted.

``PipeAcceptance`` builds each new pipe (with the SC's token, limits and
``PipeGate``), is its ``ConsumerOwner`` (authenticated, REGISTER, closed), and
keeps what every pipe offered so a reload that adds or removes a service can
tell the SPs concerned.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Callable, Mapping, Sequence

from edgerq.config.model import ConsumerConfig, ConsumerService
from edgerq.labels import Limit
from edgerq.pipe.interface import MuxPipe, Refusal, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.messages import GoawayCode, Registered, RegisterStatus
from edgerq.runtime.metrics import Metrics
from edgerq.sc.fairness import source_of
from edgerq.sc.gate import PipeGate
from edgerq.sc.registry import SUSPECT_AFTER, ServiceRegistry

log = logging.getLogger("edgerq.sc")


class PipeAcceptance:
    """Every pipe an SP opens to this SC, from admission to close."""

    def __init__(
        self,
        config: ConsumerConfig,
        services: Mapping[uuid_mod.UUID, ConsumerService],
        registry: ServiceRegistry,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = config.auth_token.reveal() if config.auth_token is not None else None
        self.token_source = config.token_source
        self.limits = config.limits
        self.services = services
        """The services configured now (replaced by a reload)."""
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.gate = PipeGate(config.limits, metrics, clock)
        self.pipes: set[MuxPipe] = set()
        self._offered: dict[MuxPipe, tuple[uuid_mod.UUID, ...]] = {}
        """What each pipe offered, known or not: a reload may add a service."""
        self.draining = False

    def reconfigure(self, new: ConsumerConfig) -> None:
        """A reload: new pipes use the new token and limits; pipes up stay up."""
        token = new.auth_token.reveal() if new.auth_token is not None else None
        token_changed = token != self.token
        self.token = token
        self.token_source = new.token_source
        if token_changed:
            log.info("reload: new pipes authenticate with the new token; pipes up stay up")
            self.log_token()
        if new.limits != self.limits:
            self.limits = limits = new.limits
            self.gate.reconfigure(limits)
            for pipe in self.pipes:
                pipe.set_limits(
                    max_streams=pipe.status().max_streams,
                    control_backlog=limits.control_backlog,
                    pipe_buffer=limits.pipe_buffer,
                )
            log.info(
                "reload: new limits: auth_*, tracked_sources, unauthenticated_pipes, "
                "control_backlog and pipe_buffer apply at once (the last two to the %d pipe(s) "
                "up too); "
                "handshake_timeout to pipes that connect from now on",
                len(self.pipes),
            )

    def log_token(self) -> None:
        if self.token is None:
            log.warning(
                "no auth_token configured: any SP that reaches the listener may "
                "register services (set <auth_token> or EDGERQ_AUTH_TOKEN)"
            )
        else:
            log.info("SP authentication required (token from %s)", self.token_source)

    # --- ConsumerOwner -------------------------------------------------------------------

    def pipe_settings(self) -> PipeSettings:
        limits = self.limits
        return PipeSettings(
            Role.CONSUMER,
            self.token,
            handshake_timeout=limits.handshake_timeout,
            control_backlog=limits.control_backlog,
            pipe_buffer=limits.pipe_buffer,
        )

    def pipe_created(self, pipe: MuxPipe) -> None:
        self.pipes.add(pipe)

    def pipe_admit(self, pipe: MuxPipe) -> Refusal | None:
        return self.gate.admit(pipe)

    def pipe_limit_hit(self, limit: Limit) -> None:
        self.gate.limit_hit(limit)

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
        host = source_of(pipe.peer)
        loop = asyncio.get_running_loop()
        now = self.clock()
        for old in self.pipes:
            if (
                old is not pipe
                and old.authenticated
                and not old.closing
                and old.name == pipe.name
                and source_of(old.peer) == host
            ):
                wait = max(0.0, old.last_heard + SUSPECT_AFTER + 0.1 - now)
                loop.call_later(wait, self._close_if_superseded, old, pipe)

    def _close_if_superseded(self, old: MuxPipe, new: MuxPipe) -> None:
        if old.closing or old.closed.done() or new.closing or new.closed.done():
            return
        silent = self.clock() - old.last_heard
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
        self.metrics.pipe_closed(pipe.carrier, pipe.name, pipe.authenticated, pipe.error)
        if pipe.authenticated:
            status = pipe.status()
            log.info(
                "%s closed after %.1f s, %d stream(s): %s; services withdrawn: %s",
                pipe,
                self.clock() - status.opened_at,
                status.streams_total,
                reason,
                ", ".join(self.services[u].name for u in gone if u in self.services) or "none",
            )
        else:
            log.warning("%s closed before authenticating: %s", pipe, reason)

    def adopt_offers(self, service: ConsumerService) -> None:
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

    def announce_registrations(
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
