"""The ``memory`` carrier: pipes joined in memory, inside one event loop (for tests).

As aioquic's tests join a client and a server without a network, this carrier
lets the real SC and SP code (admission, handshake, registration, streams,
redials) run in one process with no socket between them and no sleep: what
one side writes reaches the other on the next loop iteration, in order; a
close is seen as end-of-file, then as the connection lost, by both sides.

It implements the ``Carrier`` interface like ``tcp`` and ``quic``, and its pipes
are ``tcp``'s ``TcpPipe`` adapters on an in-memory transport. Listeners
live in a table of this module keyed by port (``0`` picks a free one), so an
SP's ``PipeConfig`` reaches an SC's ``ListenerConfig`` by port number. Config
files cannot select it (the XSD allows ``tcp`` and ``udp`` only).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from edgerq.carriers.adapter import build_pipe
from edgerq.carriers.tcp import TcpPipe
from edgerq.config.model import ListenerConfig, PipeConfig
from edgerq.pipe.interface import ConsumerOwner, MuxPipe, ProviderOwner

_listeners: dict[int, ConsumerOwner] = {}
_ports = itertools.count(40000)
_client_ports = itertools.count(50000)


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory byte stream, handed to a pipe as its transport."""

    def __init__(self, local: tuple[str, int], remote: tuple[str, int]) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._extra: dict[str, Any] = {"sockname": local, "peername": remote}
        self.peer: MemoryTransport | None = None
        self.protocol: asyncio.Protocol | None = None
        self._closing = False
        self._lost = False
        self._reading = True
        self.written = 0
        """Bytes this end has written (for tests)."""

    # --- asyncio.Transport -----------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.peer is None:
            return
        self.written += len(data)
        self._loop.call_soon(self.peer._receive, bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.peer is not None:
            self._loop.call_soon(self.peer._peer_closed)
        self._loop.call_soon(self._connection_lost)

    def abort(self) -> None:
        self.close()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True

    def is_reading(self) -> bool:
        return self._reading

    # --- the other end -----------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if not self._lost and self.protocol is not None:
            self.protocol.data_received(data)

    def _peer_closed(self) -> None:
        if self._lost or self.protocol is None:
            return
        if not self.protocol.eof_received():
            self.close()

    def _connection_lost(self) -> None:
        if not self._lost and self.protocol is not None:
            self._lost = True
            self.protocol.connection_lost(None)


def connect_pair(
    accept: ConsumerOwner, dial: ProviderOwner, port: int = 0
) -> tuple[TcpPipe, TcpPipe]:
    """Two pipes joined in memory: (the accepting side's, the dialing side's)."""
    here = ("127.0.0.1", next(_client_ports))
    there = ("127.0.0.1", port)
    server_end, client_end = MemoryTransport(there, here), MemoryTransport(here, there)
    server_end.peer, client_end.peer = client_end, server_end
    server, client = build_pipe(TcpPipe, accept), build_pipe(TcpPipe, dial)
    server_end.protocol, client_end.protocol = server, client
    server.connection_made(server_end)
    client.connection_made(client_end)
    return server, client


class MemoryListener:
    """An SC's in-memory port accepting pipes."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)

    def dropped(self) -> Mapping[str, int]:
        return {}

    def close(self) -> None:
        _listeners.pop(self.address[1], None)


async def listen(listener: ListenerConfig, owner: ConsumerOwner) -> MemoryListener:
    port = listener.port or next(_ports)
    if port in _listeners:
        raise OSError(98, f"memory port {port} is in use")
    _listeners[port] = owner
    return MemoryListener(port)


@asynccontextmanager
async def dial(pipe: PipeConfig, owner: ProviderOwner, timeout: float) -> AsyncIterator[MuxPipe]:
    accept = _listeners.get(pipe.port)
    if accept is None:
        raise ConnectionRefusedError(111, "Connection refused")
    _, client = connect_pair(accept, owner, pipe.port)
    try:
        yield client
    finally:
        client.abort()
