"""The ``tcp`` carrier: one TCP connection per pipe (plain, or through stunnel).

``TcpPipe`` is the thin adapter between an asyncio TCP transport and the
sans-I/O ``PipeConnection``: bytes in with ``now``, the frames it queued
written together once per loop iteration, the transport closed or aborted
when the core says so. The ``memory`` carrier uses it too (a byte stream is
a byte stream).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import cast

from edgerq.carriers.adapter import CarrierPipe, build_pipe
from edgerq.config.model import ListenerConfig, PipeConfig
from edgerq.pipe.interface import ConsumerOwner, MuxPipe, ProviderOwner, Refusal
from edgerq.pipe.outbox import ByteOutbox
from edgerq.pipe.settings import PipeSettings

WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class TcpPipe(CarrierPipe, asyncio.Protocol):
    """A pipe on one byte stream: the asyncio protocol of its connection."""

    carrier = "tcp"
    wake_once = True

    def __init__(self, settings: PipeSettings, owner: ConsumerOwner | ProviderOwner) -> None:
        self._out = ByteOutbox()
        self._transport: asyncio.Transport | None = None
        super().__init__(settings, owner, self._out)

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.core.learn_peer(f"{peer[0]}:{peer[1]}")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self._start()

    def data_received(self, data: bytes) -> None:
        core = self.core
        core.receive(data, time.monotonic())
        if core.deadline != self._timer_at:  # seldom: the handshake or a close moves it, not data
            self._sync_timer()

    def eof_received(self) -> bool:
        self.core.shutdown(f"{self.core.role_peer} closed the connection", time.monotonic())
        self._sync_timer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(
            f"connection lost: {exc}" if exc else f"{self.core.role_peer} closed the connection"
        )

    # --- CarrierPipe -------------------------------------------------------------------

    def _connected(self) -> bool:
        return self._transport is not None

    def _waker(self) -> Callable[[], object]:
        # wake_once: the core wakes this pipe once until _flush, so waking is
        # just scheduling it (no Python call in between).
        return functools.partial(self._loop.call_soon, self._flush)

    def _flush(self) -> None:
        self.core.woken = False
        transport = self._transport
        if transport is None or transport.is_closing():
            self._out.clear()
            return
        if self._out.buffer:
            transport.write(self._out.take())  # the transport may keep it: a fresh buffer

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def _abort_transport(self) -> None:
        if self._transport is not None and not self.closed.done():
            self._transport.abort()

    def _refuse(self, refusal: Refusal) -> None:
        """One small GOAWAY, then close (no handshake, no timer)."""
        goaway = self.core.refuse(refusal)
        if self._transport is not None:
            self._transport.write(goaway)
            self._transport.close()


class TcpListener:
    """An SC's TCP port accepting pipes."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self.address: tuple[str, int] = server.sockets[0].getsockname()[:2]

    def dropped(self) -> Mapping[str, int]:
        return {}  # a stream port drops nothing: the kernel and the handshake refuse

    def close(self) -> None:
        self._server.close()


async def listen(listener: ListenerConfig, owner: ConsumerOwner) -> TcpListener:
    """Accept pipes on the listener's port; each connection gets a fresh pipe."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: build_pipe(TcpPipe, owner),
        listener.host,
        listener.port,
        backlog=512,
        reuse_address=True,
    )
    return TcpListener(server)


@asynccontextmanager
async def dial(pipe: PipeConfig, owner: ProviderOwner, timeout: float) -> AsyncIterator[MuxPipe]:
    """Connect to an SC (or a local stunnel client); the pipe is closed on exit."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(
            lambda: build_pipe(TcpPipe, owner), pipe.hostname, pipe.port
        )
    try:
        yield protocol
    finally:
        protocol.abort()
