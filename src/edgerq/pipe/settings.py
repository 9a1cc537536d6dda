"""``PipeSettings``: everything one pipe is built with, in one frozen object.

The daemon makes it from its configuration (the SC from ``<limits>`` and its
token, the SP from the ``<pipe>`` element and ``<limits>``); the carrier hands
it, with the pipe's owner, to the adapter it builds, and the adapter to the
sans-I/O ``PipeConnection``. A reload makes new settings for pipes to come;
pipes already up take new bounds through ``set_limits``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgerq import defaults
from edgerq.pipe.events import Role
from edgerq.protocol.handshake import ConsumerHandshake, ProviderHandshake


@dataclass(frozen=True, slots=True)
class PipeSettings:
    role: Role
    """``CONSUMER`` at the SC (answers the handshake), ``PROVIDER`` at the SP (starts it)."""
    token: bytes | None = field(default=None, repr=False)
    """The shared secret both ends prove (None: no authentication). Never printed."""
    name: str = ""
    """The SP's name for the pipe (``<pipe name>``), sent in HELLO; empty at the SC."""
    heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL
    """Seconds between PINGs while the pipe is quiet."""
    heartbeat_timeout: float = defaults.HEARTBEAT_TIMEOUT
    """Seconds without any frame from the peer before the pipe is declared dead."""
    handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT
    """Seconds the handshake may take before the connection is cut."""
    max_streams: int = defaults.STREAMS_PER_PIPE
    """Most concurrent streams the peer may open (``streams_per_pipe``)."""
    control_backlog: int = defaults.CONTROL_BACKLOG
    """Most control frames queued for a peer that does not read before the pipe closes."""
    stream_window: int = defaults.STREAM_WINDOW
    """The most this end grants a stream the peer opens, whatever it asks (SP side)."""
    pipe_buffer: int = defaults.PIPE_BUFFER
    """Bytes all streams of the pipe may hold for their local sockets together."""

    def handshake(self) -> ConsumerHandshake | ProviderHandshake:
        """A fresh handshake for one pipe (each has its own nonce)."""
        if self.role is Role.CONSUMER:
            return ConsumerHandshake(self.token)
        return ProviderHandshake(self.token, self.name)

    def __str__(self) -> str:
        auth = "token MASKED" if self.token is not None else "no token"
        return (
            f"{self.role.name.lower()} pipe{f' {self.name!r}' if self.name else ''}: {auth}, "
            f"max_streams {self.max_streams}, stream_window {self.stream_window}, "
            f"pipe_buffer {self.pipe_buffer}"
        )
