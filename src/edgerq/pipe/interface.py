"""A pipe as the daemons see it: the typed ``MuxPipe`` interface and its owners.

The protocol itself is ``pipe.connection.PipeConnection`` (sans I/O). Each carrier
has a thin adapter around it (``carriers.tcp.TcpPipe``,
``carriers.quic.pipe.QuicPipe``, both built on ``carriers.adapter.CarrierPipe``)
that satisfies ``MuxPipe``; the daemons know pipes by this interface only.

What the pipe means to each side (registration at the SC, opening services
at the SP) is left to the owner of its role: ``ConsumerOwner`` (the SC) or
``ProviderOwner`` (the SP).
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Generator, Sequence
from typing import Any, Protocol

from edgerq.errors import ProtocolError
from edgerq.labels import Limit
from edgerq.pipe.bounds import MAX_PINGS_PER_INTERVAL
from edgerq.pipe.events import Refusal, Role, State
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.status import PipeStatus
from edgerq.pipe.stream import OpenRefused, Stream, StreamSink
from edgerq.protocol.messages import GoawayCode, Open, RegisterStatus

__all__ = [
    "MAX_PINGS_PER_INTERVAL",
    "ConsumerOwner",
    "MuxPipe",
    "PipeOwner",
    "PipeSettings",
    "ProviderOwner",
    "Refusal",
    "Role",
    "State",
]


class Closed(Protocol):
    """A pipe's end, awaited for its reason (the carrier's asyncio future)."""

    def done(self) -> bool: ...
    def result(self) -> str: ...
    def __await__(self) -> Generator[Any, None, str]: ...


class MuxPipe(Protocol):
    """What the daemons use of a pipe, whatever its carrier (``tcp``, ``udp``, ``memory``)."""

    carrier: str
    owner: ConsumerOwner | ProviderOwner

    @property
    def closed(self) -> Closed:
        """Resolves with the reason once the pipe is gone."""
        ...

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def peer(self) -> str: ...
    @property
    def state(self) -> State: ...
    @property
    def authenticated(self) -> bool: ...
    @property
    def registered(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def closing(self) -> bool: ...
    @property
    def paused(self) -> bool: ...
    @property
    def close_reason(self) -> str: ...
    @property
    def error(self) -> ProtocolError | None: ...
    @property
    def last_heard(self) -> float: ...
    @property
    def streams(self) -> dict[int, Stream]: ...

    def status(self) -> PipeStatus:
        """The pipe now: counters and the bounds in force (``/status``, the close line)."""
        ...

    def set_limits(self, *, max_streams: int, control_backlog: int, pipe_buffer: int) -> None:
        """New bounds from a reload: streams already open go on; new OPENs, queued
        control frames and DATA are checked against these from now on."""

    def open_stream(
        self,
        service: uuid_mod.UUID,
        *,
        window: int,
        max_frame: int,
        client: str,
        sink: StreamSink,
        destination: str = "",
    ) -> Stream: ...
    def accept_stream(self, request: Open) -> Stream: ...
    def answer_open(self, stream: Stream, failure: OpenRefused | None) -> None: ...
    def send_raw(self, data: bytes) -> None: ...
    def drain(self, reason: str) -> None: ...
    def close(self, code: GoawayCode = GoawayCode.NORMAL, reason: str = "closing") -> None: ...
    def abort(self, reason: str = "", error: ProtocolError | None = None) -> None: ...


class PipeOwner(Protocol):
    """What either daemon does with a pipe: its settings, and its life-cycle events."""

    def pipe_settings(self) -> PipeSettings:
        """What a new pipe is built with now (a reload changes it for pipes to come)."""
        ...

    def pipe_created(self, pipe: MuxPipe) -> None:
        """A carrier built ``pipe`` with ``pipe_settings()`` (its connection is coming up)."""

    def pipe_limit_hit(self, limit: Limit) -> None:
        """A pipe of this owner enforced ``limit`` against its peer (the daemon counts it)."""

    def pipe_authenticated(self, pipe: MuxPipe) -> None: ...
    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None: ...


class ConsumerOwner(PipeOwner, Protocol):
    """The SC: it admits (or refuses) a connection, and answers an SP's REGISTER."""

    def pipe_admit(self, pipe: MuxPipe) -> Refusal | None:
        """The connection is up, the handshake is about to start: None to go on."""
        ...

    def pipe_register(
        self, pipe: MuxPipe, uuids: Sequence[uuid_mod.UUID]
    ) -> list[tuple[uuid_mod.UUID, RegisterStatus]]: ...


class ProviderOwner(PipeOwner, Protocol):
    """The SP: it learns what the SC accepted, and serves the SC's OPENs."""

    def pipe_registered(
        self, pipe: MuxPipe, results: Sequence[tuple[uuid_mod.UUID, RegisterStatus]]
    ) -> None: ...
    def pipe_open(self, pipe: MuxPipe, request: Open) -> None: ...
