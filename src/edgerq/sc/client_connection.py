"""One client of an SC service port: its bytes, its open attempt, how it is told of a failure.

The ``ClientOpener`` (``sc.opener``) drives it, and ``SlowClients`` watches it;
both ask it to change its state through its methods (``begin``, ``slot_taken``,
``wait_in``, ``guard_with``, ``count_open``, ``settle``) and only read it
otherwise. It says what it must to its client itself: ``http`` services answer
tunnel failures and slow clients with a status line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edgerq.config.model import ConsumerService
from edgerq.labels import Outcome
from edgerq.pipe.interface import MuxPipe
from edgerq.pipe.stream import OpenAnswer, OpenRefused, Stream
from edgerq.runtime.relay import LocalConnection
from edgerq.sc.fairness import RateWindow, head_complete, source_of
from edgerq.sc.http_errors import error_response
from edgerq.sc.open_attempt import OpenAttempt, OpenState
from edgerq.sc.slots import ConnectionSlots

log = logging.getLogger("edgerq.sc")

_NOT_STARTED: OpenAttempt[MuxPipe] = OpenAttempt(0.0)
"""Every connection's attempt until it is accepted (never moved: replaced then)."""


UNDECIDED = (OpenAnswer.AWAITED, OpenAnswer.REFUSED)
"""A reset in these states is the opener's to handle: it fails over, or answers 502/504."""


class ClientConnection(LocalConnection):
    """A client of one service port. ``http`` services answer tunnel failures with 5xx."""

    def __init__(
        self,
        service: ConsumerService,
        on_done: Callable[[LocalConnection], None],
        on_connected: Callable[[LocalConnection], None],
        on_answer: Callable[[ClientConnection, Stream, OpenRefused | None], None],
        slots: ConnectionSlots,
    ) -> None:
        super().__init__(
            service.request_buffer,
            on_done=on_done,
            on_connected=on_connected,
            idle_timeout=service.idle_timeout,
        )
        self.service = service
        self._on_answer = on_answer
        self._slots = slots
        self.attempt: OpenAttempt[MuxPipe] = _NOT_STARTED
        """Where the opening stands (``begin`` makes it when the client is accepted)."""
        self._task: asyncio.Task[None] | None = None
        """Waiting for a slot or a pipe."""
        self.holds_slot = False
        self.counted = False
        """Counted in ``streams_open`` (``count_open``)."""
        self.source = "?"
        """The client's address: slots are shared fairly between sources."""
        self.head_done = service.type != "http" or service.header_timeout is None
        """``http``: whether the head of the first request has arrived."""
        self.watch_reads = not self.head_done  # until then, every read is looked at
        self._head_tail = b""
        self.rate: RateWindow | None = None
        self.accepted_at = 0.0
        """When the client got its slot (and began to be read), on the daemon's clock."""
        self._guard: asyncio.TimerHandle | None = None
        """The next ``header_timeout`` or ``min_rate`` check."""

    # --- the opening, changed only here -------------------------------------------------

    def begin(self, now: float) -> OpenAttempt[MuxPipe]:
        """The client was accepted at ``now``: its attempt has ``request_ttl`` in all."""
        self.attempt = OpenAttempt(now + self.service.request_ttl)
        self.source = source_of(self.peer)
        return self.attempt

    def slot_taken(self, now: float) -> None:
        """A ``max_connections`` slot is this connection's from ``now`` (released by
        ``settle``): it begins to be read, and ``min_rate`` counts from here."""
        self.holds_slot = True
        self.attempt.slot_taken()
        self.accepted_at = now
        rate = self.service.effective_min_rate
        if rate > 0:
            self.rate = RateWindow(rate, self.service.rate_window, now)

    def wait_in(self, task: asyncio.Task[None]) -> None:
        """The connection waits for a slot or a pipe in ``task`` (cancelled by ``settle``)."""
        self._task = task

    def guard_with(self, timer: asyncio.TimerHandle | None) -> None:
        """The next slow-client check (None: the one that fired)."""
        self._guard = timer

    def count_open(self) -> bool:
        """True the first time a stream is opened for it: count it as open once."""
        first, self.counted = not self.counted, True
        return first

    def settle(self) -> None:
        """The connection is done: stop its waiting and its guard, give its slot back."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        if self.holds_slot:
            self.holds_slot = False
            self._slots.release(self.source)

    def read_seen(self, data: memoryview) -> None:
        self.head_done, self._head_tail = head_complete(self._head_tail, data)
        self.watch_reads = not self.head_done

    def too_slow(self, reason: str) -> None:
        """Cut by ``header_timeout`` or ``min_rate``: 408 to an ``http`` client that
        got no answer yet, a reset otherwise."""
        self.set_outcome(Outcome.IDLE_TIMEOUT, reason)  # idle in all but name
        if self.service.type == "http" and self.written == 0:
            self.send_and_close(error_response(408, reason))
        else:
            self.abort()

    def fail(self, status: int, message: str) -> None:
        """The tunnel cannot serve this client: say why (http) or close it."""
        self.outcome_kind = Outcome.for_status(status)
        self.outcome = f"{status} {message}"
        if self.service.type == "http" and self.written == 0:
            self.send_and_close(error_response(status, message))
        else:
            self.abort()

    def idle_expired(self, timeout: float) -> None:
        """An ``http`` client that got no answer yet is told why: 408 when it never
        sent a byte, 504 when the service never answered; anything else is cut."""
        if self.service.type != "http" or self.written != 0:
            super().idle_expired(timeout)
            return
        if self.bytes_received == 0:
            status, message = 408, f"no request within idle_timeout ({timeout:g} s)"
        else:
            status, message = 504, f"no answer within idle_timeout ({timeout:g} s)"
        self.send_and_close(error_response(status, message))

    def log_end(self, access_log: bool) -> None:
        """The connection's one log line: WARNING unless it ended well, then INFO with
        ``access_log``, else DEBUG (so by default not at all: formatting a line per
        connection shows in the SC's CPU on short connections)."""
        outcome = self.outcome or "closed"
        if outcome != "ok":
            level = logging.WARNING
        else:
            level = logging.INFO if access_log else logging.DEBUG
        if not log.isEnabledFor(level):
            return  # the line's arguments are not even formatted
        stream = self.stream
        where = f"{self.attempt.pipe} stream {stream.id}" if stream is not None else "no pipe"
        log.log(
            level,
            "%s: client %s service '%s': %d B up, %d B down, %.3f s: %s",
            where,
            self.peer,
            self.service.name,
            stream.bytes_out if stream is not None else 0,
            stream.bytes_in if stream is not None else 0,
            time.monotonic() - self.started,
            outcome,
        )

    def on_open_answer(self, stream: Stream, failure: OpenRefused | None) -> None:
        self._on_answer(self, stream, failure)

    def on_reset(self, reason: str, outcome: Outcome) -> None:
        stream = self.stream
        confirmed = self.attempt.state is OpenState.CONFIRMED
        if stream is not None and not confirmed and stream.answer in UNDECIDED:
            return  # the opener decides: another pipe, or 502/504
        if self.service.type == "http" and self.written == 0:
            self.fail(502, f"tunnel closed before the service answered ({reason})")
        else:
            super().on_reset(reason, outcome)
