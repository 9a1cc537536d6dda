"""Waiting, bounded in time: for a daemon's state to settle, and many deadlines on one timer."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

POLL_INTERVAL = 0.05
CLOCK_SLACK = 0.001
"""How early a loop timer may fire: deadlines this close to now count as come."""

K = TypeVar("K", bound=Hashable)


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` s pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(POLL_INTERVAL, remaining))
    return True


class Deadlines(Generic[K]):
    """Many deadlines, one loop timer: ``set(key, when)``, ``discard(key)``, and
    ``on_due(key)`` called once ``when`` has come.

    Each uvloop timer armed and cancelled costs about 4 us; a deadline here costs a
    dict entry. Meant for deadlines that are usually discarded before they come
    (an open attempt answered in milliseconds, probed every half second): the timer
    is armed for the earliest deadline only, and is left to fire rather than moved
    when that one is discarded; it then re-arms for the earliest one left."""

    def __init__(
        self, on_due: Callable[[K], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_due = on_due
        self._clock = clock
        self._when: dict[K, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        return len(self._when)

    def __contains__(self, key: object) -> bool:
        return key in self._when

    def set(self, key: K, when: float, loop: asyncio.AbstractEventLoop) -> None:
        """``on_due(key)`` at ``when`` (on ``clock``), unless discarded first;
        replaces the key's earlier deadline."""
        self._when[key] = when
        if when < self._armed_at:
            self._arm(loop, when)

    def discard(self, key: K) -> None:
        self._when.pop(key, None)

    def close(self) -> None:
        """Forget every deadline, and the timer."""
        self._when.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = loop.call_later(max(when - self._clock(), 0.0), self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._armed_at = math.inf
        # a timer may fire up to a clock tick early (uvloop counts milliseconds)
        now = self._clock() + CLOCK_SLACK
        due = [key for key, when in self._when.items() if when <= now]
        for key in due:
            del self._when[key]
        for key in due:
            self._on_due(key)  # may set the key again, or others
        if self._when:
            earliest = min(self._when.values())
            if earliest < self._armed_at:
                self._arm(loop, earliest)
