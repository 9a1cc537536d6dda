"""Waiting, bounded in time, for a daemon's state to settle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_INTERVAL = 0.05


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
