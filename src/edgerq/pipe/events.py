"""What a pipe connection is and says: its role, its ``State``, and the events it emits.

``pipe.connection.PipeConnection`` emits these, in order, the moment they happen;
its carrier adapter acts on them (``CloseTransport``, ``AbortTransport``) or
hands them to the daemon that owns the pipe (the rest).
"""

from __future__ import annotations

import uuid as uuid_mod
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple

from edgerq.protocol.messages import GoawayCode, Open, RegisterStatus


class Role(Enum):
    CONSUMER = "sc"
    PROVIDER = "sp"


class State(IntEnum):
    """A pipe's life cycle; ordered, so ``state >= State.CLOSING`` reads as "closing or closed"."""

    HANDSHAKE = 1
    """Authenticating (the handshake timeout runs)."""
    OPEN = 2
    """Authenticated: streams, registrations and heartbeats."""
    DRAINING = 3
    """Either side said GOAWAY DRAINING: no new streams; open ones go on."""
    CLOSING = 4
    """Closed or refused here, or by the peer: waiting for the connection to go."""
    CLOSED = 5
    """The connection is gone; every stream was reset."""


class Refusal(NamedTuple):
    """Why a new pipe is turned away before its handshake (see limits.PipeGate)."""

    code: GoawayCode
    reason: str


# --- events: what the adapter (and through it, the daemon) must act on ------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The handshake succeeded."""


@dataclass(frozen=True, slots=True)
class RegisterReceived:
    """SC: the SP offers these services; answer with ``send_registered``."""

    uuids: tuple[uuid_mod.UUID, ...]


@dataclass(frozen=True, slots=True)
class RegisteredReceived:
    """SP: the SC's answer to REGISTER (a second one: the SC reloaded)."""

    results: tuple[tuple[uuid_mod.UUID, RegisterStatus], ...]


@dataclass(frozen=True, slots=True)
class OpenRequested:
    """SP: the SC opens a stream; ``accept_stream`` it, then ``answer_open``."""

    request: Open


@dataclass(frozen=True, slots=True)
class CloseTransport:
    """Write what is queued, then close the connection."""


@dataclass(frozen=True, slots=True)
class AbortTransport:
    """Cut the connection now, without writing what is queued."""


PipeEvent = (
    Authenticated
    | RegisterReceived
    | RegisteredReceived
    | OpenRequested
    | CloseTransport
    | AbortTransport
)
