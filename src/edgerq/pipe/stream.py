"""One tunneled connection inside a pipe: flow-control state and its local end.

A ``Stream`` is flow-control state. It hands the frames it produces to a
``StreamWriter`` (its pipe, which it knows by that small interface only) and
is bound to a ``StreamSink``, the local socket it relays (the client at the
SC, the service at the SP). The sink calls ``send``/``send_eof``/``reset``/
``consumed``; the pipe calls ``receive_*`` when frames arrive, and the stream
calls the sink's ``on_*`` methods. At the SC, the sink also hears, once, how
the SP answered the OPEN (``on_open_answer``): the one way an opener learns
whether its connection reached the service.

Flow control, per stream and per direction: the sender may have at most
``window`` bytes unacknowledged; the receiver grants credit back with WINDOW
frames once it has handed the bytes to its local socket, so a reader that
stops reading holds at most one window of memory and never blocks the pipe.

Each end enforces its own bound whatever the peer announces: ``window`` is
the receive window THIS end granted (at the SP the smaller of its own
``stream_window`` and the SC's ask, see ``pipe.budget.granted_window``; OPEN_OK
tells the SC), and DATA past it resets the stream. What a stream holds
(received, not yet taken by the local socket) is also charged to its pipe's
``PipeBudget``; a stream that would take the pipe past it is reset too. The
charge is settled once DATA has been handed to the local end: bytes its socket
took at once were never held, so the common case (a socket that keeps up)
charges and releases nothing.
"""

from __future__ import annotations

import enum
import uuid as uuid_mod
from typing import Protocol

from edgerq import defaults
from edgerq.errors import EdgerqError, LocalProtocolError
from edgerq.labels import Limit, Outcome
from edgerq.pipe.budget import PipeBudget
from edgerq.protocol.frames import FrameType, encode_frame
from edgerq.protocol.messages import CodedReason, OpenFailure, ResetCode, encode_window


class StreamWriter(Protocol):
    """Where a stream's frames go: its pipe, whatever the carrier."""

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, max_frame: int
    ) -> None: ...
    def send_raw(self, data: bytes) -> None: ...
    def forget_stream(self, stream: Stream) -> None: ...
    def log_stream_error(self, stream: Stream, message: str) -> None: ...


class StreamSink(Protocol):
    """The local end of a stream (a TCP socket)."""

    def on_data(self, data: bytes | memoryview) -> None: ...
    def on_eof(self) -> None: ...
    def on_reset(self, reason: str, outcome: Outcome) -> None: ...
    def on_credit(self) -> None: ...
    def on_pipe_paused(self, paused: bool) -> None: ...
    def on_open_answer(self, stream: Stream, failure: OpenRefused | None) -> None:
        """SC side: the SP answered ``stream``'s OPEN (``failure`` None: OPEN_OK), or the
        stream ended before it did (``PipeLost`` when its pipe died). Called at most once,
        before ``on_reset`` for the same cause."""


class OpenAnswer(enum.Enum):
    """Where a stream's OPEN stands, seen from the SC."""

    NOT_ASKED = "not asked"
    """The SP's end of a stream, which answers OPENs rather than awaiting them."""
    AWAITED = "awaited"
    OPENED = "opened"
    REFUSED = "refused"
    """OPEN_FAIL, or the stream ended (reset, pipe lost) before the answer."""
    ABANDONED = "abandoned"
    """The SC gave up waiting (``abandon_open``): a late answer is ignored."""


class OpenRefused(EdgerqError):
    """The SP could not reach the service behind it (OPEN_FAIL), or the stream ended
    before the SP answered."""

    def __init__(self, code: OpenFailure | int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        """An ``OpenFailure``, or an OPEN_FAIL's code as it came off the wire. Not
        declared ``int``: mypyc stores an ``int`` attribute unboxed, so the compiled
        build would hand back ``2`` where the pure one keeps ``CONNECT_REFUSED``."""
        self.reason = reason


class PipeLost(OpenRefused):
    """The pipe died before the SP answered the OPEN: another pipe may serve it."""


class Stream:
    __slots__ = (
        "answer",
        "budget",
        "bytes_in",
        "bytes_out",
        "charged",
        "eof_received",
        "eof_sent",
        "finished",
        "id",
        "max_frame",
        "recv_credited",
        "recv_received",
        "replay",
        "send_credit",
        "service",
        "sink",
        "taken",
        "window",
        "withheld",
        "writer",
    )

    def __init__(
        self,
        writer: StreamWriter,
        stream_id: int,
        service: uuid_mod.UUID,
        window: int,
        max_frame: int,
        sink: StreamSink | None = None,
        budget: PipeBudget | None = None,
    ) -> None:
        self.writer = writer
        self.id = stream_id
        self.service = service
        self.window = window
        self.max_frame = max(max_frame, defaults.DATA_FRAME)
        """The largest DATA frame this end sends: the OPEN's ``max_frame`` (the SC's
        ``request_buffer``), raised to ``defaults.DATA_FRAME`` for bulk transfers."""
        self.sink = sink
        self.send_credit = window
        self.withheld: int | None = None
        """Credit held back until OPEN_OK says what the SP granted (see ``await_grant``)."""
        self.recv_received = 0
        self.recv_credited = 0
        self.taken = 0
        """Bytes received that the local socket has taken (``consumed``)."""
        self.budget = budget
        self.charged = 0
        """Bytes this stream holds that are charged to ``budget`` (received, not taken)."""
        self.eof_sent = False
        self.eof_received = False
        self.finished = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.answer = OpenAnswer.NOT_ASKED
        self.replay: bytearray | None = None
        """While not None, a copy of every byte sent (the SC keeps it until OPEN_OK,
        so a stream whose pipe dies first can be replayed on another pipe)."""

    # --- called by the local end -------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (at most ``send_credit`` bytes) as DATA frames."""
        if self.finished or self.eof_sent:
            if self.replay is not None and not self.eof_sent:
                self.replay += data  # the SC may yet open the connection on another pipe
            return
        n = len(data)
        if n > self.send_credit and self.withheld is not None:
            # A replay after a failover: up to what the lost stream sent, within our window.
            borrowed = min(n - self.send_credit, self.withheld)
            self.withheld -= borrowed
            self.send_credit += borrowed
        if n > self.send_credit:
            raise LocalProtocolError(
                f"stream {self.id}: {n} bytes exceed the credit {self.send_credit}"
            )
        self.send_credit -= n
        self.bytes_out += n
        if self.replay is not None:
            self.replay += data
        self.writer.send_data(self.id, data, self.max_frame)

    def send_eof(self) -> None:
        if self.finished or self.eof_sent:
            return
        self.eof_sent = True
        self.writer.send_raw(encode_frame(FrameType.FIN, self.id))
        self._maybe_finish()

    def consumed(self, total: int) -> None:
        """The local socket has taken ``total`` bytes so far: grant credit back.

        Credit is returned in batches of a quarter window, so window updates
        stay rare on bulk transfers. The local end must call this whenever its
        socket buffer drains below its high-water mark (kept under 3/4 of the
        window), so a sender can never be left waiting for credit.
        """
        if self.finished:
            return
        if total > self.taken:
            self.taken = total
            charged = self.charged
            if charged:  # held bytes were taken: give them back to the pipe
                held = self.recv_received - total
                if held < charged:
                    self._settle(held)
        pending = total - self.recv_credited
        if pending >= self.window // 4:
            self.recv_credited = total
            self.writer.send_raw(encode_window(self.id, pending))

    def reset(self, code: ResetCode, reason: str) -> None:
        """Abort the stream in both directions and tell the peer."""
        if self.finished:
            return
        self.writer.send_raw(CodedReason(FrameType.RESET, self.id, code, reason).encode())
        self._finish()

    # --- called by the pipe (the writer) ------------------------------------------------------

    def await_grant(self, first: int) -> None:
        """SC side, before OPEN: send at most ``first`` bytes until OPEN_OK names the
        window the SP granted (never less than ``defaults.MIN_STREAM_WINDOW``)."""
        if first < self.send_credit:
            self.withheld = self.send_credit - first
            self.send_credit = first

    def receive_data(self, data: bytes | memoryview) -> None:
        if self.finished:
            return
        n = len(data)
        self.bytes_in += n
        unread = self.recv_received + n - self.recv_credited
        if unread > self.window:
            self._violation(
                Limit.STREAM_WINDOW,
                f"the peer overran the window of {self.window} B this end granted "
                f"({unread} B unacknowledged)",
                "flow-control window exceeded",
            )
            return
        if self.eof_received:
            self.fail(ResetCode.LOCAL_ERROR, "data after end of stream")
            return
        self.recv_received += n
        if self.sink is not None:
            self.sink.on_data(data)  # its ``consumed`` says what its socket took at once
        held = self.recv_received - self.taken
        if held > self.charged and not self.finished:
            self._charge(held)

    def _charge(self, held: int) -> None:
        """This stream holds ``held`` bytes, more than it has charged: charge the rest to
        the pipe's budget, or reset the stream if that would take the pipe past it."""
        budget = self.budget
        if budget is None:
            return
        more = held - self.charged
        if budget.charge(more):
            self.charged = held
            return
        self._violation(
            Limit.PIPE_BUFFER,
            f"{more} B more would make the pipe hold over its pipe_buffer of "
            f"{budget.limit} B ({budget.held} B held by its streams)",
            "the pipe's buffer budget is exhausted",
        )

    def _settle(self, held: int) -> None:
        """This stream holds ``held`` bytes now, less than it charged: release the rest."""
        if self.budget is not None:
            self.budget.release(self.charged - max(held, 0))
        self.charged = max(held, 0)

    def receive_window(self, increment: int) -> None:
        self.send_credit += increment
        if self.send_credit > 1 << 31:
            self.fail(ResetCode.FLOW_CONTROL, "window update overflows")
            return
        if self.sink is not None:
            self.sink.on_credit()

    def receive_eof(self) -> None:
        if self.eof_received:
            return
        self.eof_received = True
        if self.sink is not None:
            self.sink.on_eof()
        self._maybe_finish()

    def receive_reset(self, reason: str, pipe_lost: bool = False) -> None:
        if self.finished:
            return
        self._finish()
        failure = PipeLost if pipe_lost else OpenRefused
        self._answered(failure(OpenFailure.CONNECT_ERROR, reason))
        if self.sink is not None:
            self.sink.on_reset(reason, Outcome.PIPE_CLOSED if pipe_lost else Outcome.RESET)

    def receive_open_result(self, error: OpenRefused | None, granted: int | None = None) -> None:
        """OPEN_OK (``error`` None; ``granted``: the SP's window, None from older SPs) or
        OPEN_FAIL; the sink hears it (``on_open_answer``) unless the SC gave up waiting."""
        if self.answer is not OpenAnswer.AWAITED and self.answer is not OpenAnswer.NOT_ASKED:
            return
        if error is None:
            if self.withheld is not None:
                first = self.window - self.withheld
                total = self.window if granted is None else min(granted, self.window)
                self.send_credit += max(total - first, 0)
                self.withheld = None
                # The SP sends at most what it granted: credit it back by that measure.
                self.window = total
                if self.sink is not None:
                    self.sink.on_credit()
            self._answered(None)
        else:
            self._finish()
            self._answered(error)

    def await_answer(self) -> None:
        """SC side: this stream's OPEN was sent; its sink is to hear the answer."""
        self.answer = OpenAnswer.AWAITED

    def abandon_open(self) -> None:
        """SC side: stop waiting for the answer (the opener moved on: 504, or another pipe)."""
        if self.answer is OpenAnswer.AWAITED:
            self.answer = OpenAnswer.ABANDONED

    def _answered(self, failure: OpenRefused | None) -> None:
        if self.answer is not OpenAnswer.AWAITED:
            return
        self.answer = OpenAnswer.OPENED if failure is None else OpenAnswer.REFUSED
        if self.sink is not None:
            self.sink.on_open_answer(self, failure)

    def fail(self, code: ResetCode, reason: str) -> None:
        """Reset the stream and tell the local end (our own decision)."""
        if self.finished:
            return
        self.reset(code, reason)
        self._answered(OpenRefused(OpenFailure.CONNECT_ERROR, reason))
        if self.sink is not None:
            self.sink.on_reset(reason, Outcome.ERROR)

    def _violation(self, limit: Limit, detail: str, reason: str) -> None:
        """The peer broke a bound of this end: reset the stream, and tell the pipe's budget."""
        self.fail(ResetCode.FLOW_CONTROL, reason)
        if self.budget is not None:
            self.budget.violated(limit, self.id, detail)
        else:
            self.writer.log_stream_error(self, detail)

    def _maybe_finish(self) -> None:
        if self.eof_sent and self.eof_received:
            self._finish()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            if self.charged:
                self._settle(0)
            self.writer.forget_stream(self)
