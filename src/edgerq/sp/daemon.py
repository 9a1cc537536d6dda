"""The service provider (SP): dials every configured pipe, proves the token,
registers its services, and connects each stream the SC opens to the real
service. Pipes are redialed forever with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from edgerq import __version__, defaults
from edgerq.carriers import require_usable
from edgerq.config.loader import load_provider
from edgerq.config.model import PipeConfig, ProviderConfig
from edgerq.pipe.status import PipeStatus
from edgerq.runtime.admin import AdminServer
from edgerq.runtime.metrics import Metrics
from edgerq.runtime.waiting import wait_until
from edgerq.sp.addresses import AddressBook, Resolver, system_resolver
from edgerq.sp.dialer import ProviderPipe

log = logging.getLogger("edgerq.sp")


def same_but_targets(old: PipeConfig, new: PipeConfig) -> bool:
    """True when only where services point (or their names) changed: the pipe and
    its registration can stay."""
    return replace(old, services=()) == replace(new, services=()) and [
        s.uuid for s in old.services
    ] == [s.uuid for s in new.services]


def pipe_counts(status: PipeStatus | None, now: float) -> dict[str, Any]:
    """A pipe's age and streams in the SP's ``/status`` (None: not connected)."""
    if status is None:
        return {"up_s": None, "streams_open": 0, "streams_total": 0}
    return {
        "up_s": round(now - status.opened_at, 1),
        "streams_open": status.streams_open,
        "streams_total": status.streams_total,
    }


class ServiceProvider:
    """The SP daemon: one ``ProviderPipe`` per configured pipe."""

    def __init__(self, config: ProviderConfig, resolver: Resolver = system_resolver) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics.on_refresh(self._count_bytes)
        self.addresses = AddressBook(resolver)
        self.pipes: list[ProviderPipe] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.admin: AdminServer | None = None
        self.started = time.monotonic()
        self.draining = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for carrier_name in {p.protocol for p in self.config.pipes}:
            require_usable(carrier_name)  # e.g. udp on an unknown qh3: refuse to start
        if self.config.admin is not None:
            self.admin = AdminServer(self.config.admin, self.metrics, self.ready, self.status)
            await self.admin.start()
        await self.addresses.refresh(self.config.pipes)
        self._apply_pipes(self.config)
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch_addresses(), name="address watcher"
        )

    async def _watch_addresses(self) -> None:
        """Look ``all_addresses`` pipes up again on their interval; dial new SC replicas
        and drain the pipes of vanished ones."""
        while True:
            pipes = self.config.pipes
            wanted = AddressBook.wanted(pipes)
            await asyncio.sleep(
                AddressBook.interval(pipes) if wanted else defaults.RESOLVE_INTERVAL
            )
            if not wanted or self.draining or pipes is not self.config.pipes:
                continue
            if await self.addresses.refresh(pipes) and pipes is self.config.pipes:
                self._apply_pipes(self.config)

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

    async def reload_file(self) -> None:
        """SIGHUP: read the config file again and apply it (``reload``)."""
        await self.reload(load_provider(self.config.path))

    async def reload(self, new: ProviderConfig) -> None:
        """Apply a re-read config. Pipes whose settings are unchanged stay up; a pipe
        whose services only point elsewhere is updated in place (new streams go to
        the new address); other changed, and removed, pipes drain for up to
        ``shutdown_grace`` s while their replacements dial."""
        for carrier_name in {p.protocol for p in new.pipes}:
            require_usable(carrier_name)
        await self.addresses.refresh(new.pipes)
        started, updated, removed, unchanged = self._apply_pipes(new)
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
            removed,
            unchanged,
        )

    def _apply_pipes(self, new: ProviderConfig) -> tuple[int, int, int, int]:
        """Make the running pipes those of ``new`` (``all_addresses`` pipes expanded to
        one per known address). Returns how many were started, retargeted, removed and
        left unchanged."""
        current = {
            p.config.name: (p, task) for p, task in zip(self.pipes, self._tasks, strict=True)
        }
        pipes: list[ProviderPipe] = []
        tasks: list[asyncio.Task[None]] = []
        started = updated = 0
        loop = asyncio.get_running_loop()
        for config in self.addresses.expand(new.pipes):
            old = current.pop(config.name, None)
            if old is not None:
                old[0].apply_limits(new.limits)  # kept or retargeted: new limits too
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
            pipe = ProviderPipe(config, self.metrics, new.limits)
            pipes.append(pipe)
            tasks.append(loop.create_task(pipe.run(), name=pipe.label))
            started += 1
        for pipe, task in current.values():
            self._retire(pipe, task, new.shutdown_grace)
        self.pipes, self._tasks, self.config = pipes, tasks, new
        return started, updated, len(current), len(pipes) - started - updated

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

    def bound(self) -> dict[str, Any]:
        """The ports actually bound (see ``ServiceConsumer.bound``): only the admin's."""
        return {
            "role": "sp",
            "admin": self.admin.address[1] if self.admin and self.admin.address else None,
        }

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "role": "sp",
            "version": __version__,
            "uptime_s": round(now - self.started, 1),
            "bound": self.bound(),
            "pipes": [
                {
                    "name": p.config.name,
                    "sc": f"{p.config.hostname}:{p.config.port}",
                    "carrier": p.config.protocol,
                    "registered": p.ready.is_set(),
                    **pipe_counts(p.pipe.status() if p.pipe is not None else None, now),
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
        if self._watcher is not None:
            self._watcher.cancel()
        if self.admin is not None:
            await self.admin.stop()
        for task in self._tasks:
            task.cancel()
        for pipe in self.pipes:
            pipe.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closing = [asyncio.ensure_future(p.pipe.closed) for p in self.pipes if p.pipe is not None]
        if closing:
            await asyncio.wait(closing, timeout=3)
        self._tasks.clear()
