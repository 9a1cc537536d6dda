"""The per-pipe limits against a misbehaving peer, as one policy (pure; no I/O, no clock).

``PipeConnection`` asks its ``PipeBounds`` before it answers a PING, takes an
OPEN, or queues a control frame while the carrier is paused; each limit hit is
reported to ``on_limit`` (the daemon counts it in metrics) and the caller
turns the answer into a refusal or a close.
"""

from __future__ import annotations

from collections.abc import Callable

from edgerq import defaults
from edgerq.errors import LimitExceeded
from edgerq.labels import Limit

MAX_PINGS_PER_INTERVAL = 32
"""PINGs a peer may send per heartbeat interval (it needs one): each costs us a PONG."""


def _ignore(limit: Limit) -> None:
    pass


class PipeBounds:
    """``streams_per_pipe``, PINGs per heartbeat interval, and the control backlog."""

    __slots__ = (
        "_paused_control",
        "_pings",
        "control_backlog",
        "max_streams",
        "on_limit",
        "streams_refused",
    )

    def __init__(
        self,
        max_streams: int = defaults.STREAMS_PER_PIPE,
        control_backlog: int = defaults.CONTROL_BACKLOG,
        on_limit: Callable[[Limit], None] = _ignore,
    ) -> None:
        self.max_streams = max_streams
        self.control_backlog = control_backlog
        self.on_limit = on_limit
        self.streams_refused = 0
        self._pings = 0
        self._paused_control = 0
        """Bytes of control frames queued since the carrier paused (the peer is not reading)."""

    def ping(self, peer: str, interval: float) -> None:
        """One more PING to answer in this interval; raises ``LimitExceeded`` past the bound."""
        self._pings += 1
        if self._pings > MAX_PINGS_PER_INTERVAL:
            raise LimitExceeded(
                f"{peer} sent more than {MAX_PINGS_PER_INTERVAL} PINGs within {interval:g} s",
                Limit.PINGS,
            )

    def new_interval(self) -> None:
        self._pings = 0

    def stream_refused(self, open_streams: int) -> str | None:
        """None when one more stream fits; else why not (the limit hit is counted)."""
        if open_streams < self.max_streams:
            return None
        self.streams_refused += 1
        self.on_limit(Limit.STREAMS_PER_PIPE)
        return f"the SP's pipe carries its limit of {self.max_streams} concurrent streams"

    def queue_paused(self, size: int) -> int | None:
        """``size`` bytes of control frames queued while paused: the total once it is
        over the backlog, else None."""
        self._paused_control += size
        return self._paused_control if self._paused_control > self.control_backlog else None

    def resumed(self) -> None:
        self._paused_control = 0

    def backlog_exceeded(self, peer: str, queued: int) -> LimitExceeded | None:
        """The error that closes the pipe when ``queued`` bytes are over the backlog."""
        if queued <= self.control_backlog:
            return None
        self.on_limit(Limit.CONTROL_BACKLOG)
        return LimitExceeded(
            f"{peer} does not read: {queued} bytes of control frames queued "
            f"(limit {self.control_backlog})",
            Limit.CONTROL_BACKLOG,
        )
