"""Which pipes serve which service UUID at an SC, and waiting for one."""

from __future__ import annotations

import asyncio
import time
import uuid as uuid_mod
from collections.abc import Callable, Collection

from edgerq.defaults import HEARTBEAT_INTERVAL
from edgerq.pipe.interface import MuxPipe

SUSPECT_AFTER = 1.5 * HEARTBEAT_INTERVAL
"""Seconds without a frame after which a pipe is chosen only if no other will do."""

REFUSED_FOR = 5.0
"""Seconds a pipe whose SP could not reach the service goes last for that service."""


class ServiceRegistry:
    """UUID -> the pipes that registered it. New streams go to the least busy pipe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        """Seconds, for refusals and silence; tests pass their own."""
        self._pipes: dict[uuid_mod.UUID, list[MuxPipe]] = {}
        self._waiters: dict[uuid_mod.UUID, set[asyncio.Future[None]]] = {}
        self._refused: dict[tuple[uuid_mod.UUID, MuxPipe], float] = {}
        """(service, pipe) -> when that pipe's SP last could not reach the service."""

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
        for service in gone:
            self._refused.pop((service, pipe), None)
        return gone

    def note_refused(self, service: uuid_mod.UUID, pipe: MuxPipe) -> None:
        """``pipe``'s SP could not reach ``service``: other pipes go first for a while,
        so one broken SP does not cost every new connection a round trip."""
        self._refused[(service, pipe)] = self._clock()

    def note_opened(self, service: uuid_mod.UUID, pipe: MuxPipe) -> None:
        """``pipe``'s SP reached ``service`` again."""
        if self._refused:
            self._refused.pop((service, pipe), None)

    def remove_service(self, service: uuid_mod.UUID) -> None:
        """The service is no longer offered here (a reload removed it)."""
        self._pipes.pop(service, None)
        for key in [key for key in self._refused if key[0] == service]:
            del self._refused[key]

    def pipes_for(self, service: uuid_mod.UUID) -> list[MuxPipe]:
        return list(self._pipes.get(service, ()))

    def choose(self, service: uuid_mod.UUID, exclude: Collection[MuxPipe] = ()) -> MuxPipe | None:
        pipes = self._pipes.get(service, ())
        if len(pipes) == 1 and not exclude:  # the common case, once per new connection
            only = pipes[0]
            return None if only.closing or only.draining else only
        live = [p for p in pipes if not (p.closing or p.draining) and p not in exclude]
        if not live:
            return None
        if len(live) > 1:
            # A live pipe hears a heartbeat every second: one silent for longer has
            # probably lost its peer (a killed SP on udp says nothing), so the
            # others go first until the heartbeat timeout settles it.
            now = self._clock()
            heard = [p for p in live if now - p.last_heard < SUSPECT_AFTER]
            if heard:
                live = heard
            if self._refused and len(live) > 1:
                refused = self._refused
                reaching = [
                    p
                    for p in live
                    if (service, p) not in refused or now - refused[(service, p)] >= REFUSED_FOR
                ]
                if reaching:
                    live = reaching
        return min(live, key=lambda p: len(p.streams))

    def waiting_for(self, service: uuid_mod.UUID) -> int:
        """Connections waiting now for a pipe that serves ``service``."""
        return len(self._waiters.get(service, ()))

    async def wait_for(
        self, service: uuid_mod.UUID, timeout: float, exclude: Collection[MuxPipe] = ()
    ) -> MuxPipe | None:
        """The least busy pipe for ``service`` (not in ``exclude``), waiting up to
        ``timeout`` s for one."""
        loop = asyncio.get_running_loop()
        deadline = self._clock() + timeout
        while True:
            pipe = self.choose(service, exclude)
            if pipe is not None:
                return pipe
            remaining = deadline - self._clock()
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
