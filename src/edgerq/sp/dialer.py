"""One pipe of the SP: dial it, keep it up, register, and serve the SC's streams.

``ProviderPipe`` is the ``ProviderOwner`` of the pipe it dials: it registers
the pipe's services, hands each OPEN to its ``ServiceConnector`` (which
connects to the service and counts what flows), and redials with backoff when
the pipe is lost. ``ServiceProvider`` (``sp.daemon``) runs one per configured pipe.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Sequence

from edgerq.carriers import carrier
from edgerq.config.model import PipeConfig, PipeLimits
from edgerq.defaults import DIAL_TIMEOUT, REDIAL_STEADY
from edgerq.errors import AuthError, ConfigError, VersionError
from edgerq.labels import Limit
from edgerq.pipe.interface import MuxPipe, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.messages import Open, Register, RegisterStatus
from edgerq.runtime.backoff import Backoff
from edgerq.runtime.metrics import Metrics
from edgerq.runtime.relay import LocalConnection
from edgerq.sp.connector import ServiceConnector

log = logging.getLogger("edgerq.sp")


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
        self.streams = ServiceConnector(self.label, self.services, self.metrics)
        """Answers the SC's OPENs: the connections to the services."""
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
        self._log_settings()
        attempt = 0
        while True:
            attempt += 1
            self._failure = None
            try:
                async with carrier(self.config.protocol).dial(
                    self.config, self, DIAL_TIMEOUT
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
            except ConfigError as exc:  # e.g. a <ca_file> gone or not PEM: say why, retry
                delay = self.backoff.next_delay()
                log.error("%s: cannot dial: %s; retry in %.1f s", self.label, exc, delay)
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
                attempt = 0
            await asyncio.sleep(self._redial_delay(pipe, reason))

    def _redial_delay(self, pipe: MuxPipe, reason: str) -> float:
        """After a pipe that was up ended: how long to wait, said in the log."""
        if pipe.registered:
            self.backoff.reset()
        elif self._failure is not None:
            # Refused by the SC (token, version, a block): retrying quickly would
            # only add failed authentications against this address.
            self.backoff.skip_steady()
        delay = self.backoff.next_delay()
        if isinstance(self._failure, AuthError | VersionError):
            log.error("%s: refused: %s; retry in %.1f s", self.label, reason, delay)
        else:
            log.warning("%s: pipe closed (%s); redial in %.1f s", self.label, reason, delay)
        return delay

    def _log_settings(self) -> None:
        """What this pipe will prove and check, said once at start."""
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
        self.streams.label, self.streams.services = self.label, self.services

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
        self.streams.abort_all()

    @property
    def connections(self) -> set[LocalConnection]:
        """The open connections to services (streams of this pipe)."""
        return self.streams.connections

    def count_bytes(self) -> None:
        """Add the bytes open connections relayed since the last count (at scrapes)."""
        self.streams.count_bytes()

    # --- ProviderOwner -------------------------------------------------------------------

    def pipe_settings(self) -> PipeSettings:
        return PipeSettings(
            Role.PROVIDER,
            self.token,
            name=self.config.name,
            max_streams=self.limits.streams_per_pipe,
            control_backlog=self.limits.control_backlog,
            handshake_timeout=self.limits.handshake_timeout,
            stream_window=self.config.stream_window,
            pipe_buffer=self.limits.pipe_buffer,
        )

    def pipe_created(self, pipe: MuxPipe) -> None:
        self._dialing = pipe
        self._dialed_streams = pipe.status().max_streams

    def pipe_limit_hit(self, limit: Limit) -> None:
        self.metrics.limit_hit(limit)

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
        self.streams.open(pipe, request, draining=self.draining)

    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None:
        self._failure = pipe.error
        self.metrics.pipe_closed(pipe.carrier, self.config.name, pipe.authenticated, pipe.error)
        if pipe.authenticated:
            status = pipe.status()
            log.info(
                "%s closed after %.1f s, %d stream(s): %s",
                pipe,
                time.monotonic() - status.opened_at,
                status.streams_total,
                reason,
            )
