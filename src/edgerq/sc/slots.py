"""``max_connections`` of one service at the SC, shared fairly between client addresses."""

from __future__ import annotations

import asyncio

from edgerq.config.model import ConsumerService
from edgerq.sc.fairness import FairSlots, Take


class ConnectionSlots:
    """``max_connections`` for one service, shared fairly between source addresses
    (``sc.fairness.FairSlots``): taken at once when free (no task, no await on the
    hot path), else waited for in the source's turn."""

    def __init__(self, service: ConsumerService) -> None:
        self.fair: FairSlots[asyncio.Future[None]] = FairSlots(
            service.max_connections,
            service.per_source_cap,
            service.waiting_per_source,
            service.trusted_sources,
        )

    @property
    def in_use(self) -> int:
        return self.fair.in_use

    @property
    def waiting(self) -> int:
        """Connections queued for a slot, from every source."""
        return self.fair.waiting

    def configure(self, service: ConsumerService) -> None:
        self._grant(
            self.fair.configure(
                service.max_connections,
                service.per_source_cap,
                service.waiting_per_source,
                service.trusted_sources,
            )
        )

    def try_take(self, source: str) -> bool:
        return self.fair.try_take(source)

    async def wait(self, source: str, timeout: float) -> Take:
        """Wait up to ``timeout`` s for a slot: TAKEN, REFUSED (too many of this
        source waiting already) or TIMED_OUT (none came in time)."""
        if self.fair.try_take(source):
            return Take.TAKEN
        if timeout <= 0:
            return Take.TIMED_OUT
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fair.enqueue(source, waiter) is Take.REFUSED:
            return Take.REFUSED
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self.fair.cancel(source, waiter)
            if waiter.done() and not waiter.cancelled():
                return Take.TAKEN  # handed a slot as the timeout fired: keep it
            return Take.TIMED_OUT
        except asyncio.CancelledError:
            self.fair.cancel(source, waiter)
            if waiter.done() and not waiter.cancelled():
                self.release(source)  # handed a slot just as the client left: pass it on
            raise
        return Take.TAKEN

    def release(self, source: str) -> None:
        self._grant(self.fair.release(source))

    def _grant(self, granted: list[tuple[str, asyncio.Future[None]]]) -> None:
        for source, waiter in granted:
            if waiter.done():  # cancelled, its task not yet told: the slot goes on
                self.release(source)
            else:
                waiter.set_result(None)  # the slot passes straight to the waiter
