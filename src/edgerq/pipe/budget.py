"""What one pipe may make this end hold, whatever the peer announces.

Two bounds, both this end's own:

- per stream, the receive window: ``granted_window`` is the smaller of this
  end's ``stream_window`` and the peer's ask, and a stream that receives more
  than it granted (and has not handed to its local socket) is reset;
- per pipe, ``PipeBudget``: the bytes all its streams received from the peer
  and their local sockets have not taken yet, at most ``limit``; the stream
  whose DATA would go past it is reset. A stream charges what it holds once
  DATA was handed to its local socket (bytes the socket took at once were
  never held: a socket that keeps up costs the budget nothing).

Either reset is a *violation*, counted in ``edgerq_limit_hits_total`` and
logged (the first at WARNING, the rest at DEBUG: a flood costs two lines);
after ``max_violations`` the pipe is ended with GOAWAY ``LIMIT_EXCEEDED``.
A peer that honours the windows never overruns one; a budget overrun means
this end's local sockets (slow clients at the SC, a stuck service at the SP)
hold more than ``limit`` at once.

No I/O here: streams charge and release bytes; a limit hit is told to the
small ``BudgetOwner`` interface, and the violation that ends the pipe is
raised (``LimitExceeded``) to whoever handed the pipe its input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from edgerq import defaults
from edgerq.errors import LimitExceeded
from edgerq.labels import Limit

log = logging.getLogger("edgerq.budget")


def granted_window(own: int, asked: int) -> int:
    """The receive window this end grants a stream: never more than its own."""
    return min(own, asked)


class BudgetOwner(Protocol):
    """The pipe a budget belongs to (its ``PipeConnection``): named in the log lines."""

    @property
    def limit_hit(self) -> Callable[[Limit], None]: ...


class PipeBudget:
    """Bytes held on behalf of one pipe's streams, and the peer's violations."""

    __slots__ = ("held", "limit", "max_violations", "owner", "peak", "violations")

    def __init__(
        self,
        owner: BudgetOwner | None = None,
        limit: int = defaults.PIPE_BUFFER,
        max_violations: int = defaults.LIMIT_VIOLATIONS,
    ) -> None:
        if limit < 1 or max_violations < 1:
            raise ValueError("limit and max_violations must be at least 1")
        self.owner = owner
        self.limit = limit
        self.max_violations = max_violations
        self.held = 0
        """Bytes received from the peer that the local sockets have not taken yet."""
        self.peak = 0
        self.violations = 0

    def charge(self, n: int) -> bool:
        """``n`` more bytes to hold; False (nothing charged) when that would pass the limit."""
        held = self.held + n
        if held > self.limit:
            return False
        self.held = held
        if held > self.peak:
            self.peak = held
        return True

    def release(self, n: int) -> None:
        """``n`` held bytes were taken by a local socket (or dropped with their stream)."""
        self.held = max(0, self.held - n)

    def violated(self, limit: Limit, stream_id: int, message: str) -> None:
        """A stream was reset for overrunning ``limit``: count it; the ``max_violations``-th
        raises ``LimitExceeded`` (the pipe ends with it), later ones do not (frames
        already on their way)."""
        self.violations += 1
        owner = self.owner
        if owner is not None:
            owner.limit_hit(limit)
        level = logging.WARNING if self.violations == 1 else logging.DEBUG
        log.log(
            level,
            "%s: stream %d reset: %s (violation %d of %d allowed; further ones logged at debug)",
            owner if owner is not None else "pipe",
            stream_id,
            message,
            self.violations,
            self.max_violations,
        )
        if self.violations == self.max_violations:
            raise LimitExceeded(
                f"the peer overran stream windows or the pipe buffer {self.violations} "
                f"times (last: {message})",
                Limit.REPEATED_VIOLATIONS,
            )
