"""The opening of one client connection at the SC, as a state machine with no I/O.

    WAITING_FOR_SLOT --slot_taken--> WAITING_FOR_PIPE --pipe_chosen--> OPENING
    OPENING --confirmed--> CONFIRMED            (the SP reached the service)
    OPENING --fail_over--> WAITING_FOR_PIPE     (pipe lost or SP refused; replay)
    any state but CONFIRMED --failed--> FAILED  (503, 502 or 504 to the client)

``probe(now, ...)`` says what to do while OPENING: wait, give up (request_ttl
is over), or fail over (the pipe went silent and another is heard from).
``fail_over(now, ...)`` decides whether a lost or refused open is tried again
elsewhere. Time is passed in (``now``, on the clock that set ``deadline``), so
every decision is tested as a table of transitions; ``ClientOpener`` is the
asyncio glue that takes slots, waits for pipes and arms timers.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

from edgerq.errors import LocalProtocolError
from edgerq.sc.registry import SUSPECT_AFTER

P = TypeVar("P")
"""What a pipe is to the attempt: only compared and collected (a ``MuxPipe``)."""


class OpenState(Enum):
    WAITING_FOR_SLOT = "waiting for a max_connections slot"
    WAITING_FOR_PIPE = "waiting for a pipe that serves the service"
    OPENING = "opening: waiting for the SP's answer"
    CONFIRMED = "confirmed: the SP reached the service"
    FAILED = "failed"


class Probe(Enum):
    WAIT = "wait"
    EXPIRED = "expired"
    """request_ttl is over: 504."""
    FAIL_OVER = "fail over"
    """The pipe is silent and another is heard from: open it there."""


class OpenAttempt(Generic[P]):
    """Where one client connection stands on its way to the service."""

    __slots__ = ("deadline", "pipe", "state", "tried")

    def __init__(self, deadline: float) -> None:
        self.state = OpenState.WAITING_FOR_SLOT
        self.deadline = deadline
        """By when the service must have answered (request_ttl after accept)."""
        self.pipe: P | None = None
        """The pipe of the current (or last) open."""
        self.tried: frozenset[P] = frozenset()
        """Pipes this connection was opened on and lost; only failovers add to it."""

    def _move(self, expected: OpenState, to: OpenState) -> None:
        if self.state is not expected:
            raise LocalProtocolError(f"open attempt: {to.name} from {self.state.name}")
        self.state = to

    def slot_taken(self) -> None:
        self._move(OpenState.WAITING_FOR_SLOT, OpenState.WAITING_FOR_PIPE)

    def pipe_chosen(self, pipe: P) -> None:
        self._move(OpenState.WAITING_FOR_PIPE, OpenState.OPENING)
        self.pipe = pipe

    def confirmed(self) -> None:
        self._move(OpenState.OPENING, OpenState.CONFIRMED)

    def failed(self) -> None:
        if self.state is OpenState.CONFIRMED:
            raise LocalProtocolError("open attempt: FAILED after CONFIRMED")
        self.state = OpenState.FAILED

    def probe(
        self, now: float, silent_for: float, answered: bool, other_pipe: Callable[[], bool]
    ) -> Probe:
        """While OPENING: what the next check decides. ``answered``: bytes already
        reached the client (then it cannot be opened again elsewhere)."""
        if now >= self.deadline:
            return Probe.EXPIRED
        if silent_for > SUSPECT_AFTER and not answered and other_pipe():
            return Probe.FAIL_OVER
        return Probe.WAIT

    def fail_over(
        self,
        now: float,
        *,
        replayable: bool,
        pipe_lost: bool,
        other_pipe: Callable[[frozenset[P]], bool],
    ) -> bool:
        """The open on ``pipe`` failed (``pipe_lost``, else the SP refused). True,
        and WAITING_FOR_PIPE again, when it may be opened on another pipe: nothing
        reached the client yet (``replayable``), request_ttl is not over, and the
        pipe died or another SP can be asked. Else the caller fails it."""
        if self.state is not OpenState.OPENING:
            raise LocalProtocolError(f"open attempt: fail over from {self.state.name}")
        if not replayable or now >= self.deadline:
            return False
        if self.pipe is not None:
            self.tried = self.tried | {self.pipe}
        if not pipe_lost and not other_pipe(self.tried):
            return False  # a refusal, and no other SP to ask
        self.state = OpenState.WAITING_FOR_PIPE
        return True
