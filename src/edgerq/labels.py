"""The fixed sets of names that metrics label things with.

Each is a ``StrEnum``: the member is what code passes around and matches on,
its value the label an operator sees in ``/metrics`` (unchanged from the
strings used before these enums existed).
"""

from __future__ import annotations

from enum import StrEnum


class Limit(StrEnum):
    """A limit against abuse that refused a pipe, a stream or a frame."""

    AUTH_BLOCKED = "auth_blocked"
    UNAUTHENTICATED_PIPES = "unauthenticated_pipes"
    PINGS = "pings"
    CONTROL_BACKLOG = "control_backlog"
    STREAMS_PER_PIPE = "streams_per_pipe"
    CONNECTIONS_PER_SOURCE = "connections_per_source"
    """A client waited because its source address held its share of a service's slots."""
    WAITING_PER_SOURCE = "waiting_per_source"
    """A client was refused: its source address already had that many waiting."""
    HEADER_TIMEOUT = "header_timeout"
    """An ``http`` client did not send its request head in time (408)."""
    MIN_RATE = "min_rate"
    """A connection moved bytes, but fewer than ``min_rate`` per second over a window."""
    OPEN_FILES = "open_files"
    """A client accepted with the daemon near its RLIMIT_NOFILE (past it, new
    clients are reset by the event loop, unseen)."""
    STREAM_WINDOW = "stream_window"
    """The peer sent more on a stream than the window this end granted (stream reset)."""
    PIPE_BUFFER = "pipe_buffer"
    """A pipe's streams held more than ``pipe_buffer`` bytes (the stream is reset)."""
    REPEATED_VIOLATIONS = "repeated_violations"
    """The peer kept overrunning windows or the pipe buffer (the pipe is ended)."""


class Outcome(StrEnum):
    """How a tunneled connection ended (``edgerq_streams_total{outcome=...}``)."""

    OK = "ok"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    IDLE_TIMEOUT = "idle_timeout"
    """Idle (``idle_timeout``) or too slow (``header_timeout``, ``min_rate``)."""
    PIPE_CLOSED = "pipe_closed"
    RESET = "reset"
    CLOSED_EARLY = "closed_early"
    """The local end closed before the stream was done both ways."""
    ERROR = "error"
    """A local error, a refused open, or a stream cut on purpose."""

    @classmethod
    def for_status(cls, status: int) -> Outcome:
        """The outcome of answering a client with an HTTP error ``status``."""
        return cls(str(status))
