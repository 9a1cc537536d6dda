"""Carriers: how a pipe travels between SP and SC.

Each carrier implements the ``Carrier`` interface: ``listen(listener,
owner)`` (SC side, returns a ``PipeListener``) and ``dial(pipe, owner,
timeout)`` (SP side, an async context manager yielding the pipe). For each
connection it builds its own adapter (``tcp.TcpPipe``, ``quic.pipe.QuicPipe``,
both on ``adapter.CarrierPipe``) from the owner's ``pipe_settings()`` and the
owner, around the sans-I/O ``pipe.connection.PipeConnection``. The daemons
know pipes by the typed ``pipe.interface.MuxPipe`` only; no daemon code
depends on which carrier it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from edgerq.config.model import ListenerConfig, PipeConfig
from edgerq.errors import ConfigError
from edgerq.pipe.interface import ConsumerOwner, MuxPipe, ProviderOwner


class PipeListener(Protocol):
    """An SC's port accepting pipes."""

    address: tuple[str, int]

    def dropped(self) -> Mapping[str, int]:
        """Datagrams (udp) turned away so far, by reason; empty for stream carriers."""

    def close(self) -> None:
        """Accept no more pipes; pipes already accepted stay up."""


class Carrier(Protocol):
    """One way for a pipe to travel (``tcp`` or ``udp``)."""

    async def listen(self, listener: ListenerConfig, owner: ConsumerOwner) -> PipeListener: ...

    def dial(
        self, pipe: PipeConfig, owner: ProviderOwner, timeout: float
    ) -> AbstractAsyncContextManager[MuxPipe]: ...


def carrier(name: str) -> Carrier:
    """The implementation of carrier ``name`` (``tcp``, ``udp``, or ``memory`` in tests)."""
    if name == "tcp":
        from edgerq.carriers import tcp

        return tcp
    if name == "udp":
        from edgerq.carriers.quic import carrier as quic

        return quic
    if name == "memory":  # tests only: no config can name it
        from edgerq.carriers import memory

        return memory
    raise ConfigError(f"unknown carrier {name!r} (tcp or udp)")


def require_usable(name: str) -> None:
    """Raise ``ConfigError`` when carrier ``name`` cannot run here (udp: an unknown qh3)."""
    if name == "udp":
        from edgerq.carriers.quic import qh3_compat

        qh3_compat.require_known_version()
