"""Which pipes serve which service UUID at an SC, and waiting for one."""

from __future__ import annotations

import asyncio
import time
import uuid as uuid_mod
from collections.abc import Collection

from edgerq.pipe import HEARTBEAT_INTERVAL, MuxPipe

SUSPECT_AFTER = 1.5 * HEARTBEAT_INTERVAL
"""Seconds without a frame after which a pipe is chosen only if no other will do."""


class ServiceRegistry:
    """UUID -> the pipes that registered it. New streams go to the least busy pipe."""

    def __init__(self) -> None:
        self._pipes: dict[uuid_mod.UUID, list[MuxPipe]] = {}
        self._waiters: dict[uuid_mod.UUID, set[asyncio.Future[None]]] = {}

    def add(self, service: uuid_mod.UUID, pipe: MuxPipe) -> None:
        pipes = self._pipes.setdefault(service, [])
        if pipe not in pipes:
            pipes.append(pipe)
        for waiter in self._waiters.pop(service, ()):
            if not waiter.done():
                waiter.set_result(None)

    def remove_pipe(self, pipe: MuxPipe) -> list[uuid_mod.UUID]:
        """Forget ``pipe`` everywhere; return the UUIDs it had registered."""
        gone = []
        for service, pipes in list(self._pipes.items()):
            if pipe in pipes:
                pipes.remove(pipe)
                gone.append(service)
                if not pipes:
                    del self._pipes[service]
        return gone

    def remove_service(self, service: uuid_mod.UUID) -> None:
        """The service is no longer offered here (a reload removed it)."""
        self._pipes.pop(service, None)

    def pipes_for(self, service: uuid_mod.UUID) -> list[MuxPipe]:
        return list(self._pipes.get(service, ()))

    def choose(self, service: uuid_mod.UUID, exclude: Collection[MuxPipe] = ()) -> MuxPipe | None:
        live = [
            p
            for p in self._pipes.get(service, ())
            if not (p.closing or p.draining) and p not in exclude
        ]
        if not live:
            return None
        if len(live) > 1:
            # A live pipe hears a heartbeat every second: one silent for longer has
            # probably lost its peer (a killed SP on udp says nothing), so the
            # others go first until the heartbeat timeout settles it.
            now = time.monotonic()
            heard = [p for p in live if now - p.last_heard < SUSPECT_AFTER]
            if heard:
                live = heard
        return min(live, key=lambda p: len(p.streams))

    async def wait_for(
        self, service: uuid_mod.UUID, timeout: float, exclude: Collection[MuxPipe] = ()
    ) -> MuxPipe | None:
        """The least busy pipe for ``service`` (not in ``exclude``), waiting up to
        ``timeout`` s for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pipe = self.choose(service, exclude)
            if pipe is not None:
                return pipe
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(service, set()).add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return self.choose(service, exclude)
            finally:
                waiters = self._waiters.get(service)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[service]
