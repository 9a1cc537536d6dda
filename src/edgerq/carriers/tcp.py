"""The ``tcp`` carrier: one TCP connection per pipe (plain, or through stunnel)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from edgerq.carriers import MakePipe
from edgerq.config.model import ListenerConfig, PipeConfig
from edgerq.pipe import MuxPipe


class TcpListener:
    """An SC's TCP port accepting pipes."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self.address: tuple[str, int] = server.sockets[0].getsockname()[:2]

    def dropped(self) -> Mapping[str, int]:
        return {}  # a stream port drops nothing: the kernel and the handshake refuse

    def close(self) -> None:
        self._server.close()


async def listen(listener: ListenerConfig, make_pipe: MakePipe) -> TcpListener:
    """Accept pipes on the listener's port; each connection gets a fresh pipe."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: make_pipe(MuxPipe),
        listener.host,
        listener.port,
        backlog=512,
        reuse_address=True,
    )
    return TcpListener(server)


@asynccontextmanager
async def dial(pipe: PipeConfig, make_pipe: MakePipe, timeout: float) -> AsyncIterator[MuxPipe]:
    """Connect to an SC (or a local stunnel client); the pipe is closed on exit."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(
            lambda: make_pipe(MuxPipe), pipe.hostname, pipe.port
        )
    try:
        yield protocol
    finally:
        protocol.abort()
