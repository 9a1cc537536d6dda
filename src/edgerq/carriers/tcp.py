"""The ``tcp`` carrier: one TCP connection per pipe (plain, or through stunnel)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edgerq.pipe import MuxPipe


async def listen(host: str, port: int, make_pipe: Callable[[], MuxPipe]) -> asyncio.Server:
    """Accept pipes on ``host:port``; each accepted connection gets a fresh pipe."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(make_pipe, host, port, backlog=512, reuse_address=True)


async def dial(host: str, port: int, make_pipe: Callable[[], MuxPipe], timeout: float) -> MuxPipe:
    """Connect to an SC (or a local stunnel client) and return the running pipe."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, pipe = await loop.create_connection(make_pipe, host, port)
    return pipe
