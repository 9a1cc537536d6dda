"""``PipeStatus``: one pipe at one moment, as ``/status`` and the close log line show it."""

from __future__ import annotations

from dataclasses import dataclass

from edgerq.pipe.events import State


@dataclass(frozen=True, slots=True)
class PipeStatus:
    id: int
    name: str
    """The SP's name for the pipe (``<pipe name>``)."""
    peer: str
    """The other end's ``host:port``."""
    state: State
    opened_at: float
    """When the pipe was built, on the daemon's clock."""
    last_heard: float
    """When a frame last arrived (heartbeats included)."""
    streams_open: int
    streams_total: int
    """Streams opened over the pipe's life."""
    unknown_stream_frames: int
    """DATA and FIN frames for streams this pipe no longer has (or never had), dropped
    (late WINDOW, RESET and OPEN answers for such streams are dropped uncounted)."""
    max_streams: int
    control_backlog: int
    pipe_buffer: int
    """The bounds in force (a reload may have changed them since the pipe was built)."""
    held: int
    """Bytes the pipe holds for its local sockets now (at most ``pipe_buffer``)."""
    limit_violations: int
    """Streams reset because the peer overran a window or the pipe's buffer."""
